//! The sticky table (`services[].affinity`): affinity key → the backend its session is on.
//!
//! The ring alone only keeps a key in place while the set of backends stays the same; adding
//! a machine moves a quarter of the keys, running jobs included. The table makes the session
//! the unit of stickiness: a key that has been forwarded goes back to the backend it went to
//! while that backend is usable, whatever the ring says now, and only new keys follow the
//! ring. Backends are named by their identity (the address as written in the config), so a
//! reload that rebuilds the ring finds them again.
//!
//! Bounded: an entry idle for `ttl` is forgotten, and beyond `max_keys` the longest idle entry
//! goes first. Pure: the clock is passed in.
//!
//! **Pins.** A key with a running WPS job is pinned ([`StickyTable::pin`], by the job table
//! when a status document says the job runs): it neither expires nor is evicted, however long
//! it is idle, until [`StickyTable::unpin`] (the job ended or was forgotten), from when its
//! idle time counts again. A pinned entry is simply not in the idle index, so expiry and
//! eviction pass it by at no cost, and a request pays nothing for pins: the count is in the
//! entry it already looks up. Pins are bounded by the job table's capacity, so the table holds
//! at most `max_keys` plus that many entries.
//!
//! **Sharing** (`state.redis`, `ops::shared_state`). When on ([`StickyTable::share`]), the
//! table also remembers which keys changed since the last flush: a new key, a move (with the
//! backend it moved from, which another instance may still have), and, at most every
//! [`share_every`] per key, a refresh, so the shared copy's TTL follows a session that stays
//! active. Marking costs one map insert under the lock `record` already holds, only when a
//! key is new, moves or is due a refresh; a lookup pays nothing. Entries other instances
//! learned come in through [`StickyTable::learn`], which applies the conflict rule
//! ([`resolve`]) and never marks what it applies (no echo).

//!
//! This file is the table; `sharing.rs` is what sharing adds to it (the change tracking, the
//! conflict rule, learning what other instances recorded).

mod sharing;

pub use sharing::{resolve, share_every, Change, Learned, Verdict};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A backend's identity as the table stores it.
pub type Identity = Arc<str>;

/// Re-stamping an entry on every request would reorder the idle index each time; an entry is
/// refreshed at most this often (the TTL is hours, so a second does not matter).
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// What the table knows about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub backend: Identity,
    /// When the key was first recorded on this backend.
    pub since: Instant,
    pub last_seen: Instant,
    /// While `backend` is down and the key is kept for it (`return_after_recovery`): the
    /// backend standing in.
    pub stand_in: Option<Identity>,
    /// Running WPS jobs that pin the key (see the module doc); pinned while above zero.
    pub pins: u32,
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    /// Position in the idle index.
    order: (Instant, u64),
    /// When this key was last marked for sharing (unused while sharing is off).
    shared: Instant,
}
#[derive(Debug, Default)]
struct Inner {
    ttl: Duration,
    max_keys: usize,
    keys: HashMap<Box<[u8]>, Slot>,
    /// (last seen, sequence) → key: the longest idle first.
    idle: BTreeMap<(Instant, u64), Box<[u8]>>,
    seq: u64,
    /// Entries per recorded backend, kept as entries come, move and go, so that `/status`
    /// reads them without walking a million keys under the lock.
    per_backend: HashMap<Identity, usize>,
    /// Sharing on: how often an active key is marked again ([`share_every`]).
    share_every: Option<Duration>,
    /// Keys changed since the last [`StickyTable::take_changes`], with the backend a move
    /// came from (the first one: what the shared copy still names).
    dirty: HashMap<Box<[u8]>, Option<Identity>>,
}

impl Inner {
    fn count_in(&mut self, backend: &Identity) {
        *self.per_backend.entry(Arc::clone(backend)).or_default() += 1;
    }

    fn count_out(&mut self, backend: &Identity) {
        if let Some(n) = self.per_backend.get_mut(backend) {
            *n -= 1;
            if *n == 0 {
                self.per_backend.remove(backend);
            }
        }
    }

    /// Remove `key`'s entry, keeping the counts.
    fn remove(&mut self, key: &[u8]) {
        if let Some(slot) = self.keys.remove(key) {
            self.count_out(&slot.entry.backend);
        }
    }

    /// The entry of `key` unless it has expired.
    fn live(&self, key: &[u8], now: Instant) -> Option<&Entry> {
        let slot = self.keys.get(key)?;
        self.is_live(&slot.entry, now).then_some(&slot.entry)
    }

