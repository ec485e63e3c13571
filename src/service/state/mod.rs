//! One service's state for one config version: the settings requests read, the backends with
//! their counters, and the Ketama ring over their identities (`policy::ketama`; or, under
//! `hash.algorithm: nginx_hash`, NGINX's plain-hash table). Built whole from a [`ServiceConfig`] by
//! [`ServiceState::build`] and never changed afterwards; a reload builds a new one and the
//! pool swaps it in with one store. A request takes one snapshot when it starts and uses it in
//! every phase (choice, retry, upstream filters, logging, counting), so it is served under
//! one config version from start to end.
//!
//! Health is not part of the version: every state's backend set is a Pingora `Backends`
//! view on the pool's one `HealthRegistry` (the probes connect to each member's address), and every member holds the pool's passive-health record of its address
//! (`policy::outlier`), so a backend keeps its health across reloads and an older snapshot
//! still sees current health. Likewise panic mode (routing that ignores health because too
//! few backends are usable) is one flag of the pool, read by every version:
//! [`ServiceState::usable`] is the one place where health, panic mode and (later) operator
//! states combine into "may take a request".
//!
//! This file is the version and what it answers about its members; `routing.rs` is how the
//! route resolver reads it (the ring walk, NGINX's plain hash, the sticky record, the
//! rotation).

mod routing;

use crate::config::Affinity;
use crate::config::{
    BackendState, HashAlgorithm, HealthCheckConfig, Limits, ServiceConfig, Timeouts,
    UnresolvedBackend,
};
use crate::policy::ketama::Ring;
use crate::policy::nginx_hash::NginxHash;
use crate::policy::outlier::{self, Outlier};
use crate::policy::route::{Move, RoutePolicy};
use crate::policy::select::RoundRobin;
use crate::policy::sticky::{Identity, StickyTable};
use crate::service::health::Checker;
use crate::service::operator::{Operated, Operator};
use crate::telemetry::events::Events;
use crate::telemetry::metrics::{self, Metrics};
use futures::FutureExt;
use pingora::lb::discovery;
use pingora::lb::{Backend, Backends, HealthRegistry};
use pingora::{Error, ErrorType, Result};
use prometheus::IntCounter;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The settings of one service that requests read.
#[derive(Debug)]
pub struct Settings {
    pub route: RoutePolicy,
    pub trust_forwarded_headers: bool,
    pub affinity: Affinity,
    pub health_check: Option<HealthCheckConfig>,
    /// Panic mode threshold in percent of usable backends (`None`: never).
    pub panic_threshold: Option<u8>,
    pub limits: Limits,
    pub timeouts: Timeouts,
}

/// One backend of this version, in config order.
pub struct Member {
    /// As Pingora's health registry knows it (the probes' target).
    pub backend: Backend,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The address as written in the config (used as Host for HTTP/1.0 requests without one).
    pub address: String,
    /// What the ring hashes and the sticky table records for this backend: its `id`, else
    /// its address as written ([`crate::config::BackendConfig::identity`]).
    pub identity: Identity,
    pub weight: u32,
    /// The DNS entry that found it (`dns NAME:PORT`, `srv NAME`); `None` for the file's own.
    pub dns: Option<String>,
    /// Its operator state and activity, shared with every version that has this backend.
    pub operated: Arc<Operated>,
    /// Passive health from real traffic, shared with every version that has this address.
    pub outlier: Arc<Outlier>,
    /// `roost_requests_total` by status class, resolved once so that counting a request needs
    /// no label lookup or formatting.
    counters: [IntCounter; 5],
}

