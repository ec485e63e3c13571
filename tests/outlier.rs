//! Passive health from real traffic and panic mode, through the real binary: a backend that
//! refuses connections, closes them unanswered or answers 503s is taken out by `fall` failed
//! real requests (long before its probes would notice; 500s never count), its keys fail over
//! and the moves are counted, and it comes back by its probes or, with no check, by a trial; when every probe times out and every backend is
//! marked down, panic mode serves every request instead of answering 503, and says so.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

const KEYS: usize = 150;

struct Outlier {
    site: Site,
    admin: Admin,
}

/// Three demo backends behind `fp` with `extra` service keys, and an admin listener.
fn start(extra: &str) -> Outlier {
    let (site, admin) = Site::with_admin(extra, "", None);
    Outlier { site, admin }
}

impl Outlier {
    /// Where each of the test's keys is answered (every answer a 200).
    fn mapping(&self) -> HashMap<String, String> {
        mapping(self.site.addr, &keys("k", KEYS))
    }

    fn log(&self) -> String {
        self.site.roost.log_text()
    }

    fn wait_log(&self, needle: &str) {
        wait_until(Duration::from_secs(20), needle, || {
            self.log().contains(needle)
        });
    }
}

/// A stopped backend is taken out by its third failed real request (`fall: 3`), although
/// its probes run only once a minute; every request is still answered (the connect retry),
/// its keys fail over and each move is counted once, no connection is tried to it any more,
/// and nobody else's key moves.
#[test]
fn refused_connections_take_a_backend_out_within_fall_requests() {
    let o =
        start("    health_check: { path: /health, interval: 1m, timeout: 1s, rise: 1, fall: 3 }\n");
    let before = o.mapping();
    let on_b2 = keys_on(&before, "b2");
    assert!(on_b2.len() >= 10, "b2 holds only {} keys", on_b2.len());
    let b2 = o.site.backends[1].as_ref().unwrap().addr;
    let mut o = o;
    o.site.stop(1);

    let down = format!("backend={b2} state=down");
    for (n, key) in on_b2.iter().take(3).enumerate() {
        assert!(!o.log().contains(&down), "down after {n} failed requests");
        let resp = get_key(o.site.addr, key).unwrap();
        assert_eq!(resp.status, 200, "{key}: {}", resp.text());
        assert_ne!(resp.backend(), "b2");
    }
    o.wait_log(&down);
    let log = o.log();
    let line = log.lines().find(|l| l.contains(&down)).unwrap();
    assert!(
        line.contains("after 3 failed real requests in a row, real traffic"),
        "{line}"
    );
    let backend = o.admin.status()["services"][0]["backends"][1].clone();
    assert_eq!(backend["healthy"], false, "{backend}");
    assert_eq!(backend["ejected"], true, "{backend}");
    let connects =
        format!("roost_upstream_connect_failures_total{{backend=\"{b2}\",service=\"fp\"}}");
    assert_eq!(o.admin.metric(&connects), 3.0);

    let after = o.mapping();
    for (key, b) in &before {
        if b == "b2" {
            assert_ne!(after[key], "b2", "{key}");
        } else {
            assert_eq!(&after[key], b, "{key} moved although {b} is up");
        }
    }
    // Out: its keys go straight to their stand-ins, without trying it first.
    assert_eq!(o.admin.metric(&connects), 3.0);
    let moves = "roost_affinity_moves_total{reason=\"owner_down\",service=\"fp\"}";
    assert_eq!(
        o.admin.metric(moves) as usize,
        on_b2.len(),
        "each of b2's keys moved once"
    );
    let transition =
        format!("roost_health_transitions_total{{backend=\"{b2}\",service=\"fp\",to=\"down\"}}");
    assert_eq!(o.admin.metric(&transition), 1.0);
    let ejections = format!("roost_outlier_ejections_total{{backend=\"{b2}\",service=\"fp\"}}");
    assert_eq!(o.admin.metric(&ejections), 1.0);
    assert!(
        !log.contains("failed checks"),
        "the probes took part:\n{log}"
    );
    assert_eq!(o.admin.status()["services"][0]["panic"], false);
}

/// Back by the probes: a backend real traffic took out returns after `rise` good checks, and
/// its keys with it.
#[test]
fn a_backend_out_for_real_traffic_returns_by_its_probes() {
    let mut o = start(
        "    health_check: { path: /health, interval: 300ms, timeout: 250ms, rise: 2, fall: 3 }\n",
    );
    let before = o.mapping();
    let on_b1 = keys_on(&before, "b1");
    let b1 = o.site.stop(0);
    for key in on_b1.iter().take(3) {
        assert_eq!(get_key(o.site.addr, key).unwrap().status, 200);
    }
    o.wait_log(&format!("backend={b1} state=down"));
    assert!(o.log().contains("real traffic"), "{}", o.log());
    o.site.backends[0] = Some(Backend::start_on("b1", &b1.to_string()));
    o.wait_log(&format!(
        "backend={b1} state=up (after 2 good checks; it was out for failed real requests)"
    ));
    assert_eq!(o.mapping(), before, "keys did not come back to b1");
    // Down once, by real traffic only: its failing probes while it was out did not count.
    assert_eq!(o.log().matches("state=down").count(), 1, "{}", o.log());
}

