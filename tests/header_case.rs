//! `server.preserve_header_case` against the real binary: header names reach the backend (and
//! the backend's reach the client) with the case they were sent in when it is on, lowercase
//! or titled (the names Pingora knows) when it is off; values, duplicates and their order are
//! the same either way. Two requests on one client connection, so that the keep-alive
//! connection's later requests are read with the setting too.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The client's headers after `Host`, as sent: mixed case, a name Pingora titles
/// (`content-TYPE`), a duplicate in two spellings.
const SENT: &[(&str, &str)] = &[
    ("MachineID", "abc"),
    ("X-Custom-Header", "One, Two"),
    ("x-dup", "1"),
    ("X-DUP", "2"),
    ("content-TYPE", "text/xml"),
    ("user-AGENT", "OWSLib/0.32"),
];

/// Header lines as (name, value), in the order they came.
type Headers = Vec<(String, String)>;

/// Roost (with `server` keys `server_extra`) in front of a recording backend; two requests
/// on one connection. The header lines each request reached the backend with (after its
/// `Host`, without the forwarding headers Roost adds), and the names of each response's
/// headers as the client got them.
fn forward(server_extra: &str) -> (Vec<Headers>, Vec<Vec<String>>) {
    let backend = FakeBackend::start(Misbehaviour::Record);
    let listen = listen_addr();
    let yaml = config_yaml(&service_yaml("fp", listen, &[backend.addr], "")).replacen(
        "server:\n",
        &format!("server:\n{server_extra}"),
        1,
    );
    let roost = Roost::start(&yaml, &[listen]);

    let conn = TcpStream::connect(listen).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    let mut response_names = Vec::new();
    for i in 0..2 {
        let mut req = format!("POST /wps HTTP/1.1\r\nhost: {listen}\r\n");
        for (name, value) in SENT {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("Content-Length: 4\r\n\r\nbody");
        writer.write_all(req.as_bytes()).unwrap();
        let resp = read_response(&mut reader)
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", roost.log_text()));
        assert_eq!(resp.status, 200, "{}", roost.log_text());
        assert_eq!(resp.text(), "ok");
        response_names.push(resp.headers.into_iter().map(|(k, _)| k).collect());
    }

    let heads = backend.requests();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let received = heads
        .iter()
        .map(|head| {
            let mut lines = head.lines();
            assert_eq!(lines.next(), Some("POST /wps HTTP/1.1"), "{head}");
            lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once(':').expect("a header line");
                    (k.to_string(), v.trim().to_string())
                })
                .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("x-forwarded-"))
                .collect()
        })
        .collect();
    (received, response_names)
}

fn lowercase(headers: &[(String, String)]) -> Headers {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// What every request must reach the backend with, names aside: the same values, the
/// duplicates both there and in order, `Host` first and the body's length last.
fn assert_same_headers(received: &[(String, String)]) {
    let mut expected: Headers = SENT
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    expected.push(("content-length".into(), "4".into()));
    let got = lowercase(received);
    assert_eq!(got[0].0, "host", "{received:?}");
    assert_eq!(got[1..], expected[..], "{received:?}");
}

#[test]
fn header_names_keep_their_case_when_preserve_header_case_is_on() {
    let (received, response_names) = forward("  preserve_header_case: true\n");
    for (i, headers) in received.iter().enumerate() {
        assert_same_headers(headers);
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "host",
                "MachineID",
                "X-Custom-Header",
                "x-dup",
                "X-DUP",
                "content-TYPE",
                "user-AGENT",
                "Content-Length"
            ],
            "request {i}"
        );
    }
    for names in &response_names {
        // as the backend sent them (`X-Backend`), and Roost's own
        assert!(names.iter().any(|n| n == "X-Backend"), "{names:?}");
        assert!(names.iter().any(|n| n == "Content-Length"), "{names:?}");
    }
}

#[test]
fn header_names_are_lowercase_or_titled_by_default() {
    let (received, response_names) = forward("");
    for (i, headers) in received.iter().enumerate() {
        assert_same_headers(headers);
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Host",
                "machineid",
                "x-custom-header",
                "x-dup",
                "x-dup",
                "Content-Type",
                "user-agent",
                "Content-Length"
            ],
            "request {i}"
        );
    }
    for names in &response_names {
        assert!(names.iter().any(|n| n == "x-backend"), "{names:?}");
        assert!(names.iter().any(|n| n == "Content-Length"), "{names:?}");
    }
    // `false` said out loud is the default
    let names = |r: &[Headers]| -> Vec<Vec<String>> {
        r.iter()
            .map(|h| h.iter().map(|(k, _)| k.clone()).collect())
            .collect()
    };
    let (received_off, response_names_off) = forward("  preserve_header_case: false\n");
    assert_eq!(names(&received_off), names(&received));
    assert_eq!(response_names_off, response_names);
}

#[test]
fn preserve_header_case_must_be_a_boolean() {
    let yaml = config_yaml(&service_yaml(
        "fp",
        listen_addr(),
        &["127.0.0.1:1".parse::<SocketAddr>().unwrap()],
        "",
    ))
    .replacen(
        "server:\n",
        "server:\n  preserve_header_case: sometimes\n",
        1,
    );
    let (_dir, config, _log) = config_dir(&yaml);
    let (code, _out, err) = run_roost(&["-c", config.to_str().unwrap(), "-t"]);
    assert_ne!(code, 0);
    assert!(err.contains("server.preserve_header_case"), "{err}");
}
