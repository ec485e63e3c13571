//! The operator states and WPS jobs' side of the shared state: applying what another
//! instance set or saw, writing and publishing what changed here, and reading everything
//! back at a reconcile.

use super::codec::{JobWire, StateWire};
use super::{scan_values, SharedState};
use crate::config::BackendState;
use crate::ops::state_file::{SavedBackendState, SavedJobEntry};
use crate::policy::wps::{self, SavedJob};
use redis::aio::ConnectionManager;
use std::time::{Duration, Instant};

impl SharedState {
    /// A WPS job another instance saw, applied where its backend is in this config; `idle`
    /// overrides the value's own (a `SCAN` knows it from the key's TTL).
    pub(super) fn apply_job(&self, bytes: &[u8], idle: Option<Duration>) -> bool {
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
    pub(super) async fn flush_jobs(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<(), redis::RedisError> {
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
    pub(super) async fn read_jobs(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<usize, redis::RedisError> {
        let mut applied = 0;
        scan_values(conn, &format!("{}job:*", self.prefix), |page| {
            for (value, pttl) in page {
                let idle = wps::MAX_AGE.saturating_sub(Duration::from_millis(pttl.max(0) as u64));
                if self.apply_job(&value, Some(idle)) {
                    applied += 1;
                }
            }
        })
        .await?;
        Ok(applied)
    }

    /// An operator state another instance set: applied unless one set here since waits to be
    /// written (it is newer). Returns whether it changed anything.
    pub(super) fn apply_state(&self, bytes: &[u8]) -> bool {
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
    pub(super) async fn flush_states(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<(), redis::RedisError> {
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
                    .find(|m| *m.identity == **backend)
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
    pub(super) async fn read_states(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<usize, redis::RedisError> {
        let mut applied = 0;
        scan_values(conn, &format!("{}state:*", self.prefix), |page| {
            applied += page.iter().filter(|(v, _)| self.apply_state(v)).count();
        })
        .await?;
        Ok(applied)
    }
}
