//! The one route resolver: where a request goes, or why it is refused. The proxy (for every
//! request and its retry), the admin `/route` endpoint and `roost route` all ask here, so they
//! validate keys the same way and reach the same decision.
//!
//! The order of the rules:
//! 1. an invalid key is refused (400);
//! 2. a key the sticky table holds goes to its recorded backend while that backend is usable
//!    (up, and not in maintenance: a draining backend keeps its keys); when it is down,
//!    `when_down` decides (another backend on the ring, or 503); when an operator put it in
//!    maintenance, or it has left the config, the ring decides;
//! 3. any other key is hashed onto the ring ([`Pick::by_key`]), which passes over backends
//!    closed to new keys (draining, in maintenance);
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
    /// Whether backend `i` may take a request now (up, and not in maintenance).
    fn usable(&self, i: usize) -> bool;
    /// Whether an operator put backend `i` in maintenance: its keys move, whatever
    /// `when_down` says.
    fn in_maintenance(&self, i: usize) -> bool;
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
    /// An operator put the recorded backend in maintenance.
    Drained,
}

impl Move {
    /// Every move, in declaration order: `why as usize` indexes arrays built from it.
    pub const ALL: [Move; 3] = [Move::OwnerDown, Move::Removed, Move::Drained];

    pub fn as_str(self) -> &'static str {
        match self {
            Move::OwnerDown => "owner_down",
            Move::Removed => "removed",
            Move::Drained => "drained",
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
            Some(Recorded { member: Some(m) }) if pick.in_maintenance(m) => {
                return stand_in(pick, k, m, ask.exclude, Move::Drained)
            }
            Some(Recorded { member: Some(_) }) if !by_key_fails_over => {
                return Err(Unroutable::OwnerDown)
            }
            Some(Recorded { member: Some(m) }) => {
                return stand_in(pick, k, m, ask.exclude, Move::OwnerDown)
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

/// The recorded backend `m` cannot take `key`: the ring, without it (and without a backend
/// that just refused), picks the stand-in.
fn stand_in(
    pick: &impl Pick,
    key: &[u8],
    m: usize,
    exclude: Option<usize>,
    why: Move,
) -> Result<Route, Unroutable> {
    let both = [m, exclude.unwrap_or(m)];
    let decision = match pick.by_key(key, &both) {
        Decision::Forward { backend, .. } => Decision::Forward {
            backend,
            role: Role::Failover,
        },
        other => other,
    };
    finish(decision, Reason::Table, true, Some(why))
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
#[path = "route_tests.rs"]
mod tests;
