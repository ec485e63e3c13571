//! Chaos: continuous load from several clients for ~25 s while two of three backends are
//! killed and restarted at random. Keys owned by the backend that stays up must never fail,
//! every answer must be complete, and Roost's memory must not keep growing.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A small deterministic generator: the schedule is random-looking but reproducible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn random_backend_kills_never_fail_keys_of_the_backend_that_stays() {
    let mut site = Site::start(
        "    health_check: { path: /health, interval: 200ms, timeout: 150ms, rise: 2, fall: 1 }\n",
    );
    let stable = site.backends[0].as_ref().unwrap().name.clone();
    let names: Vec<String> = site.running().map(|b| b.name.clone()).collect();
    // Which backend owns which load key while all are up.
    let load = Load::start(site.addr, 6, 40);
    std::thread::sleep(Duration::from_millis(500));
    let rss_start = rss_kib(site.roost.proc.pid());

    let mut rng = Lcg(0x5eed);
    let mut stopped: HashMap<usize, std::net::SocketAddr> = HashMap::new();
    let start = Instant::now();
    let mut events = 0;
    while start.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(300 + rng.next() % 700));
        let i = 1 + (rng.next() % 2) as usize; // never backend 0
        match stopped.remove(&i) {
            Some(addr) => site.backends[i] = Some(Backend::start_on(&names[i], &addr.to_string())),
            None => {
                stopped.insert(i, site.stop(i));
            }
        }
        events += 1;
    }
    for (i, addr) in stopped {
        site.backends[i] = Some(Backend::start_on(&names[i], &addr.to_string()));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let rss_end = rss_kib(site.roost.proc.pid());
    let report = load.stop();

    // Keys whose every answer came from the stable backend were owned by it throughout.
    let stable_keys: HashSet<&String> = report
        .backends
        .iter()
        .filter(|(_, seen)| seen.iter().all(|b| *b == stable))
        .map(|(k, _)| k)
        .collect();
    assert!(
        stable_keys.len() > 10,
        "too few keys on {stable}: {}",
        stable_keys.len()
    );
    let failed_stable: Vec<&String> = report
        .failures
        .iter()
        .filter(|f| stable_keys.iter().any(|k| f.contains(&format!(" {k}:"))))
        .collect();
    assert!(
        failed_stable.is_empty(),
        "requests for keys of the backend that stayed up failed: {failed_stable:?}"
    );
    // Answers that came back were complete and correct (Load checks every body); failures
    // are only connection-level ones for keys of killed backends, and few.
    let total = report.ok + report.failures.len();
    assert!(
        report.failures.len() * 20 < total,
        "{} of {total} failed: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(10)]
    );
    assert!(events >= 20, "only {events} kill/restart events");
    assert!(
        rss_end < rss_start + 30 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
    eprintln!(
        "chaos: {total} requests, {} failed (all on killed backends), {events} events, RSS {rss_start} -> {rss_end} KiB",
        report.failures.len()
    );
}
