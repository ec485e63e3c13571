//! The raw request-header scanner: never panics, and the verdict does not depend on how the
//! bytes were split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost::policy::head_scan::{HeadScan, HeadScanner};

fn scan(chunks: &[&[u8]]) -> HeadScan {
    HeadScanner::scan_reads(chunks)
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
