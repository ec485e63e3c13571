//! Operator states against the real binary: `roost backend drain` takes a backend off the
//! ring for new keys while the keys it holds keep reaching it, `/status` says "drained" once
//! it has been idle for `affinity.drain_idle`, `maint` then moves its keys (counted and marked
//! in the access log), `ready` brings it back; the write endpoint is closed without a token;
//! `backends[].state` in the file does the same, and the state set through the API survives
//! a restart through `server.state_dir`.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "drain-test-token-0123456789";

fn yaml(listen: SocketAddr, admin: &Admin, backends: &[String], extra: &str) -> String {
    let list: String = backends.iter().map(|b| format!("      - {b}\n")).collect();
    let config = config_yaml(&format!(
        "  - name: fp\n    listen: {listen}\n    backends:\n{list}{extra}"
    ));
    top_level(
        &config,
        &format!(
            "{}access_log: {{ path: \"{{dir}}/access.log\" }}\n",
            admin.yaml()
        ),
    )
}

/// Three demo backends b1..b3 behind `fp` (with `extra` service keys) as [`yaml`] has them,
/// and Roost: (backends, listen address, admin listener, Roost).
fn start(extra: &str) -> (Vec<Backend>, SocketAddr, Admin, Roost) {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let (listen, admin) = (listen_addr(), Admin::new(Some(TOKEN)));
    let roost = Roost::start(&yaml(listen, &admin, &addrs, extra), &[listen, admin.addr]);
    (backends, listen, admin, roost)
}

fn backend_cmd(roost: &Roost, action: &str, backend: SocketAddr) -> (i32, String, String) {
    let conf = roost.config.display().to_string();
    run_roost(&["-c", &conf, "backend", action, "fp", &backend.to_string()])
}

#[test]
fn drain_keeps_sessions_takes_no_new_ones_and_maint_moves_them() {
    let (backends, listen, admin, roost) = start("    affinity: { drain_idle: 1s }\n");
    let b2 = backends[1].addr;

    let active = keys("active-", 150);
    let before = mapping(listen, &active);
    let on_b2 = keys_on(&before, "b2");
    assert!(on_b2.len() > 20, "b2 holds only {} keys", on_b2.len());

    let (code, out, err) = backend_cmd(&roost, "drain", b2);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ready -> drain"), "{out}");
    assert_eq!(admin.backend_status(b2)["state"], "drain");

    // Every session stays where it is, b2's included; new keys never reach b2.
    assert_eq!(mapping(listen, &active), before, "a session moved on drain");
    let fresh = mapping(listen, &keys("fresh-", 300));
    let mut share: HashMap<&str, usize> = HashMap::new();
    for b in fresh.values() {
        *share.entry(b.as_str()).or_default() += 1;
    }
    assert_eq!(
        share.get("b2"),
        None,
        "a new key reached the draining b2: {share:?}"
    );
    assert!(share.get("b1").copied().unwrap_or(0) > 60, "{share:?}");
    assert!(share.get("b3").copied().unwrap_or(0) > 60, "{share:?}");
    // Keyless requests do not reach it either.
    for _ in 0..12 {
        assert_ne!(get(listen, "/", &[]).unwrap().backend(), "b2");
    }

    // Nothing sent to b2 for drain_idle: safe to stop.
    wait_until(Duration::from_secs(15), "b2 reported drained", || {
        admin.backend_status(b2)["drained"] == true
    });
    // A request of one of its sessions makes it busy again.
    assert_eq!(get_key(listen, &on_b2[0]).unwrap().backend(), "b2");
    assert_eq!(admin.backend_status(b2)["drained"], false);

    // Maintenance: its sessions move, and the moves are counted and logged.
    let (code, out, err) = backend_cmd(&roost, "maint", b2);
    assert_eq!(code, 0, "{out}{err}");
    let during = mapping(listen, &active);
    for (k, b) in &during {
        assert_ne!(b, "b2", "{k} still reaches b2 in maintenance");
        if before[k] != "b2" {
            assert_eq!(*b, before[k], "{k} moved though its backend is ready");
        }
    }
    let moved = admin.count("roost_affinity_moves_total{reason=\"drained\",service=\"fp\"}");
    assert_eq!(moved, on_b2.len() as u64);
    let log_path = roost.dir.path().join("access.log");
    wait_until(
        Duration::from_secs(10),
        "the moved requests in the access log",
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            log.lines()
                .filter(|l| l.ends_with(" moved=drained"))
                .count()
                >= on_b2.len()
        },
    );

    // Ready again: its sessions come back (return_after_recovery is the default).
    let (code, out, err) = backend_cmd(&roost, "ready", b2);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(mapping(listen, &active), before);
    assert_eq!(
        admin.count("roost_backend_state_changes_total{service=\"fp\",to=\"maint\"}"),
        1
    );
}

#[test]
fn without_a_token_the_write_endpoint_is_closed_and_says_why() {
    let backend = Backend::start("b1");
    let (listen, admin) = (listen_addr(), Admin::new(None));
    let yaml = top_level(
        &config_yaml(&service_yaml("fp", listen, &[backend.addr], "")),
        &admin.yaml(),
    );
    let roost = Roost::start(&yaml, &[listen, admin.addr]);
    let (code, _, err) = backend_cmd(&roost, "drain", backend.addr);
    assert_ne!(code, 0);
    assert!(err.contains("403") && err.contains("admin.token"), "{err}");
    let (code, _, err) = backend_cmd(&roost, "drain", "127.0.0.1:1".parse().unwrap());
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
    // The backend still takes everything.
    assert_eq!(get_key(listen, "k").unwrap().status, 200);
}

