//! One service's backend pool: Pingora's `LoadBalancer<KetamaHashing>` (the ring and the
//! health state), the round-robin rotation for keyless requests, the health-check loop, and
//! the counters about them. Turns a key into a [`Decision`] with the rules in `select`.
//!
//! A pool lives as long as its service and is reconfigured in place on reload
//! ([`Pool::apply`]): the backend set comes from [`ConfigDiscovery`], a Pingora
//! `ServiceDiscovery` fed from the config, so Pingora rebuilds the ring and swaps it in
//! atomically, and backends that stay keep their health.

use crate::config::{HealthCheckConfig, Limits, MissingKey, ServiceConfig, Timeouts, WhenDown};
use crate::policy::select::{Decision, RingWalk, RoundRobin};
use crate::service::health::Checker;
use crate::telemetry::metrics::{self, Metrics};
use arc_swap::{ArcSwap, Guard};
use async_trait::async_trait;
use futures::FutureExt;
use http::HeaderName;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::{Backend, Backends, HealthRegistry, LoadBalancer};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_ketama::DEFAULT_POINT_MULTIPLE;
use prometheus::IntCounter;
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A backend as the pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// As written in the config.
    pub address: String,
    pub addr: std::net::SocketAddr,
    pub weight: u32,
    pub healthy: bool,
}

/// The part of a service's config that requests read; swapped whole on reload.
#[derive(Debug)]
pub struct Settings {
    pub header: HeaderName,
    pub missing: MissingKey,
    pub when_down: WhenDown,
    pub trust_forwarded_headers: bool,
    pub wps_affinity: bool,
    pub health_check: Option<HealthCheckConfig>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Backends in config order, with the address text they were written as.
    members: Vec<(Backend, String)>,
    /// `roost_requests_total` per member (same order), by status class: resolved once here
    /// so that counting a request needs no label lookup or formatting.
    counters: Vec<[IntCounter; 5]>,
    /// Points on the Ketama ring: a failover walk may need all of them.
    ring_points: usize,
}

impl Settings {
    fn new(config: &ServiceConfig, metrics: &Metrics) -> Self {
        let members = config
            .backends
            .iter()
            .map(|b| {
                let backend = Backend::new_with_weight(&b.addr.to_string(), b.weight as usize)
                    .expect("a SocketAddr always parses");
                (backend, b.address.clone())
            })
            .collect::<Vec<(Backend, String)>>();
        let counters = members
            .iter()
            .map(|(b, _)| class_counters(metrics, &config.name, &b.addr.to_string()))
            .collect();
        Self {
            header: HeaderName::from_bytes(config.hash.header.as_bytes())
                .expect("header name validated by config"),
            missing: config.hash.missing,
            when_down: config.when_down,
            trust_forwarded_headers: config.trust_forwarded_headers,
            wps_affinity: config.wps_affinity,
            health_check: config.health_check.clone(),
            limits: config.limits,
            timeouts: config.timeouts,
            members,
            counters,
            ring_points: config
                .backends
                .iter()
                .map(|b| b.weight as usize * DEFAULT_POINT_MULTIPLE as usize)
                .sum(),
        }
    }

    fn backend_set(&self) -> BTreeSet<Backend> {
        self.members.iter().map(|(b, _)| b.clone()).collect()
    }
}

/// The five `roost_requests_total` series (1xx..5xx) of one service and backend.
fn class_counters(metrics: &Metrics, service: &str, backend: &str) -> [IntCounter; 5] {
    metrics::CLASSES.map(|class| {
        metrics
            .requests
            .with_label_values(&[service, backend, class])
    })
}

/// Pingora service discovery that answers with the backends of the current config.
#[derive(Clone, Default)]
pub struct ConfigDiscovery {
    backends: Arc<ArcSwap<BTreeSet<Backend>>>,
}

impl ConfigDiscovery {
    fn set(&self, backends: BTreeSet<Backend>) {
        self.backends.store(Arc::new(backends));
    }
}

#[async_trait]
impl ServiceDiscovery for ConfigDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok(((**self.backends.load()).clone(), HashMap::new()))
    }
}

/// Health is tracked per address, so a backend whose weight changes on reload stays up (or
/// down) instead of starting over.
fn health_identity(backend: &Backend) -> u64 {
    let mut h = DefaultHasher::new();
    backend.addr.hash(&mut h);
    h.finish()
}

