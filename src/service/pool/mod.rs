//! One service's backend pool for the life of the process: the current [`ServiceState`]
//! (swapped whole on reload), the health registry and check every state's ring shares, the
//! round-robin rotation, the operator states, panic mode, and the background task that
//! runs the health checks. The proxy reports each real request's outcome here
//! ([`Pool::answered`], [`Pool::failed`]) for passive health.
//!
//! This file is the pool and what the proxy asks of it; `operator_states.rs` is each backend's
//! operator state as the API and the shared state set it, `panic.rs` panic mode, `tasks.rs`
//! the background tasks (health checks, history samples) and what they call.

mod operator_states;
mod panic;
mod tasks;

use panic::PanicMode;
pub use tasks::{HealthService, HistoryService};

use crate::config::{BackendState, ServiceConfig};
use crate::policy::select::RoundRobin;
use crate::policy::sticky::StickyTable;
use crate::policy::wps::JobTable;
use crate::service::guard::GuardLimits;
use crate::service::health::{Checker, Probe};
use crate::service::operator::Operator;
use crate::service::state::{ServiceState, Shared};
use crate::telemetry::events::{Event, Events, Kind};
use crate::telemetry::history::History;
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwap;
use pingora::lb::{Backend, HealthRegistry};
use pingora::Result;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backend as the pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// As written in the config.
    pub address: String,
    /// What the ring hashes and the sticky table records: its `id`, else the address.
    pub identity: String,
    pub addr: std::net::SocketAddr,
    pub weight: u32,
    /// The DNS entry that found it, if any.
    pub dns: Option<String>,
    pub healthy: bool,
    /// Out because of failed real requests (outlier detection), not (only) its probes.
    pub ejected: bool,
    pub requests: u64,
    pub state: BackendState,
    /// How long it has been in `state`.
    pub in_state_for: Duration,
    pub in_flight: usize,
    /// Since a request to it last started or ended.
    pub idle: Duration,
    /// WPS jobs running on it (`wps_affinity`; see [`JobTable::running_on`]).
    pub running_jobs: usize,
    /// Keys the sticky table has recorded on it (its sessions).
    pub keys: usize,
    /// Draining, with no WPS job running and nothing in flight for `affinity.drain_idle`: it
    /// can be stopped without failing a request or a job.
    pub drained: bool,
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
    state: ArcSwap<ServiceState>,
    registry: Arc<HealthRegistry>,
    checker: Checker,
    rotation: Arc<RoundRobin>,
    panic: PanicMode,
    /// The sticky table: lives as long as the pool, so a reload keeps every recorded key.
    table: Arc<StickyTable>,
    /// Each backend's operator state (ready, drain, maint), kept across reloads.
    operator: Arc<Operator>,
    /// `wps_affinity`'s job table, whose running jobs pin their keys in `table`; lives as long
    /// as the pool, like it.
    jobs: JobTable,
    /// One reload at a time, so versions are built and stored in order.
    reload: Mutex<()>,
    /// Recent health transitions, state changes, panic mode and key moves (status page).
    events: Arc<Events>,
    /// Requests and p99 latency per backend over the last 15 minutes (status page); taken by
    /// [`HistoryService`], read by the admin listener.
    history: Mutex<History>,
    /// With `state.redis`: the operator states set through this instance's API and not yet
    /// shared (`ops::shared_state`); `None` while not shared.
    shared_states: Mutex<Option<Vec<(String, BackendState)>>>,
    pub metrics: Arc<Metrics>,
}

impl Pool {
    /// Build the pool for `config`. Health checks are configured but not started: see
    /// [`HealthService`]. Fails only where Pingora refuses what the config model accepted.
    pub fn new(config: &ServiceConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let probe = config.health_check.as_ref().map(Probe::new).transpose()?;
        let registry = Arc::new(HealthRegistry::with_equivalence(health_identity));
        let events = Arc::new(Events::default());
        let checker = Checker::new(
            &config.name,
            probe,
            Arc::clone(&metrics),
            Arc::clone(&events),
        );
        registry.set_health_check(Box::new(checker.clone()));
        let rotation = Arc::new(RoundRobin::default());
        let affinity = &config.affinity;
        let table = Arc::new(StickyTable::new(affinity.ttl, affinity.max_keys));
        let operator = Arc::new(Operator::default());
        let panic = PanicMode {
            on: Arc::new(AtomicBool::new(false)),
            since: Mutex::new(None),
            gauge: metrics.panic_mode.with_label_values(&[&config.name]),
            seconds: metrics.panic_seconds.with_label_values(&[&config.name]),
        };
        panic.gauge.set(0);
        let shared = Shared {
            registry: &registry,
            rotation: &rotation,
            table: affinity.enabled.then_some(&table),
            operator: &operator,
            checker: &checker,
            panic: &panic.on,
            events: &events,
        };
        let state = ServiceState::build(config, 1, shared, &metrics)?;
        Ok(Self {
            name: config.name.clone(),
            state: ArcSwap::from_pointee(state),
            registry,
            checker,
            rotation,
            jobs: JobTable::default().with_pins(Arc::clone(&table)),
            panic,
            table,
            operator,
            reload: Mutex::new(()),
            events,
            history: Mutex::default(),
            shared_states: Mutex::new(None),
            metrics,
        })
    }

