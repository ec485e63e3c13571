//! Health: the active checks (Pingora's HTTP/TCP checks built from the config, each probe
//! bounded by the configured timeout, rise/fall applied by the shared `HealthRegistry`) and
//! passive health from real traffic (`policy::outlier`): each backend's [`Outlier`] record,
//! shared by every config version, which excuses slow probes of a backend that serves (busy is
//! not dead) and takes a backend out after `fall` failed real requests in a row. Every up/down
//! transition, by probes or by real traffic, is reported here (log line, metric and the
//! service's recent events). The
//! periodic loop that drives the probes lives in `pool`.
//!
//! A backend taken out by real traffic is held out by its `Outlier` record, not by the
//! registry: while it is out its probes answer the registry "healthy" (so the registry does
//! not take it down a second time and report it twice) and count towards its way back
//! instead: `rise` good probes in a row, or with no check configured a trial after a pause.

use crate::config::{CheckKind, HealthCheckConfig, DEFAULT_HC_FALL, DEFAULT_HC_INTERVAL};
use crate::policy::outlier::{Failed, Outlier, Probed};
use crate::telemetry::events::{Events, Kind};
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use http::HeaderValue;
use log::{info, warn};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::{Error, ErrorType, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One service's health check. A cheap handle (clones share state) so that the pool can hand
/// it to Pingora and still reconfigure it on reload; with no check configured every probe
/// succeeds at once, which brings any backend that was down back up.
#[derive(Clone)]
pub struct Checker {
    shared: Arc<Shared>,
}

struct Shared {
    service: String,
    probe: ArcSwapOption<Probe>,
    /// Passive health per backend address; looked up when a state is built and by probes,
    /// never on the request path (a state's members hold their record).
    outliers: Mutex<HashMap<SocketAddr, Arc<Outlier>>>,
    /// The time base of every `Outlier` record.
    epoch: Instant,
    metrics: Arc<Metrics>,
    /// Every transition also goes here, for the status page.
    events: Arc<Events>,
    /// The last failure per backend, so the "down" log line can say why.
    last_error: Mutex<HashMap<String, String>>,
}

/// The configured check: Pingora's probe plus our timeout and thresholds.
pub struct Probe {
    inner: Box<dyn HealthCheck + Send + Sync>,
    interval: Duration,
    timeout: Duration,
    rise: usize,
    fall: usize,
}

impl Checker {
    pub fn new(
        service: &str,
        probe: Option<Probe>,
        metrics: Arc<Metrics>,
        events: Arc<Events>,
    ) -> Self {
        let checker = Self {
            shared: Arc::new(Shared {
                service: service.to_string(),
                probe: ArcSwapOption::empty(),
                outliers: Mutex::new(HashMap::new()),
                epoch: Instant::now(),
                metrics,
                events,
                last_error: Mutex::new(HashMap::new()),
            }),
        };
        checker.configure(probe);
        checker
    }

    /// Replace the check (reload). Backends keep their current health; the new thresholds
    /// apply from the next probe on.
    pub fn configure(&self, probe: Option<Probe>) {
        self.shared.probe.store(probe.map(Arc::new));
    }

    /// Whether a check is configured.
    pub fn is_active(&self) -> bool {
        self.shared.probe.load().is_some()
    }

    /// The passive-health record of the backend at `addr` (created on first use).
    pub fn outlier(&self, addr: SocketAddr) -> Arc<Outlier> {
        let mut outliers = self
            .shared
            .outliers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            outliers
                .entry(addr)
                .or_insert_with(|| Arc::new(Outlier::new(self.shared.epoch))),
        )
    }

    /// Forget the records of backends no longer in the config (a reload removed them); a state
    /// still running holds its own.
    pub fn retain_outliers(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.shared
            .outliers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, _| keep(addr));
    }

    /// Failed real requests in a row that take a backend out: the check's `fall`, or the
    /// default one without a check.
    pub fn fall(&self) -> u32 {
        let fall = self
            .shared
            .probe
            .load()
            .as_ref()
            .map_or(DEFAULT_HC_FALL, |p| p.fall);
        u32::try_from(fall).unwrap_or(u32::MAX)
    }

    /// A real request to `addr` failed (`why`); `up` is whether its probes have it up. Takes
    /// it out after `fall` in a row, reporting the transition; returns whether it did.
    pub fn failed(&self, addr: SocketAddr, outlier: &Outlier, up: bool, why: &str) -> bool {
        let Failed::Ejected(n) = outlier.failed(self.fall(), up, Instant::now()) else {
            return false;
        };
        let shared = &self.shared;
        let backend = addr.to_string();
        shared
            .metrics
            .health_transitions
            .with_label_values(&[shared.service.as_str(), &backend, "down"])
            .inc();
        shared
            .metrics
            .outlier_ejections
            .with_label_values(&[shared.service.as_str(), &backend])
            .inc();
        let back = if self.is_active() {
            "back after rise good checks"
        } else {
            "no health check: a trial request after a pause"
        };
        let detail = format!(
            "down (after {n} failed real requests in a row, real traffic; last: {why}; {back})"
        );
        warn!(
            "health: service={} backend={backend} state={detail}",
            shared.service,
        );
        shared.events.push(Kind::Down, backend, detail);
        true
    }

    /// Busy is not dead: a probe that timed out is excused while the backend answers real
    /// requests, as a loaded WPS server answers its GetCapabilities late but serves its
    /// sessions. The window is the time the probes would take to mark it down anyway.
    fn excused(outlier: &Outlier, probe: &Probe, error: &Error) -> bool {
        let timed_out = matches!(
            error.etype(),
            ErrorType::ReadTimedout | ErrorType::ConnectTimedout | ErrorType::WriteTimedout
        );
        let window = probe.interval * probe.fall as u32;
        timed_out && outlier.answered_within(window, Instant::now())
    }

    /// A backend that real traffic took out came back (`how`): log and count it.
    fn reinstated(&self, target: &Backend, how: &str) {
        let shared = &self.shared;
        let backend = target.addr.to_string();
        shared
            .metrics
            .health_transitions
            .with_label_values(&[shared.service.as_str(), &backend, "up"])
            .inc();
        info!(
            "health: service={} backend={backend} state=up ({how})",
            shared.service
        );
        shared.events.push(Kind::Up, backend, format!("up ({how})"));
    }

    fn remember_error(&self, target: &Backend, e: &Error) {
        let mut last = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.insert(target.addr.to_string(), brief(e));
    }
}