    /// Pinned, or idle for less than the TTL.
    fn is_live(&self, entry: &Entry, now: Instant) -> bool {
        entry.pins > 0 || entry.last_seen + self.ttl > now
    }
}

#[derive(Debug)]
pub struct StickyTable {
    inner: Mutex<Inner>,
}

impl StickyTable {
    pub fn new(ttl: Duration, max_keys: usize) -> Self {
        let table = Self {
            inner: Mutex::new(Inner::default()),
        };
        table.configure(ttl, max_keys);
        table
    }

    /// New limits (reload); entries beyond a smaller `max_keys` go at the next new key.
    pub fn configure(&self, ttl: Duration, max_keys: usize) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        inner.max_keys = max_keys.max(1);
        if inner.share_every.is_some() {
            inner.share_every = Some(share_every(ttl));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `key`, when it has one that has not expired.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Entry> {
        let inner = self.lock();
        inner.live(key, now).cloned()
    }

    /// Just the backend `key` is recorded on (the request path: no copy of the whole entry).
    pub fn backend_of(&self, key: &[u8], now: Instant) -> Option<Identity> {
        let inner = self.lock();
        inner.live(key, now).map(|e| Arc::clone(&e.backend))
    }

    /// `key` was just forwarded to `backend`: record it (a new key, or a key that moved) or
    /// refresh it. Returns the backend it was recorded on before, when that differs.
    pub fn record(&self, key: &[u8], backend: &Identity, now: Instant) -> Option<Identity> {
        let mut inner = self.lock();
        Self::record_in(&mut inner, key, backend, now, true)
    }

    /// [`record`](Self::record) under the lock already taken; `share`: mark the change for
    /// sharing (not for what [`learn`](Self::learn) takes from another instance).
    fn record_in(
        inner: &mut Inner,
        key: &[u8],
        backend: &Identity,
        now: Instant,
        share: bool,
    ) -> Option<Identity> {
        let ttl = inner.ttl;
        if let Some(slot) = inner.keys.get_mut(key) {
            let pinned = slot.entry.pins > 0;
            let expired = !pinned && slot.entry.last_seen + ttl <= now;
            let moved = (slot.entry.backend != *backend && !expired)
                .then(|| Arc::clone(&slot.entry.backend));
            let back_home = slot.entry.stand_in.take().is_some();
            let mut change = None;
            if slot.entry.backend != *backend || expired {
                let old = std::mem::replace(&mut slot.entry.backend, Arc::clone(backend));
                slot.entry.since = now;
                slot.shared = now;
                // A move names what it replaces; an expired key starts over like a new one.
                change = Some((!expired && old != *backend).then(|| Arc::clone(&old)));
                if old != *backend {
                    // `slot` borrows `inner.keys`; the counts are a separate field.
                    let per_backend = &mut inner.per_backend;
                    if let Some(n) = per_backend.get_mut(&old) {
                        *n -= 1;
                        if *n == 0 {
                            per_backend.remove(&old);
                        }
                    }
                    *per_backend.entry(Arc::clone(backend)).or_default() += 1;
                }
            } else if now < slot.entry.last_seen + TOUCH_EVERY && !back_home {
                return None;
            } else if inner
                .share_every
                .is_some_and(|every| now >= slot.shared + every)
            {
                // Still active: the shared copy's TTL is due a refresh.
                slot.shared = now;
                change = Some(None);
            }
            slot.entry.last_seen = now;
            if !pinned {
                // A pinned entry is not in the idle index; `unpin` puts it back.
                inner.idle.remove(&slot.order);
                inner.seq += 1;
                slot.order = (now, inner.seq);
                inner.idle.insert(slot.order, key.into());
            }
            if let (Some(from), true) = (change, share) {
                inner.mark(key, from);
            }
            return moved;
        }
        // A new key: make room first (expired entries, then the longest idle; pinned entries
        // are not in the idle index).
        while inner.keys.len() >= inner.max_keys {
            let Some((_, oldest)) = inner.idle.pop_first() else {
                break;
            };
            inner.remove(&oldest);
        }
        inner.seq += 1;
        let order = (now, inner.seq);
        inner.idle.insert(order, key.into());
        inner.count_in(backend);
        inner.keys.insert(
            key.into(),
            Slot {
                entry: Entry {
                    backend: Arc::clone(backend),
                    since: now,
                    last_seen: now,
                    stand_in: None,
                    pins: 0,
                },
                order,
                shared: now,
            },
        );
        if share {
            inner.mark(key, None);
        }
        None
    }

    /// `key`'s backend is down and `stand_in` serves it meanwhile, the entry keeping its
    /// backend (it returns there on recovery). Returns whether this is a new stand-in: a move
    /// to count.
    pub fn stand_in(&self, key: &[u8], stand_in: &Identity) -> bool {
        let mut inner = self.lock();
        let Some(slot) = inner.keys.get_mut(key) else {
            return false;
        };
        if slot.entry.stand_in.as_ref() == Some(stand_in) {
            return false;
        }
        slot.entry.stand_in = Some(Arc::clone(stand_in));
        true
    }

    /// A running job pins `key`: it stays, however long idle, until as many
    /// [`unpin`](Self::unpin)s. Returns whether the key was there to pin (a key that is not,
    /// or has expired, is not brought back: its session was over).
    pub fn pin(&self, key: &[u8], now: Instant) -> bool {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let ttl = inner.ttl;
        let Some(slot) = inner.keys.get_mut(key) else {
            return false;
        };
        if slot.entry.pins == 0 {
            if slot.entry.last_seen + ttl <= now {
                return false;
            }
            inner.idle.remove(&slot.order);
        }
        slot.entry.pins += 1;
        true
    }

    /// One job pinning `key` ended (or was forgotten). The last one gone, the key is idle from
    /// `now` and expires a TTL later unless used again.
    pub fn unpin(&self, key: &[u8], now: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(slot) = inner.keys.get_mut(key) else {
            return;
        };
        if slot.entry.pins == 0 {
            return;
        }
        slot.entry.pins -= 1;
        if slot.entry.pins == 0 {
            slot.entry.last_seen = slot.entry.last_seen.max(now);
            inner.seq += 1;
            slot.order = (slot.entry.last_seen, inner.seq);
            inner.idle.insert(slot.order, key.into());
        }
    }

    /// Keys pinned by running jobs now.
    pub fn pinned(&self) -> usize {
        let inner = self.lock();
        inner.keys.len() - inner.idle.len()
    }

    /// Forget the entries idle for longer than the TTL; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let mut gone = 0;
        while let Some((&(seen, seq), _)) = inner.idle.first_key_value() {
            if seen + inner.ttl > now {
                break;
            }
            if let Some(key) = inner.idle.remove(&(seen, seq)) {
                inner.remove(&key);
                gone += 1;
            }
        }
        gone
    }

