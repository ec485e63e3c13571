//! The typed configuration: what the rest of Roost sees. Addresses are `SocketAddr`s, durations
//! are `Duration`s, header names, values and request targets are `http` types, choices are
//! enums. The model is total: every value a constructor needs is already in the type it needs,
//! so a config that loads also builds. Defaults are named constants documented in
//! `doc/configuration.md`.

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_THREADS: usize = 1;
pub const DEFAULT_PID_FILE: &str = "/tmp/roost.pid";
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/roost_upgrade.sock";
/// As long as the default `timeouts.upstream_read`: a stop or upgrade does not cut off a slow
/// synchronous Execute, and costs nothing when nothing is in flight (`ops/stop.rs`).
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 300;
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 10;
pub const DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE: usize = 128;
/// `state.prefix`: every Redis key and channel Roost uses starts with it.
pub const DEFAULT_STATE_PREFIX: &str = "roost:";
pub const DEFAULT_HASH_HEADER: &str = "machineid";
pub const DEFAULT_WEIGHT: u32 = 1;
pub const DEFAULT_HC_PATH: &str = "/";
pub const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HC_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HC_RISE: usize = 2;
pub const DEFAULT_HC_FALL: usize = 3;
/// `panic_threshold`: panic only when every backend is down.
pub const DEFAULT_PANIC_THRESHOLD: u8 = 0;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// WPS Execute requests carry inputs inline; sites accept ~400 MB.
pub const DEFAULT_MAX_BODY: u64 = 512 * 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A synchronous WPS Execute answers only when the process is done.
pub const DEFAULT_UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_UPSTREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pingora's own parser refuses headers beyond these, whatever the config says.
pub const PINGORA_MAX_HEADER_BYTES: usize = 1_048_575;
pub const PINGORA_MAX_HEADERS: usize = 256;

/// A whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, as named on the command line (used in messages).
    pub source: String,
    pub server: ServerSettings,
    pub admin: Option<AdminSettings>,
    /// `None`: no access log.
    pub access_log: Option<AccessLogSettings>,
    /// `state`: the sticky tables shared with other instances (`None`: each its own).
    pub state: Option<SharedStateSettings>,
    pub services: Vec<ServiceConfig>,
}

/// `state`: every instance pointing at the same Redis (or Valkey) shares its sticky tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStateSettings {
    /// `redis://[user:password@]host:port/db` (or `unix:///path`), as the `redis` crate reads it.
    pub redis: String,
    /// Put before every key and channel, so that several sites can share one Redis.
    pub prefix: String,
}

impl Config {
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every backend left out because its host did not resolve, as the error `roost -t`
    /// reports (file, line, key, why) and the warning a starting server logs.
    pub fn unresolved(&self) -> Vec<super::ConfigError> {
        self.services
            .iter()
            .flat_map(|s| {
                s.unresolved.iter().map(|u| super::ConfigError {
                    file: self.source.clone(),
                    line: u.line,
                    key: Some(u.key.clone()),
                    message: format!("service {}: {}", s.name, u.reason),
                })
            })
            .collect()
    }
}

/// Process-wide settings handed to Pingora's `ServerConf`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Worker threads per service.
    pub threads: usize,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// Where a daemonized Roost writes its log (stderr otherwise).
    pub error_log: Option<PathBuf>,
    pub work_stealing: bool,
    pub upstream_keepalive_pool_size: usize,
    /// Whether header names keep the case they arrived in: a request's on its way to the
    /// backend, a response's on its way to the client. Off, Pingora does not build the second
    /// header map that remembers it (names go out titled if well known, else lowercase).
    pub preserve_header_case: bool,
    /// Where the sticky tables are saved so that a restart or an upgrade starts with them
    /// (`None`: not saved).
    pub state_dir: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            threads: DEFAULT_THREADS,
            pid_file: DEFAULT_PID_FILE.into(),
            upgrade_sock: DEFAULT_UPGRADE_SOCK.into(),
            grace_period_seconds: DEFAULT_GRACE_PERIOD_SECONDS,
            graceful_shutdown_timeout_seconds: DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS,
            error_log: None,
            work_stealing: true,
            upstream_keepalive_pool_size: DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE,
            preserve_header_case: false,
            state_dir: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Required as `Authorization: Bearer TOKEN` on every admin request when set.
    pub token: Option<String>,
}

