//! Every answer Roost writes itself, from the connection guard (before Pingora parses
//! anything) and from the proxy, is correctly framed: its `Content-Length` is exactly the body
//! it sends, and nothing follows the body before the connection closes. A client or front
//! proxy that reuses a connection would otherwise read the extra bytes as the next response.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Everything the server sends on a fresh connection after `bytes`, until it closes.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

/// Check the framing of one whole answer; returns its status.
fn framed(case: &str, answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{case}: no complete head in {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{case}: status line in {text:?}"));
    let declared: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{case}: no Content-Length in {head:?}"));
    assert_eq!(
        declared,
        body.len(),
        "{case}: Content-Length {declared} but {} body bytes: {text:?}",
        body.len()
    );
    assert!(
        head.to_ascii_lowercase().contains("\r\nconnection: close"),
        "{case}: a refusal closes the connection: {head:?}"
    );
    assert!(body.starts_with("roost: "), "{case}: {body:?}");
    status
}

#[test]
fn every_refusal_is_correctly_framed() {
    let backend = Backend::start("b1");
    let (fp, dead) = (listen_addr(), listen_addr());
    let closed = listen_addr(); // nothing listens there
    let services = service_yaml(
        "fp",
        fp,
        &[backend.addr],
        "    limits: { max_connections: 2, max_headers: 8, max_body: 1000 }\n    timeouts: { client_header: 1s }\n",
    ) + &service_yaml("dead", dead, &[closed], "    when_down: reject\n");
    let _roost = Roost::start(&config_yaml(&services), &[fp, dead]);

    let many_headers: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_key = "k".repeat(300);
    let cases: Vec<(&str, SocketAddr, Vec<u8>, u16)> = vec![
        // The guard's answers.
        ("bare LF", fp, b"GET / HTTP/1.1\nHost: x\n\n".to_vec(), 400),
        (
            "CL with TE",
            fp,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        ("header timeout", fp, b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(), 408),
        // The proxy's answers.
        ("TRACE", fp, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        (
            "too many headers",
            fp,
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
        (
            "body too large",
            fp,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            413,
        ),
        (
            "gzip coding",
            fp,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            501,
        ),
        (
            "key too long",
            fp,
            format!("GET / HTTP/1.1\r\nHost: x\r\nmachineid: {long_key}\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "owner down (reject)",
            dead,
            b"GET / HTTP/1.1\r\nHost: x\r\nmachineid: abc\r\n\r\n".to_vec(),
            503,
        ),
    ];
    for (case, addr, bytes, want) in &cases {
        let status = framed(case, &exchange(*addr, bytes));
        assert_eq!(status, *want, "{case}");
    }

    // Too many connections: two held connections (each has completed a request, so Roost has
    // surely counted it), then a third is turned away by the guard.
    // The connections of the cases above may still be counted for a moment.
    let held: Vec<Client> = (0..2)
        .map(|i| {
            let mut c = Client::new(fp, true);
            wait_until(Duration::from_secs(10), "a connection slot", || {
                c.request("GET", "/", &format!("held-{i}"), b"")
                    .is_ok_and(|r| r.status == 200)
            });
            c
        })
        .collect();
    let answer = exchange(fp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(framed("too many connections", &answer), 503);
    drop(held);
}
