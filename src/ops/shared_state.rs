//! The shared state (`state: { redis, prefix }`): every instance pointing at the same Redis (or
//! Valkey) shares its sticky tables, so a key learned through instance A is routed the same
//! way by instance B; also the operator states set through the admin API
//! (`{prefix}state:{service}:{backend}`, no TTL, channel `{prefix}state`) and the WPS job
//! tables (`{prefix}job:{service}:{uuid}`, channel `{prefix}job`), each in the state file's
//! shape, the last write winning.
//!
//! Requests never wait on Redis. Each instance keeps routing on its own sticky table
//! (`policy::sticky`), which marks the keys that changed (new, moved, due a TTL refresh); this
//! background service writes them behind every [`FLUSH_EVERY`], in one script call per batch
//! ([`SCRIPT`]), which applies the conflict rule atomically in Redis, stores the winner with
//! `PX` = what is left of `affinity.ttl`, and publishes it on `{prefix}sticky`. Every instance
//! subscribes to that channel and applies what the others publish to its local table
//! (`StickyTable::learn`, the same rule). An entry learned on A is therefore routed by B after
//! at most [`FLUSH_EVERY`] plus two loopback round trips (measured in `tests/shared_state.rs`).
//!
//! Redis keys: `{prefix}sticky:{service}:{key}` → the entry as the state file saves it
//! (`ops::state_file::Saved`: key, backend, idle_ms, age_ms) plus `service`, `origin` (the
//! writing instance), `since_ms` (Unix time it was recorded on that backend, for the conflict
//! rule) and `from` (a move: the backend it replaced). A message on the channel is that same
//! value.
//!
//! **Conflict rule** (`policy::sticky::resolve`): two instances recorded different backends for
//! one key (each learned it before hearing of the other, or while Redis was down). A move
//! (failover, drain, a removed backend) replaces the entry it moved away from; otherwise the
//! entry recorded first stays, so a session that already had a machine keeps it. The loser
//! takes the winner's backend at once, and its next request for the key goes there.
//!
//! **Outage.** A failed Redis operation is counted (`roost_shared_state_errors_total`), sets
//! `roost_shared_state_up` to 0 and is logged once per outage; the changes not written are kept
//! and retried every [`RETRY_EVERY`]. Meanwhile each instance routes on its own table and
//! records new keys as always. When the subscription is back, the instance reconciles: it
//! marks every live key for writing (Redis may have restarted empty; the script settles
//! conflicts) and reads every entry in Redis (`SCAN`), learning what the others recorded.

use crate::config::BackendState;
use crate::config::SharedStateSettings;
use crate::ops::state_file::{Saved, SavedBackendState, SavedJobEntry};
use crate::policy::sticky::{Change, Identity, Learned};
use crate::policy::wps::{self, SavedJob};
use crate::service::pool::Pool;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use futures::StreamExt;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the changed keys are written to Redis: the bulk of the propagation delay.
pub const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// While Redis is down: how often to try again.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How often an idle link is checked, so that an outage is noticed without traffic.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// Each Redis operation's limit: a slow Redis delays only this background service.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Entries per script call (one round trip) and per `SCAN` step.
const BATCH: usize = 500;

/// The conflict rule and the write, atomically, for a batch of entries. `KEYS[i]`: an entry's
/// Redis key; `ARGV[1]`: the channel; then five per entry: the value, its backend, `since_ms`,
/// `from` (empty: not a move) and the TTL in ms. Returns, per entry, an empty string when it
/// was written (and published), or the stored value that stays (the caller takes it).
pub const SCRIPT: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  local at = 1 + (i - 1) * 5
  local value, backend = ARGV[at + 1], ARGV[at + 2]
  local since, from, ttl = tonumber(ARGV[at + 3]), ARGV[at + 4], tonumber(ARGV[at + 5])
  local verdict = ''
  local cur = redis.call('GET', key)
  local stored = nil
  if cur then
    local ok, decoded = pcall(cjson.decode, cur)
    if ok and type(decoded) == 'table' then stored = decoded end
  end
  if stored and stored.backend == backend then
    -- The same entry, still active: a longer life, never a shorter one.
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
    redis.call('PUBLISH', ARGV[1], value)
  elseif stored and stored.backend ~= from and (tonumber(stored.since_ms) or 0) <= since then
    -- Recorded first elsewhere: it stays.
    verdict = cur
  else
    redis.call('SET', key, value, 'PX', ttl)
    redis.call('PUBLISH', ARGV[1], value)
  end
  out[i] = verdict