impl Probe {
    /// Build the check a config describes. The config model holds only valid paths and host
    /// values, so this fails only if Pingora's own rules are stricter than the model's: a
    /// reload then keeps the running check instead of dying.
    pub fn new(config: &HealthCheckConfig) -> Result<Self> {
        let inner: Box<dyn HealthCheck + Send + Sync> = match &config.kind {
            CheckKind::Http { path, host } => {
                let host = host
                    .clone()
                    .unwrap_or_else(|| HeaderValue::from_static("localhost"));
                let mut check = HttpHealthCheck::new(host.to_str().unwrap_or("localhost"), false);
                let mut req = RequestHeader::build("GET", path.as_str().as_bytes(), None)?;
                req.insert_header("Host", host)?;
                req.insert_header("User-Agent", "roost-health-check")?;
                check.req = req;
                check.peer_template.options.connection_timeout = Some(config.timeout);
                check.peer_template.options.read_timeout = Some(config.timeout);
                check.validator = Some(Box::new(accept_2xx_3xx));
                Box::new(check)
            }
            CheckKind::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.peer_template.options.connection_timeout = Some(config.timeout);
                check
            }
        };
        Ok(Self {
            inner,
            interval: config.interval,
            timeout: config.timeout,
            rise: config.rise,
            fall: config.fall,
        })
    }
}

/// WPS servers answer GetCapabilities with 200; a redirect still proves the server is alive.
fn accept_2xx_3xx(resp: &ResponseHeader) -> Result<()> {
    let code = resp.status.as_u16();
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Error::e_explain(
            ErrorType::CustomCode("unhealthy status", code),
            format!("health check answered {code}"),
        )
    }
}

