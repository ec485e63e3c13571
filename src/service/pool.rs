//! One service's backend pool for the life of the process: the current [`ServiceState`]
//! (swapped whole on reload), the health registry and check every state's ring shares, the
//! round-robin rotation, the operator states, panic mode, and the background task that
//! runs the health checks. The proxy reports each real request's outcome here
//! ([`Pool::answered`], [`Pool::failed`]) for passive health.

use crate::config::{BackendState, ServiceConfig};
use crate::policy::select::RoundRobin;
use crate::policy::sticky::StickyTable;
use crate::policy::wps::JobTable;
use crate::service::guard::GuardLimits;
use crate::service::health::{Checker, Probe};
use crate::service::operator::Operator;
use crate::service::state::{ServiceState, Shared};
use crate::telemetry::events::{Event, Events, Kind};
use crate::telemetry::history::{History, Reading, Sample, SAMPLE_EVERY};
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::warn;
use pingora::lb::{Backend, HealthRegistry};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::Result;
use prometheus::{Counter, IntGauge};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A backend as the pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// As written in the config.
    pub address: String,
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

/// Panic mode of one service: the flag every version reads, and its bookkeeping.
struct PanicMode {
    on: Arc<AtomicBool>,
    /// Since when, and up to when `roost_panic_seconds_total` has counted it; `None` while
    /// not in panic mode. Taken only when health may have changed, never per request.
    since: Mutex<Option<(Instant, Instant)>>,
    gauge: IntGauge,
    seconds: Counter,
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

    /// The operator states (ready, drain, maint) of this service's backends.
    pub fn operator(&self) -> &Arc<Operator> {
        &self.operator
    }

