//! Selection policy: which backend a request goes to, given the candidates in ring order and
//! their health. Pure: no sockets, no clocks, so the stickiness rules are pinned by unit tests.
//!
//! The ring itself is `policy::ketama` (the service state walks it); this module decides what to do with
//! the candidates it yields:
//! - the first candidate is the key's *owner*; it gets the request when it is usable;
//! - `when_down: failover` walks on to the next usable candidate, `reject` stops at the owner;
//! - backends to avoid (one that just refused a connection for the retry, a key's recorded
//!   backend that is down) are passed over (`avoid`).
//!
//! Keyless requests use [`RoundRobin`]: a weighted rotation whose start moves one step per
//! request, falling forward past backends that are down.

use crate::config::WhenDown;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether the chosen backend owns the key on the ring or stands in for a down owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Failover,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Failover => "failover",
        }
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<B> {
    /// Send the request to `backend`.
    Forward { backend: B, role: Role },
    /// `when_down: reject` and the key's owner is down.
    OwnerDown,
    /// No usable backend at all.
    NoneHealthy,
}

/// Acceptor for a walk over ring candidates, fed one candidate at a time by a ring iterator
/// (Pingora's `select_with` calls [`RingWalk::accept`] until it returns true).
pub struct RingWalk<'a, B> {
    when_down: WhenDown,
    avoid: &'a [B],
    offered: Cell<usize>,
}

impl<'a, B: PartialEq> RingWalk<'a, B> {
    pub fn new(when_down: WhenDown, avoid: &'a [B]) -> Self {
        Self {
            when_down,
            avoid,
            offered: Cell::new(0),
        }
    }

    /// How many ring steps the iterator may take. `failover` may need the whole ring to meet
    /// every distinct backend (a small fixed count can end the walk while healthy backends
    /// remain); `reject` only ever looks at the owner, the first step, unless some backend is
    /// `closed` to new keys (then the owner may lie further on).
    pub fn max_steps(&self, ring_points: usize, closed: bool) -> usize {
        match self.when_down {
            WhenDown::Reject if !closed => 1,
            _ => ring_points.max(1),
        }
    }

    /// Take `candidate`? Called in ring order with each distinct backend's health and
    /// whether it takes new keys (`open`). One that does not (drain, maint) is passed over as
    /// if it were not on the ring: it is neither the owner nor a down owner.
    pub fn accept(&self, candidate: &B, healthy: bool, open: bool) -> bool {
        if !open {
            return false;
        }
        let n = self.offered.get();
        self.offered.set(n + 1);
        if n > 0 && self.when_down == WhenDown::Reject {
            return false;
        }
        healthy && !self.avoid.contains(candidate)
    }

    /// Turn what the walk picked into a decision.
    pub fn finish(self, picked: Option<B>) -> Decision<B> {
        match picked {
            Some(backend) => Decision::Forward {
                backend,
                role: if self.offered.get() == 1 {
                    Role::Owner
                } else {
                    Role::Failover
                },
            },
            None if self.when_down == WhenDown::Reject && self.offered.get() > 0 => {
                Decision::OwnerDown
            }
            None => Decision::NoneHealthy,
        }
    }
}

