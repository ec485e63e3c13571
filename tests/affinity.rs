//! The sticky table against the real binary: a key that has been forwarded stays on its
//! backend when a backend is added (by SIGHUP), new keys spread over the new ring, a key whose
//! backend dies fails over and (by default) returns on recovery or (with
//! `return_after_recovery: false`) stays, and every move is counted.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

const CHECKS: &str =
    "    health_check: { path: /health, interval: 300ms, timeout: 250ms, rise: 1, fall: 1 }\n";

fn yaml(listen: SocketAddr, admin: &Admin, backends: &[SocketAddr], extra: &str) -> String {
    top_level(
        &config_yaml(&service_yaml("fp", listen, backends, extra)),
        &admin.yaml(),
    )
}

/// `yaml` run as a daemon (`-d`, log in `{dir}/roost.log`) with its table in `{dir}/state`.
fn daemon(yaml: &str) -> String {
    yaml.replacen(
        "server:\n",
        "server:\n  error_log: {dir}/roost.log\n  state_dir: {dir}/state\n",
        1,
    )
}

/// The address `roost route -c FILE fp KEY` answers: the ring's owner when `FILE` has no
/// `state_dir`.
fn route_cli(file: &std::path::Path, key: &str) -> String {
    let (code, out, err) = run_roost(&["route", "-c", &file.display().to_string(), "fp", key]);
    assert_eq!(code, 0, "roost route {key}: {err}");
    out.trim().to_string()
}

/// How the fourth backend joins a running Roost.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// `roost reload` (SIGHUP): the same process applies the new ring.
    Reload,
    /// `roost upgrade`, this many times in a row: each new process starts with the table its
    /// predecessor handed over.
    Upgrades(usize),
}

/// 300 keys under continuous load (6 clients x 50 keys), recorded while three backends
/// serve; then a fourth joins by `change`. The ring alone would move many of the 300 (checked
/// with `roost route` on a copy of the config without the table, so the test proves
/// something); the table moves none, neither between requests of the load nor for a
/// request sent afterwards. 1,000 new keys then spread over all four.
fn a_fourth_backend_under_load(change: Change) {
    let backends: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let name_of: HashMap<String, String> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.name.clone()))
        .collect();
    let (listen, admin) = (listen_addr(), Admin::new(None));
    let with = |n: usize| daemon(&yaml(listen, &admin, &addrs[..n], ""));
    let mut roost = Daemon::start(&with(3), &[listen, admin.addr]);
    let dir = roost.dir.path().display().to_string();

    let load = Load::start(listen, 6, 50);
    let active: Vec<String> = (0..6)
        .flat_map(|c| (0..50).map(move |i| format!("load-{c}-{i}")))
        .collect();
    wait_until(
        Duration::from_secs(30),
        "the load's 300 keys recorded",
        || admin.count("roost_affinity_keys{service=\"fp\"}") == 300,
    );
    let before = mapping(listen, &active);

    std::fs::write(&roost.config, with(4).replace("{dir}", &dir)).unwrap();
    let mut late_keys = 0;
    match change {
        Change::Reload => {
            let (code, out, err) =
                run_roost(&["reload", "-c", &roost.config.display().to_string()]);
            assert_eq!(code, 0, "{out}{err}");
            wait_until(Duration::from_secs(10), "the reload", || {
                roost
                    .log_text()
                    .contains(&format!("backend {} added", addrs[3]))
            });
            assert_eq!(mapping(listen, &active), before, "a recorded key moved");
        }
        Change::Upgrades(n) => {
            // Keys first seen a moment before the first upgrade, and asked for all through
            // it: no periodic save has written them yet, so only the hand-over can carry them.
            let late = Load::with_prefix("late", listen, 2, 50);
            wait_until(
                Duration::from_secs(30),
                "the 100 late keys recorded",
                || admin.count("roost_affinity_keys{service=\"fp\"}") == 400,
            );
            for i in 1..=n {
                let old = roost.pid();
                let (code, out, err) = roost.upgrade();
                assert_eq!(code, 0, "upgrade {i}: {out}{err}\n{}", roost.log_text());
                assert_ne!(roost.pid(), old, "upgrade {i}: the same pid serves");
                let now = mapping(listen, &active);
                let moved: Vec<_> = active.iter().filter(|k| now[*k] != before[*k]).collect();
                assert!(
                    moved.is_empty(),
                    "upgrade {i}: {} of 300 keys moved: {moved:?}\n{out}{err}",
                    moved.len(),
                );
            }
            let report = late.stop();
            assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
            assert_eq!(report.backends.len(), 100);
            let moved: Vec<_> = report
                .backends
                .iter()
                .filter(|(_, seen)| seen.iter().any(|b| *b != seen[0]))
                .map(|(key, seen)| (key, seen.first(), seen.last()))
                .collect();
            assert!(
                moved.is_empty(),
                "{} of the 100 keys first seen just before the upgrades moved: {moved:?}",
                moved.len()
            );
            late_keys = 100;
        }
    }

    let report = load.stop();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed:\n{}",
        report.failures.len(),
        report.ok + report.failures.len(),
        report.failures.join("\n")
    );
    assert_eq!(report.backends.len(), 300, "the load used its 300 keys");
    for (key, seen) in &report.backends {
        assert!(
            seen.iter().all(|b| *b == before[key]),
            "{key} moved under load: {seen:?}"
        );
    }

    // Counted after the change, so that it happens right after the keys were first seen (a
    // table that reaches the next process only through a periodic save would lose them).
    let ring_only = roost.dir.path().join("ring.yaml");
    std::fs::write(
        &ring_only,
        yaml(listen, &admin, &addrs, "").replace("{dir}", &dir),
    )
    .unwrap();
    let ring_moves = active
        .iter()
        .filter(|k| name_of[&route_cli(&ring_only, k)] != before[*k])
        .count();
    assert!(
        ring_moves >= 30,
        "the new ring moves only {ring_moves} of 300 keys: the test would prove nothing"
    );

    // New keys follow the new ring: each backend gets a fair share.
    let fresh = keys("fresh-", 1000);
    let mut share: HashMap<String, usize> = HashMap::new();
    for b in mapping(listen, &fresh).into_values() {
        *share.entry(b).or_default() += 1;
    }
    for b in ["b1", "b2", "b3", "b4"] {
        let n = share.get(b).copied().unwrap_or(0);
        assert!(
            (150..=350).contains(&n),
            "{b} got {n} of 1000 new keys: {share:?}"
        );
    }
    // The table knows every key, and nothing moved.
    assert_eq!(
        admin.count("roost_affinity_keys{service=\"fp\"}") as usize,
        1300 + late_keys
    );
    for reason in ["owner_down", "drained", "removed"] {
        let series = format!("roost_affinity_moves_total{{reason=\"{reason}\",service=\"fp\"}}");
        assert_eq!(admin.count(&series), 0, "{series}");
    }
    // /route says where a recorded key is and why.
    let route = admin
        .get(&format!("/route?service=fp&key={}", active[0]))
        .text();
    assert!(route.contains("\"in_table\": true"), "{route}");
    assert!(route.contains("\"reason\": \"table\""), "{route}");
    eprintln!(
        "{change:?}: {} requests under load, 0 of 300 keys moved (the ring alone would move {ring_moves})",
        report.ok
    );
}

