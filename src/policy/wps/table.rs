//! The bounded table of WPS jobs: job UUID → the backend that sent its status document, whether
//! the job still runs, and the affinity key of the requests that started or polled it.
//!
//! A running job pins its key in the sticky table (when the table is given one,
//! [`JobTable::with_pins`]): the pin is taken when a status document says the job runs and
//! released when one says it ended, or when the job is forgotten (beyond the capacity, or not
//! seen for the age limit). So pins are bounded by the capacity, and a job that is never polled
//! again cannot hold its key for longer than the age limit. The sticky table is only ever
//! locked while this one is held, never the other way round.

use super::{JobId, JobState, MAX_AGE, MAX_JOBS};
use crate::policy::sticky::StickyTable;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An affinity key as the job table keeps it.
type Key = Arc<[u8]>;

/// A job as the state file carries it ([`JobTable::export`], [`JobTable::import`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedJob {
    pub id: JobId,
    pub backend: SocketAddr,
    pub key: Option<Vec<u8>>,
    pub running: bool,
    /// How long it had not been seen when it was saved.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
struct Job {
    backend: SocketAddr,
    seen: Instant,
    /// Position in `Inner::order`.
    seq: u64,
    /// The affinity key of the last request about it that carried one.
    key: Option<Key>,
    running: bool,
    /// Whether it holds a pin on `key` in the sticky table.
    pinned: bool,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<JobId, Job>,
    /// Jobs by when they were last seen, oldest first.
    order: BTreeMap<u64, JobId>,
    next_seq: u64,
    /// Running jobs per backend (no entry: none).
    running: HashMap<SocketAddr, usize>,
    /// Running jobs by key, for [`JobTable::moved_away`].
    by_key: HashMap<Key, Vec<JobId>>,
    /// Sharing on (`state.redis`): the jobs that are new or changed (backend, state, key)
    /// since the last [`JobTable::take_changes`]; `None` while off.
    changed: Option<std::collections::HashSet<JobId>>,
}

impl Inner {
    /// Take `id`'s running-job bookkeeping off (before it changes or goes).
    fn stop_counting(&mut self, id: JobId, job: &Job) {
        if !job.running {
            return;
        }
        if let Some(n) = self.running.get_mut(&job.backend) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&job.backend);
            }
        }
        if let Some(key) = &job.key {
            if let Some(ids) = self.by_key.get_mut(key) {
                ids.retain(|&j| j != id);
                if ids.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
    }

    fn start_counting(&mut self, id: JobId, job: &Job) {
        if !job.running {
            return;
        }
        *self.running.entry(job.backend).or_default() += 1;
        if let Some(key) = &job.key {
            self.by_key.entry(Arc::clone(key)).or_default().push(id);
        }
    }
}

/// A running job whose key was just routed to another backend than the one running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMove {
    pub id: JobId,
    /// The backend that runs the job (and has its files).
    pub from: SocketAddr,
}

/// Job → the backend that has its files, and whether it runs. Bounded in entries and age;
/// shared by a service's requests (a short mutex: one map operation per job seen in a
/// response or looked up by a keyless request; requests about no job never take it).
#[derive(Debug)]
pub struct JobTable {
    capacity: usize,
    max_age: Duration,
    /// Where running jobs pin their keys.
    pins: Option<Arc<StickyTable>>,
    inner: Mutex<Inner>,
}

impl Default for JobTable {
    fn default() -> Self {
        Self::new(MAX_JOBS, MAX_AGE)
    }
}

