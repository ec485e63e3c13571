//! The one route resolver: where a request goes, or why it is refused. The proxy (for every
//! request and its retry), the admin `/route` endpoint and `roost route` all ask here, so they
//! validate keys the same way and reach the same decision.
//!
//! The order of the rules:
//! 1. an invalid key is refused (400);
//! 2. a key the sticky table holds goes to its recorded backend while that backend is usable;
//!    when it is down, `when_down` decides (another backend on the ring, or 503); when it has
//!    left the config, the ring decides;
//! 3. any other key is hashed onto the ring ([`Pick::by_key`]);
//! 4. a request without a key, under `wps_affinity`, goes to the backend that ran the WPS job
//!    its URL names, when that backend is usable; otherwise `hash.missing` decides: round
//!    robin, the client's IP as the key, or 400.
//!
//! The resolver only decides; the proxy records what was forwarded in the table.
//!
//! Pure: the ring, health and rotation are behind [`Pick`], so the rules are unit-tested
//! with a table of backends.

use crate::config::{MissingKey, WhenDown};
use crate::policy::key::{self, Key};
use crate::policy::refusal::{self, Refusal};
use crate::policy::select::{Decision, Role};
use http::HeaderName;
use std::net::IpAddr;
use std::sync::Arc;

/// The settings of one service that routing reads.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    pub service: Arc<str>,
    pub header: HeaderName,
    pub missing: MissingKey,
    pub when_down: WhenDown,
    pub wps_affinity: bool,
    /// `Retry-After` for a 503 when the key's backend (or every backend) is down.
    pub retry_after: u64,
}

/// The backends of one service as routing sees them, by index in config order.
pub trait Pick {
    /// Hash `key` onto the ring: its owner, or under `when_down: failover` the next usable
    /// backend on the ring. The backends in `avoid` are passed over (one that just refused a
    /// connection for this request, a recorded backend that is down).
    fn by_key(&self, key: &[u8], avoid: &[usize]) -> Decision<usize>;
    /// Where the sticky table holds `key`; `None` when it has no entry (or the table is off).
    fn recorded(&self, key: &[u8]) -> Option<Recorded>;
    /// Whether backend `i` may take a request now.
    fn usable(&self, i: usize) -> bool;
    /// The next usable backend of the weighted rotation.
    fn round_robin(&self, exclude: Option<usize>) -> Decision<usize>;
}

/// A sticky-table entry as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The recorded backend, when it is still in the config.
    pub member: Option<usize>,
}

/// Why a key left the backend recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The recorded backend is down (or refused this request's connection).
    OwnerDown,
    /// The recorded backend is no longer in the config.
    Removed,
}

impl Move {
    pub fn as_str(self) -> &'static str {
        match self {
            Move::OwnerDown => "owner_down",
            Move::Removed => "removed",
        }
    }
}

/// What a request offers to be routed on.
pub struct Ask<'a, J> {
    pub key: Key<'a>,
    pub client_ip: Option<IpAddr>,
    /// A backend that just refused a connection for this request (the retry avoids it).
    pub exclude: Option<usize>,
    /// `wps_affinity`: the usable backend that ran the job named in the URL; asked only for a
    /// request without a key.
    pub job: J,
}

/// Why a request goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its affinity key, hashed onto the ring (a key the table does not hold).
    Key,
    /// Its affinity key, held by the sticky table.
    Table,
    /// No key; the backend that ran the WPS job its URL names.
    Job,
    /// No key; the weighted rotation.
    RoundRobin,
    /// No key; the client's IP address hashed as the key.
    ClientIp,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Key => "key",
            Reason::Table => "table",
            Reason::Job => "job",
            Reason::RoundRobin => "round_robin",
            Reason::ClientIp => "client_ip",
        }
    }
}

/// A backend for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index of the backend, in config order.
    pub backend: usize,
    pub role: Role,
    pub reason: Reason,
    /// Whether a retry after a refused connection may go elsewhere.
    pub may_fail_over: bool,
    /// The key is not on the backend the table recorded for it, and why.
    pub moved: Option<Move>,
}

/// Why a request gets no backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unroutable {
    InvalidKey(&'static str),
    /// No key, and the service routes every request by it (`hash.missing: reject`), or the
    /// key asked about is empty.
    MissingKey,
    /// `when_down: reject` and the key's backend is down.
    OwnerDown,
    NoneHealthy,
}