end
return out
"#;

/// An entry in Redis and on the channel: the state file's entry shape and what sharing adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Wire {
    service: String,
    origin: String,
    #[serde(flatten)]
    entry: Saved,
    /// Unix ms when the key was recorded on `backend` (the conflict rule's clock).
    since_ms: u64,
    /// A move: the backend the key left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

/// An operator state in Redis and on `{prefix}state`: the state file's shape, with the
/// service and the writing instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateWire {
    service: String,
    origin: String,
    #[serde(flatten)]
    state: SavedBackendState,
}

/// A WPS job in Redis and on `{prefix}job`: the state file's shape, with the service and
/// the writing instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobWire {
    service: String,
    origin: String,
    #[serde(flatten)]
    job: SavedJobEntry,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One moment in both clocks: converts between the tables' `Instant`s and Unix ms.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    unix_ms: u64,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: unix_ms(SystemTime::now()),
        }
    }

    /// `age` ago, in Unix ms.
    fn unix_ms_ago(&self, age: Duration) -> u64 {
        self.unix_ms.saturating_sub(age.as_millis() as u64)
    }

    /// A Unix ms time as an `Instant` (a time ahead of this clock, another machine's skew, is
    /// now).
    fn instant_at(&self, unix_ms: u64) -> Instant {
        let ago = Duration::from_millis(self.unix_ms.saturating_sub(unix_ms));
        self.instant.checked_sub(ago).unwrap_or(self.instant)
    }
}

/// The Redis key of `key`'s entry in `service`.
fn entry_key(prefix: &str, service: &str, key: &[u8]) -> Vec<u8> {
    let mut k = format!("{prefix}sticky:{service}:").into_bytes();
    k.extend_from_slice(key);
    k
}

/// The value written for a change.
fn encode(service: &str, origin: &str, change: &Change, clock: &Clock) -> Wire {
    Wire {
        service: service.to_string(),
        origin: origin.to_string(),
        entry: Saved {
            key: String::from_utf8_lossy(&change.key).into_owned(),
            backend: change.backend.to_string(),
            idle_ms: change.idle.as_millis() as u64,
            age_ms: change.age.as_millis() as u64,
        },
        since_ms: clock.unix_ms_ago(change.age),
        from: change.from.as_ref().map(|f| f.to_string()),
    }
}

/// Which connection reports: the writer's (commands) or the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Writer,
    Subscriber,
}

/// Up or down. Up takes both connections working (a write and a subscription), so that the
/// one that notices an outage last, or the stale connection the other finds on the way back,
/// cannot make it flap: the outage is logged once, when it begins, and its end once.
struct Link {
    url: String,
    /// The writer's last operation worked, the subscription is on, and what was said.
    parts: Mutex<(bool, bool, Phase)>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Up,
    Down,
}

impl Link {
    fn new(url: &str, metrics: Arc<Metrics>) -> Self {
        metrics
            .shared_state_up
            .with_label_values::<&str>(&[])
            .set(0);
        Self {
            url: url.to_string(),
            parts: Mutex::new((false, false, Phase::Starting)),
            metrics,
        }
    }

    fn failed(&self, part: Part, op: &str, why: &dyn std::fmt::Display) {
        self.metrics
            .shared_state_errors
            .with_label_values(&[op])
            .inc();
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match part {
            Part::Writer => parts.0 = false,
            Part::Subscriber => parts.1 = false,
        }
        if parts.2 != Phase::Down {
            parts.2 = Phase::Down;
            self.metrics
                .shared_state_up
                .with_label_values::<&str>(&[])
                .set(0);
            warn!(
                "shared state: Redis at {} unreachable ({op}: {why}); routing on the local \
                 tables until it is back",
                self.url
            );
        }
    }

