//! The recent past of each backend, for the status page's charts: a latency sketch per
//! backend (fixed buckets, atomics only, so the request path pays one binary search over a
//! constant table and one `fetch_add`) and a bounded ring of samples taken every
//! [`SAMPLE_EVERY`]: per backend, the requests answered in the interval and their p99
//! latency. [`KEPT`] samples are kept (15 minutes); nothing is written to disk.
//!
//! The ring is pure: the caller passes the clocks and the cumulative counters, so it is
//! unit-tested with plain values. The service layer owns one per pool and samples it from a
//! background task (`service::pool::HistoryService`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often a sample is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: 15 minutes at one per [`SAMPLE_EVERY`].
pub const KEPT: usize = 90;

/// Mantissas of the bucket bounds in each decade: about 1.5x apart, so an interpolated p99 is
/// within a few tens of percent of the true one, which is what a chart needs.
const MANTISSAS: [u64; 6] = [10, 15, 20, 30, 50, 70];
/// Decades covered: 100 µs to 70 s (and one last bound at 100 s).
const DECADES: usize = 6;
const BOUNDS: usize = MANTISSAS.len() * DECADES + 1;

/// Upper bounds of the buckets in microseconds, ascending; one more bucket holds the rest.
const BOUNDS_US: [u64; BOUNDS] = bounds();

const fn bounds() -> [u64; BOUNDS] {
    let mut out = [0u64; BOUNDS];
    let mut scale = 10u64; // 10 µs x mantissa 10 = 100 µs
    let mut d = 0;
    while d < DECADES {
        let mut m = 0;
        while m < MANTISSAS.len() {
            out[d * MANTISSAS.len() + m] = MANTISSAS[m] * scale;
            m += 1;
        }
        scale *= 10;
        d += 1;
    }
    out[BOUNDS - 1] = 10 * scale;
    out
}

/// Request latencies of one backend since the process started, in fixed buckets.
#[derive(Debug)]
pub struct Latency {
    buckets: [AtomicU64; BOUNDS + 1],
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Latency {
    /// Count one request that took `elapsed`. Atomics only.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Buckets {
        Buckets(std::array::from_fn(|i| {
            self.buckets[i].load(Ordering::Relaxed)
        }))
    }
}

/// Bucket counts of a [`Latency`] at one moment, or between two moments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets([u64; BOUNDS + 1]);

impl Default for Buckets {
    fn default() -> Self {
        Self([0; BOUNDS + 1])
    }
}

impl Buckets {
    /// The requests counted after `earlier` (a snapshot of the same sketch).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0 < q <= 1), interpolated linearly inside its bucket; `None` when
    /// nothing was counted. Beyond the last bound, the last bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut before = 0u64;
        for (i, &n) in self.0.iter().enumerate() {
            if before + n >= rank {
                let Some(&upper) = BOUNDS_US.get(i) else {
                    return Some(Duration::from_micros(BOUNDS_US[BOUNDS - 1]));
                };
                let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
                let within = (rank - before) as f64 / n as f64;
                let us = lower as f64 + (upper - lower) as f64 * within;
                return Some(Duration::from_micros(us.round() as u64));
            }
            before += n;
        }
        None
    }
}

/// One backend in one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The backend's address (`ip:port`).
    pub backend: String,
    /// Requests answered in the interval.
    pub requests: u64,
    /// Their p99 latency; `None` when there were none.
    pub p99: Option<Duration>,
}

/// One interval of a service's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the interval ended.
    pub at: SystemTime,
    /// Its length.
    pub seconds: f64,
    pub backends: Vec<Point>,
}

impl Point {
    /// Requests per second over `seconds`.
    pub fn rate(&self, seconds: f64) -> f64 {
        if seconds > 0.0 {
            self.requests as f64 / seconds
        } else {
            0.0
        }
    }
}

/// A backend's cumulative counters at one moment, as the sampler reads them.
#[derive(Debug, Clone)]
pub struct Reading {
    pub backend: String,
    pub requests: u64,
    pub latency: Buckets,
}

/// Each backend's requests and latency counts when the last sample was taken.
type Baseline = HashMap<String, (u64, Buckets)>;

