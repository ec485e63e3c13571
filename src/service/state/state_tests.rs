//! The NGINX parity pins and the ring rules, on the state a pool builds.

//! The NGINX parity pins. Expected backends were recorded from a real NGINX 1.22 run
//! (`hash $http_machineid consistent;`, backends on 127.0.0.11-13:8093); Roost must keep
//! choosing exactly these so a site can swap NGINX for Roost without moving a single job.

use super::*;
use crate::config::{BackendConfig, HashPolicy, MissingKey, WhenDown};
use crate::policy::route::Pick;
use crate::policy::select::{Decision, Role};
use crate::service::pool::Pool;
use std::net::IpAddr;

const KEYS: [&str; 20] = [
    "machine-0",
    "machine-1",
    "machine-2",
    "machine-3",
    "machine-4",
    "machine-5",
    "machine-6",
    "machine-7",
    "machine-8",
    "machine-9",
    "machine-10",
    "machine-11",
    "abc",
    "def",
    "ghi",
    "6f1c2a44-1f0e-4c8a-9a57-2f5b0c3d9e11",
    "0a7d3c52-9b1e-4f6a-8c2d-5e4f3a2b1c0d",
    "pavics-user-42",
    "birdy-session",
    "hostname.example.org",
];
/// Last octet of the backend NGINX chose for each of `KEYS`, three equal servers.
const NGINX_EQUAL: [u8; 20] = [
    12, 13, 11, 13, 13, 13, 11, 11, 12, 11, 12, 12, 11, 13, 12, 11, 12, 13, 12, 12,
];
/// Same, with `server 127.0.0.12:8093 weight=2;`.
const NGINX_WEIGHTED: [u8; 20] = [
    12, 13, 12, 13, 13, 13, 11, 11, 12, 11, 12, 12, 11, 12, 12, 12, 12, 13, 12, 12,
];
/// Same, with .12 removed from the list — and, identically, with `server ... down;`.
const NGINX_WITHOUT_12: [u8; 20] = [
    11, 13, 11, 13, 13, 13, 11, 11, 13, 11, 11, 13, 11, 13, 13, 11, 13, 13, 11, 13,
];

fn service(backends: &[(u8, u32)], when_down: WhenDown) -> ServiceConfig {
    ServiceConfig {
        name: "fp".into(),
        listen: "127.0.0.1:8093".parse().unwrap(),
        hash: HashPolicy {
            header: http::HeaderName::from_static("machineid"),
            missing: MissingKey::RoundRobin,
            algorithm: Default::default(),
        },
        backends: backends
            .iter()
            .map(|(octet, weight)| {
                let address = format!("127.0.0.{octet}:8093");
                BackendConfig {
                    addr: address.parse().unwrap(),
                    address,
                    weight: *weight,
                    state: Default::default(),
                    dns: None,
                    id: None,
                }
            })
            .collect(),
        unresolved: Vec::new(),
        dns: Vec::new(),
        health_check: None,
        when_down,
        panic_threshold: Some(0),
        trust_forwarded_headers: false,
        limits: Default::default(),
        timeouts: Default::default(),
        wps_affinity: false,
        affinity: Default::default(),
    }
}

fn octet(state: &ServiceState, i: usize) -> u8 {
    match state.members()[i].addr.ip() {
        IpAddr::V4(ip) => ip.octets()[3],
        other => panic!("unexpected {other}"),
    }
}

fn owner(state: &ServiceState, key: &str) -> u8 {
    match state.by_key(key.as_bytes(), &[]) {
        Decision::Forward { backend, .. } => octet(state, backend),
        other => panic!("{key}: {other:?}"),
    }
}

/// The state a pool builds for these backends (version 1).
fn build(backends: &[(u8, u32)], when_down: WhenDown) -> Arc<ServiceState> {
    Pool::new(&service(backends, when_down), Arc::new(Metrics::new()))
        .unwrap()
        .state()
}

fn mapping(pool: &ServiceState) -> Vec<u8> {
    KEYS.iter().map(|k| owner(pool, k)).collect()
}

impl ServiceState {
    fn set_enabled(&self, octet_: u8, enabled: bool) {
        let i = (0..self.members.len())
            .find(|&i| octet(self, i) == octet_)
            .unwrap();
        self.health.set_enable(&self.members[i].backend, enabled);
    }
}