    fn ok(&self, part: Part) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match part {
            Part::Writer => parts.0 = true,
            Part::Subscriber => parts.1 = true,
        }
        if parts.0 && parts.1 && parts.2 != Phase::Up {
            let was = std::mem::replace(&mut parts.2, Phase::Up);
            self.metrics
                .shared_state_up
                .with_label_values::<&str>(&[])
                .set(1);
            match was {
                Phase::Down => info!("shared state: Redis at {} is back", self.url),
                _ => info!("shared state: connected to Redis at {}", self.url),
            }
        }
    }

    /// Whether the writer's last operation worked (it retries slower when not).
    fn writing(&self) -> bool {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// The background service that shares the sticky tables of `pools` through Redis.
pub struct SharedState {
    client: redis::Client,
    prefix: String,
    /// This instance, in what it writes: its own messages are not applied again.
    origin: String,
    pools: HashMap<String, Arc<Pool>>,
    link: Arc<Link>,
    /// Set when the subscription starts (at start and after an outage): read everything and
    /// write everything once.
    reconcile: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl SharedState {
    /// Turns sharing on in every pool's table. Connects nothing yet: that happens in the
    /// background, so a Redis that is down at start delays nothing.
    pub fn new(
        settings: &SharedStateSettings,
        pools: &[Arc<Pool>],
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let client = redis::Client::open(settings.redis.as_str())
            .map_err(|e| format!("state.redis: {e}"))?;
        for pool in pools {
            pool.table().share();
            pool.share_states();
            pool.jobs().share();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        Ok(Self {
            client,
            prefix: settings.prefix.clone(),
            origin: format!(
                "{}/{}/{}",
                host.trim(),
                std::process::id(),
                unix_ms(SystemTime::now())
            ),
            pools: pools
                .iter()
                .map(|p| (p.name.clone(), Arc::clone(p)))
                .collect(),
            link: Arc::new(Link::new(&settings.redis, Arc::clone(&metrics))),
            reconcile: Arc::new(AtomicBool::new(false)),
            metrics,
        })
    }

    fn channel(&self) -> String {
        format!("{}sticky", self.prefix)
    }

    fn state_channel(&self) -> String {
        format!("{}state", self.prefix)
    }

    fn job_channel(&self) -> String {
        format!("{}job", self.prefix)
    }

    /// A WPS job another instance saw, applied where its backend is in this config; `idle`
    /// overrides the value's own (a `SCAN` knows it from the key's TTL).
    fn apply_job(&self, bytes: &[u8], idle: Option<Duration>) -> bool {
        let Ok(wire) = serde_json::from_slice::<JobWire>(bytes) else {
            return false;
        };
        if wire.origin == self.origin {
            return false;
        }
        let Some(pool) = self.pools.get(&wire.service) else {
            return false;
        };
        let (Some(id), Ok(backend)) = (
            wps::parse_uuid(wire.job.id.as_bytes()),
            wire.job.backend.parse(),
        ) else {
            return false;
        };
        if !pool.state().members().iter().any(|m| m.addr == backend) {
            return false;
        }
        let job = SavedJob {
            id,
            backend,
            key: wire.job.key.map(String::into_bytes),
            running: wire.job.running,
            idle: idle.unwrap_or(Duration::from_millis(wire.job.idle_ms)),
        };
        pool.jobs().learn(&job, Instant::now())
    }

    /// Write the WPS jobs new or changed here (`PX`: what is left of their age limit) and
    /// publish them; after the sticky entries, so that a running job finds its key to pin.
    async fn flush_jobs(&self, conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
        for pool in self.pools.values() {
            let jobs = pool.jobs().take_changes(Instant::now());
            if jobs.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for job in &jobs {
                let id = wps::format_uuid(job.id);
                let wire = JobWire {
                    service: pool.name.clone(),
                    origin: self.origin.clone(),
                    job: SavedJobEntry {
                        id: id.clone(),
                        backend: job.backend.to_string(),
                        key: job
                            .key
                            .as_ref()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        running: job.running,
                        idle_ms: job.idle.as_millis() as u64,
                    },
                };
                let value = serde_json::to_vec(&wire).expect("a job serializes");
                let left = wps::MAX_AGE
                    .saturating_sub(job.idle)
                    .max(Duration::from_millis(1));
                pipe.cmd("SET")
                    .arg(format!("{}job:{}:{id}", self.prefix, pool.name))
                    .arg(&value)
                    .arg("PX")
                    .arg(left.as_millis() as u64)
                    .ignore();
                pipe.cmd("PUBLISH")
                    .arg(self.job_channel())
                    .arg(&value)
                    .ignore();
            }
            if let Err(e) = pipe.query_async::<()>(conn).await {
                pool.jobs().mark(jobs.iter().map(|j| j.id));
                return Err(e);
            }
        }
        Ok(())
    }

    /// Every WPS job in Redis, applied (at a reconcile).
    async fn read_jobs(&self, conn: &mut ConnectionManager) -> Result<usize, redis::RedisError> {
        let pattern = format!("{}job:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut applied = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
                }
                let answers: Vec<(Option<Vec<u8>>, i64)> = pipe.query_async(conn).await?;
                for (value, pttl) in answers {
                    let Some(value) = value else { continue };
                    let idle =
                        wps::MAX_AGE.saturating_sub(Duration::from_millis(pttl.max(0) as u64));
                    if self.apply_job(&value, Some(idle)) {
                        applied += 1;
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(applied);
            }
        }
    }

    /// An operator state another instance set: applied unless one set here since waits to be
    /// written (it is newer). Returns whether it changed anything.
    fn apply_state(&self, bytes: &[u8]) -> bool {
        let Ok(wire) = serde_json::from_slice::<StateWire>(bytes) else {
            return false;
        };
        if wire.origin == self.origin {
            return false;
        }
        let (Some(pool), Some(state)) = (
            self.pools.get(&wire.service),
            BackendState::parse(&wire.state.state),
        ) else {
            return false;
        };
        !pool.state_pending(&wire.state.backend)
            && pool.apply_shared_state(&wire.state.backend, state)
    }

    /// Write the operator states set through this instance's API (no TTL: a drain holds until
    /// someone ends it) and publish them; the last one written wins.
    async fn flush_states(&self, conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
        for pool in self.pools.values() {
            let changes = pool.take_state_changes();
            if changes.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (backend, state) in &changes {
                let file_state = pool
                    .state()
                    .members()
                    .iter()
                    .find(|m| m.address == *backend)
                    .map_or(BackendState::Ready, |m| m.operated.file_state());
                let wire = StateWire {
                    service: pool.name.clone(),
                    origin: self.origin.clone(),
                    state: SavedBackendState {
                        backend: backend.clone(),
                        state: state.as_str().to_string(),
                        file_state: file_state.as_str().to_string(),
                    },
                };
                let value = serde_json::to_vec(&wire).expect("a state serializes");
                let key = format!("{}state:{}:{backend}", self.prefix, pool.name);
                pipe.cmd("SET").arg(key).arg(&value).ignore();
                pipe.cmd("PUBLISH")
                    .arg(self.state_channel())
                    .arg(&value)
                    .ignore();
            }
            if let Err(e) = pipe.query_async::<()>(conn).await {
                pool.restore_state_changes(changes);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Every operator state in Redis, applied (at a reconcile).
    async fn read_states(&self, conn: &mut ConnectionManager) -> Result<usize, redis::RedisError> {
        let pattern = format!("{}state:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut applied = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(conn).await?;
                applied += values
                    .iter()
                    .flatten()
                    .filter(|v| self.apply_state(v))
                    .count();
            }
            cursor = next;
            if cursor == 0 {
                return Ok(applied);
            }
        }
    }

    /// Apply an entry another instance wrote; `idle` overrides the value's own (a `SCAN` knows
    /// it from the key's TTL). Returns what the table did, `None` when it does not apply here
    /// (its service or backend is not in this config, or it is ours).
    fn apply(&self, bytes: &[u8], idle: Option<Duration>, clock: &Clock) -> Option<Learned> {
        let wire: Wire = serde_json::from_slice(bytes).ok()?;
        if wire.origin == self.origin {
            return None;
        }
        self.learn(&wire, idle, clock)
    }

    fn learn(&self, wire: &Wire, idle: Option<Duration>, clock: &Clock) -> Option<Learned> {
        let pool = self.pools.get(&wire.service)?;
        let state = pool.state();
        // Only backends this instance has; a key on another one follows this ring.
        let backend = state.identity(&wire.entry.backend)?;
        let from: Option<Identity> = wire
            .from
            .as_deref()
            .map(|f| state.identity(f).unwrap_or_else(|| f.into()));
        let idle = idle.unwrap_or(Duration::from_millis(wire.entry.idle_ms));
        let learned = pool.table().learn(
            wire.entry.key.as_bytes(),
            &backend,
            clock.instant_at(wire.since_ms),
            idle,
            from.as_ref(),
            clock.instant,
        );
        let event = match &learned {
            // Ours gave way to an entry recorded first (not a move away from ours).
            Learned::Moved { from: ours } if from.as_ref() != Some(ours) => "conflict",
            Learned::Added | Learned::Refreshed | Learned::Moved { .. } => "received",
            Learned::Kept => "conflict",
            Learned::Stale => return Some(learned),
        };
        self.metrics
            .shared_state_entries
            .with_label_values(&[wire.service.as_str(), event])
            .inc();
        Some(learned)
    }

    /// Write every pool's changed keys. On failure, what was not written is kept for the
    /// next try.
    async fn flush(&self, conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
        let script = redis::Script::new(SCRIPT);
        let channel = self.channel();
        for pool in self.pools.values() {
            let clock = Clock::now();
            let mut changes = pool.table().take_changes(clock.instant);
            if changes.is_empty() {
                continue;
            }
            let ttl = pool.state().settings.affinity.ttl;
            while !changes.is_empty() {
                let rest = changes.split_off(changes.len().min(BATCH));
                let batch = std::mem::replace(&mut changes, rest);
                let mut call = script.prepare_invoke();
                call.arg(&channel);
                for change in &batch {
                    let wire = encode(&pool.name, &self.origin, change, &clock);
                    let value = serde_json::to_vec(&wire).expect("an entry serializes");
                    let left = ttl
                        .saturating_sub(change.idle)
                        .max(Duration::from_millis(1));
                    call.key(entry_key(&self.prefix, &pool.name, &change.key))
                        .arg(value)
                        .arg(change.backend.as_bytes())
                        .arg(wire.since_ms)
                        .arg(wire.from.as_deref().unwrap_or(""))
                        .arg(left.as_millis() as u64);
                }
                let verdicts = match call.invoke_async::<Vec<Vec<u8>>>(conn).await {
                    Ok(v) => v,
                    Err(e) => {
                        let mut unwritten = batch;
                        unwritten.append(&mut changes);
                        pool.table().restore_changes(unwritten);
                        return Err(e);
                    }
                };
                for stored in verdicts.iter().filter(|v| !v.is_empty()) {
                    // Another instance recorded the key first: take its entry (counted there).
                    if let Ok(wire) = serde_json::from_slice::<Wire>(stored) {
                        self.learn(&wire, None, &clock);
                    }
                }
                let sent = verdicts.iter().filter(|v| v.is_empty()).count();
                self.metrics
                    .shared_state_entries
                    .with_label_values(&[pool.name.as_str(), "sent"])
                    .inc_by(sent as u64);
            }
        }
        Ok(())
    }

    /// After (re)subscribing: learn every entry in Redis and mark every local one for writing.
    async fn reconcile(&self, conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
        let clock = Clock::now();
        let marked: usize = self
            .pools
            .values()
            .map(|p| p.table().mark_all(clock.instant))
            .sum();
        let pattern = format!("{}sticky:*", self.prefix);
        let mut cursor: u64 = 0;
        let (mut read, mut learned) = (0usize, 0usize);
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
                }
                let answers: Vec<(Option<Vec<u8>>, i64)> = pipe.query_async(conn).await?;
                let clock = Clock::now();
                for (value, pttl) in answers {
                    let Some(value) = value else { continue };
                    read += 1;
                    let wire: Wire = match serde_json::from_slice(&value) {
                        Ok(w) => w,
                        Err(_) => continue,
                    };
                    // What is left of the TTL tells how long the entry has been idle.
                    let idle = self.pools.get(&wire.service).map(|p| {
                        let ttl = p.state().settings.affinity.ttl;
                        ttl.saturating_sub(Duration::from_millis(pttl.max(0) as u64))
                    });
                    if matches!(
                        self.learn(&wire, idle, &clock),
                        Some(Learned::Added | Learned::Moved { .. })
                    ) {
                        learned += 1;
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let states = self.read_states(conn).await?;
        for pool in self.pools.values() {
            pool.jobs().mark(pool.jobs().ids());
        }
        let jobs = self.read_jobs(conn).await?;
        info!(
            "shared state: reconciled with Redis: {read} entr(y/ies) read, {learned} learned, \
             {marked} local one(s) to write; {states} operator state(s) and {jobs} WPS job(s) \
             applied"
        );
        Ok(())
    }

    /// The subscription: apply what the other instances publish; on loss, say so and
    /// subscribe again (which asks for a reconcile: messages were missed meanwhile).
    async fn subscribe(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        let channels = [self.channel(), self.state_channel(), self.job_channel()];
        loop {
            let connected = tokio::time::timeout(TIMEOUT, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channels).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match connected {
                Ok(Ok(mut pubsub)) => {
                    self.link.ok(Part::Subscriber);
                    self.reconcile.store(true, Ordering::Relaxed);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            msg = messages.next() => match msg {
                                Some(msg) if msg.get_channel_name() == channels[1] => {
                                    self.apply_state(msg.get_payload_bytes());
                                }
                                Some(msg) if msg.get_channel_name() == channels[2] => {
                                    self.apply_job(msg.get_payload_bytes(), None);
                                }
                                Some(msg) => {
                                    self.apply(msg.get_payload_bytes(), None, &Clock::now());
                                }
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                    self.link
                        .failed(Part::Subscriber, "subscribe", &"connection lost");
                }
                Ok(Err(e)) => self.link.failed(Part::Subscriber, "subscribe", &e),
                Err(_) => self
                    .link
                    .failed(Part::Subscriber, "subscribe", &"timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The service run by the server: the writer loop here, the subscription in a task of its own.
pub struct SharedStateTask(pub Arc<SharedState>);

#[async_trait]
impl BackgroundService for SharedStateTask {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let shared = Arc::clone(&self.0);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(RETRY_EVERY);
        let mut conn = match ConnectionManager::new_lazy_with_config(shared.client.clone(), config)
        {
            Ok(conn) => conn,
            Err(e) => {
                warn!("shared state: cannot use Redis at {}: {e}", shared.link.url);
                return;
            }
        };
        tokio::spawn(Arc::clone(&shared).subscribe(shutdown.clone()));
        let mut last_ok: Option<Instant> = None;
        loop {
            if shared.reconcile.load(Ordering::Relaxed) {
                match shared.reconcile(&mut conn).await {
                    Ok(()) => {
                        shared.reconcile.store(false, Ordering::Relaxed);
                    }
                    Err(e) => shared.link.failed(Part::Writer, "read", &e),
                }
            }
            if let Err(e) = shared.flush_states(&mut conn).await {
                shared.link.failed(Part::Writer, "write", &e);
            }
            let pending: usize = shared
                .pools
                .values()
                .map(|p| p.table().pending() + p.jobs().pending())
                .sum();
            let due = last_ok.is_none_or(|t| t.elapsed() >= PING_EVERY) || !shared.link.writing();
            let result = if pending > 0 {
                let written = match shared.flush(&mut conn).await {
                    Ok(()) => shared.flush_jobs(&mut conn).await,
                    Err(e) => Err(e),
                };
                Some(written.map_err(|e| ("write", e)))
            } else if due {
                // Nothing to write: a ping notices an outage (and its end) without traffic.
                let ping = redis::cmd("PING").query_async::<String>(&mut conn).await;
                Some(ping.map(drop).map_err(|e| ("ping", e)))
            } else {
                None
            };
            match result {
                Some(Ok(())) => {
                    last_ok = Some(Instant::now());
                    shared.link.ok(Part::Writer);
                }
                Some(Err((op, e))) => shared.link.failed(Part::Writer, op, &e),
                None => {}
            }
            let pause = if shared.link.writing() {
                FLUSH_EVERY
            } else {
                RETRY_EVERY
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {
                    // The last changes, if Redis answers at once.
                    let _ = tokio::time::timeout(TIMEOUT, shared.flush(&mut conn)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape_is_the_state_files_entry_and_what_sharing_adds() {
        let clock = Clock::now();
        let change = Change {
            key: b"abc".to_vec(),
            backend: "10.0.0.1:80".into(),
            idle: Duration::from_millis(5),
            age: Duration::from_millis(1500),
            from: Some("10.0.0.2:80".into()),
        };
        let wire = encode("fp", "host/1/2", &change, &clock);
        let text = serde_json::to_string(&wire).unwrap();
        assert!(
            text.contains(r#""key":"abc","backend":"10.0.0.1:80","idle_ms":5,"age_ms":1500"#),
            "{text}"
        );
        assert!(text.contains(r#""from":"10.0.0.2:80""#), "{text}");
        assert_eq!(wire.since_ms, clock.unix_ms - 1500);
        let back: Wire = serde_json::from_str(&text).unwrap();
        assert_eq!(back, wire);
        // A new key carries no `from`.
        let new = Change {
            from: None,
            ..change
        };
        let text = serde_json::to_string(&encode("fp", "o", &new, &clock)).unwrap();
        assert!(!text.contains("from"), "{text}");
    }

    #[test]
    fn clock_conversions_round_trip_and_clamp_the_future() {
        let clock = Clock::now();
        let ms = clock.unix_ms_ago(Duration::from_secs(3));
        let at = clock.instant_at(ms);
        assert_eq!(clock.instant - at, Duration::from_secs(3));
        assert_eq!(clock.instant_at(clock.unix_ms + 10_000), clock.instant);
    }

    #[test]
    fn entry_keys_carry_prefix_service_and_key() {
        assert_eq!(
            entry_key("roost:", "fp", b"k 1"),
            b"roost:sticky:fp:k 1".to_vec()
        );
    }
}
