//! The job table's rules: remembering, capacity, age, pins of running jobs, sharing marks,
//! export and import.

use super::*;
use crate::policy::wps::testing::{id, A, B};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const RUNNING: Option<JobState> = Some(JobState::Running);
const ENDED: Option<JobState> = Some(JobState::Ended);

#[test]
fn shared_jobs_are_marked_when_new_or_changed_and_learned_ones_are_not_echoed() {
    let table = JobTable::default();
    let t0 = Instant::now();
    table.observe(id(A), addr(1), Some(b"k"), None, t0);
    assert_eq!(table.pending(), 0, "nothing is marked while sharing is off");
    table.share();
    table.observe(id(B), addr(2), Some(b"k"), RUNNING, t0);
    let changes = table.take_changes(t0);
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].backend, changes[0].running), (addr(2), true));
    // A poll that says nothing new is not shared again; its end is.
    table.observe(id(B), addr(2), None, RUNNING, t0);
    assert_eq!(table.pending(), 0);
    table.observe(id(B), addr(2), None, ENDED, t0);
    assert!(!table.take_changes(t0)[0].running);
    // Learned from another instance: taken, not marked; the same news again: nothing.
    let other = SavedJob {
        id: id(A),
        backend: addr(3),
        key: Some(b"k".to_vec()),
        running: true,
        idle: Duration::ZERO,
    };
    assert!(table.learn(&other, t0));
    assert_eq!(table.backend_of(id(A), t0), Some(addr(3)));
    assert_eq!(table.running_on(addr(3)), 1);
    assert!(!table.learn(&other, t0));
    assert_eq!(table.pending(), 0);
    // After an outage every job is marked again.
    table.mark(table.ids());
    assert_eq!(table.take_changes(t0).len(), 2);
}

#[test]
fn table_remembers_and_relearns() {
    let table = JobTable::default();
    let t0 = Instant::now();
    assert_eq!(table.backend_of(id(A), t0), None);
    table.observe(id(A), addr(1), None, None, t0);
    table.observe(id(B), addr(2), None, None, t0);
    assert_eq!(table.backend_of(id(A), t0), Some(addr(1)));
    assert_eq!(table.backend_of(id(B), t0), Some(addr(2)));
    // A job seen again on another backend (its owner failed over) follows it.
    table.observe(id(A), addr(3), None, None, t0);
    assert_eq!(table.backend_of(id(A), t0), Some(addr(3)));
    assert_eq!(table.len(), 2);
}

#[test]
fn table_forgets_the_oldest_beyond_capacity() {
    let table = JobTable::new(3, MAX_AGE);
    let t0 = Instant::now();
    for job in 1..=3u128 {
        table.observe(job, addr(job as u16), None, None, t0);
    }
    // Job 1 seen again: now job 2 is the oldest.
    table.observe(1, addr(1), None, None, t0);
    table.observe(4, addr(4), None, None, t0);
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
    table.observe(1, addr(1), None, None, t0);
    table.observe(2, addr(2), None, None, t0 + Duration::from_secs(30));
    assert_eq!(table.backend_of(1, t0 + age), Some(addr(1)));
    assert_eq!(table.backend_of(1, t0 + age + Duration::from_secs(1)), None);
    // Observing later drops what expired and keeps the rest.
    table.observe(3, addr(3), None, None, t0 + Duration::from_secs(70));
    assert_eq!(table.len(), 2);
    assert_eq!(
        table.backend_of(2, t0 + Duration::from_secs(70)),
        Some(addr(2))
    );
    assert_eq!(table.expire(t0 + Duration::from_secs(91)), 1);
    assert_eq!(table.len(), 1);
}

fn pinned_table(capacity: usize) -> (JobTable, Arc<StickyTable>) {
    let sticky = Arc::new(StickyTable::new(Duration::from_secs(10), 1000));
    let jobs = JobTable::new(capacity, MAX_AGE).with_pins(Arc::clone(&sticky));
    (jobs, sticky)
}

#[test]
fn a_running_job_pins_its_key_until_it_ends() {
    let (jobs, sticky) = pinned_table(100);
    let t0 = Instant::now();
    sticky.record(b"k1", &"b1".into(), t0);
    // Accepted: running, pinned, counted on its backend.
    jobs.observe(id(A), addr(1), Some(b"k1"), RUNNING, t0);
    assert_eq!((jobs.running_on(addr(1)), jobs.running_on(addr(2))), (1, 0));
    assert_eq!(sticky.get(b"k1", t0).unwrap().pins, 1);
    // Polled without the key: still running, still pinned once, long past the TTL.
    let later = t0 + Duration::from_secs(3600);
    jobs.observe(id(A), addr(1), None, RUNNING, later);
    jobs.observe(id(A), addr(1), None, None, later);
    assert_eq!(sticky.expire(later), 0);
    assert_eq!(sticky.get(b"k1", later).unwrap().pins, 1);
    assert_eq!(jobs.running_on(addr(1)), 1);
    // Succeeded: the pin goes, the key is idle from now.
    jobs.observe(id(A), addr(1), None, ENDED, later);
    assert_eq!(jobs.running_on(addr(1)), 0);
    assert_eq!(sticky.pinned(), 0);
    assert_eq!(sticky.get(b"k1", later).unwrap().last_seen, later);
    assert_eq!(sticky.expire(later + Duration::from_secs(10)), 1);
    // A job whose key is not in the sticky table pins nothing, and counts all the same.
    jobs.observe(id(B), addr(2), Some(b"gone"), RUNNING, later);
    assert_eq!((jobs.running_on(addr(2)), sticky.pinned()), (1, 0));
}