#[test]
fn matches_nginx_hash_consistent() {
    let pool = build(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    assert_eq!(mapping(&pool), NGINX_EQUAL);
}

#[test]
fn matches_nginx_with_weights() {
    let pool = build(&[(11, 1), (12, 2), (13, 1)], WhenDown::Failover);
    assert_eq!(mapping(&pool), NGINX_WEIGHTED);
}

#[test]
fn config_order_does_not_matter() {
    let pool = build(&[(13, 1), (11, 1), (12, 1)], WhenDown::Failover);
    assert_eq!(mapping(&pool), NGINX_EQUAL);
}

#[test]
fn removed_backend_matches_nginx_and_only_its_keys_move() {
    let pool = build(&[(11, 1), (13, 1)], WhenDown::Failover);
    assert_eq!(mapping(&pool), NGINX_WITHOUT_12);
    for (i, before) in NGINX_EQUAL.iter().enumerate() {
        if *before != 12 {
            assert_eq!(NGINX_WITHOUT_12[i], *before, "key {} moved", KEYS[i]);
        }
    }
}

#[test]
fn down_backend_fails_over_like_nginx_down() {
    let pool = build(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    pool.set_enabled(12, false);
    assert_eq!(mapping(&pool), NGINX_WITHOUT_12);
    pool.set_enabled(12, true);
    assert_eq!(mapping(&pool), NGINX_EQUAL);
}

#[test]
fn roles_and_reject() {
    let pool = build(&[(11, 1), (12, 1), (13, 1)], WhenDown::Reject);
    pool.set_enabled(12, false);
    for (i, key) in KEYS.iter().enumerate() {
        let decision = pool.by_key(key.as_bytes(), &[]);
        if NGINX_EQUAL[i] == 12 {
            assert_eq!(decision, Decision::OwnerDown, "{key}");
        } else {
            assert!(
                matches!(
                    decision,
                    Decision::Forward {
                        role: crate::policy::select::Role::Owner,
                        ..
                    }
                ),
                "{key}"
            );
        }
    }
    let failover = build(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    failover.set_enabled(12, false);
    let decision = failover.by_key(b"machine-0", &[]);
    assert!(matches!(
        decision,
        Decision::Forward {
            role: crate::policy::select::Role::Failover,
            ..
        }
    ));
}

/// Over many keys and every single-backend outage in a 5-backend pool: a key moves if and
/// only if its owner is the one that is down, and it moves to its owner in the smaller ring.
#[test]
fn only_a_down_backends_keys_move() {
    let octets: Vec<(u8, u32)> = (21..26).map(|o| (o, 1)).collect();
    let pool = build(&octets, WhenDown::Failover);
    let keys: Vec<String> = (0..5000).map(|i| format!("key-{i}")).collect();
    let before: Vec<u8> = keys.iter().map(|k| owner(&pool, k)).collect();
    for (down, _) in &octets {
        pool.set_enabled(*down, false);
        let smaller: Vec<(u8, u32)> = octets.iter().copied().filter(|(o, _)| o != down).collect();
        let without = build(&smaller, WhenDown::Failover);
        let mut moved = 0;
        for (k, b) in keys.iter().zip(&before) {
            let now = owner(&pool, k);
            if b == down {
                moved += 1;
                assert_ne!(now, *down);
                assert_eq!(
                    now,
                    owner(&without, k),
                    "{k}: failover differs from removal"
                );
            } else {
                assert_eq!(now, *b, "{k} moved although its backend is up");
            }
        }
        assert!(
            moved > 500,
            "backend {down} owned only {moved} of 5000 keys"
        );
        pool.set_enabled(*down, true);
    }
}

#[test]
fn all_down() {
    let pool = build(&[(11, 1), (12, 1)], WhenDown::Failover);
    pool.set_enabled(11, false);
    pool.set_enabled(12, false);
    assert_eq!(pool.by_key(b"abc", &[]), Decision::NoneHealthy);
    assert_eq!(pool.round_robin(None), Decision::NoneHealthy);
}

/// Every host of the service unresolvable at start: the service runs with no backend and
/// refuses as if all were down (in panic mode too), until one resolves.
#[test]
fn a_service_with_no_resolved_backend_refuses_like_all_down() {
    let pool = build(&[], WhenDown::Failover);
    assert!(pool.members().is_empty());
    assert_eq!(pool.by_key(b"abc", &[]), Decision::NoneHealthy);
    assert_eq!(pool.round_robin(None), Decision::NoneHealthy);
    let panicking = pool_with(&[], Some(100));
    panicking.refresh_panic();
    let state = panicking.state();
    assert_eq!(state.by_key(b"abc", &[]), Decision::NoneHealthy);
    assert_eq!(state.round_robin(None), Decision::NoneHealthy);
    assert!(panicking.status().is_empty());
}

#[test]
fn retry_excludes_the_refusing_backend() {
    let pool = build(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    let Decision::Forward { backend: first, .. } = pool.by_key(b"machine-0", &[]) else {
        panic!()
    };
    let Decision::Forward {
        backend: second,
        role,
    } = pool.by_key(b"machine-0", &[first])
    else {
        panic!()
    };
    assert_ne!(first, second);
    assert_eq!(role, crate::policy::select::Role::Failover);
    // The retry goes where the key would fail over to: the next backend on the ring.
    pool.set_enabled(12, false);
    assert_eq!(owner(&pool, "machine-0"), octet(&pool, second));
}

#[test]
fn round_robin_is_even_and_skips_down() {
    let pool = build(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..300 {
        if let Decision::Forward { backend, .. } = pool.round_robin(None) {
            *counts.entry(octet(&pool, backend)).or_insert(0) += 1;
        }
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    pool.set_enabled(11, false);
    for _ in 0..30 {
        let Decision::Forward { backend, .. } = pool.round_robin(None) else {
            panic!()
        };
        assert_ne!(octet(&pool, backend), 11);
    }
}

/// `nginx_hash`: owners from the NGINX table, a down owner's keys go to NGINX's next rehash
/// (failover) or are refused (reject), and a refused connection's retry likewise.
#[test]
fn nginx_hash_follows_the_nginx_table() {
    let build_nginx = |when_down| {
        let mut config = service(&[(11, 1), (12, 2), (13, 1)], when_down);
        config.hash.algorithm = crate::config::HashAlgorithm::NginxHash;
        Pool::new(&config, Arc::new(Metrics::new()))
            .unwrap()
            .state()
    };
    let table = crate::policy::nginx_hash::NginxHash::new([1, 2, 1]);
    let failover = build_nginx(WhenDown::Failover);
    let reject = build_nginx(WhenDown::Reject);
    failover.set_enabled(12, false);
    reject.set_enabled(12, false);
    for i in 0..2_000 {
        let key = format!("machine-{i}");
        let hashed = table.owner(key.as_bytes()).unwrap();
        let crate::policy::nginx_hash::Pick::Hashed { index, .. } =
            table.pick(key.as_bytes(), |j| j != 1)
        else {
            panic!("{key}: two usable servers")
        };
        assert_eq!(owner(&failover, &key), octet(&failover, index), "{key}");
        if hashed == 1 {
            assert_eq!(reject.by_key(key.as_bytes(), &[]), Decision::OwnerDown);
        } else {
            assert_eq!(owner(&reject, &key), octet(&reject, hashed), "{key}");
        }
    }
    failover.set_enabled(12, true);
    for i in 0..500 {
        let key = format!("machine-{i}");
        let hashed = table.owner(key.as_bytes()).unwrap();
        assert_eq!(owner(&failover, &key), octet(&failover, hashed));
        let retry = failover.by_key(key.as_bytes(), &[0]);
        if hashed == 0 {
            let crate::policy::nginx_hash::Pick::Hashed { index, .. } =
                table.pick(key.as_bytes(), |j| j != 0)
            else {
                panic!()
            };
            assert_eq!(
                retry,
                Decision::Forward {
                    backend: index,
                    role: Role::Failover
                }
            );
        } else {
            assert_eq!(
                retry,
                Decision::Forward {
                    backend: hashed,
                    role: Role::Owner
                }
            );
        }
    }
}

/// Drain: new keys go where they would go without the backend (NGINX's mapping with it
/// removed, under `reject` too: no key is refused for it), keys the table holds for it stay;
/// maintenance then moves those (counted as `drained`) and nothing reaches it.
#[test]
fn drain_takes_the_backend_off_the_ring_for_new_keys_only() {
    use crate::policy::route::{lookup, Move, Reason};
    use std::time::Instant;
    for when_down in [WhenDown::Failover, WhenDown::Reject] {
        let config = service(&[(11, 1), (12, 1), (13, 1)], when_down);
        let pool = Pool::new(&config, Arc::new(Metrics::new())).unwrap();
        let state = pool.state();
        let policy = &state.settings.route;
        let held = KEYS[NGINX_EQUAL.iter().position(|&o| o == 12).unwrap()];
        let route = lookup(policy, held, &*state).unwrap();
        state.record(held.as_bytes(), &route, Instant::now());

        assert_eq!(
            pool.set_state("127.0.0.12:8093", BackendState::Drain),
            Some(BackendState::Ready)
        );
        for (i, key) in KEYS.iter().enumerate() {
            let route = lookup(policy, key, &*state).unwrap();
            if *key == held {
                assert_eq!(octet(&state, route.backend), 12, "{when_down:?}");
                assert_eq!(route.reason, Reason::Table);
            } else {
                assert_eq!(octet(&state, route.backend), NGINX_WITHOUT_12[i], "{key}");
                assert_eq!(route.role, crate::policy::select::Role::Owner, "{key}");
            }
        }
        // Keyless requests no longer reach it either.
        for _ in 0..6 {
            match state.round_robin(None) {
                Decision::Forward { backend, .. } => assert_ne!(octet(&state, backend), 12),
                other => panic!("{other:?}"),
            }
        }

        pool.set_state("127.0.0.12:8093", BackendState::Maint);
        let route = lookup(policy, held, &*state).unwrap();
        assert_ne!(octet(&state, route.backend), 12);
        assert_eq!(route.moved, Some(Move::Drained), "{when_down:?}");
        assert!(!state.usable(1));
        // The move, once recorded, is in the recent events with its reason, after the state
        // changes that caused it (newest first).
        assert_eq!(
            state.record(held.as_bytes(), &route, Instant::now()),
            Some(Move::Drained)
        );
        let to = state.members()[route.backend].address.clone();
        // `return_after_recovery` (the default) keeps the key for its backend.
        let stand_in = if state.settings.affinity.return_after_recovery {
            "; a stand-in until 127.0.0.12:8093 recovers"
        } else {
            ""
        };
        let details: Vec<String> = pool.events().into_iter().map(|e| e.detail).collect();
        assert_eq!(
            details,
            [
                format!("key {held} moved from 127.0.0.12:8093 to {to} (drained{stand_in})"),
                "drain -> maint (operator)".to_string(),
                "ready -> drain (operator)".to_string(),
            ],
            "{when_down:?}"
        );

        pool.set_state("127.0.0.12:8093", BackendState::Ready);
        assert_eq!(mapping(&state), NGINX_EQUAL);
    }
}

/// A pool whose backends real traffic can take out.
fn pool_with(backends: &[(u8, u32)], panic_threshold: Option<u8>) -> Pool {
    let mut config = service(backends, WhenDown::Failover);
    config.panic_threshold = panic_threshold;
    Pool::new(&config, Arc::new(Metrics::new())).unwrap()
}

/// `fall` (3 without a check) failed real requests in a row to member `i`.
fn eject(pool: &Pool, octet_: u8) {
    let state = pool.state();
    let i = (0..state.members.len())
        .find(|&i| octet(&state, i) == octet_)
        .unwrap();
    for _ in 0..crate::config::DEFAULT_HC_FALL {
        pool.failed(&state, i, "ConnectRefused");
    }
    assert!(!state.ready(i), "{octet_} not taken out");
}

/// Real traffic takes a backend out like a down health check does: exactly its keys move,
/// the same way NGINX moves a `down` server's keys; a good answer in the middle of a streak
/// keeps it in.
#[test]
fn ejected_backend_fails_over_like_a_down_one() {
    let pool = pool_with(&[(11, 1), (12, 1), (13, 1)], Some(0));
    let state = pool.state();
    for _ in 0..5 {
        pool.failed(&state, 1, "ConnectRefused");
        pool.failed(&state, 1, "ConnectRefused");
        pool.answered(&state, 1);
    }
    assert!(state.ready(1));
    assert_eq!(mapping(&state), NGINX_EQUAL);
    eject(&pool, 12);
    assert_eq!(mapping(&state), NGINX_WITHOUT_12);
    assert!(pool.status()[1].ejected && !pool.status()[1].healthy);
    assert!(!pool.in_panic());
    // A newer version of the service sees the same record.
    let config = service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    pool.apply(&config).unwrap();
    assert_eq!(mapping(&pool.state()), NGINX_WITHOUT_12);
}

/// Panic mode: with every backend out (threshold 0), keys go to their owners as if all were
/// up, and keyless requests rotate over all; off, they get no backend.
#[test]
fn panic_mode_routes_by_the_ring_ignoring_health() {
    let pool = pool_with(&[(11, 1), (12, 1), (13, 1)], Some(0));
    eject(&pool, 11);
    eject(&pool, 12);
    assert!(!pool.in_panic(), "one backend is still up");
    eject(&pool, 13);
    assert!(pool.in_panic());
    let state = pool.state();
    assert!(state.ignores_health());
    assert_eq!(mapping(&state), NGINX_EQUAL);
    assert!(matches!(state.round_robin(None), Decision::Forward { .. }));
    // The retry after a refused connection still avoids the refusing backend.
    assert!(state.by_key(b"abc", &[0]).ne(&Decision::Forward {
        backend: 0,
        role: Role::Owner
    }));

    let off = pool_with(&[(11, 1), (12, 1), (13, 1)], None);
    for o in [11, 12, 13] {
        eject(&off, o);
    }
    assert!(!off.in_panic());
    assert_eq!(off.state().by_key(b"abc", &[]), Decision::NoneHealthy);
    assert_eq!(off.state().round_robin(None), Decision::NoneHealthy);
}

/// A threshold above 0: panic once the usable share is at or below it, and out of panic by
/// a reload that lowers it.
#[test]
fn panic_threshold_is_a_share_of_the_backends() {
    let pool = pool_with(&[(11, 1), (12, 1), (13, 1), (14, 1)], Some(50));
    eject(&pool, 11);
    assert!(!pool.in_panic(), "3 of 4 usable");
    eject(&pool, 12);
    assert!(pool.in_panic(), "2 of 4 usable is 50 %");
    let state = pool.state();
    assert!((0..4).all(|i| state.usable(i)));
    let mut config = service(&[(11, 1), (12, 1), (13, 1), (14, 1)], WhenDown::Failover);
    config.panic_threshold = Some(25);
    pool.apply(&config).unwrap();
    assert!(!pool.in_panic());
    assert!(!pool.state().usable(0) && pool.state().usable(2));
    // The recent events tell the story, newest first: two ejections by real traffic, panic
    // mode entered, then left by the reload.
    let events = pool.events();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.backend.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("panic", ""),
            ("panic", ""),
            ("down", "127.0.0.12:8093"),
            ("down", "127.0.0.11:8093")
        ]
    );
    assert!(events[0].detail.starts_with("leaving panic mode after "));
    assert!(events[1]
        .detail
        .starts_with("entering panic mode: 2 of 4 backends usable (panic_threshold 50%)"));
    assert!(events[2]
        .detail
        .contains("failed real requests in a row, real traffic; last: ConnectRefused"));
}

/// Maintenance is the operator's choice: a backend in it is not counted for panic mode and
/// stays excluded while the service ignores health.
#[test]
fn panic_mode_keeps_a_backend_in_maintenance_out() {
    let pool = pool_with(&[(11, 1), (12, 1), (13, 1)], Some(0));
    pool.set_state("127.0.0.13:8093", BackendState::Maint);
    eject(&pool, 11);
    assert!(!pool.in_panic(), "12 is still usable");
    eject(&pool, 12);
    assert!(
        pool.in_panic(),
        "none of the two counted backends is usable"
    );
    let state = pool.state();
    assert!(state.usable(0) && state.usable(1));
    assert!(!state.usable(2), "maintenance holds in panic mode");
    for key in KEYS {
        match state.by_key(key.as_bytes(), &[]) {
            Decision::Forward { backend, .. } => assert_ne!(octet(&state, backend), 13, "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
}

/// The ring hashes identities: a backend with an `id` (or an SRV target) that comes back at
/// another address keeps every key, and a host name is hashed as its name, as NGINX does.
#[test]
fn a_backend_keeps_its_keys_at_a_new_address_while_its_identity_stays() {
    let mut config = service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    for (b, id) in config.backends.iter_mut().zip(["wps1", "wps2", "wps3"]) {
        b.id = Some(id.into());
    }
    let pool = Pool::new(&config, Arc::new(Metrics::new())).unwrap();
    let identity_of = |state: &ServiceState, key: &str| match state.by_key(key.as_bytes(), &[]) {
        Decision::Forward { backend, .. } => state.members()[backend].identity.to_string(),
        other => panic!("{key}: {other:?}"),
    };
    let before: Vec<String> = KEYS.iter().map(|k| identity_of(&pool.state(), k)).collect();
    assert!(before.iter().any(|i| i == "wps3"));
    // wps3 restarts with a new IP; the config (or a DNS answer) says so.
    config.backends[2].addr = "127.0.0.99:8093".parse().unwrap();
    config.backends[2].address = "127.0.0.99:8093".into();
    pool.apply(&config).unwrap();
    let state = pool.state();
    let after: Vec<String> = KEYS.iter().map(|k| identity_of(&state, k)).collect();
    assert_eq!(before, after, "no key moves");
    let i = state
        .members()
        .iter()
        .position(|m| &*m.identity == "wps3")
        .unwrap();
    assert_eq!(state.members()[i].addr, "127.0.0.99:8093".parse().unwrap());
    // Without ids, the addresses are the identities: the same change moves wps3's keys.
    let plain = build(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover);
    let moved = build(&[(11, 1), (12, 1), (99, 1)], WhenDown::Failover);
    let differ = KEYS
        .iter()
        .filter(|k| owner(&plain, k) != owner(&moved, k))
        .count();
    assert!(differ > 0);
}
