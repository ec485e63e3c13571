//! The state file reader on arbitrary bytes: it may refuse anything, but must never panic;
//! what it accepts fits the config (only its services' backends, never more than
//! `affinity.max_keys`), and a table saved again reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost::config::Config;
use roost::ops::server::build_pools;
use roost::ops::state_file::{merge_bytes, to_bytes};
use roost::service::pool::Pool;
use std::sync::Arc;
use std::time::Instant;

const MAX_KEYS: usize = 16;

fn pools() -> Vec<Arc<Pool>> {
    let yaml = format!(
        "services:\n\
         - name: fp\n    listen: 127.0.0.1:1\n    backends: [10.0.0.1:80, 10.0.0.2:80]\n    \
           affinity: {{ max_keys: {MAX_KEYS} }}\n\
         - name: emu\n    listen: 127.0.0.1:2\n    backends: [10.0.0.3:80]\n"
    )
    .replace("\n- ", "\n  - ");
    build_pools(
        &Config::from_yaml(&yaml, "fuzz.yaml").expect("the fuzz config loads"),
        &Default::default(),
    )
    .expect("the fuzz config builds")
}

/// Every (service, key, backend) in the tables, sorted.
fn entries(pools: &[Arc<Pool>]) -> Vec<(String, Vec<u8>, String)> {
    let mut all: Vec<_> = pools
        .iter()
        .flat_map(|pool| {
            pool.table()
                .export(Instant::now())
                .into_iter()
                .map(|(key, backend, _, _)| (pool.name.clone(), key, backend.to_string()))
        })
        .collect();
    all.sort();
    all
}

fuzz_target!(|data: &[u8]| {
    let loaded = pools();
    if merge_bytes(data, &loaded).is_err() {
        return;
    }
    for pool in &loaded {
        assert!(pool.table().len() <= MAX_KEYS);
        let state = pool.state();
        for (_, backend, _, _) in pool.table().export(Instant::now()) {
            assert!(
                state.identity(&backend).is_some(),
                "{backend} is not in {}",
                pool.name
            );
        }
    }
    let again = pools();
    merge_bytes(&to_bytes(&loaded), &again).expect("a saved table reads back");
    assert_eq!(entries(&again), entries(&loaded));
});