/// Weighted round robin for requests without a key.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// Pick from `backends` (`(weight, usable)` in a fixed order): the rotation's current slot,
    /// or the first usable backend after it. Returns the index, or `None` when none is usable.
    pub fn pick(&self, backends: &[(u32, bool)]) -> Option<usize> {
        self.pick_with(backends.len(), |i| backends[i].0, |i| backends[i].1)
    }

    /// [`pick`](Self::pick) over `len` backends described by `weight(i)` and `usable(i)`, so
    /// that the request path needs no list of its own.
    pub fn pick_with(
        &self,
        len: usize,
        weight: impl Fn(usize) -> u32,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let total: u64 = (0..len).map(|i| u64::from(weight(i))).sum();
        if total == 0 {
            return None;
        }
        let mut slot = (self.next.fetch_add(1, Ordering::Relaxed) as u64) % total;
        let start = (0..len)
            .position(|i| {
                let w = u64::from(weight(i));
                if slot < w {
                    true
                } else {
                    slot -= w;
                    false
                }
            })
            .unwrap_or(0);
        (0..len)
            .map(|step| (start + step) % len)
            .find(|&i| usable(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a walk the way Pingora's `select_with` does: offer candidates until accepted.
    fn walk(
        ring: &[(&'static str, bool)],
        when_down: WhenDown,
        exclude: Option<&&'static str>,
    ) -> Decision<&'static str> {
        walk_closed(ring, when_down, exclude, &[])
    }

    /// `closed`: backends that take no new keys (drain, maint).
    fn walk_closed(
        ring: &[(&'static str, bool)],
        when_down: WhenDown,
        exclude: Option<&&'static str>,
        closed: &[&str],
    ) -> Decision<&'static str> {
        let avoid: Vec<&'static str> = exclude.into_iter().copied().collect();
        let w = RingWalk::new(when_down, &avoid);
        let limit = w.max_steps(ring.len(), !closed.is_empty());
        let picked = ring
            .iter()
            .take(limit)
            .find(|(b, healthy)| w.accept(b, *healthy, !closed.contains(b)))
            .map(|(b, _)| *b);
        w.finish(picked)
    }

    #[test]
    fn a_closed_backend_is_passed_over_as_if_it_were_not_on_the_ring() {
        let owner_b = Decision::Forward {
            backend: "b",
            role: Role::Owner,
        };
        for mode in [WhenDown::Failover, WhenDown::Reject] {
            let ring = [("a", true), ("b", true), ("c", true)];
            assert_eq!(walk_closed(&ring, mode, None, &["a"]), owner_b);
            // Closed and down: still not the owner, so `reject` does not refuse the key.
            let ring = [("a", false), ("b", true)];
            assert_eq!(walk_closed(&ring, mode, None, &["a"]), owner_b);
        }
        // The owner after the closed one is down: that is a down owner.
        let ring = [("a", true), ("b", false), ("c", true)];
        assert_eq!(
            walk_closed(&ring, WhenDown::Reject, None, &["a"]),
            Decision::OwnerDown
        );
        assert_eq!(
            walk_closed(&ring, WhenDown::Failover, None, &["a"]),
            Decision::Forward {
                backend: "c",
                role: Role::Failover
            }
        );
        let ring = [("a", true), ("b", true)];
        assert_eq!(
            walk_closed(&ring, WhenDown::Failover, None, &["a", "b"]),
            Decision::NoneHealthy
        );
    }

    #[test]
    fn owner_when_healthy() {
        let ring = [("a", true), ("b", true), ("c", true)];
        for mode in [WhenDown::Failover, WhenDown::Reject] {
            assert_eq!(
                walk(&ring, mode, None),
                Decision::Forward {
                    backend: "a",
                    role: Role::Owner
                }
            );
        }
    }

    #[test]
    fn failover_walks_past_every_down_backend() {
        let ring = [("a", false), ("b", false), ("c", true)];
        assert_eq!(
            walk(&ring, WhenDown::Failover, None),
            Decision::Forward {
                backend: "c",
                role: Role::Failover
            }
        );
    }

    #[test]
    fn reject_stops_at_the_owner() {
        let ring = [("a", false), ("b", true)];
        assert_eq!(walk(&ring, WhenDown::Reject, None), Decision::OwnerDown);
    }

    #[test]
    fn none_healthy() {
        let ring = [("a", false), ("b", false)];
        assert_eq!(walk(&ring, WhenDown::Failover, None), Decision::NoneHealthy);
        assert_eq!(walk(&[], WhenDown::Failover, None), Decision::NoneHealthy);
        assert_eq!(walk(&[], WhenDown::Reject, None), Decision::NoneHealthy);
    }

    #[test]
    fn excluded_backend_is_skipped_for_retries() {
        let ring = [("a", true), ("b", true)];
        assert_eq!(
            walk(&ring, WhenDown::Failover, Some(&"a")),
            Decision::Forward {
                backend: "b",
                role: Role::Failover
            }
        );
    }

    #[test]
    fn round_robin_follows_weights() {
        let rr = RoundRobin::default();
        let backends = [(1, true), (2, true), (1, true)];
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[rr.pick(&backends).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 200, 100]);
    }

    #[test]
    fn round_robin_skips_down_backends_and_stays_even() {
        let rr = RoundRobin::default();
        let backends = [(1, true), (1, false), (1, true)];
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[rr.pick(&backends).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert_eq!(counts[0] + counts[2], 300);
        assert!(counts[0] >= 100 && counts[2] >= 100, "{counts:?}");
        assert_eq!(rr.pick(&[(1, false), (3, false)]), None);
        assert_eq!(rr.pick(&[]), None);
    }
}