pub struct Pool {
    pub name: String,
    lb: LoadBalancer<KetamaHashing>,
    discovery: ConfigDiscovery,
    registry: Arc<HealthRegistry>,
    checker: Checker,
    settings: ArcSwap<Settings>,
    rotation: RoundRobin,
    /// One reload at a time: the ring and the settings must come from the same config.
    reload: tokio::sync::Mutex<()>,
    /// `roost_requests_total` for requests Roost answered itself, by status class.
    refused: [IntCounter; 5],
    pub metrics: Arc<Metrics>,
}

impl Pool {
    /// Build the pool for `config`. Health checks are configured but not started: see
    /// [`HealthService`].
    pub fn new(config: &ServiceConfig, metrics: Arc<Metrics>) -> Self {
        let settings = Settings::new(config, &metrics);
        let discovery = ConfigDiscovery::default();
        discovery.set(settings.backend_set());
        let registry = Arc::new(HealthRegistry::with_equivalence(health_identity));
        let checker = Checker::new(
            &config.name,
            config.health_check.as_ref(),
            Arc::clone(&metrics),
        );
        registry.set_health_check(Box::new(checker.clone()));
        let lb = LoadBalancer::<KetamaHashing>::from_backends(Backends::new_with_health_registry(
            Box::new(discovery.clone()),
            Arc::clone(&registry),
        ));
        // Config discovery answers without waiting, so the first update completes here and
        // the ring is ready before the first request.
        lb.update()
            .now_or_never()
            .expect("config discovery does not wait")
            .expect("config discovery does not fail");
        Self {
            name: config.name.clone(),
            lb,
            discovery,
            registry,
            checker,
            settings: ArcSwap::from_pointee(settings),
            rotation: RoundRobin::default(),
            reload: tokio::sync::Mutex::new(()),
            refused: class_counters(&metrics, &config.name, metrics::NO_BACKEND),
            metrics,
        }
    }

    /// Reconfigure the pool from a reloaded `config` of the same service: backends, weights,
    /// health check, key policy. The new ring replaces the old one in one step; requests in
    /// flight finish on the backend they were sent to.
    pub async fn apply(&self, config: &ServiceConfig) -> pingora::Result<()> {
        let _one_at_a_time = self.reload.lock().await;
        let settings = Settings::new(config, &self.metrics);
        self.discovery.set(settings.backend_set());
        self.lb.update().await?;
        self.checker.configure(config.health_check.as_ref());
        self.settings.store(Arc::new(settings));
        Ok(())
    }

    /// The current settings (a cheap snapshot).
    pub fn settings(&self) -> Guard<Arc<Settings>> {
        self.settings.load()
    }

    /// Where a request with affinity key `key` goes. `exclude` is a backend that just refused
    /// a connection for this request.
    pub fn select_by_key(&self, key: &[u8], exclude: Option<&Backend>) -> Decision<Backend> {
        let settings = self.settings.load();
        let walk = RingWalk::new(settings.when_down, exclude);
        let picked =
            self.lb
                .select_with(key, walk.max_steps(settings.ring_points), |b, healthy| {
                    walk.accept(b, healthy)
                });
        walk.finish(picked)
    }

    /// Where a request without a key goes under `missing: round_robin`.
    pub fn select_round_robin(&self, exclude: Option<&Backend>) -> Decision<Backend> {
        let settings = self.settings.load();
        let members = &settings.members;
        let picked = self.rotation.pick_with(
            members.len(),
            |i| members[i].0.weight as u32,
            |i| Some(&members[i].0) != exclude && self.lb.backends().ready(&members[i].0),
        );
        match picked {
            Some(i) => Decision::Forward {
                backend: settings.members[i].0.clone(),
                role: crate::policy::select::Role::Owner,
            },
            None => Decision::NoneHealthy,
        }
    }

    /// The member at `addr` when it is healthy and not `exclude` (for `wps_affinity`: the
    /// backend that ran a job).
    pub fn usable_member(&self, addr: SocketAddr, exclude: Option<&Backend>) -> Option<Backend> {
        let settings = self.settings.load();
        let (backend, _) = settings
            .members
            .iter()
            .find(|(b, _)| b.as_inet() == Some(&addr))?;
        (Some(backend) != exclude && self.lb.backends().ready(backend)).then(|| backend.clone())
    }

    /// Count one answered request: to `backend`, or answered by Roost itself (`None`).
    pub fn count_request(&self, backend: Option<&Backend>, status: u16) {
        let class = metrics::class_index(status);
        if let Some(backend) = backend {
            let settings = self.settings.load();
            if let Some(i) = settings.members.iter().position(|(b, _)| b == backend) {
                settings.counters[i][class].inc();
                return;
            }
            // Removed by a reload while the request ran: count it under its address.
            let addr = backend.addr.to_string();
            self.metrics
                .requests
                .with_label_values(&[self.name.as_str(), &addr, metrics::class(status)])
                .inc();
            return;
        }
        self.refused[class].inc();
    }

