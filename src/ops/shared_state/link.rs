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
/// cannot make it flap: the outage is logged once, when it begins, and its end once. When an
/// outage is noticed by the subscription, the writer must work again after it: an idle writer
/// still holds the connection from before, which fails on its first use.
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
            // The writer's last success may be from before the subscription was lost: it must
            // work again (an idle writer still holds its connection from before, which fails on
            // its next use). A lost writer says nothing about the subscription, whose
            // connection reports its own loss.
            Part::Subscriber => *parts = (false, false, parts.2),
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

    #[cfg(test)]
    fn up(&self) -> bool {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).2 == Phase::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_only_when_both_connections_worked_after_the_outage() {
        let link = Link::new("redis://test", Arc::new(Metrics::new()));
        link.ok(Part::Writer);
        assert!(!link.up(), "the subscription is not on yet");
        link.ok(Part::Subscriber);
        assert!(link.up());

        // The subscription notices the outage; the idle writer did not.
        link.failed(Part::Subscriber, "subscribe", &"connection lost");
        assert!(!link.up());
        // Redis is back: the subscription reconnects first; the writer's connection from
        // before the outage fails on its first use, inside the same outage.
        link.ok(Part::Subscriber);
        assert!(!link.up(), "back before the writer worked again");
        link.failed(Part::Writer, "read", &"broken pipe");
        link.ok(Part::Writer);
        assert!(link.up());
        let errors = link
            .metrics
            .shared_state_errors
            .with_label_values(&["read"])
            .get();
        assert_eq!(errors, 1);

        // Only the writer fails (a slow Redis): the subscription, still on, needs no new
        // subscribe for the link to be back.
        link.failed(Part::Writer, "write", &"timed out");
        assert!(!link.up());
        link.ok(Part::Writer);
        assert!(link.up());
    }
}