#[test]
fn a_backend_added_by_reload_under_load_moves_none_of_300_keys_and_new_keys_spread() {
    a_fourth_backend_under_load(Change::Reload);
}

/// The table is handed from process to process: three `roost upgrade`s in a row, the first
/// of them with the fourth backend in the config, move none of the 300 keys.
#[test]
fn three_upgrades_under_load_with_a_fourth_backend_move_none_of_300_keys() {
    a_fourth_backend_under_load(Change::Upgrades(3));
}

#[test]
fn a_failed_over_key_stays_where_it_went_without_return_after_recovery() {
    let mut backends: Vec<Option<Backend>> = (1..=3)
        .map(|i| Some(Backend::start(&format!("b{i}"))))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().flatten().map(|b| b.addr).collect();
    let (listen, admin) = (listen_addr(), Admin::new(None));
    let extra = format!("{CHECKS}    affinity: {{ return_after_recovery: false }}\n");
    let roost = Roost::start(&yaml(listen, &admin, &addrs, &extra), &[listen, admin.addr]);
    let all = keys("k-", 150);
    let before = mapping(listen, &all);
    let on_b2 = keys_on(&before, "b2");
    assert!(on_b2.len() > 20, "b2 holds only {} keys", on_b2.len());

    let b2 = backends[1].take().unwrap().stop();
    wait_until(Duration::from_secs(15), "b2 down", || {
        roost
            .log_text()
            .contains(&format!("backend={b2} state=down"))
    });
    let during = mapping(listen, &all);
    for (key, b) in &before {
        if b == "b2" {
            assert_ne!(during[key], "b2");
        } else {
            assert_eq!(&during[key], b, "{key} moved although {b} is up");
        }
    }
    let moves = admin.count("roost_affinity_moves_total{reason=\"owner_down\",service=\"fp\"}");
    assert_eq!(moves as usize, on_b2.len(), "each of b2's keys moved once");

    backends[1] = Some(Backend::start_on("b2", &b2.to_string()));
    wait_until(Duration::from_secs(15), "b2 up", || {
        roost.log_text().contains(&format!("backend={b2} state=up"))
    });
    // Recovered, but the keys stay where their new files are; no further move.
    assert_eq!(mapping(listen, &all), during);
    assert_eq!(
        admin.count("roost_affinity_moves_total{reason=\"owner_down\",service=\"fp\"}"),
        moves
    );
}

