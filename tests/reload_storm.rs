//! A reload never serves a request under a mix of two configs. SIGHUP every 100 ms flips the
//! file between two configs that differ in backends and limits while 4 clients send requests,
//! some of them slow enough to straddle a reload. The debug build of Roost reports, in a
//! response header, the config version every phase of the request used; each request must
//! show one version, and what it got (its backend, its 413) must belong to that version.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Config A: b1 and b2, bodies up to 1000 bytes. Config B: b2 and b3, up to 4000.
fn config(listen: SocketAddr, a: bool, addrs: &[SocketAddr]) -> String {
    let (backends, max_body) = if a {
        (&addrs[0..2], 1000)
    } else {
        (&addrs[1..3], 4000)
    };
    config_yaml(&service_yaml(
        "fp",
        listen,
        backends,
        &format!("    limits: {{ max_body: {max_body} }}\n"),
    ))
}

/// What one request showed: the versions its phases used, and which config it proves.
struct Seen {
    versions: Vec<u64>,
    /// `Some(true)`: only config A explains it (b1, or a 413 for 2000 bytes); `Some(false)`:
    /// only B (b3, or 2000 bytes accepted); `None`: either (b2 without a body).
    config_a: Option<bool>,
    /// Answered by a backend (not refused by Roost).
    forwarded: bool,
    phases: String,
}

fn versions(header: &str) -> Vec<u64> {
    header
        .split_whitespace()
        .filter_map(|p| p.split_once('=')?.1.parse().ok())
        .collect()
}

fn one_request(addr: SocketAddr, i: usize) -> Option<Seen> {
    let key = format!("k{i}");
    let (path, body) = match i % 4 {
        0 => ("/".to_string(), 2000),
        1 => (format!("/slow?ms={}", 60 + (i % 5) * 20), 0),
        _ => ("/".to_string(), 0),
    };
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nmachineid: {key}\r\nConnection: close\r\nContent-Length: {body}\r\n\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b'x', body));
    let r = raw(addr, &req).ok()?;
    let header = r.header("x-roost-debug-config")?.to_string();
    let config_a = match (r.status, r.backend()) {
        (413, _) => Some(true),
        (200, "b1") => Some(true),
        (200, "b3") => Some(false),
        (200, "b2") if body > 1000 => Some(false),
        (200, "b2") => None,
        (status, backend) => panic!("{key}: {status} from {backend:?}: {}", r.text()),
    };
    Some(Seen {
        versions: versions(&header),
        config_a,
        forwarded: r.status == 200,
        phases: header,
    })
}

#[test]
fn reload_storm_serves_each_request_under_one_config() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let listen = listen_addr();
    let roost = Roost::start(&config(listen, true, &addrs), &[listen]);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) && i < 100_000 {
                    if let Some(s) = one_request(listen, i) {
                        seen.lock().unwrap().push(s);
                    }
                    i += 4;
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut a = true;
    let mut reloads = 0;
    while start.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(100));
        a = !a;
        std::fs::write(
            &roost.config,
            config(listen, a, &addrs).replace("{dir}", &roost.dir.path().display().to_string()),
        )
        .unwrap();
        roost.proc.signal("HUP");
        reloads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    let mut proof: HashMap<u64, bool> = HashMap::new();
    for s in seen.iter() {
        let first = s.versions[0];
        // A forwarded request passes filter, peer, upstream_request, upstream_response and
        // response; a refusal at least the filter.
        assert!(
            s.versions.iter().all(|v| *v == first),
            "a request mixed config versions: {}",
            s.phases
        );
        if s.forwarded {
            assert!(s.versions.len() >= 5, "phases missing: {}", s.phases);
        }
        if let Some(is_a) = s.config_a {
            let earlier = *proof.entry(first).or_insert(is_a);
            assert_eq!(
                earlier, is_a,
                "version {first} served requests of both configs ({})",
                s.phases
            );
        }
    }
    let distinct = proof.len();
    let log = roost.log_text();
    assert!(
        distinct >= 5,
        "only {distinct} versions proven over {} requests and {reloads} reloads:\n{log}",
        seen.len()
    );
    assert!(proof.values().any(|a| *a) && proof.values().any(|a| !*a));
    // The reloader kept up: every version Roost reports was logged as applied.
    let highest = proof.keys().max().copied().unwrap_or(1);
    assert!(
        log.contains(&format!("(config version {highest})")) || highest == 1,
        "{log}"
    );
}
