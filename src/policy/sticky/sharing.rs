//! What sharing (`state.redis`, `ops::shared_state`) adds to the sticky table: the keys
//! marked as changed since the last flush (new, moved, due a refresh) and taken by the shared
//! state's writer, the conflict rule ([`resolve`]), and [`StickyTable::learn`], which applies
//! another instance's entry by that rule without marking it again (no echo).

use super::{Identity, Inner, StickyTable};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

impl Inner {
    /// Mark `key` for sharing (when sharing is on); a move keeps the first `from`.
    pub(super) fn mark(&mut self, key: &[u8], from: Option<Identity>) {
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
}

impl StickyTable {
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
}

#[cfg(test)]
#[path = "sharing_tests.rs"]
mod tests;