    /// Requests answered so far by each member, in config order (for /status).
    pub fn request_counts(&self) -> Vec<u64> {
        self.settings
            .load()
            .counters
            .iter()
            .map(|c| c.iter().map(IntCounter::get).sum())
            .collect()
    }

    /// The address text a backend was configured with (used as Host for requests without one).
    pub fn address_of(&self, backend: &Backend) -> Option<String> {
        self.settings
            .load()
            .members
            .iter()
            .find(|(b, _)| b == backend)
            .map(|(_, a)| a.clone())
    }

    /// Every backend with its current health, in config order.
    pub fn status(&self) -> Vec<BackendStatus> {
        self.settings
            .load()
            .members
            .iter()
            .map(|(b, address)| BackendStatus {
                address: address.clone(),
                addr: b.as_inet().copied().expect("pools hold inet backends"),
                weight: b.weight as u32,
                healthy: self.lb.backends().ready(b),
            })
            .collect()
    }

    /// How long a client should wait before retrying a key whose backend is down: one
    /// health-check interval, at least a second.
    pub fn retry_after_secs(&self) -> u64 {
        self.health_interval().map_or(1, |i| i.as_secs().max(1))
    }

    fn health_interval(&self) -> Option<Duration> {
        self.settings
            .load()
            .health_check
            .as_ref()
            .map(|hc| hc.interval)
    }

    /// One round of health checks over every backend, all probed in parallel so one slow
    /// backend cannot delay the verdict on the others.
    pub async fn check_health(&self) {
        self.registry.run_health_check(true).await;
    }

    fn all_ready(&self) -> bool {
        let backends = self.lb.backends();
        backends.get_backend().iter().all(|b| backends.ready(b))
    }
}

impl crate::service::guard::GuardLimits for Pool {
    fn max_connections(&self) -> usize {
        self.settings.load().limits.max_connections
    }

    fn header_timeout(&self) -> Duration {
        self.settings.load().timeouts.client_header
    }

    fn refused(&self, reason: &'static str) {
        log::debug!("service {}: connection refused: {reason}", self.name);
        self.metrics
            .connections_refused
            .with_label_values(&[self.name.as_str(), reason])
            .inc();
    }
}

/// How often the health loop looks again when a service has no check configured (it may get
/// one on reload).
const UNCHECKED_POLL: Duration = Duration::from_secs(1);