/// The table is saved to `server.state_dir` and a new process starts with it: keys recorded
/// before a backend was added stay where they were across a restart, although the ring now
/// puts many of them elsewhere.
#[test]
fn a_restart_starts_with_the_saved_table() {
    let backends: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (listen, admin) = (listen_addr(), Admin::new(None));
    let state = "  state_dir: {dir}/state\n";
    let with = |n: usize| {
        yaml(listen, &admin, &addrs[..n], "").replacen("server:\n", &format!("server:\n{state}"), 1)
    };
    let (dir, config, log) = config_dir(&with(3));
    let mut first = spawn_roost(&config, &log, &[]);
    wait_until(Duration::from_secs(15), "roost serves", || {
        get_key(listen, "probe").is_ok_and(|r| r.status == 200)
    });
    let active = keys("active-", 200);
    let before = mapping(listen, &active);
    first.signal("TERM");
    assert!(
        first.wait_exit(Duration::from_secs(20)).is_some(),
        "roost did not stop"
    );
    let saved = dir.path().join("state/state.json");
    assert!(
        saved.exists(),
        "no state file:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // The fourth backend joins while Roost is stopped: the ring moves about a quarter of the
    // keys, the saved table none.
    std::fs::write(
        &config,
        with(4).replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let by_addr: HashMap<String, &str> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.name.as_str()))
        .collect();
    let route = |file: &std::path::Path, k: &str| {
        let (_, out, err) = run_roost(&["route", "-c", &file.display().to_string(), "fp", k]);
        by_addr
            .get(out.trim())
            .copied()
            .unwrap_or_else(|| panic!("{err}"))
    };
    // `roost route` on a copy without `state_dir` answers by the ring alone...
    let ring_only = dir.path().join("ring.yaml");
    let plain =
        yaml(listen, &admin, &addrs, "").replace("{dir}", &dir.path().display().to_string());
    std::fs::write(&ring_only, plain).unwrap();
    let ring_moves = active
        .iter()
        .filter(|k| route(&ring_only, k) != before[*k])
        .count();
    assert!(
        ring_moves > 20,
        "the ring moves only {ring_moves} of 200 keys"
    );
    // ...and with it from the saved table, as the running proxy will.
    for k in &active {
        assert_eq!(route(&config, k), before[k], "roost route for {k}");
    }
    let mut second = spawn_roost(&config, &log, &[]);
    wait_until(Duration::from_secs(15), "roost serves again", || {
        get_key(listen, "probe").is_ok_and(|r| r.status == 200)
    });
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("sticky key(s) carried over"));
    assert_eq!(
        mapping(listen, &active),
        before,
        "a saved key moved across the restart"
    );
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(20)).is_some());
}

/// Start Roost in the foreground on `config` and wait until `listen` answers a keyed request.
fn serving(config: &std::path::Path, log: &std::path::Path, listen: SocketAddr) -> Proc {
    let mut roost = spawn_roost(config, log, &[]);
    wait_until(Duration::from_secs(15), "roost serves", || {
        assert!(roost.is_running(), "roost exited:\n{}", read(log));
        get_key(listen, "probe").is_ok_and(|r| r.status == 200)
    });
    roost
}

/// A graceful stop (it writes the state file); fails if the process does not exit.
fn stop(mut roost: Proc) {
    roost.signal("TERM");
    assert!(
        roost.wait_exit(Duration::from_secs(20)).is_some(),
        "roost did not stop"
    );
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The state file's warnings in a log.
fn state_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") && l.contains("state_file"))
        .collect()
}