/// One line per request, written by a background thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    pub format: AccessLogFormat,
    pub target: LogTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// One load-balanced WPS service: a listener in front of a pool of backends.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub hash: HashPolicy,
    pub backends: Vec<BackendConfig>,
    /// Backends whose host did not resolve when the file was loaded: left out of `backends`
    /// (so of the ring), reported as down, and retried (`ops::reload`). `roost -t` refuses them.
    pub unresolved: Vec<UnresolvedBackend>,
    /// DNS names whose records are backends (`{ dns: ... }`, `{ srv: ... }`), looked up again
    /// every `refresh` (`ops::discovery`); what they found is in `backends`, marked with the
    /// name.
    pub dns: Vec<DnsBackends>,
    pub health_check: Option<HealthCheckConfig>,
    pub when_down: WhenDown,
    /// Panic mode: when the share of usable backends (in percent) is at or below this, routing
    /// ignores health (`None`: never; `Some(0)`: when no backend is usable).
    pub panic_threshold: Option<u8>,
    /// Keep X-Forwarded-Proto/-Host sent by the client instead of replacing them. Only for a
    /// Roost that sits behind another proxy you trust.
    pub trust_forwarded_headers: bool,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Route requests without the key to the backend that ran the WPS job named in their URL
    /// (learned from the Execute responses and status documents that passed).
    pub wps_affinity: bool,
    /// The sticky table: keys stay on the backend they were sent to.
    pub affinity: Affinity,
}

pub const DEFAULT_AFFINITY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub const DEFAULT_AFFINITY_MAX_KEYS: usize = 1_000_000;
pub const DEFAULT_DRAIN_IDLE: Duration = Duration::from_secs(5 * 60);

/// `services[].affinity`: the sticky table of a keyed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Affinity {
    /// Off: keys go by the ring alone (hash-stable, not session-stable).
    pub enabled: bool,
    /// How long an idle key is remembered (PyWPS keeps outputs about a day).
    pub ttl: Duration,
    pub max_keys: usize,
    /// A key that failed over returns to its backend once that backend is up again (true), or
    /// stays where it failed over to (false).
    pub return_after_recovery: bool,
    /// A draining backend is "safe to stop" once nothing was sent to it for this long (and it
    /// runs no job, has no request in flight).
    pub drain_idle: Duration,
}

impl Default for Affinity {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: DEFAULT_AFFINITY_TTL,
            max_keys: DEFAULT_AFFINITY_MAX_KEYS,
            return_after_recovery: true,
            drain_idle: DEFAULT_DRAIN_IDLE,
        }
    }
}

/// What one client may send (violations: 431, 413, 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: u64,
    /// Open client connections per service; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body: DEFAULT_MAX_BODY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How long Roost waits for clients (408) and backends (504).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the first byte of a request (or the connection's start) to the end of its header.
    pub client_header: Duration,
    /// Longest pause while reading a request body.
    pub client_body: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keepalive: Duration,
    pub upstream_connect: Duration,
    /// Longest pause while waiting for the backend's answer.
    pub upstream_read: Duration,
    pub upstream_write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            client_header: DEFAULT_CLIENT_HEADER_TIMEOUT,
            client_body: DEFAULT_CLIENT_BODY_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE_TIMEOUT,
            upstream_connect: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            upstream_read: DEFAULT_UPSTREAM_READ_TIMEOUT,
            upstream_write: DEFAULT_UPSTREAM_WRITE_TIMEOUT,
        }
    }
}

/// Where the affinity key comes from and what to do without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    /// Request header carrying the key.
    pub header: HeaderName,
    pub missing: MissingKey,
    pub algorithm: HashAlgorithm,
}

/// How a key is mapped onto the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    /// Pingora's Ketama ring, point for point NGINX's `hash ... consistent;`.
    #[default]
    Ketama,
    /// NGINX's plain `hash ...;` (no `consistent`): CRC-32 over the weighted list in config
    /// order. For sites moving from such an NGINX; a backend change moves most keys.
    NginxHash,
}

impl HashAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Ketama => "ketama",
            HashAlgorithm::NginxHash => "nginx_hash",
        }
    }
}

/// What a request without the key gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKey {
    /// Weighted round robin across healthy backends (what NGINX `hash` does for an empty key).
    RoundRobin,
    /// Hash the client's IP address instead.
    ClientIp,
    /// Answer 400.
    Reject,
}

/// What a request gets when its key's backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    /// Walk the ring to the next healthy backend.
    Failover,
    /// Answer 503 with Retry-After: the job's files are only on that backend.
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The address as written (`10.0.0.11:8093`, `wps1:8093`); for a backend an SRV record
    /// found, its target and port (`fp-0.fp.svc:8093`); for an A/AAAA answer, `IP:port`.
    pub address: String,
    /// What it resolved to when the configuration was loaded.
    pub addr: SocketAddr,
    pub weight: u32,
    /// The operator state the file gives it.
    pub state: BackendState,
    /// The DNS entry that found it ([`DnsBackends::name`]); `None` for a backend of the file.
    pub dns: Option<String>,
    /// `id:` from the file: the backend's identity instead of its address.
    pub id: Option<String>,
}

