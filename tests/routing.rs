//! Routing through the real binary: stickiness, spreading, the missing-key policies, headers,
//! bodies, and malformed requests.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::io::Write;

fn site(extra: &str) -> Site {
    Site::start(extra)
}

#[test]
fn every_request_of_a_key_lands_on_one_backend() {
    let s = site("");
    let mut owner: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for i in 0..300 {
            let key = format!("machine-{i}");
            let resp = get_key(s.addr, &key).unwrap();
            assert_eq!(resp.status, 200, "{key}: {}", resp.text());
            let backend = resp.backend().to_string();
            assert_eq!(resp.text().trim(), backend, "body and header disagree");
            let first = owner.entry(key.clone()).or_insert_with(|| backend.clone());
            assert_eq!(*first, backend, "{key} moved in round {round}");
        }
    }
    // Keys spread over every backend.
    let mut per_backend: HashMap<&str, usize> = HashMap::new();
    for b in owner.values() {
        *per_backend.entry(b).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    assert!(per_backend.values().all(|&n| n >= 50), "{per_backend:?}");

    // The offline lookup agrees with where requests landed.
    let by_addr: HashMap<String, &str> = s
        .running()
        .map(|b| (b.addr.to_string(), b.name.as_str()))
        .collect();
    let config = s.roost.config.display().to_string();
    for i in 0..20 {
        let key = format!("machine-{i}");
        let (code, out, err) = run_roost(&["route", "-c", &config, "fp", &key]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(by_addr[out.trim()], owner[&key], "{key}");
    }
}

#[test]
fn keyless_requests_rotate_over_all_backends() {
    let s = site("");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let resp = get(s.addr, "/", &[]).unwrap();
        assert_eq!(resp.status, 200);
        *counts.entry(resp.backend().to_string()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 10), "{counts:?}");
    // An empty machineid is no key at all: it rotates too.
    let seen: HashSet<String> = (0..6)
        .map(|_| {
            get(s.addr, "/", &[("machineid", "")])
                .unwrap()
                .backend()
                .to_string()
        })
        .collect();
    assert_eq!(seen.len(), 3);
}

#[test]
fn missing_key_reject_answers_400() {
    let s = site("    hash: { header: machineid, missing: reject }\n");
    let resp = get(s.addr, "/wps?service=WPS&request=GetCapabilities", &[]).unwrap();
    assert_eq!(resp.status, 400);
    assert!(
        resp.text().contains("missing machineid header"),
        "{}",
        resp.text()
    );
    assert!(resp.text().contains("'fp'"));
    assert_eq!(get_key(s.addr, "abc").unwrap().status, 200);
}

#[test]
fn missing_key_client_ip_is_sticky() {
    let s = site("    hash: { missing: client_ip }\n");
    let first = get(s.addr, "/", &[]).unwrap().backend().to_string();
    for _ in 0..20 {
        assert_eq!(get(s.addr, "/", &[]).unwrap().backend(), first);
    }
}

#[test]
fn custom_header_name() {
    let s = site("    hash: { header: X-Session }\n");
    let first = get(s.addr, "/", &[("x-session", "s1")])
        .unwrap()
        .backend()
        .to_string();
    for _ in 0..10 {
        assert_eq!(
            get(s.addr, "/", &[("X-Session", "s1")]).unwrap().backend(),
            first
        );
    }
}

#[test]
fn conflicting_or_oversized_keys_are_refused() {
    let s = site("");
    let resp = get(s.addr, "/", &[("machineid", "a"), ("machineid", "b")]).unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("conflicting"), "{}", resp.text());
    let long = "k".repeat(300);
    assert_eq!(get_key(s.addr, &long).unwrap().status, 400);
    // Same value twice is fine.
    let resp = get(s.addr, "/", &[("machineid", "a"), ("machineid", "a")]).unwrap();
    assert_eq!(resp.status, 200);
}

#[test]
fn forwarding_headers_reach_the_backend() {
    let s = site("");
    let resp = get(
        s.addr,
        "/echo",
        &[
            ("machineid", "abc"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
        ],
    )
    .unwrap();
    // Names in any case: `server.preserve_header_case` decides theirs (tests/header_case.rs).
    let echo = resp.text();
    let values = |name: &str| -> Vec<&str> {
        echo.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(
        values("x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"],
        "{echo}"
    );
    assert_eq!(values("x-forwarded-proto"), ["http"], "{echo}");
    let host = s.addr.to_string();
    assert_eq!(values("x-forwarded-host"), [host.as_str()], "{echo}");
    assert_eq!(values("machineid"), ["abc"], "{echo}");
}

#[test]
fn http10_request_without_host_gets_one() {
    let s = site("");
    let resp = raw(s.addr, b"GET /echo HTTP/1.0\r\nmachineid: abc\r\n\r\n").unwrap();
    assert_eq!(resp.status, 200);
    let owner = get(s.addr, "/", &[("machineid", "abc")]).unwrap();
    let backend = s.running().find(|b| b.name == owner.backend()).unwrap();
    let echo = resp.text();
    assert!(
        echo.contains(&format!("Host: {}\r\n", backend.addr)),
        "{echo}"
    );
}

#[test]
fn large_bodies_stream_both_ways() {
    let s = site("");
    // A 48 MiB Execute-sized POST with Content-Length.
    let size = 48 << 20;
    let mut req = format!(
        "POST /wps HTTP/1.1\r\nHost: x\r\nmachineid: big\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'a', size));
    let resp = raw(s.addr, &req).unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.text().ends_with(&format!("received {size} bytes\n")),
        "{}",
        resp.text()
    );

    // A chunked upload.
    let mut stream = std::net::TcpStream::connect(s.addr).unwrap();
    stream
        .write_all(b"POST /wps HTTP/1.1\r\nHost: x\r\nmachineid: big\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .unwrap();
    let chunk = vec![b'b'; 1 << 20];
    for _ in 0..8 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let resp = read_response(&mut std::io::BufReader::new(stream)).unwrap();
    assert!(
        resp.text()
            .ends_with(&format!("received {} bytes\n", 8 << 20)),
        "{}",
        resp.text()
    );

    // A 64 MiB download.
    let n = 64 << 20;
    let resp = get(s.addr, &format!("/bytes?n={n}"), &[("machineid", "big")]).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), n);
}

#[test]
fn malformed_requests_get_4xx_and_the_proxy_stays_up() {
    let s = site("");
    let bad: [&[u8]; 5] = [
        b"HELLO\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ];
    for req in bad {
        // Closing without an answer is also a refusal; what matters is what follows.
        if let Ok(resp) = raw(s.addr, req) {
            assert!(
                (400..500).contains(&resp.status),
                "{:?} got {}",
                String::from_utf8_lossy(req),
                resp.status
            );
        }
    }
    assert_eq!(get_key(s.addr, "abc").unwrap().status, 200);
    assert!(!s.roost.log_text().contains("panicked"));
}
