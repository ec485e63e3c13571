//! The bounded table of WPS jobs: job UUID → the backend that sent its status document.

use super::{JobId, MAX_AGE, MAX_JOBS};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Job {
    backend: SocketAddr,
    seen: Instant,
    /// Position in `Inner::order`.
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<JobId, Job>,
    /// Jobs by when they were last seen, oldest first.
    order: BTreeMap<u64, JobId>,
    next_seq: u64,
}

/// Job → the backend that has its files. Bounded in entries and age; shared by a service's
/// requests (a short mutex: one map operation per learned or looked-up job).
#[derive(Debug)]
pub struct JobTable {
    capacity: usize,
    max_age: Duration,
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
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked (every change is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember that `backend` has job `id` (seen at `now`), forgetting the oldest jobs beyond
    /// the capacity and jobs older than the age limit.
    pub fn learn(&self, id: JobId, backend: SocketAddr, now: Instant) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let job = Job {
            backend,
            seen: now,
            seq,
        };
        if let Some(old) = inner.jobs.insert(id, job) {
            inner.order.remove(&old.seq);
        }
        inner.order.insert(seq, id);
        while let Some((&oldest_seq, &oldest)) = inner.order.first_key_value() {
            let expired = inner.jobs[&oldest].seen + self.max_age < now;
            if inner.jobs.len() <= self.capacity && !expired {
                break;
            }
            inner.order.remove(&oldest_seq);
            inner.jobs.remove(&oldest);
        }
    }

    /// The backend that has job `id`, unless unknown or older than the age limit.
    pub fn backend_of(&self, id: JobId, now: Instant) -> Option<SocketAddr> {
        let inner = self.lock();
        let job = inner.jobs.get(&id)?;
        (job.seen + self.max_age >= now).then_some(job.backend)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::wps::testing::{id, A, B};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn table_remembers_and_relearns() {
        let table = JobTable::default();
        let t0 = Instant::now();
        assert_eq!(table.backend_of(id(A), t0), None);
        table.learn(id(A), addr(1), t0);
        table.learn(id(B), addr(2), t0);
        assert_eq!(table.backend_of(id(A), t0), Some(addr(1)));
        assert_eq!(table.backend_of(id(B), t0), Some(addr(2)));
        // A job seen again on another backend (its owner failed over) follows it.
        table.learn(id(A), addr(3), t0);
        assert_eq!(table.backend_of(id(A), t0), Some(addr(3)));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn table_forgets_the_oldest_beyond_capacity() {
        let table = JobTable::new(3, MAX_AGE);
        let t0 = Instant::now();
        for job in 1..=3u128 {
            table.learn(job, addr(job as u16), t0);
        }
        // Job 1 seen again: now job 2 is the oldest.
        table.learn(1, addr(1), t0);
        table.learn(4, addr(4), t0);
        assert_eq!(table.len(), 3);
        assert_eq!(table.backend_of(2, t0), None);
        for job in [1u128, 3, 4] {
            assert_eq!(table.backend_of(job, t0), Some(addr(job as u16)), "{job}");
        }
    }

    #[test]
    fn table_forgets_old_jobs() {
        let age = Duration::from_secs(60);
        let table = JobTable::new(100, age);
        let t0 = Instant::now();
        table.learn(1, addr(1), t0);
        table.learn(2, addr(2), t0 + Duration::from_secs(30));
        assert_eq!(table.backend_of(1, t0 + age), Some(addr(1)));
        assert_eq!(table.backend_of(1, t0 + age + Duration::from_secs(1)), None);
        // Learning later drops what expired and keeps the rest.
        table.learn(3, addr(3), t0 + Duration::from_secs(70));
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.backend_of(2, t0 + Duration::from_secs(70)),
            Some(addr(2))
        );
    }
}
