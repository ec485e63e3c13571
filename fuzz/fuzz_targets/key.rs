//! Key extraction on arbitrary header values: never panics, and an accepted key is bounded
//! and printable (it ends up in logs).
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use roost::policy::key::{extract, Key, MAX_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let name = HeaderName::from_static("machineid");
    let mut headers = HeaderMap::new();
    // A NUL separates repeated headers.
    for part in data.split(|b| *b == 0) {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(name.clone(), v);
        }
    }
    if let Key::Present(k) = extract(&headers, &name) {
        assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
        assert!(k.iter().all(|b| (0x21..0x7f).contains(b) || *b == b' '));
    }
});
