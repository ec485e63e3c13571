//! Health checks and failover through the real binary: a killed backend's keys move and come
//! back, nobody else's key ever moves, and refusals say why.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

const KEYS: usize = 300;
const CHECKS: &str = "    health_check: { type: http, path: /health, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 }\n";

fn site(extra: &str) -> Site {
    Site::start(extra)
}

impl Site {
    fn mapping(&self) -> HashMap<String, String> {
        mapping(self.addr, &keys("m", KEYS))
    }

    fn wait_log(&self, needle: &str, count: usize) {
        wait_until(Duration::from_secs(10), needle, || {
            self.roost.log_text().matches(needle).count() >= count
        });
    }
}

#[test]
fn down_backend_keys_fail_over_and_come_back() {
    let mut s = site(CHECKS);
    let before = s.mapping();
    let b2_keys = before.values().filter(|b| *b == "b2").count();
    assert!(b2_keys > 30, "b2 owns only {b2_keys} keys");

    let b2_addr = s.stop(1);
    // Before the health check notices, the connect retry already saves every request.
    let during = s.mapping();
    for (key, b) in &before {
        if b != "b2" {
            assert_eq!(&during[key], b, "{key} moved while its backend was up");
        }
    }

    s.wait_log(&format!("backend={b2_addr} state=down"), 1);
    let after = s.mapping();
    for (key, b) in &before {
        if b == "b2" {
            assert_ne!(after[key], "b2");
        } else {
            assert_eq!(&after[key], b, "{key} moved although {b} is up");
        }
    }
    // A down backend's keys fail over the same way every time.
    assert_eq!(after, s.mapping());

    s.backends[1] = Some(Backend::start_on("b2", &b2_addr.to_string()));
    s.wait_log(&format!("backend={b2_addr} state=up"), 1);
    assert_eq!(s.mapping(), before, "keys did not come back to b2");
}

/// With panic mode off, a service whose backends are all down refuses at once: 503 naming
/// the service, with `Retry-After`.
#[test]
fn all_down_answers_503_naming_the_service() {
    let mut s = site(&format!("{CHECKS}    panic_threshold: off\n"));
    let addrs: Vec<SocketAddr> = (0..3).map(|i| s.stop(i)).collect();
    for a in &addrs {
        s.wait_log(&format!("backend={a} state=down"), 1);
    }
    for resp in [
        get_key(s.addr, "abc").unwrap(),
        get(s.addr, "/", &[]).unwrap(),
    ] {
        assert_eq!(resp.status, 503);
        assert!(
            resp.text().contains("no healthy backend for service 'fp'"),
            "{}",
            resp.text()
        );
        assert!(resp.header("retry-after").is_some());
    }
    assert!(!s.roost.log_text().contains("panic mode"));
}

/// By default (`panic_threshold: 0`) every backend down means panic mode: requests are sent
/// to their backends as if they were up. Backends that really refuse connections still fail
/// them: after the one retry, 502 naming the service; never a hang.
#[test]
fn all_down_in_panic_mode_still_fails_where_nothing_answers() {
    let mut s = site(CHECKS);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| s.stop(i)).collect();
    for a in &addrs {
        s.wait_log(&format!("backend={a} state=down"), 1);
    }
    s.wait_log(
        "panic: service=fp entering panic mode: 0 of 3 backends usable",
        1,
    );
    for resp in [
        get_key(s.addr, "abc").unwrap(),
        get(s.addr, "/", &[]).unwrap(),
    ] {
        assert_eq!(resp.status, 502, "{}", resp.text());
        assert!(
            resp.text().contains("a backend of service 'fp' failed"),
            "{}",
            resp.text()
        );
    }
    // One comes back: its probes end panic mode, and it takes every request.
    s.backends[0] = Some(Backend::start_on("b1", &addrs[0].to_string()));
    s.wait_log("panic: service=fp leaving panic mode", 1);
    for i in 0..20 {
        let resp = get_key(s.addr, &format!("k{i}")).unwrap();
        assert_eq!((resp.status, resp.backend()), (200, "b1"));
    }
}

#[test]
fn when_down_reject_keeps_keys_on_their_owner() {
    let mut s = site(&format!("{CHECKS}    when_down: reject\n"));
    let before = s.mapping();
    let b3 = s.stop(2);
    s.wait_log(&format!("backend={b3} state=down"), 1);
    for (key, b) in &before {
        let resp = get_key(s.addr, key).unwrap();
        if b == "b3" {
            assert_eq!(resp.status, 503, "{key}");
            assert_eq!(resp.header("retry-after"), Some("1"));
            assert!(resp.text().contains("down"), "{}", resp.text());
        } else {
            assert_eq!(resp.status, 200);
            assert_eq!(resp.backend(), b);
        }
    }
    // Keyless requests still find a healthy backend.
    for _ in 0..6 {
        assert_eq!(get(s.addr, "/", &[]).unwrap().status, 200);
    }
}

#[test]
fn reject_without_health_checks_refuses_on_connect_failure() {
    let mut s = site("    when_down: reject\n");
    let before = s.mapping();
    s.stop(0);
    for (key, b) in before.iter().take(60) {
        let resp = get_key(s.addr, key).unwrap();
        if b == "b1" {
            assert_eq!(resp.status, 503, "{key}");
            assert!(resp.header("retry-after").is_some());
        } else {
            assert_eq!(resp.backend(), b);
        }
    }
}

#[test]
fn tcp_checks_and_log_lines() {
    let mut s = site(
        "    health_check: { type: tcp, interval: 200ms, timeout: 100ms, rise: 1, fall: 1 }\n",
    );
    let addr = s.stop(0);
    s.wait_log(&format!("service=fp backend={addr} state=down"), 1);
    assert!(
        s.roost.log_text().contains("ConnectRefused"),
        "{}",
        s.roost.log_text()
    );
    s.backends[0] = Some(Backend::start_on("b1", &addr.to_string()));
    s.wait_log(&format!("service=fp backend={addr} state=up"), 1);
}

#[test]
fn failing_health_endpoint_marks_down_although_the_port_answers() {
    // An HTTP check on a path the backend answers with 200 vs. a backend that does not speak
    // HTTP at all: a plain TCP listener that closes immediately.
    let mute = FakeBackend::start(Misbehaviour::Close).addr;
    let good = Backend::start("good");
    let addr = listen_addr();
    let roost = Roost::start(
        &config_yaml(&service_yaml("fp", addr, &[good.addr, mute], CHECKS)),
        &[addr],
    );
    wait_until(Duration::from_secs(10), "mute backend down", || {
        roost
            .log_text()
            .contains(&format!("backend={mute} state=down"))
    });
    for i in 0..50 {
        let resp = get_key(addr, &format!("k{i}")).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.backend(), "good");
    }
    assert!(!roost
        .log_text()
        .contains(&format!("backend={} state=down", good.addr)));
}

/// Busy is not dead: every probe takes 1.5 s (timeout 500 ms), but the backends answer real
/// requests at once. While they do, no backend is taken out and no key moves; once the
/// traffic stops, the probes alone take them out, which shows the probes really fail.
#[test]
fn slow_probes_do_not_take_out_a_backend_that_serves() {
    let s = site(
        "    health_check: { path: \"/slow?ms=1500\", interval: 600ms, timeout: 500ms, rise: 1, fall: 2 }\n",
    );
    let before = s.mapping();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        assert_eq!(s.mapping(), before, "a key moved while its backend served");
    }
    let log = s.roost.log_text();
    assert!(!log.contains("state=down"), "{log}");
    s.wait_log("state=down", 1);
}