    /// Every live entry, for the state file: (key, backend, idle for, recorded for). Entries
    /// with a stand-in are saved on their own backend, which gets them back. A pinned entry is
    /// saved as idle for 0 (its job is activity) without the pin: the next process has a TTL
    /// to see the job again.
    pub fn export(&self, now: Instant) -> Vec<(Vec<u8>, Identity, Duration, Duration)> {
        let inner = self.lock();
        inner
            .keys
            .iter()
            .filter(|(_, slot)| inner.is_live(&slot.entry, now))
            .map(|(key, slot)| {
                let idle = match slot.entry.pins {
                    0 => now.saturating_duration_since(slot.entry.last_seen),
                    _ => Duration::ZERO,
                };
                (
                    key.to_vec(),
                    Arc::clone(&slot.entry.backend),
                    idle,
                    now.saturating_duration_since(slot.entry.since),
                )
            })
            .collect()
    }

    /// Add an entry learned elsewhere (a state file, the process before an upgrade) unless the
    /// key is already known here: what this process has seen itself is newer. Returns whether
    /// it was added.
    pub fn import(
        &self,
        key: &[u8],
        backend: Identity,
        idle: Duration,
        age: Duration,
        now: Instant,
    ) -> bool {
        let Some(last_seen) = now.checked_sub(idle) else {
            return false;
        };
        let since = now.checked_sub(age.max(idle)).unwrap_or(last_seen);
        {
            let inner = self.lock();
            if inner.keys.contains_key(key) || idle >= inner.ttl {
                return false;
            }
        }
        self.record(key, &backend, last_seen);
        let mut inner = self.lock();
        if let Some(slot) = inner.keys.get_mut(key) {
            slot.entry.since = since;
        }
        true
    }

    /// Keys recorded now (expired ones included until [`expire`](Self::expire) runs).
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().keys.is_empty()
    }

    /// Keys per recorded backend (expired ones included until [`expire`](Self::expire)
    /// runs), kept up to date as entries change: no walk over the table.
    pub fn counts(&self) -> HashMap<Identity, usize> {
        self.lock().per_backend.clone()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