/// `ConnectRefused: Connection refused (os error 111)` rather than Pingora's full chain, which
/// embeds the whole peer configuration.
fn brief(e: &Error) -> String {
    let root = e.root_cause().to_string();
    let etype = e.root_etype().as_str();
    if root.is_empty() || root == etype {
        etype.to_string()
    } else if let Some(context) = e.context.as_ref().filter(|_| root.contains(etype)) {
        format!("{root} ({})", context.as_str())
    } else {
        format!("{etype}: {root}")
    }
}

#[async_trait]
impl HealthCheck for Checker {
    async fn check(&self, target: &Backend) -> Result<()> {
        let outlier = target.addr.as_inet().map(|a| self.outlier(*a));
        let Some(probe) = self.shared.probe.load_full() else {
            // No check: a backend real traffic took out gets a trial after its pause.
            if let Some(o) = &outlier {
                if let Some(pause) = o.try_trial(DEFAULT_HC_INTERVAL, self.fall(), Instant::now()) {
                    let how = format!(
                        "trial after {} out, no health check: the next real request decides",
                        humantime::format_duration(pause)
                    );
                    self.reinstated(target, &how);
                }
            }
            return Ok(());
        };
        // Pingora's connect/read timeouts do not bound a server that trickles its answer;
        // the configured timeout is for the whole probe.
        let result = match tokio::time::timeout(probe.timeout, probe.inner.check(target)).await {
            Ok(result) => result,
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                format!("no answer within {:?}", probe.timeout),
            ),
        };
        let Some(outlier) = outlier else {
            return result;
        };
        if outlier.ejected() {
            // Held out by real traffic: this probe counts towards its way back, and the
            // registry keeps its own verdict ("up") so the backend is not reported down twice.
            if let Err(e) = &result {
                self.remember_error(target, e);
            }
            let rise = u32::try_from(probe.rise).unwrap_or(u32::MAX);
            if outlier.probed(result.is_ok(), rise) == Probed::Recovered {
                let how = format!(
                    "after {} good checks; it was out for failed real requests",
                    probe.rise
                );
                self.reinstated(target, &how);
            }
            return Ok(());
        }
        if let Err(e) = &result {
            if Self::excused(&outlier, &probe, e) {
                log::debug!(
                    "health: service={} backend={} probe timed out but it answers real requests: still up",
                    self.shared.service,
                    target.addr
                );
                self.shared
                    .metrics
                    .probes_excused
                    .with_label_values(&[self.shared.service.as_str(), &target.addr.to_string()])
                    .inc();
                return Ok(());
            }
            self.remember_error(target, e);
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let shared = &self.shared;
        let backend = target.addr.to_string();
        if healthy {
            shared
                .metrics
                .health_transitions
                .with_label_values(&[shared.service.as_str(), &backend, "up"])
                .inc();
            let detail = format!("up (after {} good checks)", self.health_threshold(true));
            info!(
                "health: service={} backend={backend} state={detail}",
                shared.service
            );
            shared.events.push(Kind::Up, backend, detail);
        } else {
            shared
                .metrics
                .health_transitions
                .with_label_values(&[shared.service.as_str(), &backend, "down"])
                .inc();
            let reason = shared
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&backend)
                .cloned()
                .unwrap_or_default();
            let detail = format!(
                "down (after {} failed checks; last: {reason})",
                self.health_threshold(false)
            );
            warn!(
                "health: service={} backend={backend} state={detail}",
                shared.service
            );
            shared.events.push(Kind::Down, backend, detail);
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("service={} backend={}", self.shared.service, target.addr)
    }

    fn health_threshold(&self, success: bool) -> usize {
        match self.shared.probe.load().as_ref() {
            Some(p) if success => p.rise,
            Some(p) => p.fall,
            // No check configured: the next (always successful) probe brings a backend back.
            None => 1,
        }
    }
}