/// A state file cut short, one of random bytes, and a directory where the file goes (Roost
/// runs as root here, so a mode-000 file would still be readable): each time Roost starts,
/// says so in exactly one warning (and, for the directory it cannot replace either, one more
/// that the table is not saved, not repeated by later saves), and serves. A truncated or
/// garbage file is replaced by a good one at the next save.
#[test]
fn a_truncated_garbage_or_unreadable_state_file_is_logged_once_and_roost_serves() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (listen, admin) = (listen_addr(), Admin::new(None));
    let yaml = yaml(listen, &admin, &addrs, "").replacen(
        "server:\n",
        "server:\n  state_dir: {dir}/state\n",
        1,
    );
    let (dir, config, _) = config_dir(&yaml);
    let saved = dir.path().join("state/state.json");

    let first = serving(&config, &dir.path().join("first.log"), listen);
    mapping(listen, &keys("k-", 200));
    stop(first);
    let good = std::fs::read(&saved).unwrap();
    assert!(good.len() > 1000, "{} bytes", good.len());

    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: [(&str, &dyn Fn()); 3] = [
        ("truncated", &|| {
            std::fs::write(&saved, &good[..good.len() / 2]).unwrap()
        }),
        ("garbage", &|| std::fs::write(&saved, &garbage).unwrap()),
        ("directory", &|| {
            std::fs::remove_file(&saved).unwrap();
            std::fs::create_dir_all(saved.join("in-the-way")).unwrap();
        }),
    ];
    for (name, spoil) in cases {
        spoil();
        let log = dir.path().join(format!("{name}.log"));
        let roost = serving(&config, &log, listen);
        assert_eq!(mapping(listen, &keys("k-", 20)).len(), 20);
        // A save after start (at stop): the file is written again, or the failure to write
        // it is not said a second time.
        stop(roost);
        let text = read(&log);
        let warnings = state_warnings(&text);
        let ignored = warnings.iter().filter(|l| l.contains("ignored")).count();
        assert_eq!(ignored, 1, "{name}: {warnings:#?}");
        if name == "directory" {
            assert_eq!(warnings.len(), 2, "{name}: {warnings:#?}");
            assert!(
                warnings[1].contains("cannot write"),
                "{name}: {warnings:#?}"
            );
            std::fs::remove_dir_all(&saved).unwrap();
            std::fs::write(&saved, &good).unwrap();
        } else {
            assert_eq!(warnings.len(), 1, "{name}: {warnings:#?}");
            let now = std::fs::read(&saved).unwrap();
            assert!(
                now.starts_with(b"{\"version\":1,"),
                "{name}: not rewritten: {:?}",
                String::from_utf8_lossy(&now[..now.len().min(80)])
            );
        }
    }
}

/// A state file written under another config: service `emu` since renamed `emu2`, backend
/// b3 of `fp` since replaced by b4. What still applies is loaded (the `fp` keys of b1 and b2
/// stay where they were); the rest is dropped without a warning: b3's keys and every `emu`
/// key go by the ring.
#[test]
fn a_state_file_from_another_config_loads_what_still_applies() {
    let backends: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (fp, emu, admin) = (listen_addr(), listen_addr(), Admin::new(None));
    let site = |fp_backends: &[SocketAddr], emu_name: &str| {
        let yaml = config_yaml(&format!(
            "{}{}",
            service_yaml("fp", fp, fp_backends, ""),
            service_yaml(emu_name, emu, &addrs[..2], "")
        ))
        .replacen("server:\n", "server:\n  state_dir: {dir}/state\n", 1);
        top_level(&yaml, &admin.yaml())
    };
    let (dir, config, _) = config_dir(&site(&addrs[..3], "emu"));
    let first = serving(&config, &dir.path().join("first.log"), fp);
    // With the key `serving` probes with: it is in the table, too.
    let mut fp_keys = keys("fp-", 200);
    fp_keys.push("probe".to_string());
    let before = mapping(fp, &fp_keys);
    mapping(emu, &keys("emu-", 50));
    stop(first);

    std::fs::write(
        &config,
        site(&[addrs[0], addrs[1], addrs[3]], "emu2")
            .replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let log = dir.path().join("second.log");
    let second = serving(&config, &log, fp);
    let kept = before.values().filter(|b| *b != "b3").count();
    assert!(kept > 100 && kept < 200, "{kept} of 201 keys on b1 and b2");
    let text = read(&log);
    assert!(
        text.contains(&format!("{kept} sticky key(s) carried over")),
        "{text}"
    );
    assert!(state_warnings(&text).is_empty(), "{text}");
    // `emu2` starts empty; `probe` is recorded again if it was one of b3's.
    assert_eq!(
        admin.count("roost_affinity_keys{service=\"fp\"}") as usize,
        kept + usize::from(before["probe"] == "b3")
    );
    assert_eq!(admin.count("roost_affinity_keys{service=\"emu2\"}"), 0);
    let after = mapping(fp, &fp_keys);
    for (key, b) in &before {
        if b == "b3" {
            assert_ne!(after[key], "b3");
        } else {
            assert_eq!(&after[key], b, "{key} moved");
        }
    }
    assert!(
        after.values().any(|b| b == "b4"),
        "b3's keys follow the ring, some to b4"
    );
    stop(second);
}
