//! Panic mode of one service: entered when too few backends are usable (routing then ignores
//! health), left when enough are back, logged, counted and recorded as events.

use super::Pool;
use crate::telemetry::events::Kind;
use log::warn;
use prometheus::{Counter, IntGauge};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Panic mode of one service: the flag every version reads, and its bookkeeping.
pub(super) struct PanicMode {
    pub(super) on: Arc<AtomicBool>,
    /// Since when, and up to when `roost_panic_seconds_total` has counted it; `None` while
    /// not in panic mode. Taken only when health may have changed, never per request.
    pub(super) since: Mutex<Option<(Instant, Instant)>>,
    pub(super) gauge: IntGauge,
    pub(super) seconds: Counter,
}

impl Pool {
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
}