pub struct ServiceState {
    /// Counts the states a pool has built: 1 at start, one more per applied reload.
    pub version: u64,
    pub settings: Settings,
    members: Vec<Member>,
    /// The backends of the config whose host did not resolve: on no ring, shown as down.
    unresolved: Vec<UnresolvedBackend>,
    /// The members as Pingora's health registry sees them (whether each is up).
    health: Backends,
    /// The Ketama ring over the members' identities.
    ring: Ring,
    /// `hash.algorithm: nginx_hash`: keys are hashed over this weighted list (same order as
    /// `members`) instead of the ring, which then only carries health.
    nginx_hash: Option<NginxHash>,
    /// The weighted rotation for keyless requests; shared by every version of the service.
    rotation: Arc<RoundRobin>,
    /// `roost_requests_total` for requests Roost answered itself.
    refused: [IntCounter; 5],
    /// The sticky table, shared by every version of the service; `None` when it is off.
    table: Option<Arc<StickyTable>>,
    /// Member index by identity, to find a recorded backend in this version.
    by_identity: HashMap<Identity, usize>,
    /// `roost_affinity_moves_total`: owner_down, removed, drained.
    moves: [IntCounter; Move::ALL.len()],
    /// The operator states of the service's backends (shared by every version).
    operator: Arc<Operator>,
    /// Panic mode, shared by every version of the service (set by the pool).
    panic: Arc<AtomicBool>,
    /// The service's recent events (key moves go in here), shared by every version.
    events: Arc<Events>,
}

/// What every version of a service shares, owned by its pool.
pub struct Shared<'a> {
    pub registry: &'a Arc<HealthRegistry>,
    pub rotation: &'a Arc<RoundRobin>,
    /// The sticky table, `None` when the config has it off.
    pub table: Option<&'a Arc<StickyTable>>,
    /// The operator states (ready, drain, maint).
    pub operator: &'a Arc<Operator>,
    /// Holds each address's passive-health record.
    pub checker: &'a Checker,
    pub panic: &'a Arc<AtomicBool>,
    /// Recent events, for the status page.
    pub events: &'a Arc<Events>,
}

