//! Sharing's rules: which keys are marked, the conflict rule, learning without an echo.

use super::*;

fn id(s: &str) -> Identity {
    s.into()
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
