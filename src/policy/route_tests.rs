//! The route resolver's rules, with a table of three backends standing in for the ring.

use super::*;
use std::cell::Cell;

/// Three backends: keys starting with `a` belong to 0, `b` to 1, anything else to 2;
/// `up[i]` is backend i's health. The rotation starts at `rr`.
struct Table {
    up: [bool; 3],
    rr: Cell<usize>,
    when_down: WhenDown,
    /// The sticky table: key → recorded member (`None`: no longer in the config).
    sticky: Vec<(&'static [u8], Option<usize>)>,
    /// Backends in maintenance: off the ring for new keys, their keys move.
    maint: [bool; 3],
}

impl Pick for Table {
    fn by_key(&self, key: &[u8], avoid: &[usize]) -> Decision<usize> {
        let owner = match key.first() {
            Some(b'a') => 0,
            Some(b'b') => 1,
            _ => 2,
        };
        // Maintenance takes a backend off the ring: the next one owns its keys.
        let owner = (0..3)
            .map(|step| (owner + step) % 3)
            .find(|&i| !self.maint[i])
            .unwrap_or(owner);
        let usable = |i: usize| self.up[i] && !self.maint[i] && !avoid.contains(&i);
        if usable(owner) {
            return Decision::Forward {
                backend: owner,
                role: Role::Owner,
            };
        }
        if self.when_down == WhenDown::Reject {
            return Decision::OwnerDown;
        }
        (1..3)
            .map(|step| (owner + step) % 3)
            .find(|&i| usable(i))
            .map_or(Decision::NoneHealthy, |backend| Decision::Forward {
                backend,
                role: Role::Failover,
            })
    }

    fn recorded(&self, key: &[u8]) -> Option<Recorded> {
        let (_, member) = self.sticky.iter().find(|(k, _)| *k == key)?;
        Some(Recorded { member: *member })
    }

    fn usable(&self, i: usize) -> bool {
        self.up[i] && !self.maint[i]
    }

    fn in_maintenance(&self, i: usize) -> bool {
        self.maint[i]
    }

    fn round_robin(&self, exclude: Option<usize>) -> Decision<usize> {
        let start = self.rr.replace(self.rr.get() + 1);
        (0..3)
            .map(|step| (start + step) % 3)
            .find(|&i| self.up[i] && Some(i) != exclude)
            .map_or(Decision::NoneHealthy, |backend| Decision::Forward {
                backend,
                role: Role::Owner,
            })
    }
}

fn policy(missing: MissingKey, when_down: WhenDown, wps_affinity: bool) -> RoutePolicy {
    RoutePolicy {
        service: "fp".into(),
        header: HeaderName::from_static("machineid"),
        missing,
        when_down,
        wps_affinity,
        retry_after: 5,
    }
}

fn table(up: [bool; 3], when_down: WhenDown) -> Table {
    Table {
        up,
        rr: Cell::new(0),
        when_down,
        sticky: Vec::new(),
        maint: [false; 3],
    }
}

fn ask<'a>(key: Key<'a>, job: Option<usize>) -> Ask<'a, impl FnOnce() -> Option<usize>> {
    Ask {
        key,
        client_ip: Some("10.1.2.3".parse().unwrap()),
        exclude: None,
        job: move || job,
    }
}

#[test]
fn a_key_goes_to_its_owner_or_fails_over() {
    let p = policy(MissingKey::RoundRobin, WhenDown::Failover, false);
    let t = table([true, true, true], WhenDown::Failover);
    let r = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap();
    assert_eq!((r.backend, r.role, r.reason), (0, Role::Owner, Reason::Key));
    assert!(r.may_fail_over);
    let t = table([false, true, true], WhenDown::Failover);
    let r = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap();
    assert_eq!((r.backend, r.role), (1, Role::Failover));
}

#[test]
fn a_recorded_key_stays_on_its_backend_whatever_the_ring_says() {
    let p = policy(MissingKey::RoundRobin, WhenDown::Failover, false);
    let mut t = table([true, true, true], WhenDown::Failover);
    // The ring says 0 for "abc"; the table recorded it on 2.
    t.sticky = vec![(b"abc", Some(2))];
    let r = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap();
    assert_eq!(
        (r.backend, r.role, r.reason, r.moved),
        (2, Role::Owner, Reason::Table, None)
    );
    // Its backend is down: the ring without it picks the stand-in (0, the ring owner).
    t.up = [true, true, false];
    let r = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap();
    assert_eq!(
        (r.backend, r.role, r.moved),
        (0, Role::Failover, Some(Move::OwnerDown))
    );
    // The retry after its backend refused a connection avoids it too.
    t.up = [true, true, true];
    let mut retry = ask(Key::Present(b"abc"), None);
    retry.exclude = Some(2);
    let r = resolve(&p, retry, &t).unwrap();
    assert_eq!((r.backend, r.role), (0, Role::Failover));
    // A backend gone from the config: the ring decides, and it is a move.
    t.sticky = vec![(b"abc", None)];
    let r = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap();
    assert_eq!(
        (r.backend, r.reason, r.moved),
        (0, Reason::Key, Some(Move::Removed))
    );
}

#[test]
fn a_recorded_key_whose_backend_is_down_is_refused_under_reject() {
    let p = policy(MissingKey::RoundRobin, WhenDown::Reject, false);
    let mut t = table([true, true, false], WhenDown::Reject);
    t.sticky = vec![(b"abc", Some(2))];
    let err = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap_err();
    assert_eq!(err, Unroutable::OwnerDown);
    // With both the recorded backend and the ring owner down, failover finds the third.
    let p = policy(MissingKey::RoundRobin, WhenDown::Failover, false);
    let mut t = table([false, true, false], WhenDown::Failover);
    t.sticky = vec![(b"abc", Some(2))];
    assert_eq!(
        resolve(&p, ask(Key::Present(b"abc"), None), &t)
            .unwrap()
            .backend,
        1
    );
}

