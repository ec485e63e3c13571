//! The recent events of one service, for the status page: health transitions (down, up),
//! operator state changes, panic mode entered or left, and key moves, each with its reason.
//! Bounded: [`KEPT`] of each kind are kept, in two rings, so that an outage that moves
//! thousands of keys does not push its own health transition out of view.
//!
//! Fed only where these things happen and are logged (transitions, which are rare, and a key's
//! move, once per move, not per request); never on a request that changes nothing. A short
//! mutex per event is all it costs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Events kept of each kind (transitions, moves).
pub const KEPT: usize = 50;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A backend went down (probes, or real traffic).
    Down,
    /// A backend came back up.
    Up,
    /// An operator state change (ready, drain, maint).
    State,
    /// Panic mode entered or left.
    Panic,
    /// A key moved to another backend.
    Moved,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Down => "down",
            Kind::Up => "up",
            Kind::State => "state",
            Kind::Panic => "panic",
            Kind::Moved => "moved",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Increases by one per event of the service, whichever ring holds it.
    pub seq: u64,
    pub at: SystemTime,
    pub kind: Kind,
    /// The backend it is about (`ip:port`, or the address as written); empty for panic mode.
    pub backend: String,
    /// What happened and why, as the log line says it.
    pub detail: String,
}

/// A bounded buffer that drops its oldest item when full.
#[derive(Debug)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.items.iter()
    }
}

/// The recent events of one service.
#[derive(Debug)]
pub struct Events {
    seq: AtomicU64,
    transitions: Mutex<Ring<Event>>,
    moves: Mutex<Ring<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new(KEPT)
    }
}

impl Events {
    pub fn new(kept: usize) -> Self {
        Self {
            seq: AtomicU64::new(0),
            transitions: Mutex::new(Ring::new(kept)),
            moves: Mutex::new(Ring::new(kept)),
        }
    }

    /// Note an event that happened now.
    pub fn push(&self, kind: Kind, backend: impl Into<String>, detail: impl Into<String>) {
        self.push_at(SystemTime::now(), kind, backend.into(), detail.into());
    }

    fn push_at(&self, at: SystemTime, kind: Kind, backend: String, detail: String) {
        let ring = if kind == Kind::Moved {
            &self.moves
        } else {
            &self.transitions
        };
        let mut ring = ring.lock().unwrap_or_else(|p| p.into_inner());
        // Taken under the ring's lock, so each ring holds its events in order.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        ring.push(Event {
            seq,
            at,
            kind,
            backend,
            detail,
        });
    }

    /// Both rings merged, newest first.
    pub fn recent(&self) -> Vec<Event> {
        let mut all: Vec<Event> = Vec::new();
        for ring in [&self.transitions, &self.moves] {
            let ring = ring.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(ring.iter().cloned());
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.seq));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_drops_the_oldest() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
        let mut one = Ring::new(0);
        one.push('a');
        one.push('b');
        assert_eq!(one.iter().copied().collect::<Vec<_>>(), ['b']);
    }

    #[test]
    fn a_flood_of_moves_keeps_the_transitions_and_order_is_newest_first() {
        let e = Events::new(3);
        e.push(Kind::Down, "10.0.0.1:80", "after 2 failed checks");
        for i in 0..10 {
            e.push(Kind::Moved, "10.0.0.2:80", format!("key k{i} (owner_down)"));
        }
        e.push(Kind::Up, "10.0.0.1:80", "after 1 good checks");
        let recent = e.recent();
        let kinds: Vec<&str> = recent.iter().map(|ev| ev.kind.as_str()).collect();
        assert_eq!(kinds, ["up", "moved", "moved", "moved", "down"]);
        assert_eq!(recent[1].detail, "key k9 (owner_down)");
        assert_eq!(recent[3].detail, "key k7 (owner_down)");
        assert_eq!(recent[0].seq, 12);
        assert_eq!(recent[4].seq, 1);
        assert!(recent.windows(2).all(|w| w[0].seq > w[1].seq));
    }
}
