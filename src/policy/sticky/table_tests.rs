//! The sticky table's own rules: records, moves, stand-ins, expiry, eviction, pins, counts,
//! export and import.

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