#[test]
fn reject_mode_refuses_a_down_owner_and_never_retries_elsewhere() {
    let p = policy(MissingKey::RoundRobin, WhenDown::Reject, false);
    let t = table([false, true, true], WhenDown::Reject);
    let err = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap_err();
    assert_eq!(err, Unroutable::OwnerDown);
    let refusal = err.refusal(&p);
    assert_eq!((refusal.status, refusal.retry_after), (503, Some(5)));
    let t = table([true, true, true], WhenDown::Reject);
    let r = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap();
    assert!(!r.may_fail_over);
}

#[test]
fn keyless_requests_follow_hash_missing() {
    let t = table([true, true, true], WhenDown::Failover);
    let rr = policy(MissingKey::RoundRobin, WhenDown::Reject, false);
    let r = resolve(&rr, ask(Key::Missing, Some(0)), &t).unwrap();
    assert_eq!(r.reason, Reason::RoundRobin);
    assert!(r.may_fail_over, "round robin may always go elsewhere");
    let ip = policy(MissingKey::ClientIp, WhenDown::Failover, false);
    let r = resolve(&ip, ask(Key::Missing, None), &t).unwrap();
    assert_eq!(r.reason, Reason::ClientIp);
    // "10.1.2.3" hashes like any key starting with '1': backend 2.
    assert_eq!(r.backend, 2);
    let reject = policy(MissingKey::Reject, WhenDown::Failover, false);
    let err = resolve(&reject, ask(Key::Missing, None), &t).unwrap_err();
    assert_eq!(err, Unroutable::MissingKey);
    assert_eq!(err.refusal(&reject).status, 400);
}

#[test]
fn wps_jobs_route_keyless_requests_only() {
    let t = table([true, true, true], WhenDown::Failover);
    let p = policy(MissingKey::Reject, WhenDown::Failover, true);
    let r = resolve(&p, ask(Key::Missing, Some(1)), &t).unwrap();
    assert_eq!((r.backend, r.reason), (1, Reason::Job));
    // A key always wins; the job is not even asked for.
    let ask_key = Ask {
        key: Key::Present(b"abc"),
        client_ip: None,
        exclude: None,
        job: || -> Option<usize> { panic!("job asked for a keyed request") },
    };
    assert_eq!(resolve(&p, ask_key, &t).unwrap().backend, 0);
    // Off: the job is ignored.
    let off = policy(MissingKey::Reject, WhenDown::Failover, false);
    assert!(resolve(&off, ask(Key::Missing, Some(1)), &t).is_err());
}

#[test]
fn invalid_keys_and_no_backend() {
    let p = policy(MissingKey::RoundRobin, WhenDown::Failover, false);
    let t = table([false, false, false], WhenDown::Failover);
    let err = resolve(&p, ask(Key::Invalid("too long"), None), &t).unwrap_err();
    assert_eq!(err.refusal(&p).status, 400);
    let err = resolve(&p, ask(Key::Present(b"abc"), None), &t).unwrap_err();
    assert_eq!(err, Unroutable::NoneHealthy);
    assert_eq!(err.refusal(&p).retry_after, Some(5));
    assert_eq!(
        resolve(&p, ask(Key::Missing, None), &t).unwrap_err(),
        Unroutable::NoneHealthy
    );
}

#[test]
fn lookup_validates_like_the_proxy() {
    let p = policy(MissingKey::RoundRobin, WhenDown::Failover, false);
    let t = table([true, true, true], WhenDown::Failover);
    assert_eq!(lookup(&p, " abc ", &t).unwrap().backend, 0);
    assert_eq!(lookup(&p, "  ", &t).unwrap_err(), Unroutable::MissingKey);
    let long = "a".repeat(key::MAX_KEY_LEN + 1);
    assert!(matches!(
        lookup(&p, &long, &t).unwrap_err(),
        Unroutable::InvalidKey(_)
    ));
    assert!(matches!(
        lookup(&p, "caf\u{e9}", &t).unwrap_err(),
        Unroutable::InvalidKey(_)
    ));
}

#[test]
fn a_key_recorded_on_a_backend_in_maintenance_moves_even_under_reject() {
    for when_down in [WhenDown::Failover, WhenDown::Reject] {
        let mut t = table([true, true, true], when_down);
        t.sticky.push((b"a-key", Some(0)));
        t.maint[0] = true;
        let route = lookup(
            &policy(MissingKey::RoundRobin, when_down, false),
            "a-key",
            &t,
        )
        .unwrap();
        assert_eq!(route.backend, 1, "{when_down:?}");
        assert_eq!(route.role, Role::Failover);
        assert_eq!(route.reason, Reason::Table);
        assert_eq!(route.moved, Some(Move::Drained));
        // Down under reject: refused, not moved (the operator did not ask for it).
        t.maint[0] = false;
        t.up[0] = false;
        let down = lookup(
            &policy(MissingKey::RoundRobin, when_down, false),
            "a-key",
            &t,
        );
        match when_down {
            WhenDown::Reject => assert_eq!(down, Err(Unroutable::OwnerDown)),
            WhenDown::Failover => assert_eq!(down.unwrap().moved, Some(Move::OwnerDown)),
        }
    }
}
