//! Whether Redis is up for this instance: the outage as one state of both connections (the
//! writer's and the subscription), counted, exported as `roost_shared_state_up` and logged
//! once when it begins and once when it ends.

use crate::telemetry::metrics::Metrics;
use log::{info, warn};
use std::sync::{Arc, Mutex};

/// Which connection reports: the writer's (commands) or the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Writer,
    Subscriber,
}

/// Up or down. Up takes both connections working (a write and a subscription), so that the
/// one that notices an outage last, or the stale connection the other finds on the way back,
/// cannot make it flap: the outage is logged once, when it begins, and its end once.
pub(super) struct Link {
    pub(super) url: String,
    /// The writer's last operation worked, the subscription is on, and what was said.
    parts: Mutex<(bool, bool, Phase)>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Up,
    Down,
}

impl Link {
    pub(super) fn new(url: &str, metrics: Arc<Metrics>) -> Self {
        metrics
            .shared_state_up
            .with_label_values::<&str>(&[])
            .set(0);
        Self {
            url: url.to_string(),
            parts: Mutex::new((false, false, Phase::Starting)),
            metrics,
        }
    }

    pub(super) fn failed(&self, part: Part, op: &str, why: &dyn std::fmt::Display) {
        self.metrics
            .shared_state_errors
            .with_label_values(&[op])
            .inc();
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match part {
            Part::Writer => parts.0 = false,
            Part::Subscriber => parts.1 = false,
        }
        if parts.2 != Phase::Down {
            parts.2 = Phase::Down;
            self.metrics
                .shared_state_up
                .with_label_values::<&str>(&[])
                .set(0);
            warn!(
                "shared state: Redis at {} unreachable ({op}: {why}); routing on the local \
                 tables until it is back",
                self.url
            );
        }
    }

    pub(super) fn ok(&self, part: Part) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match part {
            Part::Writer => parts.0 = true,
            Part::Subscriber => parts.1 = true,
        }
        if parts.0 && parts.1 && parts.2 != Phase::Up {
            let was = std::mem::replace(&mut parts.2, Phase::Up);
            self.metrics
                .shared_state_up
                .with_label_values::<&str>(&[])
                .set(1);
            match was {
                Phase::Down => info!("shared state: Redis at {} is back", self.url),
                _ => info!("shared state: connected to Redis at {}", self.url),
            }
        }
    }

    /// Whether the writer's last operation worked (it retries slower when not).
    pub(super) fn writing(&self) -> bool {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}
