//! Bad input, slow clients and failing backends against the real binary: every violation
//! gets its status and a short body, nothing ambiguous reaches a backend, slow clients are
//! cut and cannot crowd out normal ones, and broken backends give clean failures.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Roost with one service `fp` in front of `backends`, with extra service keys.
fn roost(backends: &[SocketAddr], extra: &str) -> (Roost, SocketAddr) {
    let listen = listen_addr();
    let roost = Roost::start(
        &config_yaml(&service_yaml("fp", listen, backends, extra)),
        &[listen],
    );
    (roost, listen)
}

/// Send raw bytes; the status answered, or 0 when the connection closed without an answer.
fn status_of(addr: SocketAddr, bytes: &[u8]) -> u16 {
    raw(addr, bytes).map_or(0, |r| r.status)
}

#[test]
fn malformed_and_ambiguous_requests_never_reach_a_backend() {
    let backend = FakeBackend::start(Misbehaviour::Record);
    let (roost, addr) = roost(&[backend.addr], "");
    let corpus: &[(&str, &[u8])] = &[
        ("CL+TE", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE+CL", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
        ("two CLs", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        ("CL list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde"),
        ("TE gzip", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        ("bare LF", b"GET / HTTP/1.1\nHost: x\n\n"),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
        ("HTTP/0.9", b"GET /\r\n\r\n"),
        ("HTTP/2 text", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
        ("control in method", b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("unknown method", b"FOOBAR / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"),
        ("TRACE", b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("NUL in header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("machineid too long", &[b"GET / HTTP/1.1\r\nHost: x\r\nmachineid: ".as_slice(), &[b'a'; 300], b"\r\n\r\n"].concat()),
    ];
    for (name, bytes) in corpus {
        let status = status_of(addr, bytes);
        assert!(
            status == 0 || (400..=505).contains(&status) && status != 408,
            "{name}: got {status}"
        );
    }
    // An invalid chunk size is found while the body streams: the client gets 400 and the
    // bogus chunk never reaches the backend.
    let status = status_of(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400);
    let seen = backend.requests();
    assert!(
        seen.iter()
            .all(|h| !h.to_ascii_lowercase().contains("\r\nx-a:")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|h| h.starts_with("POST / HTTP/1.1")),
        "only the chunked POST may have reached the backend: {seen:?}"
    );

    // Absolute-form targets go to the configured pool, never to the named host.
    let r = raw(
        addr,
        b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\nmachineid: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "fake");
    // Roost is still up and answering.
    assert_eq!(get_key(addr, "abc").unwrap().status, 200);
    assert!(!roost.log_text().contains("panicked"));
}

#[test]
fn limits_answer_431_and_413_with_a_log_line() {
    let backend = Backend::start("b1");
    let (roost, addr) = roost(
        &[backend.addr],
        "    limits: { max_header_bytes: 4KiB, max_headers: 20, max_body: 1000 }\n",
    );
    let big = format!(
        "GET /big-header HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "v".repeat(5000)
    );
    let r = raw(addr, big.as_bytes()).unwrap();
    assert_eq!(r.status, 431);
    assert!(r.text().starts_with("roost: "), "{}", r.text());
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        addr,
        format!("GET /many HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 431);
    let r = raw(
        addr,
        b"POST /too-big HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 413);
    // A chunked body is counted as it streams.
    let mut chunked = b"POST /too-big-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"190\r\n");
        chunked.extend_from_slice(&[b'x'; 400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status_of(addr, &chunked), 413);
    // Within the limits all is well.
    let r = Client::new(addr, false)
        .request("POST", "/", "k", &[b'y'; 1000])
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "b1 received 1000 bytes\n");

    wait_until(Duration::from_secs(5), "access log lines", || {
        let log = roost.log_text();
        log.contains("\"GET /big-header\" 431") && log.contains("\"POST /too-big\" 413")
    });
}

#[test]
fn slow_headers_and_stalled_bodies_get_408() {
    let backend = Backend::start("b1");
    let (_roost, addr) = roost(
        &[backend.addr],
        "    timeouts: { client_header: 1s, client_body: 1s }\n",
    );
    // A header trickled one byte every 200 ms never completes in time.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    for b in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if start.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(start.elapsed() < Duration::from_secs(4));

    // A body that stops arriving.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");

    // A keep-alive connection idle between requests is not cut by the header clock.
    let mut c = Client::new(addr, true);
    assert_eq!(c.request("GET", "/", "k", b"").unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.request("GET", "/", "k", b"").unwrap().status, 200);

    // ... but a later request on it whose header trickles is: its clock starts at its first byte.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nmachineid: k\r\n\r\n")
        .unwrap();
    // The first answer is read before the next request starts: Pingora does not pipeline.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nb1\n") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let start = Instant::now();
    for b in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).is_err() || start.elapsed() > Duration::from_millis(1500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.contains("HTTP/1.1 408"), "{text:?}");
    assert!(start.elapsed() < Duration::from_secs(4));

    // A connection that never sends a byte is closed with 408 at the deadline too.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// The TCP states (`/proc/net/tcp`: 01 ESTABLISHED, 08 CLOSE_WAIT, ...) of the IPv4 sockets
/// connected to `backend`: Roost's side of its connections to it.
fn states_of_connections_to(backend: SocketAddr) -> Vec<u8> {
    let remote = format!(":{:04X}", backend.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields[2]
                .ends_with(&remote)
                .then(|| u8::from_str_radix(fields[3], 16).unwrap())
        })
        .collect()
}

#[test]
fn idle_upstream_connections_the_backend_closes_are_closed_and_not_reused() {
    const ESTABLISHED: u8 = 0x01;
    const CLOSE_WAIT: u8 = 0x08;
    let backend = FakeBackend::start(Misbehaviour::KeepAlive);
    let (_roost, addr) = roost(&[backend.addr], "");
    assert_eq!(get_key(addr, "k").unwrap().status, 200);
    // Roost keeps its connection to the backend for the next request
    wait_until(
        Duration::from_secs(5),
        "a pooled upstream connection",
        || states_of_connections_to(backend.addr) == [ESTABLISHED],
    );

    // The backend ends it while it is idle: Roost closes its side within about a second (its
    // pool looks at idle connections every second at most), instead of holding it in
    // CLOSE_WAIT until a request comes to find it dead.
    backend.close_connections();
    wait_until(Duration::from_secs(10), "Roost closing its side", || {
        !states_of_connections_to(backend.addr)
            .iter()
            .any(|s| [ESTABLISHED, CLOSE_WAIT].contains(s))
    });
    // and the next request goes over a new connection
    assert_eq!(get_key(addr, "k").unwrap().status, 200);
    assert_eq!(backend.connections(), 2);
}

#[test]
fn idle_keepalive_connections_close_after_the_keepalive_timeout_and_only_then() {
    let backend = Backend::start("b1");
    let (_roost, addr) = roost(&[backend.addr], "    timeouts: { keepalive: 1s }\n");
    // Idle after its answer: closed (end of stream, nothing sent) after about a second.
    let mut c = Client::new(addr, true);
    assert_eq!(c.request("GET", "/", "k", b"").unwrap().status, 200);
    let mut idle = c.connection().unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).unwrap();
    let waited = start.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );

    // A backend that thinks for longer than the keep-alive timeout: the answer comes, and the
    // connection stays open for the next request (the keep-alive clock runs between requests
    // only).
    let mut c = Client::new(addr, true);
    let r = c.request("GET", "/slow?ms=2500", "k", b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "b1\n"));
    let local = c.connection().unwrap().local_addr().unwrap();
    assert_eq!(c.request("GET", "/", "k", b"").unwrap().status, 200);
    assert_eq!(
        c.connection().unwrap().local_addr().unwrap(),
        local,
        "the connection was closed after the slow answer"
    );

    // A body that pauses for longer than the keep-alive timeout (within `client_body`).
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nmachineid: k\r\nContent-Length: 10\r\n\r\n01234")
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    s.write_all(b"56789").unwrap();
    let r = read_response(&mut std::io::BufReader::new(s)).unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "b1 received 10 bytes\n")
    );
}

#[test]
fn slowloris_cannot_crowd_out_normal_clients() {
    let backend = Backend::start("b1");
    let (roost, addr) = roost(&[backend.addr], "    timeouts: { client_header: 2s }\n");
    // 500 connections that send a header one byte at a time and never finish.
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut served = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        for s in slow.iter_mut() {
            let _ = s.write_all(b"G");
        }
        let t = Instant::now();
        let r = get_key(addr, &format!("normal-{served}")).unwrap();
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        worst < Duration::from_secs(1),
        "a normal request took {worst:?}"
    );
    // After the header timeout every slow connection has been cut.
    std::thread::sleep(Duration::from_millis(1500));
    let mut cut = 0;
    for s in slow.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = Vec::new();
        if s.read_to_end(&mut buf).is_ok() || buf.starts_with(b"HTTP/1.1 408") {
            cut += 1;
        }
    }
    assert_eq!(cut, 500, "slow connections still open");
    assert_eq!(get_key(addr, "after").unwrap().status, 200);
    assert!(!roost.log_text().contains("panicked"));
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let backend = Backend::start("b1");
    let addr = listen_addr();
    let admin = listen_addr();
    let yaml = config_yaml(&service_yaml(
        "fp",
        addr,
        &[backend.addr],
        "    limits: { max_connections: 5 }\n    timeouts: { client_header: 1s }\n",
    ))
    .replace(
        "services:\n",
        &format!("admin: {{ listen: {admin} }}\nservices:\n"),
    );
    let _roost = Roost::start(&yaml, &[addr, admin]);
    // Each held connection completes a request and stays open (keep-alive), so Roost has
    // surely counted it: a bare connect may not have been accepted yet on a busy machine,
    // and an idle one would be cut by the 1 s header deadline.
    let held: Vec<Client> = (0..5)
        .map(|i| {
            let mut c = Client::new(addr, true);
            let r = c.request("GET", "/", &format!("held-{i}"), b"").unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.header("connection"), Some("keep-alive"));
            c
        })
        .collect();
    let r = get_key(addr, "one-too-many").unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(held);
    // Until Roost has seen the closes, a new connection may still be one too many.
    let mut refused = 1;
    wait_until(
        Duration::from_secs(5),
        "a slot frees up",
        || match get_key(addr, "again") {
            Ok(r) if r.status == 200 => true,
            Ok(r) => {
                refused += usize::from(r.status == 503);
                false
            }
            Err(_) => false,
        },
    );
    // Refusals before any request are counted by reason.
    let metrics = get(admin, "/metrics", &[]).unwrap().text();
    let series = "roost_connections_refused_total{reason=\"too_many_connections\",service=\"fp\"} ";
    let line = metrics
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        line.ends_with(&format!(" {refused}")),
        "{line} (saw {refused} 503s)"
    );
    // A silent connection runs into the header deadline.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = silent.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let metrics = get(admin, "/metrics", &[]).unwrap().text();
    assert!(
        metrics
            .contains("roost_connections_refused_total{reason=\"header_timeout\",service=\"fp\"}"),
        "{metrics}"
    );
}

