//! The state file: the sticky tables saved to `server.state_dir/state.json`, so that a
//! restart, or the new process of a hot upgrade, starts with every recorded key instead of an
//! empty table.
//!
//! Written atomically (a temporary file, then a rename) every [`SAVE_EVERY`], when the
//! process stops, and when it hands its listeners to a new process (`roost upgrade`). Read once
//! at start, and again whenever another process (the old one of an upgrade, writing its last
//! state as it exits) has replaced it; entries are merged in only for keys this process has not
//! seen itself, and only where the service and the recorded backend are still in the config. A
//! file that cannot be read or parsed is logged once and ignored: it never stops Roost from
//! starting.
//!
//! The hand-over of an upgrade: a key the old process first saw after its last periodic save
//! would reach the new process unknown, be sent where the (maybe changed) ring says and be
//! recorded there, so that the old process's last file could no longer bring it back. So the
//! old process saves the moment it is told to hand over (Pingora's
//! `GracefulUpgradeTransferringFds`), marked `"handover": true`, and the new process, having
//! received the listeners, waits up to [`HANDOVER_WAIT`] for that file before it serves.
//!
//! Format (version [`FORMAT_VERSION`]): JSON, `{"version": 1, "written_unix": SECONDS,
//! "handover": BOOL, "services": {"NAME": [{"key": K, "backend": ADDRESS, "idle_ms": N,
//! "age_ms": N}]}, "backend_states": {"NAME": [{"backend": ADDRESS, "state": "drain",
//! "file_state": "ready"}]}, "jobs": {"NAME": [{"id": UUID, "backend": IP:PORT, "key": K,
//! "running": BOOL, "idle_ms": N}]}}` (`handover` may be missing: false; `backend_states` and
//! `jobs` too: empty). Times are relative to
//! `written_unix`, so a file read later counts the time it lay unused as idle.
//! `backend_states` (optional) holds the operator states set through the admin API that
//! differ from the config's; one applies again unless the config's `state` for that backend
//! changed since (`file_state`: what the config said when it was saved).
//!
//! This file is the format: encoding the tables, parsing a file and merging what still
//! applies; `keeper.rs` is the process side (when to save and read, atomic writes, the
//! hand-over of an upgrade).

mod keeper;

pub use keeper::{Handover, KeeperTask, StateKeeper};

use crate::config::BackendState;
use crate::policy::wps::{self, SavedJob};
use crate::service::operator::SavedState;
use crate::service::pool::Pool;
use log::info;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const FORMAT_VERSION: u32 = 1;
pub const FILE_NAME: &str = "state.json";
/// How often the tables are saved (and another writer's file merged).
pub const SAVE_EVERY: Duration = Duration::from_secs(5);
/// How long the new process of an upgrade waits for the old one's hand-over file. The old
/// process keeps accepting for 5 s after the hand-over, so waiting costs no connection.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    written_unix: u64,
    /// Written by a process handing its listeners over to a new one.
    #[serde(default)]
    handover: bool,
    services: BTreeMap<String, Vec<Saved>>,
    #[serde(default)]
    backend_states: BTreeMap<String, Vec<SavedBackendState>>,
    #[serde(default)]
    jobs: BTreeMap<String, Vec<SavedJobEntry>>,
}

/// A WPS job (`wps_affinity`): the backend that has its files, whether it still runs (then
/// it pins its key), the key of the requests about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedJobEntry {
    pub(crate) id: String,
    pub(crate) backend: String,
    #[serde(default)]
    pub(crate) key: Option<String>,
    pub(crate) running: bool,
    pub(crate) idle_ms: u64,
}

/// An operator state as saved: also the shape of one in Redis (`ops::shared_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedBackendState {
    pub(crate) backend: String,
    pub(crate) state: String,
    pub(crate) file_state: String,
}

/// One sticky entry as saved: also the shape of an entry in Redis (`ops::shared_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) key: String,
    pub(crate) backend: String,
    pub(crate) idle_ms: u64,
    pub(crate) age_ms: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The tables of `pools` as the file's bytes.
