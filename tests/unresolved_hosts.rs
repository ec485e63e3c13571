//! A backend host that does not resolve at start (a stopped WPS container, a name not yet in
//! DNS): Roost starts without it, shows it down, serves through the others, and adds it once
//! the name resolves; a lookup that fails on a later reload keeps the address it runs with.
//! `roost -t` stays strict.
//!
//! Roost resolves through the system resolver (`/etc/hosts`, then DNS). The test gives the
//! Roost it starts a private `/etc/hosts` — a file of its own bind-mounted over it in a mount
//! namespace of that process alone (`unshare`) — and edits that file as an operator edits DNS.

mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NAME: &str = "roost-test-late-backend";

/// Roost on `config`, seeing `hosts` as its `/etc/hosts`.
fn spawn_with_hosts(hosts: &Path, config: &Path, log: &Path) -> Proc {
    let log_file = std::fs::File::create(log).unwrap();
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    // Root needs only a mount namespace; anyone else maps themselves to root in a user
    // namespace of their own first.
    let ns: &[&str] = if root {
        &["--mount"]
    } else {
        &["--user", "--map-root-user", "--mount"]
    };
    let child = Command::new("unshare")
        .args(ns)
        .args([
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
            hosts.to_str().unwrap(),
            ROOST,
            "-c",
            config.to_str().unwrap(),
        ])
        .env("RUST_LOG", "info")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .stdin(Stdio::null())
        .spawn()
        .expect("run unshare (util-linux)");
    Proc { child }
}

/// Rewrite the private hosts file in place (the bind mount follows the inode, not the name).
fn write_hosts(hosts: &Path, extra: &str) {
    let base = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(hosts)
        .unwrap();
    write!(f, "{base}\n{extra}").unwrap();
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let resp = get(admin, "/status", &[]).unwrap();
    assert_eq!(resp.status, 200);
    serde_json::from_slice(&resp.body).unwrap()
}

fn addrs(service: &serde_json::Value) -> Vec<String> {
    service["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_unresolvable_backend_is_down_until_its_name_resolves() {
    let (b1, b2) = (Backend::start("b1"), Backend::start("b2"));
    let late = format!("{NAME}:{}", b2.addr.port());
    let (listen, admin) = (listen_addr(), listen_addr());
    let yaml = format!(
        "server:\n  threads: 2\n  pid_file: {{dir}}/roost.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  \
         grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n\
         admin: {{ listen: {admin} }}\n\
         services:\n  - name: fp\n    listen: {listen}\n    backends:\n      - {}\n      - {{ address: \"{late}\", weight: 2 }}\n    \
         health_check: {{ type: tcp, interval: 1s, timeout: 1s, rise: 1, fall: 2 }}\n",
        b1.addr
    );
    let (dir, config, log) = config_dir(&yaml);
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "").unwrap();
    write_hosts(&hosts, "");

    // -t is strict and says what a running Roost would do instead.
    let (code, _, err) = run_roost(&["-t", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "roost.yaml:13: services[0].backends[1].address: service fp: cannot resolve `{NAME}`"
        )),
        "{err}"
    );
    assert!(err.contains("`roost -t` resolves every host"), "{err}");

    let mut roost = spawn_with_hosts(&hosts, &config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(30), "roost listening", || {
        assert!(roost.is_running(), "roost exited:\n{}", log_text());
        get(admin, "/healthz", &[]).is_ok_and(|r| r.status == 200)
    });
    assert!(
        log_text().contains(&format!("cannot resolve `{NAME}`")) && log_text().contains("left out"),
        "{}",
        log_text()
    );
    // Down and listed as such: /status, /metrics.
    let s = &status(admin)["services"][0];
    assert_eq!(addrs(s), [b1.addr.to_string()]);
    assert_eq!(s["unresolved"][0]["address"], late.as_str());
    assert_eq!(s["unresolved"][0]["weight"], 2);
    assert!(
        s["unresolved"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(NAME),
        "{s}"
    );
    let metrics = get(admin, "/metrics", &[]).unwrap().text();
    assert!(
        metrics.contains("roost_backends_unresolved{service=\"fp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "roost_backend_up{{backend=\"{late}\",service=\"fp\"}} 0"
        )),
        "{metrics}"
    );
    // Every key is served, by the backend that resolves.
    for i in 0..40 {
        let r = get_key(listen, &format!("m{i}")).unwrap();
        assert_eq!((r.status, r.backend()), (200, "b1"), "key m{i}");
    }

    // The name appears: within the retry interval it is a backend like the others.
    write_hosts(&hosts, &format!("127.0.0.1 {NAME}\n"));
    wait_until(Duration::from_secs(40), "the late backend added", || {
        let s = &status(admin)["services"][0];
        s["backends"].as_array().unwrap().len() == 2
            && s["unresolved"].as_array().unwrap().is_empty()
    });
    // Logged as a reload logs an added backend (just after the new state is in place).
    wait_until(Duration::from_secs(10), "the addition logged", || {
        log_text().contains(&format!("backend {late} added"))
    });
    // The keys seen so far are sessions on b1 (the sticky table): they stay. New keys
    // spread over both once b2's first probe passed.
    let mut owner = std::collections::HashMap::new();
    wait_until(Duration::from_secs(20), "new keys on both backends", || {
        for i in 0..40 {
            let r = get_key(listen, &format!("m{i}")).unwrap();
            assert_eq!((r.status, r.backend()), (200, "b1"), "session m{i} moved");
            let r = get_key(listen, &format!("n{i}")).unwrap();
            assert_eq!(r.status, 200);
            owner.insert(i, r.backend().to_string());
        }
        owner.values().any(|b| b == "b2") && owner.values().any(|b| b == "b1")
    });

    // A reload whose lookup of the name fails (DNS blip) keeps the address it runs with:
    // no key moves.
    write_hosts(&hosts, "");
    let reloads = log_text().matches("reload: ").count();
    roost.signal("HUP");
    wait_until(Duration::from_secs(20), "the reload done", || {
        log_text().matches("reload: ").count() > reloads && log_text().contains(": done (")
    });
    let s = &status(admin)["services"][0];
    assert_eq!(s["backends"].as_array().unwrap().len(), 2, "{s}");
    assert!(s["unresolved"].as_array().unwrap().is_empty(), "{s}");
    for i in 0..40 {
        let r = get_key(listen, &format!("n{i}")).unwrap();
        assert_eq!(r.backend(), owner[&i], "key n{i} moved");
    }
    roost.signal("TERM");
    roost.wait_exit(Duration::from_secs(30));
}
