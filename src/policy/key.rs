//! Affinity-key extraction: which bytes of a request decide its backend. Pure: it reads a
//! header map and returns a verdict, so every rule here is unit-tested without sockets.

use http::header::{HeaderMap, HeaderName};

/// Longest key accepted. A machineid is a short identifier (a UUID or host name); bounding it
/// keeps log lines small and hashing cheap.
pub const MAX_KEY_LEN: usize = 256;

/// What a request carries for the configured key header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    /// A usable key: hash these bytes.
    Present(&'a [u8]),
    /// No header, or only empty values. NGINX treats an empty `$http_machineid` the same way
    /// (round robin), and Roost never hashes the empty string.
    Missing,
    /// A value Roost refuses to route on; the reason is sent to the client with a 400.
    Invalid(&'static str),
}

/// Read the key from `headers`. Several header lines are accepted when they agree; lines
/// with different values are refused rather than guessing which one the client meant.
pub fn extract<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Key<'a> {
    let mut found: Option<&'a [u8]> = None;
    for value in headers.get_all(name) {
        let bytes = trim(value.as_bytes());
        if bytes.is_empty() {
            continue;
        }
        match found {
            None => found = Some(bytes),
            Some(first) if first == bytes => {}
            Some(_) => return Key::Invalid("conflicting values in repeated key headers"),
        }
    }
    found.map_or(Key::Missing, check)
}

/// The key a single header value gives (what `roost route` and `/route` are asked about).
pub fn from_value(value: &[u8]) -> Key<'_> {
    match trim(value) {
        [] => Key::Missing,
        bytes => check(bytes),
    }
}

/// The rules a non-empty, trimmed value must meet to be hashed.
fn check(bytes: &[u8]) -> Key<'_> {
    if bytes.len() > MAX_KEY_LEN {
        Key::Invalid("key header value is too long")
    } else if !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        Key::Invalid("key header value must be printable ASCII")
    } else {
        Key::Present(bytes)
    }
}

/// HTTP parsers strip leading/trailing whitespace already; do it again for values that were
/// built by code rather than parsed (and for tabs some parsers keep).
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("machineid", HeaderValue::from_bytes(v).unwrap());
        }
        map.append("other", HeaderValue::from_static("x"));
        map
    }

    fn key(values: &[&[u8]]) -> Key<'static> {
        let map = Box::leak(Box::new(headers(values)));
        extract(map, &HeaderName::from_static("machineid"))
    }

    #[test]
    fn present_and_trimmed() {
        assert_eq!(key(&[b"abc"]), Key::Present(b"abc"));
        assert_eq!(key(&[b" abc\t"]), Key::Present(b"abc"));
        assert_eq!(key(&[b"a b"]), Key::Present(b"a b"));
    }

    #[test]
    fn header_name_is_case_insensitive() {
        let mut map = HeaderMap::new();
        map.insert("MachineID", HeaderValue::from_static("k"));
        let name = HeaderName::from_bytes(b"machineid").unwrap();
        assert_eq!(extract(&map, &name), Key::Present(b"k"));
    }

    #[test]
    fn missing_and_empty_are_the_same() {
        assert_eq!(key(&[]), Key::Missing);
        assert_eq!(key(&[b""]), Key::Missing);
        assert_eq!(key(&[b"   "]), Key::Missing);
    }

    #[test]
    fn repeated_headers() {
        assert_eq!(key(&[b"abc", b"abc"]), Key::Present(b"abc"));
        assert_eq!(key(&[b"", b"abc"]), Key::Present(b"abc"));
        assert!(matches!(key(&[b"abc", b"abd"]), Key::Invalid(_)));
    }

    #[test]
    fn bounded() {
        let long = vec![b'a'; MAX_KEY_LEN];
        assert!(matches!(key(&[&long]), Key::Present(_)));
        let too_long = vec![b'a'; MAX_KEY_LEN + 1];
        assert!(matches!(key(&[&too_long]), Key::Invalid(_)));
        assert!(matches!(key(&[b"caf\xc3\xa9"]), Key::Invalid(_)));
    }

    #[test]
    fn a_single_value_follows_the_same_rules() {
        assert_eq!(from_value(b" abc "), Key::Present(b"abc"));
        assert_eq!(from_value(b"  "), Key::Missing);
        assert_eq!(
            from_value(&[b'k'; MAX_KEY_LEN + 1]),
            key(&[&[b'k'; MAX_KEY_LEN + 1]])
        );
        assert!(matches!(from_value(b"a\x01"), Key::Invalid(_)));
    }
}
