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

/// How often an active key's shared copy is refreshed: an eighth of the TTL, at least a
/// second. The shared copy of a key can so expire up to that much before the local one.
pub fn share_every(ttl: Duration) -> Duration {
    (ttl / 8).max(Duration::from_secs(1))
}

/// One key changed since the last flush, for the shared store: the export shape
/// ([`StickyTable::export`]: key, backend, idle, age) and, for a move, the backend the shared
/// copy may still name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub backend: Identity,
    pub idle: Duration,
    pub age: Duration,
    /// `Some`: the key moved away from this backend (failover, drain, removal): it replaces
    /// an entry naming it. `None`: a new key or a refresh.
    pub from: Option<Identity>,
}

/// Two entries for one key that name different backends: which one stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The other one is taken.
    Theirs,
    /// This one stays (and the other instance is told).
    Ours,
}

/// The conflict rule, the same here and in Redis (`ops::shared_state`'s script): an entry
/// that moved away from ours replaces it (a deliberate move: its owner went down, was drained
/// or removed); otherwise the entry recorded first (`since`) stays, so a session that already
/// has a machine keeps it; on a tie, theirs (the one already stored) stays. `ours_since` and
/// `their_since` are both in one clock.
pub fn resolve(
    ours: &Identity,
    ours_since: Instant,
    their_from: Option<&Identity>,
    their_since: Instant,
) -> Verdict {
    if their_from == Some(ours) || their_since <= ours_since {
        Verdict::Theirs
    } else {
        Verdict::Ours
    }
}