/// The background task that runs a pool's health checks every `interval`, following reloads.
pub struct HealthService {
    pub pool: Arc<Pool>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let pause = match self.pool.health_interval() {
                Some(interval) => {
                    self.pool.check_health().await;
                    interval
                }
                None => {
                    // No check: a pass of always-successful probes brings back any backend
                    // a removed check had taken out.
                    if !self.pool.checker.is_active() && !self.pool.all_ready() {
                        self.pool.check_health().await;
                    }
                    UNCHECKED_POLL
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The NGINX parity pins. Expected backends were recorded from a real NGINX 1.22 run
    //! (`hash $http_machineid consistent;`, backends on 127.0.0.11-13:8093); Roost must keep
    //! choosing exactly these so a site can swap NGINX for Roost without moving a single job.

    use super::*;
    use crate::config::{BackendConfig, HashPolicy};

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
                header: "machineid".into(),
                missing: MissingKey::RoundRobin,
            },
            backends: backends
                .iter()
                .map(|(octet, weight)| {
                    let address = format!("127.0.0.{octet}:8093");
                    BackendConfig {
                        addr: address.parse().unwrap(),
                        address,
                        weight: *weight,
                    }
                })
                .collect(),
            health_check: None,
            when_down,
            trust_forwarded_headers: false,
            limits: Default::default(),
            timeouts: Default::default(),
            wps_affinity: false,
        }
    }

    fn owner(pool: &Pool, key: &str) -> u8 {
        match pool.select_by_key(key.as_bytes(), None) {
            Decision::Forward { backend, .. } => match backend.as_inet().unwrap().ip() {
                std::net::IpAddr::V4(ip) => ip.octets()[3],
                other => panic!("unexpected {other}"),
            },
            other => panic!("{key}: {other:?}"),
        }
    }

    fn mapping(pool: &Pool) -> Vec<u8> {
        KEYS.iter().map(|k| owner(pool, k)).collect()
    }

    impl Pool {
        fn set_enabled(&self, octet: u8, enabled: bool) {
            let settings = self.settings();
            let (backend, _) = settings
                .members
                .iter()
                .find(|(_, a)| a.starts_with(&format!("127.0.0.{octet}:")))
                .unwrap();
            self.lb.backends().set_enable(backend, enabled);
        }
    }

    #[test]
    fn matches_nginx_hash_consistent() {
        let pool = Pool::new(
            &service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        assert_eq!(mapping(&pool), NGINX_EQUAL);
    }

    #[test]
    fn matches_nginx_with_weights() {
        let pool = Pool::new(
            &service(&[(11, 1), (12, 2), (13, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        assert_eq!(mapping(&pool), NGINX_WEIGHTED);
    }

    #[test]
    fn config_order_does_not_matter() {
        let pool = Pool::new(
            &service(&[(13, 1), (11, 1), (12, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        assert_eq!(mapping(&pool), NGINX_EQUAL);
    }

    #[test]
    fn removed_backend_matches_nginx_and_only_its_keys_move() {
        let pool = Pool::new(
            &service(&[(11, 1), (13, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        assert_eq!(mapping(&pool), NGINX_WITHOUT_12);
        for (i, before) in NGINX_EQUAL.iter().enumerate() {
            if *before != 12 {
                assert_eq!(NGINX_WITHOUT_12[i], *before, "key {} moved", KEYS[i]);
            }
        }
    }

    #[test]
    fn down_backend_fails_over_like_nginx_down() {
        let pool = Pool::new(
            &service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        pool.set_enabled(12, false);
        assert_eq!(mapping(&pool), NGINX_WITHOUT_12);
        pool.set_enabled(12, true);
        assert_eq!(mapping(&pool), NGINX_EQUAL);
    }

    #[test]
    fn roles_and_reject() {
        let pool = Pool::new(
            &service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Reject),
            Arc::new(Metrics::new()),
        );
        pool.set_enabled(12, false);
        for (i, key) in KEYS.iter().enumerate() {
            let decision = pool.select_by_key(key.as_bytes(), None);
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
        let failover = Pool::new(
            &service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        failover.set_enabled(12, false);
        let decision = failover.select_by_key(b"machine-0", None);
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
        let pool = Pool::new(
            &service(&octets, WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        let keys: Vec<String> = (0..5000).map(|i| format!("key-{i}")).collect();
        let before: Vec<u8> = keys.iter().map(|k| owner(&pool, k)).collect();
        for (down, _) in &octets {
            pool.set_enabled(*down, false);
            let smaller: Vec<(u8, u32)> =
                octets.iter().copied().filter(|(o, _)| o != down).collect();
            let without = Pool::new(
                &service(&smaller, WhenDown::Failover),
                Arc::new(Metrics::new()),
            );
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
        let pool = Pool::new(
            &service(&[(11, 1), (12, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        pool.set_enabled(11, false);
        pool.set_enabled(12, false);
        assert_eq!(pool.select_by_key(b"abc", None), Decision::NoneHealthy);
        assert_eq!(pool.select_round_robin(None), Decision::NoneHealthy);
    }

    #[test]
    fn retry_excludes_the_refusing_backend() {
        let pool = Pool::new(
            &service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        let Decision::Forward { backend: first, .. } = pool.select_by_key(b"machine-0", None)
        else {
            panic!()
        };
        let Decision::Forward {
            backend: second,
            role,
        } = pool.select_by_key(b"machine-0", Some(&first))
        else {
            panic!()
        };
        assert_ne!(first, second);
        assert_eq!(role, crate::policy::select::Role::Failover);
        // The retry goes where the key would fail over to: the next backend on the ring.
        pool.set_enabled(12, false);
        assert_eq!(
            owner(&pool, "machine-0"),
            second
                .as_inet()
                .map(|a| match a.ip() {
                    std::net::IpAddr::V4(ip) => ip.octets()[3],
                    _ => 0,
                })
                .unwrap()
        );
    }

    #[test]
    fn round_robin_is_even_and_skips_down() {
        let pool = Pool::new(
            &service(&[(11, 1), (12, 1), (13, 1)], WhenDown::Failover),
            Arc::new(Metrics::new()),
        );
        let mut counts = std::collections::HashMap::new();
        for _ in 0..300 {
            if let Decision::Forward { backend, .. } = pool.select_round_robin(None) {
                *counts.entry(backend.addr.to_string()).or_insert(0) += 1;
            }
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
        pool.set_enabled(11, false);
        for _ in 0..30 {
            let Decision::Forward { backend, .. } = pool.select_round_robin(None) else {
                panic!()
            };
            assert_ne!(backend.addr.to_string(), "127.0.0.11:8093");
        }
    }
}
