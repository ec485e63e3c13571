//! Live reload on SIGHUP: re-read the config file and reconfigure the running pools in place.
//!
//! [`plan`] (pure) compares the running config with the new one and sorts every difference
//! into what this process can apply (backends, weights, health check, key policy of a service
//! that keeps its listener) and what needs a new process (`roost -u`: listeners, services
//! added or removed, server and admin settings). A service whose listener changed is left
//! exactly as it was, so nothing is ever half-applied. [`ReloadService`] is the I/O around it;
//! it also looks up, every [`RESOLVE_RETRY`], the backend hosts that did not resolve, and adds
//! each one to its service as a reload would once it does; and looks up each DNS backend entry
//! every `refresh` ([`discovery`]), applying what changed the same way.

mod plan;

use plan::plan;

use crate::config::{system_resolver, Config, DnsBackends};
use crate::ops::discovery;
use crate::service::pool::Pool;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use futures::FutureExt;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
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
    /// Each DNS entry's next lookup, by (service, entry).
    dns: std::sync::Mutex<HashMap<(String, String), DnsWatch>>,
}

/// When a DNS entry is looked up next, and whether its last lookup failed (an outage is
/// logged once, and its end once).
struct DnsWatch {
    due: Instant,
    failing: bool,
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
            dns: Default::default(),
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
                service.keep_discovered(now);
            }
        }
        // Every DNS entry of the new file is looked up at the next tick.
        self.dns.lock().unwrap_or_else(|p| p.into_inner()).clear();
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

    /// Look up the DNS entries whose `refresh` has come, and apply what changed as a reload
    /// would. A failed or empty answer keeps the backends found before.
    async fn refresh_dns(&self) {
        let now = Instant::now();
        let due: Vec<(String, DnsBackends)> = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let mut watches = self.dns.lock().unwrap_or_else(|p| p.into_inner());
            running
                .services
                .iter()
                .flat_map(|s| s.dns.iter().map(move |d| (s.name.clone(), d.clone())))
                .filter(|(service, d)| {
                    let watch =
                        watches
                            .entry((service.clone(), d.describe()))
                            .or_insert(DnsWatch {
                                due: now,
                                failing: false,
                            });
                    watch.due <= now
                })
                .collect()
        };
        for (service, source) in due {
            let result = discovery::lookup(&source).await;
            let what = source.describe();
            let was_failing = {
                let mut watches = self.dns.lock().unwrap_or_else(|p| p.into_inner());
                let watch = watches
                    .entry((service.clone(), what.clone()))
                    .or_insert(DnsWatch {
                        due: now,
                        failing: false,
                    });
                watch.due = Instant::now() + source.refresh;
                std::mem::replace(&mut watch.failing, result.is_err())
            };
            let count = |result: &str| {
                self.metrics
                    .dns_lookups
                    .with_label_values(&[service.as_str(), what.as_str(), result])
                    .inc();
            };
            let found = match result {
                Ok(found) => found,
                Err(why) => {
                    count("failed");
                    if !was_failing {
                        warn!(
                            "dns: service {service}: {what}: {why}; keeping the backends it found \
                             before, looking again every {}",
                            humantime::format_duration(source.refresh)
                        );
                    }
                    continue;
                }
            };
            if was_failing {
                info!("dns: service {service}: {what}: answers again");
            }
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            // A reload since the lookup started may have changed or removed the entry.
            let next = running.service(&service).and_then(|s| {
                s.dns
                    .iter()
                    .find(|d| **d == source)
                    .and_then(|d| s.with_found(d, &found))
            });
            let Some(next) = next else {
                count("same");
                continue;
            };
            count("changed");
            let mut new = running.clone();
            if let Some(slot) = new.services.iter_mut().find(|s| s.name == service) {
                *slot = next;
            }
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
        // DNS entries: each has its own `refresh` (at least 1 s); this tick checks which is due.
        let mut dns = tokio::time::interval(Duration::from_secs(1));
        dns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => guarded(&self.metrics, || self.reload()),
                _ = retry.tick() => {
                    if self.waits_for_hosts() {
                        guarded(&self.metrics, || self.retry_unresolved());
                    }
                }
                _ = dns.tick() => {
                    let refresh = std::panic::AssertUnwindSafe(self.refresh_dns());
                    if refresh.catch_unwind().await.is_err() {
                        self.metrics.reloads.with_label_values(&["failed"]).inc();
                        error!("dns: a refresh failed unexpectedly; still running the previous backends");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
