//! Passive health from real traffic (outlier detection) and panic mode: the pure rules.
//!
//! - [`fails_backend`] / [`status_fails_backend`]: which outcomes of a real request count
//!   against its backend (a refused or reset connection, a gateway-type 5xx) and which do not
//!   (a slow answer, a 500 that reports a failed WPS process: the request failed, not the
//!   machine).
//! - [`Outlier`]: one backend's streak of consecutive failed real requests, whether that
//!   streak has taken it out ("ejected"), and its way back: `rise` passing probes, or with no
//!   health check a trial after a pause ([`ejection_time`]). Lock-free: the request path only
//!   touches atomics (one load per good answer, one add per failure).
//! - [`panics`]: whether a service ignores health because too few of its backends are usable.
//!
//! No clock is read here: callers pass the time.

use pingora::ErrorType;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether an upstream status answered by a backend counts against it. Gateway-type 5xx
/// (502, 503, 504, ...) say the machine cannot serve; 500 and 501 are about the request (a
/// WPS reports a process that failed as `500 NoApplicableCode`), so a user retrying a broken
/// process cannot take a healthy machine out and move every session on it.
pub fn status_fails_backend(status: u16) -> bool {
    (502..=599).contains(&status)
}

/// Whether an upstream error (no response header received) counts against the backend: the
/// connection was refused, reset or could not be made. Timeouts reading the answer do not:
/// busy is not dead (a synchronous Execute may take minutes).
pub fn fails_backend(etype: &ErrorType) -> bool {
    matches!(
        etype,
        ErrorType::ConnectRefused
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::ConnectionClosed
            | ErrorType::ReadError
            | ErrorType::WriteError
    )
}

/// How long a backend taken out by real traffic stays out when no health check can bring it
/// back: `base` for the first ejection, one more `base` for each ejection in a row that its
/// trial did not survive, at most [`MAX_EJECTION_STEPS`] × `base`.
pub fn ejection_time(base: Duration, ejections: u32) -> Duration {
    base * ejections.clamp(1, MAX_EJECTION_STEPS)
}

/// The longest pause before a trial is this many times the base.
pub const MAX_EJECTION_STEPS: u32 = 6;

/// Panic mode: whether routing ignores health because `usable` of `total` backends is at or
/// below `threshold` percent (`None`: never). With threshold 0 the service panics only when
/// no backend is usable. A service without backends has nothing to panic about.
pub fn panics(usable: usize, total: usize, threshold: Option<u8>) -> bool {
    match threshold {
        Some(t) if total > 0 => usable * 100 <= usize::from(t) * total,
        _ => false,
    }
}

/// What a real request's failure did to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Counted; the streak is this long and below `fall` (or the backend is out already).
    Counted(u32),
    /// This failure completed the streak: the backend is out from now on.
    Ejected(u32),
}

/// What a probe did for an ejected backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// Not ejected: the probe is the registry's business alone.
    NotEjected,
    /// Still out; this many good probes in a row so far.
    StillOut(u32),
    /// `rise` good probes in a row: the backend is back.
    Recovered,
}

/// One backend's passive health, shared by every config version that has the backend (like
/// its probe health). Created when a backend first appears in a service.
#[derive(Debug)]
pub struct Outlier {
    epoch: Instant,
    /// Consecutive failed real requests, reset by any good answer.
    streak: AtomicU32,
    ejected: AtomicBool,
    /// Nanoseconds after `epoch` of the ejection (0: never).
    ejected_at: AtomicU64,
    /// Ejections in a row without a good answer in between (the pause grows with it).
    ejections: AtomicU32,
    /// Good probes in a row since the ejection.
    good_probes: AtomicU32,
    /// Nanoseconds after `epoch` (+1, so 0 means never) of the last good answer.
    answered_at: AtomicU64,
}