impl ServiceState {
    /// Build the state for `config` as version `version`, on what the pool keeps across
    /// versions (`shared`: its ring a view on the registry, the sticky table, the operator
    /// states, ...).
    pub fn build(
        config: &ServiceConfig,
        version: u64,
        shared: Shared<'_>,
        metrics: &Metrics,
    ) -> Result<Self> {
        let Shared {
            registry,
            rotation,
            table,
            operator,
            checker,
            panic,
            events,
        } = shared;
        let mut members = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let backend = Backend::new_with_weight(&b.addr.to_string(), b.weight as usize)?;
            let identity: Identity = b.identity().into();
            members.push(Member {
                backend,
                addr: b.addr,
                address: b.address.clone(),
                operated: operator.entry(&identity, b.state),
                identity,
                weight: b.weight,
                dns: b.dns.clone(),
                outlier: checker.outlier(b.addr),
                counters: class_counters(metrics, &config.name, &b.addr.to_string()),
            });
        }
        let set: BTreeSet<Backend> = members.iter().map(|m| m.backend.clone()).collect();
        let health =
            Backends::new_with_health_registry(discovery::Static::new(set), Arc::clone(registry));
        // Static discovery answers without waiting, so the set is complete when this returns.
        match health.update(|_| {}).now_or_never() {
            Some(result) => result?,
            None => return Error::e_explain(ErrorType::InternalError, "backend update waited"),
        }
        let ring = Ring::new(members.iter().map(|m| (&*m.identity, m.weight)));
        let by_identity = members
            .iter()
            .enumerate()
            .map(|(i, m)| (Arc::clone(&m.identity), i))
            .collect();
        let moves = Move::ALL.map(|m| {
            metrics
                .affinity_moves
                .with_label_values(&[config.name.as_str(), m.as_str()])
        });
        let retry_after = config
            .health_check
            .as_ref()
            .map_or(1, |hc| hc.interval.as_secs().max(1));
        Ok(Self {
            version,
            settings: Settings {
                route: RoutePolicy {
                    service: config.name.as_str().into(),
                    header: config.hash.header.clone(),
                    missing: config.hash.missing,
                    when_down: config.when_down,
                    wps_affinity: config.wps_affinity,
                    retry_after,
                },
                trust_forwarded_headers: config.trust_forwarded_headers,
                affinity: config.affinity,
                health_check: config.health_check.clone(),
                panic_threshold: config.panic_threshold,
                limits: config.limits,
                timeouts: config.timeouts,
            },
            members,
            unresolved: config.unresolved.clone(),
            health,
            ring,
            nginx_hash: (config.hash.algorithm == HashAlgorithm::NginxHash)
                .then(|| NginxHash::new(config.backends.iter().map(|b| b.weight))),
            rotation: Arc::clone(rotation),
            refused: class_counters(metrics, &config.name, metrics::NO_BACKEND),
            table: table.cloned(),
            by_identity,
            moves,
            operator: Arc::clone(operator),
            panic: Arc::clone(panic),
            events: Arc::clone(events),
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.route.service
    }

    /// Every backend of this version, in config order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The backends left out because their host did not resolve (retried by the reloader).
    pub fn unresolved(&self) -> &[UnresolvedBackend] {
        &self.unresolved
    }

    /// Whether member `i` is up (its health now, whatever version built it): its probes
    /// have it up and real traffic has not taken it out.
    pub fn ready(&self, i: usize) -> bool {
        self.probed_up(i) && !self.members[i].outlier.ejected()
    }

    /// Whether member `i`'s probes have it up (the registry's verdict alone).
    pub fn probed_up(&self, i: usize) -> bool {
        self.health.ready(&self.members[i].backend)
    }

    /// Member `i`'s operator state.
    pub fn operator_state(&self, i: usize) -> BackendState {
        self.members[i].operated.state()
    }

    /// Whether member `i` takes new keys and keyless requests (always, while no backend of
    /// the service is draining or in maintenance).
    fn open(&self, i: usize) -> bool {
        !self.operator.any_closed() || self.operator_state(i).takes_new_work()
    }

    /// Whether routing ignores health now (panic mode): too few backends are usable, so
    /// requests go by table and ring as if all were up instead of all getting a 503.
    pub fn ignores_health(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Whether member `i` may take a request: not in maintenance, and up or the service in
    /// panic mode. The one place routing asks (ring walk, table, rotation, `wps_affinity`).
    pub fn usable(&self, i: usize) -> bool {
        self.usable_given(i, self.probed_up(i))
    }

    /// [`usable`](Self::usable) when the caller has the probes' verdict at hand (the ring
    /// walk gets it with each candidate). Maintenance is the operator's choice: it holds in
    /// panic mode too.
    fn usable_given(&self, i: usize, probed_up: bool) -> bool {
        self.operator_state(i).takes_traffic()
            && (self.ignores_health() || (probed_up && !self.members[i].outlier.ejected()))
    }

    /// Whether the service should be in panic mode by its members' health now
    /// (`panic_threshold`); the pool turns this into [`ignores_health`](Self::ignores_health).
    /// Returns it with the number of members up. A backend in maintenance counts in neither
    /// number: it is out by choice, not by health.
    pub fn should_panic(&self) -> (bool, usize) {
        let counted: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.operator_state(i).takes_traffic())
            .collect();
        let up = counted.iter().filter(|&&i| self.ready(i)).count();
        let panics = outlier::panics(up, counted.len(), self.settings.panic_threshold);
        (panics, up)
    }

    /// The member at `addr` when it is usable and not `exclude` (for `wps_affinity`: the
    /// backend that ran a job; a draining one still serves its jobs).
    pub fn usable_at(&self, addr: SocketAddr, exclude: Option<usize>) -> Option<usize> {
        let i = self.members.iter().position(|m| m.addr == addr)?;
        (Some(i) != exclude && self.usable(i)).then_some(i)
    }

    /// Count one answered request that took `elapsed`: by member `i` (also into its latency
    /// sketch, for the status page's p99), or answered by Roost itself (`None`).
    pub fn count(&self, member: Option<usize>, status: u16, elapsed: Duration) {
        let class = metrics::class_index(status);
        match member {
            Some(i) => {
                let m = &self.members[i];
                m.counters[class].inc();
                m.operated.latency.observe(elapsed);
            }
            None => self.refused[class].inc(),
        }
    }

    /// Requests answered so far by each member, in config order.
    pub fn request_counts(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|m| m.counters.iter().map(IntCounter::get).sum())
            .collect()
    }

    /// The identity of the member written as `address`, when this version has one.
    pub fn identity(&self, address: &str) -> Option<Identity> {
        let (identity, _) = self.by_identity.get_key_value(address)?;
        Some(Arc::clone(identity))
    }

    /// The sticky table's entry for `key` (for `/route`).
    pub fn table_entry(&self, key: &[u8]) -> Option<crate::policy::sticky::Entry> {
        self.table.as_ref()?.get(key, Instant::now())
    }

    /// Keys in the sticky table, `None` when it is off.
    pub fn table_len(&self) -> Option<usize> {
        self.table.as_ref().map(|t| t.len())
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

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
