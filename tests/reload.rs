//! Live reload (SIGHUP) under load: backends added and removed without a failed request,
//! keys of untouched backends stay, and an invalid file leaves the running config in place.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

const KEYS: usize = 300;
const CHECKS: &str =
    "    health_check: { path: /health, interval: 300ms, timeout: 200ms, rise: 1, fall: 1 }\n";

/// Where each of the test's keys is answered through `addr`.
fn mapping_of(addr: SocketAddr) -> HashMap<String, String> {
    mapping(addr, &keys("m", KEYS))
}

fn write_config(roost: &Roost, listen: SocketAddr, backends: &[SocketAddr], extra: &str) {
    std::fs::write(
        &roost.config,
        config_yaml(&service_yaml("fp", listen, backends, extra))
            .replace("{dir}", &roost.dir.path().display().to_string()),
    )
    .unwrap();
}

fn wait_log(roost: &Roost, needle: &str, count: usize) {
    wait_until(Duration::from_secs(10), needle, || {
        roost.log_text().matches(needle).count() >= count
    });
}

/// The ring's own behaviour on reload, with the sticky table off (`tests/affinity.rs` has
/// the table's: recorded keys do not move to an added backend at all).
#[test]
fn sighup_adds_and_removes_backends_under_load() {
    let checks = &format!("{CHECKS}    affinity: {{ enabled: false }}\n");
    let backends: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let listen = listen_addr();
    let roost = Roost::start(
        &config_yaml(&service_yaml("fp", listen, &addrs[..3], checks)),
        &[listen],
    );
    let before = mapping_of(listen);

    let load = Load::start(listen, 4, 30);
    std::thread::sleep(Duration::from_millis(500));
    // b3 leaves, b4 joins.
    write_config(&roost, listen, &[addrs[0], addrs[1], addrs[3]], checks);
    roost.proc.signal("HUP");
    wait_log(&roost, "reload: service fp:", 1);
    std::thread::sleep(Duration::from_millis(1000));
    let report = load.stop();
    assert!(
        report.failures.is_empty(),
        "{}\n{}",
        report.failures.join("\n"),
        roost.log_text()
    );
    let log = roost.log_text();
    assert!(
        log.contains(&format!("backend {} added", addrs[3])),
        "{log}"
    );
    assert!(
        log.contains(&format!("backend {} removed", addrs[2])),
        "{log}"
    );

    let after = mapping_of(listen);
    let mut moved_to_b4 = 0;
    for (key, old) in &before {
        let new = &after[key];
        assert_ne!(new, "b3", "{key} still goes to the removed backend");
        if old != "b3" {
            assert!(new == old || new == "b4", "{key}: {old} -> {new}");
        }
        moved_to_b4 += usize::from(new == "b4");
    }
    assert!(moved_to_b4 > 30, "b4 got only {moved_to_b4} keys");
    // The running ring is exactly what the new file describes.
    let by_addr: HashMap<String, &str> = backends
        .iter()
        .map(|b| (b.addr.to_string(), b.name.as_str()))
        .collect();
    let config = roost.config.display().to_string();
    for i in 0..20 {
        let key = format!("m{i}");
        let (code, out, err) = run_roost(&["route", "-c", &config, "fp", &key]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(by_addr[out.trim()], after[&key], "{key}");
    }
}

#[test]
fn an_invalid_file_on_sighup_keeps_the_running_config() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let listen = listen_addr();
    let mut roost = Roost::start(
        &config_yaml(&service_yaml("fp", listen, &addrs, "")),
        &[listen],
    );
    let before = mapping_of(listen);
    // Drops a backend *and* breaks the file: nothing of it may be applied.
    write_config(&roost, listen, &addrs[..2], "    when_down: sometimes\n");
    roost.proc.signal("HUP");
    wait_log(&roost, "still running the previous config", 1);
    let log = roost.log_text();
    assert!(log.contains("services[0].when_down"), "{log}");
    assert!(log.contains("roost.yaml:"), "file and line expected: {log}");
    assert!(roost.proc.is_running());
    assert_eq!(mapping_of(listen), before);
}

#[test]
fn sighup_applies_when_down_and_listener_changes_need_an_upgrade() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let listen = listen_addr();
    let mut backends: Vec<Option<Backend>> = backends.into_iter().map(Some).collect();
    let roost = Roost::start(
        &config_yaml(&service_yaml("fp", listen, &addrs, CHECKS)),
        &[listen],
    );
    let before = mapping_of(listen);
    write_config(
        &roost,
        listen,
        &addrs,
        &format!("{CHECKS}    when_down: reject\n"),
    );
    roost.proc.signal("HUP");
    wait_log(&roost, "when_down Failover -> Reject", 1);
    backends[0].take().unwrap().stop();
    wait_log(&roost, "state=down", 1);
    let b1_key = before.iter().find(|(_, b)| *b == "b1").unwrap().0;
    let resp = get_key(listen, b1_key).unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.header("retry-after").is_some());

    // A new listen address cannot be applied in place; the service keeps running unchanged.
    let other = listen_addr();
    write_config(&roost, other, &addrs[1..], CHECKS);
    roost.proc.signal("HUP");
    wait_log(&roost, "needs -u", 1);
    assert!(std::net::TcpStream::connect(other).is_err());
    assert_eq!(get_key(listen, b1_key).unwrap().status, 503);
}

/// A file whose health check Pingora could not build used to pass validation and kill the
/// reloader thread; every later SIGHUP was then silently ignored. Now it is a config error,
/// and the next good file is applied.
#[test]
fn a_config_that_would_not_build_leaves_the_reloader_working() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let listen = listen_addr();
    let mut roost = Roost::start(
        &config_yaml(&service_yaml("fp", listen, &addrs[..2], CHECKS)),
        &[listen],
    );
    let bad = "    health_check: { path: \"/status<x>\", interval: 300ms, timeout: 200ms }\n";
    write_config(&roost, listen, &addrs, bad);
    roost.proc.signal("HUP");
    wait_log(&roost, "still running the previous config", 1);
    assert!(roost.log_text().contains("services[0].health_check.path"));
    // The reloader is still there: the next good file adds b3.
    write_config(&roost, listen, &addrs, CHECKS);
    roost.proc.signal("HUP");
    wait_log(&roost, &format!("backend {} added", addrs[2]), 1);
    assert!(roost.proc.is_running());
    assert!(mapping_of(listen).values().any(|b| b == "b3"));
}