/// What [`StickyTable::learn`] did with an entry another instance recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// The key was new here (or expired): added.
    Added,
    /// Already recorded on that backend: its idle time refreshed.
    Refreshed,
    /// Recorded here on another backend, which the conflict rule gave up: moved to theirs.
    Moved { from: Identity },
    /// Recorded here on another backend that stays (older, or pinned by a running job).
    Kept,
    /// Idle beyond the TTL already: ignored.
    Stale,
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

    /// Mark `key` for sharing (when sharing is on); a move keeps the first `from`.
    fn mark(&mut self, key: &[u8], from: Option<Identity>) {
        if self.share_every.is_some() {
            match self.dirty.get_mut(key) {
                Some(first) => {
                    if first.is_none() {
                        *first = from;
                    }
                }
                None => {
                    self.dirty.insert(key.into(), from);
                }
            }
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

    /// Turn sharing on: from now on, changed keys are kept for [`take_changes`](Self::take_changes).
    pub fn share(&self) {
        let mut inner = self.lock();
        inner.share_every = Some(share_every(inner.ttl));
    }

    /// The keys changed since the last call, as they are now (a key gone since is left out),
    /// and forgotten as changed.
    pub fn take_changes(&self, now: Instant) -> Vec<Change> {
        let mut inner = self.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        dirty
            .into_iter()
            .filter_map(|(key, from)| {
                let entry = inner.live(&key, now)?;
                Some(Change {
                    backend: Arc::clone(&entry.backend),
                    idle: match entry.pins {
                        0 => now.saturating_duration_since(entry.last_seen),
                        _ => Duration::ZERO,
                    },
                    age: now.saturating_duration_since(entry.since),
                    from: from.filter(|f| *f != entry.backend),
                    key: key.into_vec(),
                })
            })
            .collect()
    }

    /// Changes that could not be shared (the store is down): kept for the next flush. A key
    /// changed again meanwhile keeps this older `from`, which is what the store still names.
    pub fn restore_changes(&self, changes: Vec<Change>) {
        let mut inner = self.lock();
        for c in changes {
            let key: Box<[u8]> = c.key.into();
            match c.from {
                Some(from) => {
                    inner.dirty.insert(key, Some(from));
                }
                None => {
                    inner.dirty.entry(key).or_insert(None);
                }
            }
        }
    }

    /// Mark every live key as changed (the store came back, maybe empty: push them all).
    pub fn mark_all(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.share_every.is_none() {
            return 0;
        }
        let mut n = 0;
        for (key, slot) in &inner.keys {
            if slot.entry.pins > 0 || slot.entry.last_seen + inner.ttl > now {
                inner.dirty.entry(key.clone()).or_insert(None);
                n += 1;
            }
        }
        n
    }

    /// Keys waiting to be shared.
    pub fn pending(&self) -> usize {
        self.lock().dirty.len()
    }

    /// An entry another instance recorded (`backend` since `since`, idle for `idle`, moved
    /// away from `from`), applied by the conflict rule ([`resolve`]). Nothing it applies is
    /// marked for sharing; a local entry that stays is marked again, so the other instance
    /// learns it (the store arbitrates with the same rule). A pinned entry (a running job)
    /// stays and is not marked: the job's backend keeps the key here.
    pub fn learn(
        &self,
        key: &[u8],
        backend: &Identity,
        since: Instant,
        idle: Duration,
        from: Option<&Identity>,
        now: Instant,
    ) -> Learned {
        let Some(last_seen) = now.checked_sub(idle) else {
            return Learned::Stale;
        };
        let since = since.min(last_seen);
        let mut inner = self.lock();
        if idle >= inner.ttl {
            return Learned::Stale;
        }
        let current = inner
            .live(key, now)
            .map(|e| (Arc::clone(&e.backend), e.since, e.pins));
        let learned = match current {
            None => Learned::Added,
            Some((ours, _, _)) if ours == *backend => {
                let inner = &mut *inner;
                if let Some(slot) = inner.keys.get_mut(key) {
                    slot.entry.since = slot.entry.since.min(since);
                    if last_seen > slot.entry.last_seen {
                        slot.entry.last_seen = last_seen;
                        if slot.entry.pins == 0 {
                            inner.idle.remove(&slot.order);
                            inner.seq += 1;
                            slot.order = (last_seen, inner.seq);
                            inner.idle.insert(slot.order, key.into());
                        }
                    }
                }
                return Learned::Refreshed;
            }
            Some((_, _, pins)) if pins > 0 => return Learned::Kept,
            Some((ours, ours_since, _)) => match resolve(&ours, ours_since, from, since) {
                Verdict::Theirs => Learned::Moved { from: ours },
                Verdict::Ours => {
                    inner.mark(key, None);
                    return Learned::Kept;
                }
            },
        };
        // Added or moved: recorded as if forwarded at `last_seen`, without marking it, under
        // the same lock (a request recording another key meanwhile is marked as always).
        Self::record_in(&mut inner, key, backend, last_seen, false);
        inner.dirty.remove(key);
        if let Some(slot) = inner.keys.get_mut(key) {
            slot.entry.since = since;
            slot.entry.stand_in = None;
        }
        learned
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
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        s.into()
    }

    #[test]
    fn records_refreshes_and_reports_moves() {
        let t = StickyTable::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert_eq!(t.get(b"k", t0), None);
        assert_eq!(t.record(b"k", &id("a:1"), t0), None);
        let e = t.get(b"k", t0).unwrap();
        assert_eq!((&*e.backend, e.since), ("a:1", t0));
        // Same backend: no move; a later request refreshes it.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(t.record(b"k", &id("a:1"), t1), None);
        assert_eq!(t.get(b"k", t1).unwrap().last_seen, t1);
        assert_eq!(t.get(b"k", t1).unwrap().since, t0);
        // Another backend: a move, reported with where it was.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(t.record(b"k", &id("b:1"), t2).as_deref(), Some("a:1"));
        let e = t.get(b"k", t2).unwrap();
        assert_eq!((&*e.backend, e.since), ("b:1", t2));
    }

    #[test]
    fn a_stand_in_is_counted_once_and_cleared_on_return() {
        let t = StickyTable::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        t.record(b"k", &id("a"), t0);
        assert!(t.stand_in(b"k", &id("b")));
        assert!(
            !t.stand_in(b"k", &id("b")),
            "the same stand-in is not a new move"
        );
        assert!(!t.stand_in(b"unknown", &id("b")));
        assert_eq!(t.get(b"k", t0).unwrap().stand_in.as_deref(), Some("b"));
        assert_eq!(
            t.record(b"k", &id("a"), t0),
            None,
            "back home is not a move away"
        );
        assert_eq!(t.get(b"k", t0).unwrap().stand_in, None);
        assert!(
            t.stand_in(b"k", &id("b")),
            "a second outage is a move again"
        );
    }

    #[test]
    fn export_and_import_carry_entries_without_overwriting_newer_ones() {
        let t = StickyTable::new(Duration::from_secs(100), 10);
        let t0 = Instant::now();
        t.record(b"a", &id("x"), t0);
        t.record(b"b", &id("y"), t0 + Duration::from_secs(10));
        let now = t0 + Duration::from_secs(20);
        let mut saved = t.export(now);
        saved.sort();
        assert_eq!(saved.len(), 2);
        assert_eq!(
            (&saved[0].0[..], &*saved[0].1, saved[0].2),
            (&b"a"[..], "x", Duration::from_secs(20))
        );
        let fresh = StickyTable::new(Duration::from_secs(100), 10);
        fresh.record(b"b", &id("z"), now);
        for (k, b, idle, age) in saved {
            fresh.import(&k, b, idle, age, now);
        }
        assert_eq!(&*fresh.get(b"a", now).unwrap().backend, "x");
        assert_eq!(fresh.get(b"a", now).unwrap().last_seen, t0);
        assert_eq!(
            &*fresh.get(b"b", now).unwrap().backend,
            "z",
            "its own entry is newer"
        );
        // An entry idle beyond the TTL is not brought back.
        assert!(!fresh.import(b"c", id("x"), Duration::from_secs(100), Duration::ZERO, now));
    }

    #[test]
    fn idle_entries_expire_after_the_ttl() {
        let t = StickyTable::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        t.record(b"old", &id("a"), t0);
        t.record(b"new", &id("a"), t0 + Duration::from_secs(5));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(t.get(b"old", later), None, "expired at exactly the TTL");
        assert!(t.get(b"new", later).is_some());
        // An expired key recorded elsewhere is not a move: its session was over.
        assert_eq!(t.record(b"old", &id("b"), later), None);
        assert_eq!(t.expire(later + Duration::from_secs(5)), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_longest_idle_entry_is_evicted_first() {
        let t = StickyTable::new(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            t.record(*k, &id("x"), t0 + Duration::from_secs(i as u64));
        }
        // `a` is used again, so `b` is now the longest idle.
        t.record(b"a", &id("x"), t0 + Duration::from_secs(10));
        t.record(b"d", &id("x"), t0 + Duration::from_secs(11));
        let now = t0 + Duration::from_secs(12);
        assert_eq!(t.len(), 3);
        assert!(t.get(b"b", now).is_none());
        for k in [b"a", b"c", b"d"] {
            assert!(t.get(k, now).is_some());
        }
    }

    #[test]
    fn refreshes_within_a_second_do_not_reorder() {
        let t = StickyTable::new(Duration::from_secs(3600), 2);
        let t0 = Instant::now();
        t.record(b"a", &id("x"), t0);
        t.record(b"b", &id("x"), t0 + Duration::from_millis(100));
        // Within TOUCH_EVERY: `a` keeps its place as the longest idle.
        t.record(b"a", &id("x"), t0 + Duration::from_millis(500));
        t.record(b"c", &id("x"), t0 + Duration::from_millis(600));
        assert!(t.get(b"a", t0 + Duration::from_millis(700)).is_none());
        assert_eq!(t.counts()[&id("x")], 2);
    }

    #[test]
    fn pinned_keys_neither_expire_nor_get_evicted() {
        let ttl = Duration::from_secs(10);
        let t = StickyTable::new(ttl, 2);
        let t0 = Instant::now();
        t.record(b"job", &id("a"), t0);
        t.record(b"idle", &id("a"), t0 + Duration::from_secs(1));
        assert!(t.pin(b"job", t0 + Duration::from_secs(2)));
        assert!(!t.pin(b"unknown", t0), "nothing to pin");
        assert_eq!(t.pinned(), 1);
        // Long past the TTL: the pinned key stays, the other goes.
        let late = t0 + 10 * ttl;
        assert_eq!(t.expire(late), 1);
        assert_eq!(t.backend_of(b"job", late).as_deref(), Some("a"));
        assert_eq!(t.get(b"job", late).unwrap().pins, 1);
        // Full (max_keys 2): a new key evicts the longest idle unpinned key, never the pinned
        // one, even though it is the longest idle; with only pinned keys left, it goes over.
        t.record(b"n1", &id("a"), late);
        t.record(b"n2", &id("a"), late + Duration::from_secs(1));
        assert!(t.get(b"n1", late).is_none(), "n1 was evicted");
        assert!(t.get(b"job", late).is_some());
        assert!(t.pin(b"n2", late + Duration::from_secs(1)));
        t.record(b"n3", &id("a"), late + Duration::from_secs(2));
        assert_eq!(t.len(), 3, "two pinned keys and the new one");
        // A request on a pinned key (also a move) does not put it back in the idle index.
        assert_eq!(t.record(b"job", &id("b"), late).as_deref(), Some("a"));
        assert_eq!(t.expire(late + 10 * ttl), 1, "only n3");
        assert_eq!(t.len(), 2);
        // Saved as busy: idle 0.
        let saved = t.export(late + 10 * ttl);
        assert!(saved.iter().all(|(_, _, idle, _)| idle.is_zero()));
    }

    #[test]
    fn an_unpinned_key_is_idle_from_the_jobs_end() {
        let ttl = Duration::from_secs(10);
        let t = StickyTable::new(ttl, 10);
        let t0 = Instant::now();
        t.record(b"k", &id("a"), t0);
        // Two jobs on one key: pinned until both end.
        assert!(t.pin(b"k", t0));
        assert!(t.pin(b"k", t0));
        let end = t0 + 5 * ttl;
        t.unpin(b"k", end);
        assert_eq!(t.expire(end + ttl), 0, "one job still runs");
        t.unpin(b"k", end + ttl);
        assert_eq!(t.pinned(), 0);
        assert_eq!(t.get(b"k", end + ttl).unwrap().last_seen, end + ttl);
        assert_eq!(t.expire(end + ttl + ttl - Duration::from_secs(1)), 0);
        assert_eq!(
            t.expire(end + ttl + ttl),
            1,
            "a TTL after the last job's end"
        );
        // Unpinning what is not pinned changes nothing.
        t.record(b"x", &id("a"), t0);
        t.unpin(b"x", end);
        t.unpin(b"gone", end);
        assert_eq!(t.get(b"x", t0).unwrap().last_seen, t0);
        // An expired key is not pinned back to life.
        assert!(!t.pin(b"x", t0 + ttl));
    }

    /// The per-backend counts follow every change (new key, move, eviction, expiry, import)
    /// and always equal a recount of the entries.
    #[test]
    fn per_backend_counts_follow_every_change() {
        let t = StickyTable::new(Duration::from_secs(100), 50);
        let t0 = Instant::now();
        let backends = [id("a"), id("b"), id("c")];
        let recount = |t: &StickyTable| {
            let inner = t.lock();
            let mut counts: HashMap<Identity, usize> = HashMap::new();
            for slot in inner.keys.values() {
                *counts.entry(Arc::clone(&slot.entry.backend)).or_default() += 1;
            }
            counts
        };
        let mut x: u64 = 7;
        for step in 0..2000u64 {
            // A small deterministic generator: keys, backends and times vary.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{}", (x >> 33) % 80);
            let backend = &backends[((x >> 20) % 3) as usize];
            let now = t0 + Duration::from_millis(step * 200);
            match (x >> 40) % 10 {
                0 => {
                    t.expire(now);
                }
                1 => {
                    t.import(
                        key.as_bytes(),
                        Arc::clone(backend),
                        Duration::from_secs(1),
                        Duration::from_secs(2),
                        now,
                    );
                }
                _ => {
                    t.record(key.as_bytes(), backend, now);
                }
            }
            assert_eq!(t.counts(), recount(&t), "step {step}");
        }
        assert_eq!(t.counts().values().sum::<usize>(), t.len());
    }

    #[test]
    fn sharing_marks_new_keys_moves_and_due_refreshes_only() {
        let ttl = Duration::from_secs(80); // refreshes shared every 10 s
        let t = StickyTable::new(ttl, 10);
        let t0 = Instant::now();
        t.record(b"off", &id("a"), t0);
        assert_eq!(t.pending(), 0, "nothing is marked while sharing is off");
        t.share();
        t.record(b"k", &id("a"), t0);
        let changes = t.take_changes(t0);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (&changes[0].key[..], &*changes[0].backend),
            (&b"k"[..], "a")
        );
        assert_eq!(changes[0].from, None);
        assert!(t.take_changes(t0).is_empty(), "taken once");
        // A refresh within the share interval is not marked; one after it is.
        t.record(b"k", &id("a"), t0 + Duration::from_secs(5));
        assert_eq!(t.pending(), 0);
        t.record(b"k", &id("a"), t0 + Duration::from_secs(10));
        assert_eq!(t.take_changes(t0 + Duration::from_secs(10))[0].from, None);
        // Moves keep the first backend moved from: what the shared copy still names.
        t.record(b"k", &id("b"), t0 + Duration::from_secs(11));
        t.record(b"k", &id("c"), t0 + Duration::from_secs(12));
        let now = t0 + Duration::from_secs(13);
        let changes = t.take_changes(now);
        assert_eq!(changes[0].backend, id("c"));
        assert_eq!(changes[0].from, Some(id("a")));
        assert_eq!(changes[0].idle, Duration::from_secs(1));
        assert_eq!(changes[0].age, Duration::from_secs(1));
        // Not written (the store is down): kept, and its `from` wins over a later change's.
        t.record(b"k", &id("d"), now);
        t.restore_changes(changes);
        let again = t.take_changes(now);
        assert_eq!(
            (again[0].backend.clone(), again[0].from.clone()),
            (id("d"), Some(id("a")))
        );
        // After an outage, every live key is marked once more.
        assert_eq!(t.mark_all(now), 2);
        assert_eq!(t.take_changes(now).len(), 2);
    }

    #[test]
    fn the_conflict_rule_keeps_the_entry_recorded_first_unless_the_other_moved_away_from_it() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(resolve(&id("a"), t0, None, later), Verdict::Ours);
        assert_eq!(resolve(&id("a"), later, None, t0), Verdict::Theirs);
        assert_eq!(
            resolve(&id("a"), t0, None, t0),
            Verdict::Theirs,
            "a tie: the stored one"
        );
        assert_eq!(
            resolve(&id("a"), t0, Some(&id("a")), later),
            Verdict::Theirs,
            "a move away from ours replaces it, however new"
        );
        assert_eq!(resolve(&id("a"), t0, Some(&id("z")), later), Verdict::Ours);
    }

    #[test]
    fn learning_applies_the_rule_and_never_echoes() {
        let ttl = Duration::from_secs(100);
        let t = StickyTable::new(ttl, 10);
        t.share();
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        // New here: added, as recorded elsewhere (since, idle), not marked for sharing.
        assert_eq!(
            t.learn(b"new", &id("a"), t0, Duration::from_secs(2), None, now),
            Learned::Added
        );
        let e = t.get(b"new", now).unwrap();
        assert_eq!((e.since, e.last_seen), (t0, now - Duration::from_secs(2)));
        assert_eq!(t.pending(), 0, "what is learned is not sent back");
        // The same backend: refreshed, the older since kept.
        assert_eq!(
            t.learn(b"new", &id("a"), now, Duration::ZERO, None, now),
            Learned::Refreshed
        );
        let e = t.get(b"new", now).unwrap();
        assert_eq!((e.since, e.last_seen), (t0, now));
        // Ours was recorded first: it stays, and is marked so the other instance learns it.
        t.record(b"mine", &id("a"), t0);
        t.take_changes(now);
        assert_eq!(
            t.learn(
                b"mine",
                &id("b"),
                t0 + Duration::from_secs(1),
                Duration::ZERO,
                None,
                now
            ),
            Learned::Kept
        );
        assert_eq!(t.backend_of(b"mine", now), Some(id("a")));
        assert_eq!(t.take_changes(now).len(), 1);
        // Theirs first: ours gives way, its pending change dropped.
        t.record(b"late", &id("a"), now);
        assert_eq!(
            t.learn(b"late", &id("b"), t0, Duration::ZERO, None, now),
            Learned::Moved { from: id("a") }
        );
        assert_eq!(t.backend_of(b"late", now), Some(id("b")));
        assert!(t.take_changes(now).iter().all(|c| c.key != b"late"));
        // A move away from ours replaces it although newer.
        assert_eq!(
            t.learn(b"mine", &id("c"), now, Duration::ZERO, Some(&id("a")), now),
            Learned::Moved { from: id("a") }
        );
        assert_eq!(t.counts()[&id("c")], 1);
        // A running job pins a key where it is.
        t.record(b"job", &id("a"), now);
        assert!(t.pin(b"job", now));
        t.take_changes(now);
        assert_eq!(
            t.learn(b"job", &id("b"), t0, Duration::ZERO, None, now),
            Learned::Kept
        );
        assert_eq!(t.backend_of(b"job", now), Some(id("a")));
        assert_eq!(t.pending(), 0);
        // Idle beyond the TTL: nothing to learn.
        assert_eq!(
            t.learn(b"old", &id("a"), t0, ttl, None, now + ttl),
            Learned::Stale
        );
        assert!(t.get(b"old", now).is_none());
    }
}
