//! The pool's background tasks: the health checks every `interval` (following reloads, with
//! the expiry of old jobs and idle keys), and the history samples every [`SAMPLE_EVERY`].

use super::Pool;
use crate::telemetry::history::{Reading, Sample, SAMPLE_EVERY};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

impl Pool {
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