/// The bounded ring of samples of one service.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
    /// When the last sample was taken and the counters then, by backend.
    last: Option<(Instant, Baseline)>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(KEPT)
    }
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            last: None,
        }
    }

    /// The interval since the last sample, from the counters `now` (without keeping it): the
    /// page's newest, still growing point. `None` before the first call of
    /// [`take`](Self::take), which only sets the baseline.
    pub fn current(&self, now: Instant, wall: SystemTime, readings: &[Reading]) -> Option<Sample> {
        let (then, before) = self.last.as_ref()?;
        let backends = readings
            .iter()
            .map(|r| {
                // A backend a reload added starts from its counters now: it has no interval yet.
                let (requests, latency) = match before.get(&r.backend) {
                    Some((n, b)) => (r.requests.saturating_sub(*n), r.latency.since(b)),
                    None => (0, Buckets::default()),
                };
                Point {
                    backend: r.backend.clone(),
                    requests,
                    p99: latency.quantile(0.99),
                }
            })
            .collect();
        Some(Sample {
            at: wall,
            seconds: now.saturating_duration_since(*then).as_secs_f64(),
            backends,
        })
    }

    /// Take a sample: the interval since the last one is kept (the oldest dropped beyond the
    /// capacity) and the counters now become the baseline of the next.
    pub fn take(&mut self, now: Instant, wall: SystemTime, readings: &[Reading]) {
        if let Some(sample) = self.current(now, wall, readings) {
            if self.samples.len() == self.capacity {
                self.samples.pop_front();
            }
            self.samples.push_back(sample);
        }
        let baseline = readings
            .iter()
            .map(|r| (r.backend.clone(), (r.requests, r.latency.clone())))
            .collect();
        self.last = Some((now, baseline));
    }

    /// The kept samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(backend: &str, requests: u64, latency: &Latency) -> Reading {
        Reading {
            backend: backend.to_string(),
            requests,
            latency: latency.snapshot(),
        }
    }

    #[test]
    fn bounds_ascend_from_100us_to_100s() {
        assert_eq!(BOUNDS_US[0], 100);
        assert_eq!(BOUNDS_US[5], 700);
        assert_eq!(BOUNDS_US[6], 1_000);
        assert_eq!(BOUNDS_US[BOUNDS - 1], 100_000_000);
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn p99_of_fixed_buckets_is_close_and_ignores_the_fast_majority() {
        let l = Latency::default();
        assert_eq!(l.snapshot().quantile(0.99), None);
        for _ in 0..990 {
            l.observe(Duration::from_millis(2));
        }
        for _ in 0..10 {
            l.observe(Duration::from_millis(400));
        }
        let b = l.snapshot();
        assert_eq!(b.count(), 1000);
        // Rank 990 is the last 2 ms request: its bucket is (1.5 ms, 2 ms].
        let p99 = b.quantile(0.99).unwrap();
        assert!(p99 > Duration::from_micros(1500) && p99 <= Duration::from_millis(2));
        // Rank 991.. are in (300 ms, 500 ms].
        let p999 = b.quantile(0.999).unwrap();
        assert!(p999 > Duration::from_millis(300) && p999 <= Duration::from_millis(500));
        // Exactly on a bound counts in that bucket; beyond the last bound gives the last.
        let l = Latency::default();
        l.observe(Duration::from_micros(100));
        assert_eq!(l.snapshot().quantile(1.0), Some(Duration::from_micros(100)));
        let l = Latency::default();
        l.observe(Duration::from_secs(1000));
        assert_eq!(l.snapshot().quantile(0.99), Some(Duration::from_secs(100)));
    }

    #[test]
    fn samples_are_deltas_between_takes_and_the_ring_is_bounded() {
        let l = Latency::default();
        let mut h = History::new(3);
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| (t0 + Duration::from_secs(s), w0 + Duration::from_secs(s));
        // Counters before the first take are not an interval.
        for _ in 0..5 {
            l.observe(Duration::from_millis(1));
        }
        let (n, w) = at(0);
        assert_eq!(h.current(n, w, &[reading("a:1", 5, &l)]), None);
        h.take(n, w, &[reading("a:1", 5, &l)]);
        assert_eq!(h.samples().count(), 0);

        for _ in 0..20 {
            l.observe(Duration::from_millis(40));
        }
        let (n, w) = at(10);
        let readings = [
            reading("a:1", 25, &l),
            reading("b:2", 7, &Latency::default()),
        ];
        // The growing point: 20 requests in 10 s, their p99 in (30, 50] ms; a new backend
        // has no interval yet.
        let now = h.current(n, w, &readings).unwrap();
        assert_eq!(now.seconds, 10.0);
        assert_eq!(now.backends[0].requests, 20);
        assert_eq!(now.backends[0].rate(now.seconds), 2.0);
        let p99 = now.backends[0].p99.unwrap();
        assert!(p99 > Duration::from_millis(30) && p99 <= Duration::from_millis(50));
        assert_eq!(now.backends[1].requests, 0);
        assert_eq!(now.backends[1].p99, None);
        h.take(n, w, &readings);
        assert_eq!(h.samples().count(), 1);
        assert_eq!(h.samples().next().unwrap(), &now);

        // Idle interval: zero requests, no p99.
        let (n, w) = at(20);
        h.take(n, w, &readings);
        let idle = h.samples().last().unwrap();
        assert_eq!(idle.backends[0].requests, 0);
        assert_eq!(idle.backends[0].p99, None);
        assert_eq!(idle.at, w);

        // Bounded: the oldest goes.
        for s in [30, 40, 50] {
            let (n, w) = at(s);
            h.take(n, w, &readings);
        }
        let kept: Vec<SystemTime> = h.samples().map(|s| s.at).collect();
        assert_eq!(kept, [at(30).1, at(40).1, at(50).1]);
    }

    #[test]
    fn a_counter_that_went_back_counts_nothing() {
        let mut h = History::new(2);
        let t0 = Instant::now();
        let w = SystemTime::UNIX_EPOCH;
        let l = Latency::default();
        h.take(t0, w, &[reading("a:1", 10, &l)]);
        let s = h
            .current(t0 + SAMPLE_EVERY, w, &[reading("a:1", 3, &l)])
            .unwrap();
        assert_eq!(s.backends[0].requests, 0);
    }
}