/// No health check: real traffic takes a refusing backend out all the same, and after a
/// pause (5 s) it is let back on trial; the backend is up again, so its keys return.
#[test]
fn without_checks_a_backend_out_for_real_traffic_gets_a_trial() {
    let mut o = start("");
    let before = o.mapping();
    let on_b3 = keys_on(&before, "b3");
    let b3 = o.site.stop(2);
    for key in on_b3.iter().take(3) {
        assert_eq!(get_key(o.site.addr, key).unwrap().status, 200);
    }
    o.wait_log(&format!("backend={b3} state=down"));
    assert!(o
        .log()
        .contains("no health check: a trial request after a pause"));
    o.site.backends[2] = Some(Backend::start_on("b3", &b3.to_string()));
    o.wait_log(&format!("backend={b3} state=up (trial after 5s out"));
    assert_eq!(o.mapping(), before, "keys did not come back to b3");
}

/// Every probe times out (1.5 s answers, 500 ms timeout) and no request has come yet, so
/// every backend is marked down: panic mode. /status and /metrics say so, and every request
/// is served by its backend (0 × 503). Once the backends answer real traffic, their slow
/// probes are excused (busy is not dead), they come back and panic mode ends, counted.
#[test]
fn every_probe_timing_out_puts_the_service_in_panic_mode_which_serves_everyone() {
    let o = start(
        "    health_check: { path: \"/slow?ms=1500\", interval: 600ms, timeout: 500ms, rise: 1, fall: 2 }\n",
    );
    let addrs: Vec<SocketAddr> = o.site.running().map(|b| b.addr).collect();
    for a in &addrs {
        o.wait_log(&format!("backend={a} state=down"));
    }
    o.wait_log("panic: service=fp entering panic mode: 0 of 3 backends usable");
    let status = o.admin.status();
    assert_eq!(status["services"][0]["panic"], true, "{status}");
    assert_eq!(o.admin.metric("roost_panic_mode{service=\"fp\"}"), 1.0);
    let route = o.admin.get("/route?service=fp&key=k1").text();
    assert!(route.contains("\"panic\": true"), "{route}");

    let mut served: HashMap<String, usize> = HashMap::new();
    for i in 0..KEYS {
        for resp in [
            get_key(o.site.addr, &format!("k{i}")).unwrap(),
            get(o.site.addr, "/", &[]).unwrap(),
        ] {
            assert_eq!(resp.status, 200, "{}", resp.text());
            *served.entry(resp.backend().to_string()).or_default() += 1;
        }
    }
    assert_eq!(served.len(), 3, "{served:?}");
    let refused = o
        .admin
        .metric("roost_requests_total{backend=\"none\",class=\"5xx\",service=\"fp\"}");
    assert_eq!(refused, 0.0);

    // Serving, they are busy rather than dead: the next probes are excused and bring them back.
    o.wait_log("panic: service=fp leaving panic mode");
    assert_eq!(o.admin.status()["services"][0]["panic"], false);
    assert_eq!(o.admin.metric("roost_panic_mode{service=\"fp\"}"), 0.0);
    assert!(o.admin.metric("roost_panic_seconds_total{service=\"fp\"}") > 0.0);
}

/// Answers count too: 500s (a WPS reporting a failed process) never take a backend out, and
/// a good answer ends a streak; `fall` 503s in a row do, logged with the status, and the key
/// then goes elsewhere.
#[test]
fn gateway_errors_in_a_row_take_a_backend_out_but_500s_do_not() {
    let o =
        start("    health_check: { path: /health, interval: 1m, timeout: 1s, rise: 1, fall: 3 }\n");
    let before = o.mapping();
    let key = keys_on(&before, "b2")[0].clone();
    let b2 = o.site.backends[1].as_ref().unwrap().addr;
    let answer = |path: &str| {
        let resp = get(o.site.addr, path, &[("machineid", &key)]).unwrap();
        (resp.status, resp.backend().to_string())
    };
    for _ in 0..10 {
        assert_eq!(answer("/status/500"), (500, "b2".to_string()));
    }
    for _ in 0..3 {
        assert_eq!(answer("/status/503"), (503, "b2".to_string()));
        assert_eq!(answer("/status/503"), (503, "b2".to_string()));
        assert_eq!(answer("/"), (200, "b2".to_string()));
    }
    let down = format!("backend={b2} state=down");
    assert!(!o.log().contains(&down), "{}", o.log());
    for _ in 0..3 {
        assert_eq!(answer("/status/503"), (503, "b2".to_string()));
    }
    o.wait_log(&down);
    let log = o.log();
    let line = log.lines().find(|l| l.contains(&down)).unwrap();
    assert!(line.contains("last: answered 503"), "{line}");
    let (status, backend) = answer("/");
    assert_eq!(status, 200);
    assert_ne!(backend, "b2");
}

/// A backend that accepts connections and closes them before answering: each such request
/// fails (502), but only `fall` of them: then it is out and every request is served.
#[test]
fn connections_closed_before_an_answer_take_a_backend_out() {
    let mute = FakeBackend::start(Misbehaviour::Close).addr;
    let good = Backend::start("good");
    let (addr, admin) = (listen_addr(), Admin::new(None));
    let yaml = top_level(
        &config_yaml(&service_yaml("fp", addr, &[good.addr, mute], "")),
        &admin.yaml(),
    );
    let roost = Roost::start(&yaml, &[addr, admin.addr]);
    let mut failed = 0;
    for _ in 0..40 {
        let resp = get(addr, "/", &[]).unwrap();
        match resp.status {
            200 => assert_eq!(resp.backend(), "good"),
            502 => failed += 1,
            other => panic!("{other}: {}", resp.text()),
        }
    }
    // The pause before its trial is 5 s: far longer than these 40 requests take.
    assert_eq!(failed, 3, "{}", roost.log_text());
    assert!(roost.log_text().contains(&format!(
        "backend={mute} state=down (after 3 failed real requests"
    )));
}