    /// Reconfigure the pool from a reloaded `config` of the same service. Everything is built
    /// before anything is stored: on error the running state and check stay as they were. On
    /// success the new state replaces the old one in one step; requests in flight finish
    /// under the snapshot they took. Returns the new version.
    pub fn apply(&self, config: &ServiceConfig) -> Result<u64> {
        let _one_at_a_time = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        let probe = config.health_check.as_ref().map(Probe::new).transpose()?;
        let version = self.state.load().version + 1;
        let affinity = &config.affinity;
        let shared = Shared {
            registry: &self.registry,
            rotation: &self.rotation,
            table: affinity.enabled.then_some(&self.table),
            operator: &self.operator,
            checker: &self.checker,
            panic: &self.panic.on,
            events: &self.events,
        };
        let state = ServiceState::build(config, version, shared, &self.metrics)?;
        self.table.configure(affinity.ttl, affinity.max_keys);
        self.state.store(Arc::new(state));
        self.checker.configure(probe);
        for (backend, state) in self.operator.apply_file(config) {
            log::info!(
                "service {}: backend {backend} is now '{}' (the file's state changed)",
                self.name,
                state.as_str()
            );
            self.events.push(
                Kind::State,
                backend.to_string(),
                format!("{} (the file's state changed)", state.as_str()),
            );
        }
        self.checker
            .retain_outliers(|addr| config.backends.iter().any(|b| b.addr == *addr));
        // Another threshold, other backends: panic mode may begin or end here.
        self.refresh_panic();
        Ok(version)
    }

    /// Member `i` of `state` answered a real request: its streak of failures ends, and slow
    /// probes are excused for a while (busy is not dead). Atomics only.
    pub fn answered(&self, state: &ServiceState, i: usize) {
        state.members()[i].outlier.succeeded(Instant::now());
    }

    /// A real request to member `i` of `state` failed (`why`: refused, reset, a 502 ...):
    /// `fall` in a row take the backend out (outlier detection).
    pub fn failed(&self, state: &ServiceState, i: usize, why: &str) {
        let member = &state.members()[i];
        let up = state.probed_up(i);
        if self.checker.failed(member.addr, &member.outlier, up, why) {
            self.refresh_panic();
        }
    }

    /// The recent events, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.recent()
    }

    /// The sticky table (kept whether or not the config has it on).
    pub fn table(&self) -> &Arc<StickyTable> {
        &self.table
    }

    /// The WPS job table (`wps_affinity`).
    pub fn jobs(&self) -> &JobTable {
        &self.jobs
    }

    /// The current state: a request's snapshot, kept for as long as the request runs.
    pub fn state(&self) -> Arc<ServiceState> {
        self.state.load_full()
    }

    /// Every backend with its current health and request count, in config order.
    pub fn status(&self) -> Vec<BackendStatus> {
        let state = self.state.load();
        let now = std::time::Instant::now();
        let drain_idle = state.settings.affinity.drain_idle;
        let keys = self.table.counts();
        state
            .members()
            .iter()
            .zip(state.request_counts())
            .enumerate()
            .map(|(i, (m, requests))| {
                let op = &m.operated;
                let (in_flight, idle) = (op.in_flight(), op.idle(now));
                let running_jobs = self.jobs.running_on(m.addr);
                BackendStatus {
                    address: m.address.clone(),
                    identity: m.identity.to_string(),
                    addr: m.addr,
                    weight: m.weight,
                    dns: m.dns.clone(),
                    healthy: state.ready(i),
                    ejected: m.outlier.ejected(),
                    requests,
                    state: op.state(),
                    in_state_for: op.in_state_for(now),
                    in_flight,
                    idle,
                    running_jobs,
                    keys: keys.get(&m.identity).copied().unwrap_or(0),
                    drained: op.state() == BackendState::Drain
                        && running_jobs == 0
                        && in_flight == 0
                        && idle >= drain_idle,
                }
            })
            .collect()
    }
}

impl GuardLimits for Pool {
    fn max_connections(&self) -> usize {
        self.state.load().settings.limits.max_connections
    }

    fn header_timeout(&self) -> Duration {
        self.state.load().settings.timeouts.client_header
    }

    fn keepalive_timeout(&self) -> Duration {
        self.state.load().settings.timeouts.keepalive
    }

    fn max_body(&self) -> u64 {
        self.state.load().settings.limits.max_body
    }

    fn refused(&self, reason: &'static str) {
        log::debug!("service {}: connection refused: {reason}", self.name);
        self.metrics
            .connections_refused
            .with_label_values(&[self.name.as_str(), reason])
            .inc();
    }
}
