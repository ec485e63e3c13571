//! Active health checks: builds Pingora's HTTP/TCP checks from the config, bounds each probe by
//! the configured timeout, applies rise/fall, and reports every up/down transition (log line
//! and metric). The periodic loop that drives it lives in `pool`.

use crate::config::{CheckKind, HealthCheckConfig};
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
    /// When each backend last answered a real request (passive health).
    answered: Mutex<HashMap<std::net::SocketAddr, Instant>>,
    metrics: Arc<Metrics>,
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
    pub fn new(service: &str, probe: Option<Probe>, metrics: Arc<Metrics>) -> Self {
        let checker = Self {
            shared: Arc::new(Shared {
                service: service.to_string(),
                probe: ArcSwapOption::empty(),
                answered: Mutex::new(HashMap::new()),
                metrics,
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

    /// `addr` answered a real request (its response header arrived).
    pub fn answered(&self, addr: std::net::SocketAddr) {
        let now = Instant::now();
        let mut answered = self
            .shared
            .answered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        answered.insert(addr, now);
    }

    /// Busy is not dead: a probe that timed out is excused while the backend answers real
    /// requests, as a loaded WPS server answers its GetCapabilities late but serves its
    /// sessions. The window is the time the probes would take to mark it down anyway.
    fn excused(&self, target: &Backend, probe: &Probe, error: &Error) -> bool {
        let timed_out = matches!(
            error.etype(),
            ErrorType::ReadTimedout | ErrorType::ConnectTimedout | ErrorType::WriteTimedout
        );
        let Some(addr) = target.addr.as_inet() else {
            return false;
        };
        let window = probe.interval * probe.fall as u32;
        timed_out
            && self
                .shared
                .answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(addr)
                .is_some_and(|at| at.elapsed() <= window)
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
        let Some(probe) = self.shared.probe.load_full() else {
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
        if let Err(e) = &result {
            if self.excused(target, &probe, e) {
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
            let mut last = self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            last.insert(target.addr.to_string(), brief(e));
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
            info!(
                "health: service={} backend={} state=up (after {} good checks)",
                shared.service,
                backend,
                self.health_threshold(true)
            );
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
            warn!(
                "health: service={} backend={} state=down (after {} failed checks; last: {})",
                shared.service,
                backend,
                self.health_threshold(false),
                reason
            );
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