#[test]
fn the_file_sets_states_and_the_api_state_survives_a_restart() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let (listen, admin) = (listen_addr(), Admin::new(Some(TOKEN)));
    let entries = vec![
        format!("{{ address: \"{}\", state: maint }}", backends[0].addr),
        backends[1].addr.to_string(),
        backends[2].addr.to_string(),
    ];
    let extra = "";
    let yaml = yaml(listen, &admin, &entries, extra)
        .replace("server:\n", "server:\n  state_dir: \"{dir}/state\"\n");
    let mut roost = Roost::start(&yaml, &[listen, admin.addr]);
    for k in keys("k-", 60) {
        assert_ne!(
            get_key(listen, &k).unwrap().backend(),
            "b1",
            "{k} reached b1 in maint"
        );
    }
    assert_eq!(admin.backend_status(backends[0].addr)["state"], "maint");

    let (code, out, err) = backend_cmd(&roost, "drain", backends[2].addr);
    assert_eq!(code, 0, "{out}{err}");
    // Stop (the state is saved on the way out) and start again on the same file.
    roost.proc.signal("TERM");
    assert!(roost.proc.wait_exit(Duration::from_secs(20)).is_some());
    let log = roost.log.clone();
    roost.proc = spawn_roost(&roost.config, &log, &[]);
    roost.wait_listening(listen);
    roost.wait_listening(admin.addr);
    assert_eq!(admin.backend_status(backends[2].addr)["state"], "drain");
    assert_eq!(admin.backend_status(backends[0].addr)["state"], "maint");
    assert!(
        roost
            .log_text()
            .contains("1 operator state(s) carried over"),
        "{}",
        roost.log_text()
    );
}

/// 100 sessions with a running WPS job each; one of the 3 backends drains while they poll:
/// every poll of its jobs (with the key, and keyless through `wps_affinity`) keeps reaching
/// it, new keys never do, it is "drained" only after its last job ended and `drain_idle`
/// passed, and `maint` then moves its keys.
#[test]
fn a_draining_backend_keeps_its_running_jobs_until_the_last_one_ends() {
    let (backends, listen, admin, roost) =
        start("    wps_affinity: true\n    affinity: { drain_idle: 1s }\n");
    let b2 = backends[1].addr;

    let sessions: Vec<(String, String, String)> = (0..100)
        .map(|i| {
            let (key, job) = (
                format!("job-key-{i}"),
                format!("5e4f3a2b-1c0d-4f6a-8c2d-{i:012x}"),
            );
            let r = get(listen, &format!("/job/{job}"), &[("machineid", &key)]).unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            (key, job, r.backend().to_string())
        })
        .collect();
    let on_b2: Vec<&(String, String, String)> =
        sessions.iter().filter(|(_, _, b)| b == "b2").collect();
    assert!(on_b2.len() > 15, "b2 runs only {} jobs", on_b2.len());
    assert_eq!(admin.backend_status(b2)["running_jobs"], on_b2.len() as u64);

    let (code, out, err) = backend_cmd(&roost, "drain", b2);
    assert_eq!(code, 0, "{out}{err}");
    for _round in 0..2 {
        for (key, job, owner) in &sessions {
            let doc = format!("/outputs/{job}.xml");
            let keyed = get(listen, &doc, &[("machineid", key)]).unwrap();
            assert_eq!(keyed.backend(), owner, "{key}");
            assert!(keyed.text().contains("ProcessStarted"), "{}", keyed.text());
            assert_eq!(
                get(listen, &doc, &[]).unwrap().backend(),
                owner,
                "{job} keyless"
            );
        }
        let fresh = mapping(listen, &keys("while-draining-", 100));
        assert!(fresh.values().all(|b| b != "b2"), "a new key reached b2");
        let b = admin.backend_status(b2);
        assert_eq!(b["drained"], false, "jobs run there: {b}");
    }

    // The jobs end one after the other; b2 is safe to stop only after the last.
    for (_, job, owner) in &sessions {
        let at = &backends[owner[1..].parse::<usize>().unwrap() - 1];
        get(at.addr, &format!("/finish/{job}"), &[]).unwrap();
    }
    for (key, job, owner) in &sessions {
        let done = get(
            listen,
            &format!("/outputs/{job}.xml"),
            &[("machineid", key)],
        )
        .unwrap();
        assert_eq!(done.backend(), owner);
        assert!(done.text().contains("ProcessSucceeded"), "{}", done.text());
    }
    assert_eq!(admin.backend_status(b2)["running_jobs"], 0);
    wait_until(Duration::from_secs(15), "b2 drained", || {
        admin.backend_status(b2)["drained"] == true
    });

    let (code, out, err) = backend_cmd(&roost, "maint", b2);
    assert_eq!(code, 0, "{out}{err}");
    for (key, _, _) in &on_b2 {
        assert_ne!(get_key(listen, key).unwrap().backend(), "b2", "{key}");
    }
    assert_eq!(
        admin.count("roost_affinity_moves_total{reason=\"drained\",service=\"fp\"}"),
        on_b2.len() as u64
    );
}
