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

fn mapping(addr: SocketAddr, keys: &[String]) -> HashMap<String, String> {
    keys.iter()
        .map(|key| {
            let resp = get_key(addr, key).unwrap();
            assert_eq!(resp.status, 200, "{key}: {}", resp.text());
            (key.clone(), resp.backend().to_string())
        })
        .collect()
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn metric(admin: SocketAddr, series: &str) -> u64 {
    let text = get(admin, "/metrics", &[]).unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn yaml(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr], extra: &str) -> String {
    config_yaml(&service_yaml("fp", listen, backends, extra)).replace(
        "services:\n",
        &format!("admin: {{ listen: {admin} }}\nservices:\n"),
    )
}

#[test]
fn adding_a_backend_moves_no_recorded_key_and_new_keys_spread() {
    let backends: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (listen, admin) = (listen_addr(), listen_addr());
    let roost = Roost::start(&yaml(listen, admin, &addrs[..3], ""), &[listen, admin]);
    let active = keys("active", 300);
    let before = mapping(listen, &active);

    std::fs::write(
        &roost.config,
        yaml(listen, admin, &addrs, "").replace("{dir}", &roost.dir.path().display().to_string()),
    )
    .unwrap();
    roost.proc.signal("HUP");
    wait_until(Duration::from_secs(10), "the reload", || {
        roost
            .log_text()
            .contains(&format!("backend {} added", addrs[3]))
    });
    assert_eq!(mapping(listen, &active), before, "a recorded key moved");

    // New keys follow the new ring: each backend gets a fair share.
    let fresh = keys("fresh", 1000);
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
    assert_eq!(metric(admin, "roost_affinity_keys{service=\"fp\"}"), 1300);
    assert_eq!(
        metric(
            admin,
            "roost_affinity_moves_total{reason=\"owner_down\",service=\"fp\"}"
        ) + metric(
            admin,
            "roost_affinity_moves_total{reason=\"removed\",service=\"fp\"}"
        ),
        0
    );
    // /route says where a recorded key is and why.
    let route = get(admin, &format!("/route?service=fp&key={}", active[0]), &[])
        .unwrap()
        .text();
    assert!(route.contains("\"in_table\": true"), "{route}");
    assert!(route.contains("\"reason\": \"table\""), "{route}");
}

#[test]
fn a_failed_over_key_stays_where_it_went_without_return_after_recovery() {
    let mut backends: Vec<Option<Backend>> = (1..=3)
        .map(|i| Some(Backend::start(&format!("b{i}"))))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().flatten().map(|b| b.addr).collect();
    let (listen, admin) = (listen_addr(), listen_addr());
    let extra = format!("{CHECKS}    affinity: {{ return_after_recovery: false }}\n");
    let roost = Roost::start(&yaml(listen, admin, &addrs, &extra), &[listen, admin]);
    let all = keys("k", 150);
    let before = mapping(listen, &all);
    let on_b2: Vec<&String> = before
        .iter()
        .filter(|(_, b)| *b == "b2")
        .map(|(k, _)| k)
        .collect();
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
    let moves = metric(
        admin,
        "roost_affinity_moves_total{reason=\"owner_down\",service=\"fp\"}",
    );
    assert_eq!(moves as usize, on_b2.len(), "each of b2's keys moved once");

    backends[1] = Some(Backend::start_on("b2", &b2.to_string()));
    wait_until(Duration::from_secs(15), "b2 up", || {
        roost.log_text().contains(&format!("backend={b2} state=up"))
    });
    // Recovered, but the keys stay where their new files are; no further move.
    assert_eq!(mapping(listen, &all), during);
    assert_eq!(
        metric(
            admin,
            "roost_affinity_moves_total{reason=\"owner_down\",service=\"fp\"}"
        ),
        moves
    );
}
