//! The sticky entries' side of the shared state: applying an entry another instance wrote
//! (the table's `learn`, the conflict rule), writing this instance's changed keys behind
//! through the script, and the reconcile after an outage (mark everything, read everything).

use super::codec::{encode, entry_key, Clock, Wire, SCRIPT};
use super::{scan_values, SharedState, BATCH};
use crate::policy::sticky::{Identity, Learned};
use log::info;
use redis::aio::ConnectionManager;
use std::time::Duration;

impl SharedState {
    /// Apply an entry another instance wrote; `idle` overrides the value's own (a `SCAN` knows
    /// it from the key's TTL). Returns what the table did, `None` when it does not apply here
    /// (its service or backend is not in this config, or it is ours).
    pub(super) fn apply(
        &self,
        bytes: &[u8],
        idle: Option<Duration>,
        clock: &Clock,
    ) -> Option<Learned> {
        let wire: Wire = serde_json::from_slice(bytes).ok()?;
        if wire.origin == self.origin {
            return None;
        }
        self.learn(&wire, idle, clock)
    }

    pub(super) fn learn(
        &self,
        wire: &Wire,
        idle: Option<Duration>,
        clock: &Clock,
    ) -> Option<Learned> {
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
    pub(super) async fn flush(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<(), redis::RedisError> {
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
    pub(super) async fn reconcile(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<(), redis::RedisError> {
        let clock = Clock::now();
        let marked: usize = self
            .pools
            .values()
            .map(|p| p.table().mark_all(clock.instant))
            .sum();
        let (mut read, mut learned) = (0usize, 0usize);
        scan_values(conn, &format!("{}sticky:*", self.prefix), |page| {
            let clock = Clock::now();
            for (value, pttl) in page {
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
        })
        .await?;
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
}
