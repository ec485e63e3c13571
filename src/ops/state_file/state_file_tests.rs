//! The state file's round trips through real pools: entries, jobs and operator states come
//! back where they still apply, bad files are refused (the keeper's tests are in
//! `keeper_tests.rs`).

use super::*;
use crate::config::Config;
use crate::ops::server::build_pools;
use crate::policy::route::{Reason, Route};
use crate::policy::select::Role;

pub(super) fn pools(backends: &str) -> Vec<Arc<Pool>> {
    let yaml =
        format!("services:\n  - name: fp\n    listen: 127.0.0.1:1\n    backends: [{backends}]\n");
    build_pools(
        &Config::from_yaml(&yaml, "t.yaml").unwrap(),
        &Default::default(),
    )
    .unwrap()
}

pub(super) fn record(pool: &Pool, key: &str, backend: usize) {
    let route = Route {
        backend,
        role: Role::Owner,
        reason: Reason::Key,
        may_fail_over: true,
        moved: None,
    };
    pool.state().record(key.as_bytes(), &route, Instant::now());
}

#[test]
fn a_saved_table_comes_back_where_its_backends_remain() {
    let old = pools("10.0.0.1:80, 10.0.0.2:80, 10.0.0.3:80");
    record(&old[0], "on-1", 0);
    record(&old[0], "on-3", 2);
    let bytes = encode(&old, Instant::now(), false);
    // The new config dropped 10.0.0.3: its key is not carried over.
    let new = pools("10.0.0.2:80, 10.0.0.1:80");
    assert_eq!(merge(&bytes, &new, Instant::now()), Ok(1));
    let entry = new[0].state().table_entry(b"on-1").unwrap();
    assert_eq!(&*entry.backend, "10.0.0.1:80");
    assert!(new[0].state().table_entry(b"on-3").is_none());
    // Merging again adds nothing: the keys are known now.
    assert_eq!(merge(&bytes, &new, Instant::now()), Ok(0));
}

/// WPS jobs come back where their backend is still in the config; a running one pins its
/// key again.
#[test]
fn jobs_come_back_and_running_ones_pin_their_keys() {
    use crate::policy::wps::JobState;
    let old = pools("10.0.0.1:80, 10.0.0.2:80");
    record(&old[0], "k1", 0);
    let (a, b) = (
        0x5e4f3a2b_1c0d_4f6a_8c2d_000000000001u128,
        0x5e4f3a2b_1c0d_4f6a_8c2d_000000000002u128,
    );
    let at = |s: &str| s.parse::<SocketAddr>().unwrap();
    let now = Instant::now();
    old[0].jobs().observe(
        a,
        at("10.0.0.1:80"),
        Some(b"k1"),
        Some(JobState::Running),
        now,
    );
    old[0]
        .jobs()
        .observe(b, at("10.0.0.2:80"), None, Some(JobState::Ended), now);
    let bytes = encode(&old, now, false);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(r#""id":"5e4f3a2b-1c0d-4f6a-8c2d-000000000001","backend":"10.0.0.1:80","key":"k1","running":true"#), "{text}");

    // The new config dropped 10.0.0.2: its job is not carried over.
    let new = pools("10.0.0.1:80");
    merge(&bytes, &new, Instant::now()).unwrap();
    let jobs = new[0].jobs();
    assert_eq!(jobs.backend_of(a, Instant::now()), Some(at("10.0.0.1:80")));
    assert_eq!(jobs.backend_of(b, Instant::now()), None);
    assert_eq!(jobs.running_on(at("10.0.0.1:80")), 1);
    assert_eq!(new[0].table().pinned(), 1, "the running job pins k1 again");
}

#[test]
fn operator_states_come_back_unless_the_config_changed_them() {
    let old = pools("10.0.0.1:80, 10.0.0.2:80");
    old[0].set_state("10.0.0.2:80", BackendState::Drain);
    let bytes = encode(&old, Instant::now(), false);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(r#""backend_states":{"fp":[{"backend":"10.0.0.2:80","state":"drain","file_state":"ready"}]}"#), "{text}");
    let new = pools("10.0.0.2:80, 10.0.0.1:80");
    merge(&bytes, &new, Instant::now()).unwrap();
    let state_of = |p: &Pool, i: usize| p.state().operator_state(i);
    assert_eq!(state_of(&new[0], 0), BackendState::Drain);
    assert_eq!(state_of(&new[0], 1), BackendState::Ready);
    // A file written before operator states existed still reads.
    let plain = br#"{"version": 1, "written_unix": 0, "services": {}}"#;
    assert_eq!(merge(plain, &new, Instant::now()), Ok(0));
}

#[test]
fn garbage_and_other_versions_are_refused_with_a_reason() {
    let p = pools("10.0.0.1:80");
    for bytes in [&b""[..], b"\x00\xff garbage", b"{\"version\": 1", b"[]"] {
        assert!(merge(bytes, &p, Instant::now()).is_err(), "{bytes:?}");
    }
    let other = br#"{"version": 99, "written_unix": 0, "services": {}}"#;
    let err = merge(other, &p, Instant::now()).unwrap_err();
    assert!(err.contains("version 99"), "{err}");
}
