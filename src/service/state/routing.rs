//! A version as the route resolver reads it: `policy::route`'s `Pick` over the Ketama ring
//! (or NGINX's plain-hash table), the sticky table and the rotation, and the record of where a
//! key was forwarded (with the moves it counts).

use super::ServiceState;
use crate::config::{BackendState, WhenDown};
use crate::policy::nginx_hash::{self, NginxHash};
use crate::policy::route::{Move, Pick, Reason, Recorded, Route};
use crate::policy::select::{Decision, RingWalk, Role};
use crate::telemetry::events::Kind;
use std::time::Instant;

impl ServiceState {
    /// `key` was forwarded along `route`: record it in the sticky table and count a move.
    /// Called for the proxied requests only (a `/route` lookup records nothing). Returns the
    /// move, once per move (not per request), so the caller can check the key's running jobs.
    pub fn record(&self, key: &[u8], route: &Route, now: Instant) -> Option<Move> {
        let table = self.table.as_ref()?;
        if !matches!(route.reason, Reason::Key | Reason::Table) {
            return None;
        }
        let chosen = &self.members[route.backend].identity;
        // The backend it moved from, when the table says.
        let moved = if route.role == Role::Failover
            && route.reason == Reason::Table
            && self.settings.affinity.return_after_recovery
        {
            // Kept for its backend, which gets it back on recovery (looked up again for the
            // event: a move is rare, a second short lock is fine).
            table.stand_in(key, chosen).then(|| {
                let from = table.backend_of(key, now);
                let from = from.as_deref().unwrap_or("its recorded backend");
                (
                    from.to_string(),
                    format!("; a stand-in until {from} recovers"),
                )
            })
        } else {
            table
                .record(key, chosen, now)
                .map(|from| (from.to_string(), String::new()))
        };
        let (from, stand_in) = moved?;
        let why = route.moved.unwrap_or(Move::OwnerDown);
        self.moves[why as usize].inc();
        self.events.push(
            Kind::Moved,
            chosen.to_string(),
            format!(
                "key {} moved from {from} to {chosen} ({}{stand_in})",
                String::from_utf8_lossy(key),
                why.as_str()
            ),
        );
        log::debug!(
            "affinity: service={} key moved to {} ({})",
            self.name(),
            chosen,
            why.as_str()
        );
        Some(why)
    }

    /// `by_key` under `nginx_hash`: NGINX's own retry rules pick the stand-in for a down owner
    /// (the next rehash that is usable), and where NGINX gives up hashing, the rotation
    /// answers.
    /// A backend closed to new keys (drain, maint) is passed over as if it were down, but
    /// its keys are not refused under `when_down: reject`: their owner is alive, and the
    /// keys are new to this service (the sticky table would hold them otherwise).
    fn by_nginx_hash(&self, table: &NginxHash, key: &[u8], avoid: &[usize]) -> Decision<usize> {
        let usable = |i: usize| !avoid.contains(&i) && self.usable(i) && self.open(i);
        let forward = |backend, role| Decision::Forward { backend, role };
        let mut when_down = self.settings.route.when_down;
        if when_down == WhenDown::Reject && self.operator.any_closed() {
            if let nginx_hash::Pick::Hashed { index, .. } = table.pick(key, |_| true) {
                if !self.open(index) {
                    when_down = WhenDown::Failover;
                }
            }
        }
        match (table.pick(key, usable), when_down) {
            (nginx_hash::Pick::Hashed { index, tries: 0 }, _) => forward(index, Role::Owner),
            (nginx_hash::Pick::Hashed { index, .. }, WhenDown::Failover) => {
                forward(index, Role::Failover)
            }
            (_, WhenDown::Reject) => Decision::OwnerDown,
            (nginx_hash::Pick::RoundRobin, WhenDown::Failover) => self
                .rotation
                .pick_with(self.members.len(), |i| self.members[i].weight, usable)
                .map_or(Decision::NoneHealthy, |i| forward(i, Role::Failover)),
        }
    }
}

impl Pick for ServiceState {
    fn by_key(&self, key: &[u8], avoid: &[usize]) -> Decision<usize> {
        if self.members.is_empty() {
            // Every host of the service failed to resolve: nothing to hash onto yet.
            return Decision::NoneHealthy;
        }
        if let Some(table) = &self.nginx_hash {
            return self.by_nginx_hash(table, key, avoid);
        }
        let walk = RingWalk::new(self.settings.route.when_down, avoid);
        let closed = self.operator.any_closed();
        let steps = walk.max_steps(self.ring.len(), closed);
        let picked = self.ring.walk(key, steps).find(|&i| {
            // Health as `usable` says (outlier records, panic mode, maintenance), not the
            // probes alone; a backend closed to new keys is passed over.
            walk.accept(&i, self.usable(i), !closed || self.open(i))
        });
        walk.finish(picked)
    }

    fn recorded(&self, key: &[u8]) -> Option<Recorded> {
        let backend = self.table.as_ref()?.backend_of(key, Instant::now())?;
        Some(Recorded {
            member: self.by_identity.get(&backend).copied(),
        })
    }

    fn usable(&self, i: usize) -> bool {
        ServiceState::usable(self, i)
    }

    fn in_maintenance(&self, i: usize) -> bool {
        self.operator_state(i) == BackendState::Maint
    }

    fn round_robin(&self, exclude: Option<usize>) -> Decision<usize> {
        let picked = self.rotation.pick_with(
            self.members.len(),
            |i| self.members[i].weight,
            |i| Some(i) != exclude && self.usable(i) && self.open(i),
        );
        match picked {
            Some(backend) => Decision::Forward {
                backend,
                role: Role::Owner,
            },
            None => Decision::NoneHealthy,
        }
    }
}
