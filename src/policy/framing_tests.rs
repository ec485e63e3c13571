//! Unit tests of [`super`]: framing followed across splits, strict chunked coding, heads.

use super::*;

const CHUNKED: &[u8] = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";

fn body(chunks: &[u8]) -> Result<u64, Refused> {
    let mut f = Framing::default();
    f.feed(CHUNKED)?;
    f.feed(chunks)?;
    Ok(f.completed())
}

#[test]
fn follows_pipelined_requests_in_any_split() {
    let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n\
        GET /d HTTP/1.0\r\n\r\n";
    for split in 1..stream.len() {
        let mut f = Framing::default();
        f.feed(&stream[..split]).unwrap();
        f.feed(&stream[split..]).unwrap();
        assert_eq!(f.completed(), 4, "split at {split}");
        assert!(!f.in_head());
    }
    let mut f = Framing::default();
    for b in stream {
        f.feed(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(f.completed(), 4);
}

#[test]
fn strict_chunked_framing() {
    assert_eq!(body(b"5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n"), Ok(1));
    assert_eq!(body(b"5 ;ext\r\nhello\r\n0\r\n\r\n"), Ok(1));
    for bad in [
        &b"\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhello\r\n\r\n0\r\n\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\n0\n\n",
        b"0_2e\r\n\r\n",
        b"-0x0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"Z\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"1\r0\r\nx\r\n0\r\n\r\n",
        b"10000000000000001\r\nx\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",
        b"0\r\nX-T 1\r\n\r\n",
        b"0\r\n folded\r\n\r\n",
        b"0\r\n\r\r",
    ] {
        let r = body(bad);
        assert!(
            matches!(r, Err(Refused { in_body: true, .. })),
            "{:?}: {r:?}",
            bad.escape_ascii().to_string()
        );
    }
}

#[test]
fn chunked_bodies_over_the_limit_get_413() {
    let mut f = Framing::new(10);
    f.feed(CHUNKED).unwrap();
    f.feed(b"5\r\nhello\r\n5\r\nworld\r\n").unwrap();
    assert_eq!(f.feed(b"1\r\n").unwrap_err().status, 413);
    let mut f = Framing::new(10);
    f.feed(CHUNKED).unwrap();
    f.feed(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
    f.feed(CHUNKED).unwrap();
    f.feed(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
    assert_eq!(f.completed(), 2);
}

#[test]
fn refusal_says_where_the_request_began() {
    let mut f = Framing::default();
    let two = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET ! HTTP/1.1\r\nHost: h\r\n\r\n";
    let r = f.feed(two).unwrap_err();
    assert_eq!(r.start, Some(28));
    assert_eq!(f.completed(), 1);
    let mut f = Framing::default();
    f.feed(CHUNKED).unwrap();
    assert_eq!(f.feed(b"Z\r\n").unwrap_err().start, None);
}

#[test]
fn heads_are_checked_whole() {
    let refused = |head: &[u8]| Framing::default().feed(head).unwrap_err().reason;
    assert_eq!(
        refused(b"GET /h HTTP/1.1\r\nConnection: close\r\n\r\n"),
        "HTTP/1.1 request without Host"
    );
    assert_eq!(
        refused(b"GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        "more than one Host header"
    );
    assert_eq!(
        refused(b"OPTIONS  /wps HTTP/1.1\r\nHost: h\r\n\r\n"),
        "malformed request head"
    );
    assert!(refused(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n").contains("ASCII"));
    assert!(refused(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n").contains("OPTIONS"));
    let mut ok = Framing::default();
    ok.feed(b"GET /h HTTP/1.0\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(ok.completed(), 2);
}

#[test]
fn stops_following_upgrades_and_refused_framings() {
    let mut f = Framing::default();
    f.feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x00\xff",
    )
    .unwrap();
    let mut f = Framing::default();
    f.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nZZZ")
        .unwrap();
}