fn encode(pools: &[Arc<Pool>], now: Instant, handover: bool) -> Vec<u8> {
    let services = pools
        .iter()
        .map(|pool| {
            let saved = pool
                .table()
                .export(now)
                .into_iter()
                .map(|(key, backend, idle, age)| Saved {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    backend: backend.to_string(),
                    idle_ms: idle.as_millis() as u64,
                    age_ms: age.as_millis() as u64,
                })
                .collect();
            (pool.name.clone(), saved)
        })
        .collect();
    let backend_states = pools
        .iter()
        .map(|pool| {
            let saved = pool
                .operator()
                .export()
                .into_iter()
                .map(|s| SavedBackendState {
                    backend: s.backend,
                    state: s.state.as_str().to_string(),
                    file_state: s.from_file.as_str().to_string(),
                })
                .collect::<Vec<_>>();
            (pool.name.clone(), saved)
        })
        .filter(|(_, saved)| !saved.is_empty())
        .collect();
    let jobs = pools
        .iter()
        .map(|pool| {
            let saved = pool
                .jobs()
                .export(now)
                .into_iter()
                .map(|j| SavedJobEntry {
                    id: wps::format_uuid(j.id),
                    backend: j.backend.to_string(),
                    key: j.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                    running: j.running,
                    idle_ms: j.idle.as_millis() as u64,
                })
                .collect::<Vec<_>>();
            (pool.name.clone(), saved)
        })
        .filter(|(_, saved)| !saved.is_empty())
        .collect();
    let file = StateFile {
        version: FORMAT_VERSION,
        written_unix: unix_now(),
        handover,
        services,
        backend_states,
        jobs,
    };
    serde_json::to_vec(&file).expect("state serializes")
}

fn parse(bytes: &[u8]) -> Result<StateFile, String> {
    let file: StateFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if file.version != FORMAT_VERSION {
        return Err(format!(
            "format version {} (this Roost reads {FORMAT_VERSION})",
            file.version
        ));
    }
    Ok(file)
}

/// Merge the file's entries into the pools' tables; returns how many were added.
fn merge(bytes: &[u8], pools: &[Arc<Pool>], now: Instant) -> Result<usize, String> {
    parse(bytes).map(|file| apply(&file, pools, now))
}

/// The entries of `file` that still apply, merged in; returns how many were added.
fn apply(file: &StateFile, pools: &[Arc<Pool>], now: Instant) -> usize {
    let lay_unused = Duration::from_secs(unix_now().saturating_sub(file.written_unix));
    let mut added = 0;
    for pool in pools {
        let states: Vec<SavedState> = file
            .backend_states
            .get(&pool.name)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(SavedState {
                    backend: s.backend.clone(),
                    state: BackendState::parse(&s.state)?,
                    from_file: BackendState::parse(&s.file_state)?,
                })
            })
            .collect();
        if !states.is_empty() {
            let applied = pool.operator().import(&states);
            if applied > 0 {
                info!(
                    "state: service {}: {applied} operator state(s) carried over",
                    pool.name
                );
            }
        }
        let state = pool.state();
        for s in file.services.get(&pool.name).into_iter().flatten() {
            // Only backends still in the config; a key of a removed one follows the ring.
            let Some(identity) = state.identity(&s.backend) else {
                continue;
            };
            let idle = Duration::from_millis(s.idle_ms) + lay_unused;
            let age = Duration::from_millis(s.age_ms) + lay_unused;
            if pool
                .table()
                .import(s.key.as_bytes(), identity, idle, age, now)
            {
                added += 1;
            }
        }
        // After the keys: a running job pins its key, which must be in the table by then.
        let jobs: Vec<SavedJob> = file
            .jobs
            .get(&pool.name)
            .into_iter()
            .flatten()
            .filter_map(|j| {
                let backend: SocketAddr = j.backend.parse().ok()?;
                // Only backends still in the config.
                state
                    .members()
                    .iter()
                    .any(|m| m.addr == backend)
                    .then_some(())?;
                Some(SavedJob {
                    id: wps::parse_uuid(j.id.as_bytes())?,
                    backend,
                    key: j.key.as_ref().map(|k| k.as_bytes().to_vec()),
                    running: j.running,
                    idle: Duration::from_millis(j.idle_ms) + lay_unused,
                })
            })
            .collect();
        if !jobs.is_empty() {
            let taken = pool.jobs().import(&jobs, now);
            if taken > 0 {
                info!(
                    "state: service {}: {taken} WPS job(s) carried over",
                    pool.name
                );
            }
        }
    }
    added
}

/// A state file's bytes merged into `pools` as a start merges them: how many entries were
/// added, or why the file is ignored. (The entry point of `fuzz/fuzz_targets/state_file.rs`.)
pub fn merge_bytes(bytes: &[u8], pools: &[Arc<Pool>]) -> Result<usize, String> {
    merge(bytes, pools, Instant::now())
}

/// The tables of `pools` as a periodic save writes them.
pub fn to_bytes(pools: &[Arc<Pool>]) -> Vec<u8> {
    encode(pools, Instant::now(), false)
}

/// Merge `dir/state.json` into `pools` without writing anything (`roost route` answers for
/// the keys the running process saved, too). `Ok(None)`: there is no file.
pub fn read_into(dir: &Path, pools: &[Arc<Pool>]) -> Result<Option<usize>, String> {
    match std::fs::read(dir.join(FILE_NAME)) {
        Ok(bytes) => merge_bytes(&bytes, pools).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[path = "state_file_tests.rs"]
mod tests;
