//! Live reload on SIGHUP: re-read the config file and reconfigure the running pools in place.
//!
//! [`plan`] (pure) compares the running config with the new one and sorts every difference
//! into what this process can apply (backends, weights, health check, key policy of a service
//! that keeps its listener) and what needs a new process (`roost -u`: listeners, services
//! added or removed, server and admin settings). A service whose listener changed is left
//! exactly as it was, so nothing is ever half-applied. [`ReloadService`] is the I/O around it;
//! it also looks up, every [`RESOLVE_RETRY`], the backend hosts that did not resolve, and adds
//! each one to its service as a reload would once it does.

mod plan;

use plan::plan;

use crate::config::{system_resolver, Config};
use crate::service::pool::Pool;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How often a backend whose host did not resolve is looked up again.
pub const RESOLVE_RETRY: Duration = Duration::from_secs(10);

/// Waits for SIGHUP and reloads the config file into the running pools.
pub struct ReloadService {
    /// Absolute, so a daemonized Roost (which runs in `/`) finds it again.
    path: PathBuf,
    pools: Vec<Arc<Pool>>,
    running: std::sync::Mutex<Config>,
    metrics: Arc<Metrics>,
}

impl ReloadService {
    pub fn new(
        path: PathBuf,
        config: Config,
        pools: Vec<Arc<Pool>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            path,
            pools,
            running: std::sync::Mutex::new(config),
            metrics,
        }
    }

    /// Re-read the file and apply what can be applied. A config that does not load changes
    /// nothing; a service whose new state cannot be built keeps its running state, and the
    /// others still get theirs.
    fn reload(&self) {
        let source = self.path.display();
        info!("reload: SIGHUP received, reading {source}");
        let mut new = match Config::load(&self.path) {
            Ok(config) => config,
            Err(errors) => {
                self.metrics.reloads.with_label_values(&["invalid"]).inc();
                for e in &errors.0 {
                    error!("reload: {e}");
                }
                error!(
                    "reload: {source}: {} error(s); still running the previous config",
                    errors.0.len()
                );
                return;
            }
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for service in &mut new.services {
            if let Some(now) = running.service(&service.name) {
                service.keep_resolved(now);
            }
        }
        for e in new.unresolved() {
            warn!(
                "reload: {e}; left out (down) and looked up again every {} s",
                RESOLVE_RETRY.as_secs()
            );
        }
        let (applied, deferred) = self.apply(&mut running, &new);
        self.metrics.reloads.with_label_values(&["applied"]).inc();
        info!(
            "reload: {source}: done ({applied} service(s) changed, {deferred} change(s) need -u)"
        );
    }

    /// Look the backends whose host did not resolve up again; those that resolve now join
    /// their service, as a reload would add them (the running file is not re-read: an edit
    /// waits for its SIGHUP).
    fn retry_unresolved(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = running.clone();
        let mut any = false;
        for service in &mut new.services {
            // Blocking lookups, on this background service's own thread.
            if let Some(next) = service.retry_unresolved(&system_resolver) {
                *service = next;
                any = true;
            }
        }
        if any {
            info!("reload: a backend host resolves now");
            self.apply(&mut running, &new);
        }
    }

    /// Apply `new` to the pools (what the plan lets this process apply) and make it the running
    /// config; returns the number of services changed and of changes that need `-u`.
    fn apply(&self, running: &mut Config, new: &Config) -> (usize, usize) {
        let mut plan = plan(running, new);
        for change in &plan.needs_upgrade {
            warn!("reload: {change}: needs -u (not applied)");
        }
        plan.apply.retain(|(service, changes)| {
            let Some(pool) = self.pools.iter().find(|p| p.name == service.name) else {
                return false;
            };
            match pool.apply(service) {
                Ok(version) => {
                    info!(
                        "reload: service {}: {} (config version {version})",
                        service.name,
                        changes.join(", ")
                    );
                    true
                }
                Err(e) => {
                    error!(
                        "reload: service {}: not applied, still running its previous config: {e}",
                        service.name
                    );
                    false
                }
            }
        });
        *running = plan.running_after(running);
        (plan.apply.len(), plan.needs_upgrade.len())
    }

    /// Whether a service runs without a backend whose host did not resolve.
    fn waits_for_hosts(&self) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.services.iter().any(|s| !s.unresolved.is_empty())
    }
}

/// A bug in building a service must cost one reload, never the reloader: every later SIGHUP
/// would be silently ignored.
fn guarded(metrics: &Metrics, what: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(what)).is_err() {
        metrics.reloads.with_label_values(&["failed"]).inc();
        error!("reload: failed unexpectedly; still running the previous config");
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("reload: cannot listen for SIGHUP ({e}); live reload is off");
                return;
            }
        };
        let mut retry = tokio::time::interval(RESOLVE_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => guarded(&self.metrics, || self.reload()),
                _ = retry.tick() => {
                    if self.waits_for_hosts() {
                        guarded(&self.metrics, || self.retry_unresolved());
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