impl Outlier {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            streak: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejected_at: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            good_probes: AtomicU32::new(0),
            answered_at: AtomicU64::new(0),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }

    /// Whether a streak of failures has taken the backend out.
    pub fn ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// A real request got a good answer at `now`: the streak ends. One load (and no write)
    /// when there was no streak, so the common case does not bounce a cache line between
    /// threads.
    pub fn succeeded(&self, now: Instant) {
        self.answered_at.store(self.nanos(now), Ordering::Relaxed);
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the backend gave a good answer to a real request within `window` before `now`.
    pub fn answered_within(&self, window: Duration, now: Instant) -> bool {
        match self.answered_at.load(Ordering::Relaxed) {
            0 => false,
            at => self.nanos(now).saturating_sub(at) <= window.as_nanos() as u64,
        }
    }

    /// A real request to the backend failed. `fall` failures in a row take out a backend that
    /// is `up` (usable by its probes); one that is down already only counts.
    pub fn failed(&self, fall: u32, up: bool, now: Instant) -> Failed {
        let n = self
            .streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n < fall.max(1) || !up {
            return Failed::Counted(n);
        }
        // Exactly one of the requests failing at once does the ejection (and its log line).
        match self
            .ejected
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => {
                self.ejected_at.store(self.nanos(now), Ordering::Relaxed);
                self.good_probes.store(0, Ordering::Relaxed);
                self.ejections.fetch_add(1, Ordering::Relaxed);
                Failed::Ejected(n)
            }
            Err(_) => Failed::Counted(n),
        }
    }

    /// A health probe of the backend finished (`ok` or not). An ejected backend comes back
    /// after `rise` good probes in a row.
    pub fn probed(&self, ok: bool, rise: u32) -> Probed {
        if !self.ejected() {
            return Probed::NotEjected;
        }
        if !ok {
            self.good_probes.store(0, Ordering::Relaxed);
            return Probed::StillOut(0);
        }
        let n = self.good_probes.fetch_add(1, Ordering::Relaxed) + 1;
        if n < rise.max(1) {
            return Probed::StillOut(n);
        }
        self.reinstate(0);
        self.ejections.store(0, Ordering::Relaxed);
        Probed::Recovered
    }

    /// No health check: whether an ejected backend has been out for its pause (see
    /// [`ejection_time`] with `base`) at `now`. Then it is let back on trial: usable, with a
    /// streak of `fall - 1`, so that the next failure takes it out again at once and the next
    /// good answer clears it. Returns the pause it served.
    pub fn try_trial(&self, base: Duration, fall: u32, now: Instant) -> Option<Duration> {
        if !self.ejected() {
            return None;
        }
        let pause = ejection_time(base, self.ejections.load(Ordering::Relaxed));
        let out_for = self
            .nanos(now)
            .saturating_sub(self.ejected_at.load(Ordering::Relaxed));
        if out_for < pause.as_nanos() as u64 {
            return None;
        }
        self.reinstate(fall.max(1) - 1);
        Some(pause)
    }

    fn reinstate(&self, streak: u32) {
        self.streak.store(streak, Ordering::Relaxed);
        self.good_probes.store(0, Ordering::Relaxed);
        self.ejected.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn which_outcomes_count() {
        for s in [502, 503, 504, 599] {
            assert!(status_fails_backend(s), "{s}");
        }
        for s in [200, 302, 404, 499, 500, 501] {
            assert!(!status_fails_backend(s), "{s}");
        }
        assert!(fails_backend(&ErrorType::ConnectRefused));
        assert!(fails_backend(&ErrorType::ConnectionClosed));
        assert!(!fails_backend(&ErrorType::ReadTimedout));
        assert!(!fails_backend(&ErrorType::HTTPStatus(502)));
    }

    #[test]
    fn fall_failures_in_a_row_eject_once() {
        let t0 = Instant::now();
        let o = Outlier::new(t0);
        assert_eq!(o.failed(3, true, t0), Failed::Counted(1));
        assert_eq!(o.failed(3, true, t0), Failed::Counted(2));
        assert!(!o.ejected());
        assert_eq!(o.failed(3, true, t0), Failed::Ejected(3));
        assert!(o.ejected());
        // Further failures only count: one ejection, one log line.
        assert_eq!(o.failed(3, true, t0), Failed::Counted(4));
    }

    #[test]
    fn a_good_answer_resets_the_streak() {
        let t0 = Instant::now();
        let o = Outlier::new(t0);
        for _ in 0..10 {
            assert_eq!(o.failed(3, true, t0), Failed::Counted(1));
            assert_eq!(o.failed(3, true, t0), Failed::Counted(2));
            o.succeeded(t0);
        }
        assert!(!o.ejected());
    }

    #[test]
    fn a_backend_down_by_its_probes_is_not_ejected_again() {
        let t0 = Instant::now();
        let o = Outlier::new(t0);
        for n in 1..=5 {
            assert_eq!(o.failed(2, false, t0), Failed::Counted(n));
        }
        assert!(!o.ejected());
        // Up again (probes): the running streak takes it out on the next failure.
        assert_eq!(o.failed(2, true, t0), Failed::Ejected(6));
    }

    #[test]
    fn rise_good_probes_in_a_row_bring_it_back() {
        let t0 = Instant::now();
        let o = Outlier::new(t0);
        assert_eq!(o.probed(true, 2), Probed::NotEjected);
        o.failed(1, true, t0);
        assert_eq!(o.probed(true, 2), Probed::StillOut(1));
        assert_eq!(o.probed(false, 2), Probed::StillOut(0));
        assert_eq!(o.probed(true, 2), Probed::StillOut(1));
        assert!(o.ejected());
        assert_eq!(o.probed(true, 2), Probed::Recovered);
        assert!(!o.ejected());
        // Back with a clean streak.
        assert_eq!(o.failed(2, true, t0), Failed::Counted(1));
    }

    #[test]
    fn without_checks_a_trial_after_the_pause_and_a_longer_pause_each_time() {
        let t0 = Instant::now();
        let o = Outlier::new(t0);
        let base = 100 * MS;
        assert_eq!(o.try_trial(base, 3, t0), None, "not ejected");
        for _ in 0..3 {
            o.failed(3, true, t0);
        }
        assert_eq!(o.try_trial(base, 3, t0 + 99 * MS), None);
        assert_eq!(o.try_trial(base, 3, t0 + base), Some(base));
        assert!(!o.ejected());
        // On trial: one failure takes it out again, for twice as long.
        let t1 = t0 + 200 * MS;
        assert_eq!(o.failed(3, true, t1), Failed::Ejected(3));
        assert_eq!(o.try_trial(base, 3, t1 + base), None);
        assert_eq!(o.try_trial(base, 3, t1 + 2 * base), Some(2 * base));
        // A good answer on trial clears the record: the next ejection pauses `base` again.
        o.succeeded(t1 + 2 * base);
        let t2 = t1 + 300 * MS;
        for _ in 0..3 {
            o.failed(3, true, t2);
        }
        assert_eq!(o.try_trial(base, 3, t2 + base), Some(base));
    }

    #[test]
    fn the_pause_is_bounded() {
        assert_eq!(ejection_time(MS, 0), MS);
        assert_eq!(ejection_time(MS, 2), 2 * MS);
        assert_eq!(ejection_time(MS, 100), MAX_EJECTION_STEPS * MS);
    }

    #[test]
    fn answered_within_a_window() {
        let t0 = Instant::now();
        let o = Outlier::new(t0);
        assert!(!o.answered_within(Duration::from_secs(3600), t0));
        o.succeeded(t0 + MS);
        assert!(o.answered_within(10 * MS, t0 + 11 * MS));
        assert!(!o.answered_within(10 * MS, t0 + 12 * MS));
    }

    #[test]
    fn panic_threshold() {
        // 0: only when nothing is usable.
        assert!(panics(0, 3, Some(0)));
        assert!(!panics(1, 3, Some(0)));
        // 50 %: at or below half.
        assert!(panics(1, 2, Some(50)));
        assert!(panics(1, 3, Some(50)));
        assert!(!panics(2, 3, Some(50)));
        // 100: always (health is never used).
        assert!(panics(3, 3, Some(100)));
        // Off, and a service without backends.
        assert!(!panics(0, 3, None));
        assert!(!panics(0, 0, Some(0)));
    }
}