impl JobTable {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            pins: None,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Running jobs pin their keys in `table`.
    pub fn with_pins(mut self, table: Arc<StickyTable>) -> Self {
        self.pins = Some(table);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked (no step can panic halfway).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A response from `backend` named job `id` (at `now`), with the state it reported, if
    /// any (`None` leaves the state as it was; a new job is not running until a status
    /// document says so). `key` is the affinity key of the request, if it had one (a request
    /// without one keeps the key already known). Forgets the oldest jobs beyond the capacity
    /// and jobs older than the age limit.
    pub fn observe(
        &self,
        id: JobId,
        backend: SocketAddr,
        key: Option<&[u8]>,
        state: Option<JobState>,
        now: Instant,
    ) {
        self.observe_as(id, backend, key, state, now, true);
    }

    /// Share the jobs that are new or change from now on (`state.redis`).
    pub fn share(&self) {
        self.lock().changed.get_or_insert_with(Default::default);
    }

    /// The jobs new or changed since the last call, in the state file's shape, and forgotten
    /// as changed.
    pub fn take_changes(&self, now: Instant) -> Vec<SavedJob> {
        let mut inner = self.lock();
        let Some(changed) = inner.changed.as_mut().map(std::mem::take) else {
            return Vec::new();
        };
        changed
            .into_iter()
            .filter_map(|id| {
                let job = inner.jobs.get(&id)?;
                Some(SavedJob {
                    id,
                    backend: job.backend,
                    key: job.key.as_ref().map(|k| k.to_vec()),
                    running: job.running,
                    idle: now.saturating_duration_since(job.seen),
                })
            })
            .collect()
    }

    /// Jobs that could not be shared (Redis is down), or every job (after an outage): to
    /// be shared at the next flush.
    pub fn mark(&self, ids: impl IntoIterator<Item = JobId>) {
        let mut inner = self.lock();
        if let Some(changed) = inner.changed.as_mut() {
            changed.extend(ids);
        }
    }

    /// Every job known, for [`mark`](Self::mark) after an outage.
    pub fn ids(&self) -> Vec<JobId> {
        self.lock().jobs.keys().copied().collect()
    }

    /// Jobs waiting to be shared.
    pub fn pending(&self) -> usize {
        self.lock().changed.as_ref().map_or(0, |c| c.len())
    }

    /// A job another instance saw (its responses name the backend that runs it): taken when
    /// it is new here or says something else (backend, state); not shared again. Returns
    /// whether it changed anything.
    pub fn learn(&self, job: &SavedJob, now: Instant) -> bool {
        let Some(seen) = now.checked_sub(job.idle) else {
            return false;
        };
        if job.idle >= self.max_age {
            return false;
        }
        let same = self
            .lock()
            .jobs
            .get(&job.id)
            .is_some_and(|j| j.backend == job.backend && j.running == job.running);
        if same {
            return false;
        }
        let state = if job.running {
            JobState::Running
        } else {
            JobState::Ended
        };
        self.observe_as(
            job.id,
            job.backend,
            job.key.as_deref(),
            Some(state),
            seen,
            false,
        );
        true
    }

    fn observe_as(
        &self,
        id: JobId,
        backend: SocketAddr,
        key: Option<&[u8]>,
        state: Option<JobState>,
        now: Instant,
        share: bool,
    ) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let old = inner.jobs.remove(&id);
        if let Some(old) = &old {
            inner.order.remove(&old.seq);
            inner.stop_counting(id, old);
        }
        // What another instance knows of this job: shared again only when it changes.
        let old_seen = old.as_ref().map(|o| (o.backend, o.running, o.key.clone()));
        let (old_key, was_pinned, was_running) = old
            .map(|o| (o.key, o.pinned, o.running))
            .unwrap_or((None, false, false));
        let key = match (key, old_key.as_ref()) {
            (Some(k), Some(old)) if **old == *k => Some(Arc::clone(old)),
            (Some(k), _) => Some(Key::from(k)),
            (None, old) => old.cloned(),
        };
        let running = match state {
            Some(JobState::Running) => true,
            Some(JobState::Ended) => false,
            None => was_running,
        };
        let mut job = Job {
            backend,
            seen: now,
            seq,
            key,
            running,
            pinned: was_pinned,
        };
        // The pin follows the job's state and key.
        if let Some(pins) = &self.pins {
            let want = if running { job.key.as_ref() } else { None };
            if was_pinned && old_key.as_ref() != want {
                if let Some(old) = &old_key {
                    pins.unpin(old, now);
                }
                job.pinned = false;
            }
            if !job.pinned {
                if let Some(key) = want {
                    job.pinned = pins.pin(key, now);
                }
            }
        }
        inner.start_counting(id, &job);
        if share {
            let news = match &old_seen {
                None => true,
                Some((b, r, k)) => *b != job.backend || *r != job.running || *k != job.key,
            };
            if news {
                if let Some(changed) = inner.changed.as_mut() {
                    changed.insert(id);
                }
            }
        }
        inner.jobs.insert(id, job);
        inner.order.insert(seq, id);
        while let Some((_, &oldest)) = inner.order.first_key_value() {
            let expired = inner.jobs[&oldest].seen + self.max_age < now;
            if inner.jobs.len() <= self.capacity && !expired {
                break;
            }
            self.forget(&mut inner, oldest, now);
        }
    }