#[test]
fn failing_backends_give_clean_failures() {
    // Hangs: 504 after the read timeout.
    let hang = FakeBackend::start(Misbehaviour::Hang);
    let (_r1, addr) = roost(&[hang.addr], "    timeouts: { upstream_read: 1s }\n");
    let start = Instant::now();
    let r = get_key(addr, "k").unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(start.elapsed() < Duration::from_secs(5));

    // Answers garbage: 502.
    let garbage = FakeBackend::start(Misbehaviour::Garbage);
    let (_r2, addr) = roost(&[garbage.addr], "");
    let r = get_key(addr, "k").unwrap();
    assert_eq!(r.status, 502, "{}", r.text());

    // Resets mid-response: the client sees an incomplete answer, never a complete 200.
    let reset = FakeBackend::start(Misbehaviour::ResetMidBody);
    let (_r3, addr) = roost(&[reset.addr], "");
    match get_key(addr, "k") {
        Ok(r) => assert_ne!(r.status, 200, "a truncated body passed as complete"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
}

#[test]
fn a_client_that_leaves_while_the_backend_works_frees_the_backend_connection() {
    // A long job: the backend reads the request and works (never answers). The client gives up
    // and closes; Roost must notice while it waits for the answer and close its connection to
    // the backend (not hold it until the read timeout, an hour here), as NGINX does.
    let hang = FakeBackend::start(Misbehaviour::Hang);
    let (roost, addr) = roost(&[hang.addr], "    timeouts: { upstream_read: 1h }\n");
    for round in 1..=2 {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /wps?service=WPS HTTP/1.1\r\nHost: x\r\nmachineid: k\r\n\r\n")
            .unwrap();
        wait_until(
            Duration::from_secs(10),
            "the request at the backend",
            || hang.requests().len() == round,
        );
        drop(client);
        wait_until(
            Duration::from_secs(10),
            "Roost closing the backend connection",
            || hang.hung_up() == round,
        );
    }
    // Logged as the client's doing (status 0: nothing sent), not as a backend failure.
    wait_until(Duration::from_secs(10), "both requests logged", || {
        roost
            .log_text()
            .matches("\"GET /wps?service=WPS\" 0 key=k")
            .count()
            == 2
    });
}

#[test]
fn a_flapping_backend_does_not_move_other_keys() {
    let mut site = Site::start(
        "    health_check: { path: /health, interval: 200ms, timeout: 150ms, rise: 3, fall: 2 }\n",
    );
    let owners: Vec<(String, String)> = (0..60)
        .map(|i| {
            let key = format!("flap-{i}");
            let owner = get_key(site.addr, &key).unwrap().backend().to_string();
            (key, owner)
        })
        .collect();
    let flapping = site.backends[1].as_ref().unwrap().name.clone();
    let start = Instant::now();
    let mut up = true;
    let mut toggles = 0;
    let mut addr = None;
    while start.elapsed() < Duration::from_secs(6) {
        if toggles % 2 == 0 && up {
            addr = Some(site.stop(1));
            up = false;
        } else if !up {
            site.backends[1] = Some(Backend::start_on(&flapping, &addr.unwrap().to_string()));
            up = true;
        }
        toggles += 1;
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            for (key, owner) in owners.iter().filter(|(_, o)| *o != flapping) {
                let r = get_key(site.addr, key).unwrap();
                assert_eq!(r.status, 200);
                assert_eq!(r.backend(), owner, "{key} moved while {flapping} flapped");
            }
        }
    }
    // Hysteresis: flips are bounded by the thresholds, not one per check.
    let log = site.roost.log_text();
    let downs = log.matches("state=down").count();
    assert!(
        downs <= toggles,
        "{downs} down transitions for {toggles} toggles"
    );
}
