//! The raw request-header scanner: never panics, and the verdict does not depend on how the
//! bytes were split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost::policy::head_scan::{HeadScan, HeadScanner};

fn scan(chunks: &[&[u8]]) -> HeadScan {
    let mut s = HeadScanner::default();
    let mut offset = 0;
    for c in chunks {
        match s.feed(c) {
            HeadScan::More => offset += c.len(),
            HeadScan::Complete(n) => return HeadScan::Complete(offset + n),
            reject => return reject,
        }
    }
    HeadScan::More
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let whole = scan(&[rest]);
    let parts = scan(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, parts);
});