#[test]
fn a_job_seen_elsewhere_or_for_another_key_moves_its_count_and_pin() {
    let (jobs, sticky) = pinned_table(100);
    let t0 = Instant::now();
    for k in [&b"k1"[..], b"k2"] {
        sticky.record(k, &"b1".into(), t0);
    }
    jobs.observe(id(A), addr(1), Some(b"k1"), RUNNING, t0);
    jobs.observe(id(A), addr(2), Some(b"k2"), None, t0);
    assert_eq!((jobs.running_on(addr(1)), jobs.running_on(addr(2))), (0, 1));
    assert_eq!(sticky.get(b"k1", t0).unwrap().pins, 0);
    assert_eq!(sticky.get(b"k2", t0).unwrap().pins, 1);
    // What a move of k2 takes away from its job.
    assert_eq!(
        jobs.moved_away(b"k2", addr(3)),
        [JobMove {
            id: id(A),
            from: addr(2)
        }]
    );
    assert_eq!(jobs.moved_away(b"k2", addr(2)), []);
    assert_eq!(jobs.moved_away(b"k1", addr(3)), []);
    jobs.observe(id(A), addr(2), None, ENDED, t0);
    assert_eq!(
        jobs.moved_away(b"k2", addr(3)),
        [],
        "an ended job does not move"
    );
}

#[test]
fn pins_are_bounded_by_the_capacity_and_released_with_forgotten_jobs() {
    let (jobs, sticky) = pinned_table(3);
    let t0 = Instant::now();
    for job in 1..=5u128 {
        let key = format!("k{job}");
        sticky.record(key.as_bytes(), &"b1".into(), t0);
        jobs.observe(job, addr(1), Some(key.as_bytes()), RUNNING, t0);
        assert!(sticky.pinned() <= 3);
    }
    assert_eq!((sticky.pinned(), jobs.running_on(addr(1))), (3, 3));
    // The two oldest jobs were forgotten: their keys are idle again.
    assert_eq!(sticky.get(b"k1", t0).unwrap().pins, 0);
    assert_eq!(sticky.get(b"k5", t0).unwrap().pins, 1);
    // Jobs not seen for the age limit go with their pins.
    assert_eq!(jobs.expire(t0 + MAX_AGE + Duration::from_secs(1)), 3);
    assert_eq!((sticky.pinned(), jobs.running_on(addr(1))), (0, 0));
}

/// A saved table comes back in another process's table: running jobs pin their keys
/// again, ended ones route their downloads, and what the new process saw itself wins.
#[test]
fn export_and_import_carry_jobs_and_their_pins() {
    let t0 = Instant::now();
    let sticky = Arc::new(StickyTable::new(Duration::from_secs(3600), 100));
    let old = JobTable::default().with_pins(Arc::clone(&sticky));
    old.observe(id(A), addr(1), Some(b"k1"), RUNNING, t0);
    old.observe(id(B), addr(2), Some(b"k2"), ENDED, t0);
    let saved = old.export(t0 + Duration::from_secs(5));
    assert_eq!(saved.len(), 2);
    assert!(saved.iter().all(|j| j.idle == Duration::from_secs(5)));

    let pins = Arc::new(StickyTable::new(Duration::from_secs(3600), 100));
    pins.record(b"k1", &"127.0.0.1:1".into(), t0);
    let new = JobTable::default().with_pins(Arc::clone(&pins));
    let now = t0 + Duration::from_secs(10);
    new.observe(id(B), addr(3), None, None, now);
    assert_eq!(new.import(&saved, now), 1, "B is known here already");
    assert_eq!(new.backend_of(id(A), now), Some(addr(1)));
    assert_eq!(
        new.backend_of(id(B), now),
        Some(addr(3)),
        "its own sighting wins"
    );
    assert_eq!(new.running_on(addr(1)), 1);
    assert_eq!(pins.pinned(), 1, "the running job pins its key again");
    // Past the age limit: not taken.
    let stale: Vec<SavedJob> = saved
        .iter()
        .map(|j| SavedJob {
            idle: MAX_AGE,
            ..j.clone()
        })
        .collect();
    assert_eq!(JobTable::default().import(&stale, now), 0);
}