    /// Set backend `address`'s operator state (admin API). Returns its previous state, or
    /// `None` when the service has no backend written so. With `state.redis`, the other
    /// instances are told.
    pub fn set_state(&self, address: &str, state: BackendState) -> Option<BackendState> {
        let old = self.change_state(address, state, "operator")?;
        if let Some(pending) = self
            .shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            pending.retain(|(b, _)| b != address);
            pending.push((address.to_string(), state));
        }
        Some(old)
    }

    /// An operator state set through another instance (`state.redis`): applied like one set
    /// here, not shared again. Returns whether it changed anything.
    pub fn apply_shared_state(&self, address: &str, state: BackendState) -> bool {
        self.change_state(address, state, "set through another instance")
            .is_some_and(|old| old != state)
    }

    /// Share the operator states set through the API from now on.
    pub fn share_states(&self) {
        *self.shared_states.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// The operator states set here since the last call, in order, to be shared.
    pub fn take_state_changes(&self) -> Vec<(String, BackendState)> {
        self.shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// States that could not be shared (Redis is down): kept, unless set again since.
    pub fn restore_state_changes(&self, unsent: Vec<(String, BackendState)>) {
        if let Some(pending) = self
            .shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            let newer = std::mem::take(pending);
            pending.extend(
                unsent
                    .into_iter()
                    .filter(|(b, _)| !newer.iter().any(|(n, _)| n == b)),
            );
            pending.extend(newer);
        }
    }

    /// Whether a state set here for `address` waits to be shared (it then wins over what
    /// Redis says at a reconcile: it is newer).
    pub fn state_pending(&self, address: &str) -> bool {
        self.shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|p| p.iter().any(|(b, _)| b == address))
    }

    fn change_state(&self, address: &str, state: BackendState, why: &str) -> Option<BackendState> {
        let old = self.operator.set(address, state)?;
        if old != state {
            log::warn!(
                "service {}: backend {address}: {} -> {} ({why})",
                self.name,
                old.as_str(),
                state.as_str()
            );
            self.metrics
                .backend_state_changes
                .with_label_values(&[self.name.as_str(), state.as_str()])
                .inc();
            self.events.push(
                Kind::State,
                address,
                format!("{} -> {} ({why})", old.as_str(), state.as_str()),
            );
            // A backend in maintenance leaves the panic count.
            self.refresh_panic();
        }
        Some(old)
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

    /// Whether the service is in panic mode now.
    pub fn in_panic(&self) -> bool {
        self.panic.on.load(Ordering::Relaxed)
    }

    /// Enter or leave panic mode by the current health (called whenever health may have
    /// changed: after each round of checks, when real traffic took a backend out, on reload,
    /// at each metrics scrape), logging either change at warn and counting the time spent.
    pub fn refresh_panic(&self) {
        let state = self.state.load();
        let (panics, up) = state.should_panic();
        let total = state.members().len();
        let threshold = state.settings.panic_threshold.unwrap_or(0);
        let now = Instant::now();
        let panic = &self.panic;
        let mut since = panic.since.lock().unwrap_or_else(|p| p.into_inner());
        match (*since, panics) {
            (None, true) => {
                *since = Some((now, now));
                panic.on.store(true, Ordering::Relaxed);
                panic.gauge.set(1);
                let detail = format!("entering panic mode: {up} of {total} backends usable (panic_threshold {threshold}%); routing by table and ring, ignoring health");
                warn!("panic: service={} {detail}", self.name);
                self.events.push(Kind::Panic, "", detail);
            }
            (Some((entered, counted)), false) => {
                *since = None;
                panic.seconds.inc_by((now - counted).as_secs_f64());
                panic.on.store(false, Ordering::Relaxed);
                panic.gauge.set(0);
                let detail = format!(
                    "leaving panic mode after {:.1}s: {up} of {total} backends usable",
                    (now - entered).as_secs_f64()
                );
                warn!("panic: service={} {detail}", self.name);
                self.events.push(Kind::Panic, "", detail);
            }
            (Some((entered, counted)), true) => {
                panic.seconds.inc_by((now - counted).as_secs_f64());
                *since = Some((entered, now));
            }
            (None, false) => {}
        }
    }

    /// The recent events, newest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.recent()
    }

    /// Each backend's cumulative counters now (requests answered, latency sketch).
    fn readings(&self) -> Vec<Reading> {
        let state = self.state.load();
        state
            .members()
            .iter()
            .zip(state.request_counts())
            .map(|(m, requests)| Reading {
                backend: m.addr.to_string(),
                requests,
                latency: m.operated.latency.snapshot(),
            })
            .collect()
    }

    /// Take one history sample (every [`SAMPLE_EVERY`], by [`HistoryService`]).
    pub fn sample_history(&self) {
        let readings = self.readings();
        self.history.lock().unwrap_or_else(|p| p.into_inner()).take(
            Instant::now(),
            SystemTime::now(),
            &readings,
        );
    }

    /// The kept samples, oldest first, and the interval still running (its newest point).
    pub fn history(&self) -> (Vec<Sample>, Option<Sample>) {
        let readings = self.readings();
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let current = history.current(Instant::now(), SystemTime::now(), &readings);
        (history.samples().cloned().collect(), current)
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

    fn health_interval(&self) -> Option<Duration> {
        self.state
            .load()
            .settings
            .health_check
            .as_ref()
            .map(|hc| hc.interval)
    }

    /// One round of health checks over every backend, all probed in parallel so one slow
    /// backend cannot delay the verdict on the others.
    pub async fn check_health(&self) {
        self.registry.run_health_check(true).await;
    }

    /// Forget the jobs not seen for their age limit (releasing their pins), then the
    /// sticky-table keys idle beyond the TTL.
    fn expire_table(&self) {
        let now = std::time::Instant::now();
        let jobs = self.jobs.expire(now);
        if jobs > 0 {
            log::debug!(
                "wps_affinity: service={} forgot {jobs} old job(s)",
                self.name
            );
        }
        let gone = self.table.expire(now);
        if gone > 0 {
            log::debug!("affinity: service={} forgot {gone} idle key(s)", self.name);
        }
    }

    fn all_ready(&self) -> bool {
        let state = self.state.load();
        (0..state.members().len()).all(|i| state.ready(i))
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

/// The background task that takes every pool's history sample every [`SAMPLE_EVERY`] (the
/// first at start, the baseline of the first interval).
pub struct HistoryService {
    pub pools: Vec<Arc<Pool>>,
}

#[async_trait]
impl BackgroundService for HistoryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        // After a stall (a suspended VM), carry on from now instead of a burst of samples.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for pool in &self.pools {
                        pool.sample_history();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
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
            self.pool.expire_table();
            let pause = match self.pool.health_interval() {
                Some(interval) => {
                    self.pool.check_health().await;
                    interval
                }
                None => {
                    // No check: a pass of always-successful probes brings back any backend
                    // a removed check had taken out, and gives a backend real traffic took
                    // out its trial once its pause is over.
                    if !self.pool.checker.is_active() && !self.pool.all_ready() {
                        self.pool.check_health().await;
                    }
                    UNCHECKED_POLL
                }
            };
            self.pool.refresh_panic();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