impl BackendConfig {
    /// What the ring hashes and the sticky table, the operator states and the shared state
    /// record for this backend: its `id` when the file gives one, else its address as
    /// written. While it stays the same, the backend's keys stay with it, whatever address it
    /// resolves to (a restarted container, an SRV target with a new IP).
    pub fn identity(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.address)
    }
}

pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(10);

/// One backend a DNS lookup found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub addr: SocketAddr,
    pub weight: u32,
    /// The SRV record's target (`fp-0.fp.default.svc.cluster.local`, no final dot): with the
    /// record's port it is the backend's identity, so a replica that comes back with a new
    /// address keeps its keys. `None` for an A/AAAA answer (the address is the identity).
    pub target: Option<String>,
}

impl Found {
    /// The backend's address as Roost names it: `target:port` for an SRV record, else
    /// `IP:port`.
    pub fn address(&self) -> String {
        match &self.target {
            Some(t) => format!("{t}:{}", self.addr.port()),
            None => self.addr.to_string(),
        }
    }
}

/// `{ dns: NAME, port: P }` (every A/AAAA address is a backend on port P) or `{ srv: NAME }`
/// (every SRV record is one: its target's address, its port and weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsBackends {
    pub name: String,
    /// `Some(port)` for A/AAAA; `None` for SRV (each record has its port).
    pub port: Option<u16>,
    /// How often the name is looked up again.
    pub refresh: Duration,
    /// A DNS server of its own (`resolver: IP:port`), else the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    /// The weight of each address (A/AAAA); SRV records carry theirs.
    pub weight: u32,
    pub state: BackendState,
    /// Where the file lists it, for errors and warnings.
    pub key: String,
    pub line: Option<usize>,
}

impl DnsBackends {
    /// What the entry looks up, for logs: `tasks.fp:8093` or `srv _wps._tcp.fp`.
    pub fn describe(&self) -> String {
        match self.port {
            Some(port) => format!("dns {}:{port}", self.name),
            None => format!("srv {}", self.name),
        }
    }
}

/// A backend whose `host:port` did not resolve: everything the file says of it, so that it
/// becomes a [`BackendConfig`] as soon as a lookup succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedBackend {
    pub address: String,
    /// `id:` from the file, as [`BackendConfig::id`].
    pub id: Option<String>,
    pub weight: u32,
    pub state: BackendState,
    /// Why the last lookup failed.
    pub reason: String,
    /// Where the file lists it (`services[0].backends[2]`, its line), for `roost -t`.
    pub key: String,
    pub line: Option<usize>,
}

impl UnresolvedBackend {
    /// As [`BackendConfig::identity`].
    pub fn identity(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.address)
    }

    /// The backend it becomes once its host resolves to `addr`.
    pub fn resolved(&self, addr: SocketAddr) -> BackendConfig {
        BackendConfig {
            address: self.address.clone(),
            addr,
            weight: self.weight,
            state: self.state,
            dns: None,
            id: self.id.clone(),
        }
    }
}

/// What an operator lets a backend take (`backends[].state`, `POST /backends/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendState {
    /// Everything: new keys, its keys, keyless requests.
    #[default]
    Ready,
    /// No new keys and no keyless requests; the keys the sticky table holds for it and the
    /// requests of the WPS jobs it runs still reach it, so it empties without moving a
    /// session.
    Drain,
    /// Nothing: its keys fail over (counted as moves, reason `drained`), even under
    /// `when_down: reject`.
    Maint,
}

impl BackendState {
    pub const ALL: [BackendState; 3] = [
        BackendState::Ready,
        BackendState::Drain,
        BackendState::Maint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Ready => "ready",
            BackendState::Drain => "drain",
            BackendState::Maint => "maint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether new keys and keyless requests may go to it.
    pub fn takes_new_work(self) -> bool {
        self == BackendState::Ready
    }

    /// Whether anything at all may go to it.
    pub fn takes_traffic(self) -> bool {
        self != BackendState::Maint
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes for a down backend to come back.
    pub rise: usize,
    /// Consecutive failures for an up backend to go down.
    pub fall: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// GET `path` with `Host: host` (default `localhost`) and expect a 2xx or 3xx answer.
    Http {
        path: PathAndQuery,
        host: Option<HeaderValue>,
    },
    /// Open a TCP connection.
    Tcp,
}
