//! Request framing as the guard follows it: never panics, the verdict does not depend on how
//! the bytes were split into reads, and what it accepts a strict reference parser (the
//! conformance suite's, tests/conformance/http1.rs) splits into the same requests at the same
//! boundaries: the backend never receives a message whose boundaries differ from the ones
//! Roost parsed. The first input byte picks where to split and whether to put a chunked
//! request head in front (to reach deep into chunked bodies).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost::policy::framing::Framing;

#[path = "../../tests/conformance/http1.rs"]
#[allow(dead_code)]
mod http1;

const CHUNKED: &[u8] = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = Vec::new();
    if control & 1 == 1 {
        bytes.extend_from_slice(CHUNKED);
    }
    bytes.extend_from_slice(rest);
    let at = (control as usize >> 1) * bytes.len() / 128;

    let mut whole = Framing::default();
    let verdict = whole.feed(&bytes);
    let mut parts = Framing::default();
    let split = parts
        .feed(&bytes[..at])
        .and_then(|()| parts.feed(&bytes[at..]));
    assert_eq!(verdict.is_ok(), split.is_ok());
    assert_eq!(verdict.map_err(|r| r.reason), split.map_err(|r| r.reason));
    assert_eq!(whole.completed(), parts.completed());
    if !whole.following() {
        return; // refused by the screen, or an upgrade: not framed further
    }
    // What the guard hands on: everything, or the requests before the refused one.
    let accepted = match verdict {
        Ok(()) => bytes.len(),
        Err(r) => r.start.expect("one feed: the refused request began in it"),
    };
    let accepted = &bytes[..accepted];

    // The reference splits the accepted bytes into exactly the requests Framing counted,
    // and what is left is the start of one more: never invalid once its head is complete.
    let mut boundaries = Vec::new();
    let mut from = 0;
    loop {
        match http1::request(&accepted[from..]) {
            Ok((_, used)) => {
                from += used;
                boundaries.push(from);
            }
            Err(http1::Split::Partial) => break,
            // An unfinished head is judged whole when it ends; nothing of it goes on before.
            Err(http1::Split::Invalid(_)) if whole.in_head() => break,
            Err(http1::Split::Invalid(why)) => {
                panic!(
                    "accepted but invalid after {} requests: {why}",
                    boundaries.len()
                )
            }
        }
        if from == accepted.len() {
            break;
        }
    }
    assert_eq!(boundaries.len() as u64, whole.completed());

    // At the same boundaries: one byte short of each, the request is not yet complete.
    let mut check = Framing::default();
    let mut fed = 0;
    for (k, &end) in boundaries.iter().enumerate() {
        check.feed(&accepted[fed..end - 1]).unwrap();
        assert_eq!(check.completed(), k as u64, "request {k} ended early");
        check.feed(&accepted[end - 1..end]).unwrap();
        assert_eq!(
            check.completed(),
            k as u64 + 1,
            "request {k} did not end at {end}"
        );
        fed = end;
    }
});
