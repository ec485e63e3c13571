//! Affinity keys for a test and where they land: [`keys`] names them, [`mapping`] sends one
//! request for each and records the backend that answered, [`keys_on`] picks one backend's.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::http::get_key;

/// `n` keys: `prefix` followed by 0, 1, … (`keys("k-", 2)` is `k-0`, `k-1`).
pub fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The backend (its `X-Backend` name) that answers each of `keys` through `addr`; every
/// answer must be a 200.
pub fn mapping(addr: SocketAddr, keys: &[String]) -> HashMap<String, String> {
    keys.iter()
        .map(|key| {
            let resp = get_key(addr, key).unwrap();
            assert_eq!(resp.status, 200, "{key}: {}", resp.text());
            (key.clone(), resp.backend().to_string())
        })
        .collect()
}

/// The keys of `mapping` that `backend` answers, sorted.
pub fn keys_on(mapping: &HashMap<String, String>, backend: &str) -> Vec<String> {
    let mut keys: Vec<String> = mapping
        .iter()
        .filter(|(_, b)| *b == backend)
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys
}
