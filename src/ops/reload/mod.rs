//! Live reload on SIGHUP: re-read the config file and reconfigure the running pools in place.
//!
//! [`plan`] (pure) compares the running config with the new one and sorts every difference
//! into what this process can apply (backends, weights, health check, key policy of a service
//! that keeps its listener) and what needs a new process (`roost -u`: listeners, services
//! added or removed, server and admin settings). A service whose listener changed is left
//! exactly as it was, so nothing is ever half-applied. [`ReloadService`] is the I/O around it.

mod plan;

use plan::plan;

use crate::config::Config;
use crate::service::pool::Pool;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

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
        let new = match Config::load(&self.path) {
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
        let mut plan = plan(&running, &new);
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
        *running = plan.running_after(&running);
        self.metrics.reloads.with_label_values(&["applied"]).inc();
        info!(
            "reload: {source}: done ({} service(s) changed, {} change(s) need -u)",
            plan.apply.len(),
            plan.needs_upgrade.len()
        );
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
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => {
                    // A bug in building a service must cost this one reload, never the
                    // reloader: every later SIGHUP would be silently ignored.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reload())).is_err() {
                        self.metrics.reloads.with_label_values(&["failed"]).inc();
                        error!("reload: failed unexpectedly; still running the previous config");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