    fn forget(&self, inner: &mut Inner, id: JobId, now: Instant) {
        let Some(job) = inner.jobs.remove(&id) else {
            return;
        };
        inner.order.remove(&job.seq);
        inner.stop_counting(id, &job);
        if let (true, Some(pins), Some(key)) = (job.pinned, &self.pins, &job.key) {
            pins.unpin(key, now);
        }
    }

    /// Every job, for the state file: (id, backend, key, running, not seen for).
    pub fn export(&self, now: Instant) -> Vec<SavedJob> {
        let inner = self.lock();
        inner
            .order
            .values()
            .filter_map(|id| {
                let job = inner.jobs.get(id)?;
                Some(SavedJob {
                    id: *id,
                    backend: job.backend,
                    key: job.key.as_ref().map(|k| k.to_vec()),
                    running: job.running,
                    idle: now.saturating_duration_since(job.seen),
                })
            })
            .collect()
    }

    /// Take over jobs saved by another process (a restart, the old process of an upgrade),
    /// oldest first, unless this process knows the job already (what it saw itself is newer)
    /// or it is past the age limit. A running one pins its key again. Returns how many.
    pub fn import(&self, saved: &[SavedJob], now: Instant) -> usize {
        let mut added = 0;
        let mut oldest_first: Vec<&SavedJob> = saved.iter().collect();
        oldest_first.sort_by_key(|j| std::cmp::Reverse(j.idle));
        for job in oldest_first {
            let Some(seen) = now.checked_sub(job.idle) else {
                continue;
            };
            if job.idle >= self.max_age || self.lock().jobs.contains_key(&job.id) {
                continue;
            }
            let state = if job.running {
                JobState::Running
            } else {
                JobState::Ended
            };
            self.observe(job.id, job.backend, job.key.as_deref(), Some(state), seen);
            added += 1;
        }
        added
    }

    /// Forget the jobs not seen for the age limit (releasing their pins); returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let mut gone = 0;
        while let Some((_, &oldest)) = inner.order.first_key_value() {
            if inner.jobs[&oldest].seen + self.max_age >= now {
                break;
            }
            self.forget(&mut inner, oldest, now);
            gone += 1;
        }
        gone
    }

    /// The backend that has job `id`, unless unknown or older than the age limit.
    pub fn backend_of(&self, id: JobId, now: Instant) -> Option<SocketAddr> {
        let inner = self.lock();
        let job = inner.jobs.get(&id)?;
        (job.seen + self.max_age >= now).then_some(job.backend)
    }

    /// How many jobs run on `backend` now: jobs whose last status document, from that
    /// backend, said they run. One map lookup; for `/status` and drain decisions ("no job
    /// runs here any more").
    pub fn running_on(&self, backend: SocketAddr) -> usize {
        self.lock().running.get(&backend).copied().unwrap_or(0)
    }

    /// The running jobs of `key` on a backend other than `to`: what a move of `key` to `to`
    /// takes away from its jobs. Asked only when a key moves.
    pub fn moved_away(&self, key: &[u8], to: SocketAddr) -> Vec<JobMove> {
        let inner = self.lock();
        let Some(ids) = inner.by_key.get(key) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| {
                let job = &inner.jobs[id];
                (job.backend != to).then_some(JobMove {
                    id: *id,
                    from: job.backend,
                })
            })
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().jobs.len()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