impl Unroutable {
    /// The short name used in `/route` answers.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unroutable::InvalidKey(_) => "invalid_key",
            Unroutable::MissingKey => "missing_key",
            Unroutable::OwnerDown => "owner_down",
            Unroutable::NoneHealthy => "none_healthy",
        }
    }

    /// What the client is told.
    pub fn refusal(&self, policy: &RoutePolicy) -> Refusal {
        let (service, header) = (&*policy.service, policy.header.as_str());
        match self {
            Unroutable::InvalidKey(reason) => {
                Refusal::new(400, format!("{header} header refused: {reason}"))
            }
            Unroutable::MissingKey => Refusal::new(
                400,
                format!("missing {header} header: service '{service}' routes every request by it"),
            ),
            Unroutable::OwnerDown => {
                refusal::owner_down(service, header).retry_after(policy.retry_after)
            }
            Unroutable::NoneHealthy => {
                Refusal::new(503, format!("no healthy backend for service '{service}'"))
                    .retry_after(policy.retry_after)
            }
        }
    }
}

/// Route one request.
pub fn resolve<J: FnOnce() -> Option<usize>>(
    policy: &RoutePolicy,
    ask: Ask<'_, J>,
    pick: &impl Pick,
) -> Result<Route, Unroutable> {
    let by_key_fails_over = policy.when_down == WhenDown::Failover;
    let exclude = ask.exclude.as_slice();
    let (decision, reason, may_fail_over) = match ask.key {
        Key::Invalid(why) => return Err(Unroutable::InvalidKey(why)),
        Key::Present(k) => match pick.recorded(k) {
            None => (pick.by_key(k, exclude), Reason::Key, by_key_fails_over),
            Some(Recorded { member: None }) => {
                let decision = pick.by_key(k, exclude);
                return finish(
                    decision,
                    Reason::Key,
                    by_key_fails_over,
                    Some(Move::Removed),
                );
            }
            Some(Recorded { member: Some(m) }) if pick.usable(m) && ask.exclude != Some(m) => {
                let decision = Decision::Forward {
                    backend: m,
                    role: Role::Owner,
                };
                (decision, Reason::Table, by_key_fails_over)
            }
            Some(Recorded { member: Some(_) }) if !by_key_fails_over => {
                return Err(Unroutable::OwnerDown)
            }
            Some(Recorded { member: Some(m) }) => {
                // Its backend is down: the ring, without it, picks the stand-in.
                let both = [m, ask.exclude.unwrap_or(m)];
                let decision = match pick.by_key(k, &both) {
                    Decision::Forward { backend, .. } => Decision::Forward {
                        backend,
                        role: Role::Failover,
                    },
                    other => other,
                };
                return finish(decision, Reason::Table, true, Some(Move::OwnerDown));
            }
        },
        Key::Missing => {
            if policy.wps_affinity {
                if let Some(backend) = (ask.job)() {
                    // Refused: the retry goes by `hash.missing` (the job's backend excluded).
                    return Ok(Route {
                        backend,
                        role: Role::Owner,
                        reason: Reason::Job,
                        may_fail_over: true,
                        moved: None,
                    });
                }
            }
            match policy.missing {
                MissingKey::RoundRobin => (pick.round_robin(ask.exclude), Reason::RoundRobin, true),
                MissingKey::ClientIp => {
                    let ip = ask.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
                    let decision = pick.by_key(ip.as_bytes(), exclude);
                    (decision, Reason::ClientIp, by_key_fails_over)
                }
                MissingKey::Reject => return Err(Unroutable::MissingKey),
            }
        }
    };
    finish(decision, reason, may_fail_over, None)
}

fn finish(
    decision: Decision<usize>,
    reason: Reason,
    may_fail_over: bool,
    moved: Option<Move>,
) -> Result<Route, Unroutable> {
    match decision {
        Decision::Forward { backend, role } => Ok(Route {
            backend,
            role,
            reason,
            may_fail_over,
            moved,
        }),
        Decision::OwnerDown => Err(Unroutable::OwnerDown),
        Decision::NoneHealthy => Err(Unroutable::NoneHealthy),
    }
}

/// Where requests carrying `key` as their key header's value go now: the question of
/// `/route` and `roost route`, answered by the same rules as a proxied request.
pub fn lookup(policy: &RoutePolicy, key: &str, pick: &impl Pick) -> Result<Route, Unroutable> {
    let key = key::from_value(key.as_bytes());
    if key == Key::Missing {
        return Err(Unroutable::MissingKey);
    }
    let ask = Ask {
        key,
        client_ip: None,
        exclude: None,
        job: || None,
    };
    resolve(policy, ask, pick)
}

#[cfg(test)]
mod tests {
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
    }

    impl Pick for Table {
        fn by_key(&self, key: &[u8], avoid: &[usize]) -> Decision<usize> {
            let owner = match key.first() {
                Some(b'a') => 0,
                Some(b'b') => 1,
                _ => 2,
            };
            let usable = |i: usize| self.up[i] && !avoid.contains(&i);
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
            self.up[i]
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
}
