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
//! ([`codec::SCRIPT`]), which applies the conflict rule atomically in Redis, stores the winner with
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
//!
//! This file is the background service (the writer loop and the subscription); `codec.rs` holds
//! the script and the values written to Redis, `link.rs` the outage state, `sticky.rs` the
//! sticky entries' apply, write-behind and reconcile, `states_jobs.rs` the same for operator
//! states and WPS jobs.

use crate::config::SharedStateSettings;
use crate::service::pool::Pool;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use codec::{unix_ms, Clock};
use futures::StreamExt;
use link::{Link, Part};
use log::warn;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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

mod codec;
mod link;
mod states_jobs;
mod sticky;

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

/// Every value stored under `pattern`, with what is left of its TTL in ms (`PTTL`: negative
/// when it has none), handed to `each` a page at a time (`SCAN` by [`BATCH`], then one
/// pipelined `GET`/`PTTL` round trip per page). Keys that expire meanwhile are left out.
async fn scan_values(
    conn: &mut ConnectionManager,
    pattern: &str,
    mut each: impl FnMut(Vec<(Vec<u8>, i64)>),
) -> Result<(), redis::RedisError> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
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
            each(
                answers
                    .into_iter()
                    .filter_map(|(value, ttl)| Some((value?, ttl)))
                    .collect(),
            );
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}
