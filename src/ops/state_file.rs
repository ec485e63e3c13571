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

use crate::config::BackendState;
use crate::policy::wps::{self, SavedJob};
use crate::service::operator::SavedState;
use crate::service::pool::Pool;
use async_trait::async_trait;
use log::{info, warn};
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

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

/// Write `bytes` to `path` atomically: readers see the old file or the new one, never half.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The state file as it was before a new process of an upgrade received the listeners: the
/// old process's hand-over file is the one written after this.
#[derive(Debug, Clone, Copy)]
pub struct Handover {
    before: Option<SystemTime>,
}

impl Handover {
    /// Taken before `bootstrap()`, i.e. before the old process is told to hand over.
    pub fn before(dir: &Path) -> Self {
        Self {
            before: modified(&dir.join(FILE_NAME)),
        }
    }
}

/// Saves the tables periodically, at the hand-over of an upgrade and at stop; merges what
/// another process wrote.
pub struct StateKeeper {
    path: PathBuf,
    pools: Vec<Arc<Pool>>,
    /// The file's modification time after this process last read or wrote it.
    seen: Mutex<Option<SystemTime>>,
    /// Pingora's execution phases, taken by the background task.
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    /// The last write failed: said once, not every [`SAVE_EVERY`].
    failing: AtomicBool,
}

impl StateKeeper {
    /// Load `dir/state.json` into the pools (at start, before any request) and return the
    /// keeper that saves it from now on. With `handover` (the new process of an upgrade),
    /// first wait up to [`HANDOVER_WAIT`] for the old process's hand-over file.
    pub fn start(
        dir: &Path,
        pools: Vec<Arc<Pool>>,
        phases: broadcast::Receiver<ExecutionPhase>,
        handover: Option<Handover>,
    ) -> Self {
        let keeper = Self {
            path: dir.join(FILE_NAME),
            pools,
            seen: Mutex::new(None),
            phases: Mutex::new(Some(phases)),
            failing: AtomicBool::new(false),
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            warn!(
                "state: cannot create {}: {e}; the sticky tables are not saved",
                dir.display()
            );
        }
        if let Some(handover) = handover {
            keeper.take_handover(handover, HANDOVER_WAIT);
        }
        keeper.merge_if_changed();
        keeper
    }

    /// Wait for a hand-over file newer than `handover` and merge it. Blocking: this runs
    /// before the server does.
    fn take_handover(&self, handover: Handover, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut looked_at = handover.before;
        while Instant::now() < deadline {
            let mtime = modified(&self.path);
            if mtime.is_some() && mtime != looked_at {
                looked_at = mtime;
                let file = std::fs::read(&self.path).ok().and_then(|b| parse(&b).ok());
                if let Some(file) = file.filter(|f| f.handover) {
                    let added = apply(&file, &self.pools, Instant::now());
                    *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = mtime;
                    info!(
                        "state: {}: {added} sticky key(s) handed over by the old process",
                        self.path.display()
                    );
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        warn!(
            "state: {}: no hand-over from the old process within {wait:?}; starting with the \
             last saved table",
            self.path.display()
        );
    }

    /// Read the file when someone else wrote it since this process last looked.
    fn merge_if_changed(&self) {
        let mtime = modified(&self.path);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if mtime.is_none() || mtime == *seen {
            return;
        }
        *seen = mtime;
        let result = std::fs::read(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| merge(&bytes, &self.pools, Instant::now()));
        match result {
            Ok(added) => info!(
                "state: {}: {added} sticky key(s) carried over",
                self.path.display()
            ),
            Err(e) => warn!(
                "state: {}: ignored ({e}); the sticky tables start from what this process sees",
                self.path.display()
            ),
        }
    }

    /// The last save of a stopping process, once nothing is in flight any more (`ops/stop.rs`):
    /// it has every key the process recorded.
    pub fn save_at_exit(&self) {
        self.save(false);
    }

    fn save(&self, handover: bool) {
        self.merge_if_changed();
        let bytes = encode(&self.pools, Instant::now(), handover);
        match write_atomic(&self.path, &bytes) {
            Ok(()) => {
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = modified(&self.path);
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!("state: {} written again", self.path.display());
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(
                        "state: cannot write {}: {e}; the sticky tables are not saved until it \
                         can",
                        self.path.display()
                    );
                }
            }
        }
    }
}

/// The next execution phase; never, once there are none.
async fn next_phase(phases: &mut Option<broadcast::Receiver<ExecutionPhase>>) -> ExecutionPhase {
    loop {
        match phases.as_mut() {
            Some(rx) => match rx.recv().await {
                Ok(phase) => return phase,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => *phases = None,
            },
            None => std::future::pending().await,
        }
    }
}

/// The keeper's background task (periodic saves, the hand-over save); the keeper itself is
/// shared with the stop, which saves last (`ops/stop.rs`).
pub struct KeeperTask(pub Arc<StateKeeper>);

#[async_trait]
impl BackgroundService for KeeperTask {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut phases = self
            .0
            .phases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SAVE_EVERY) => self.0.save(false),
                phase = next_phase(&mut phases) => {
                    if matches!(phase, ExecutionPhase::GracefulUpgradeTransferringFds) {
                        self.0.save(true);
                    }
                }
                _ = shutdown.changed() => {
                    // Saved again at exit, once the requests still in flight are done.
                    self.0.save(false);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ops::server::build_pools;
    use crate::policy::route::{Reason, Route};
    use crate::policy::select::Role;

    fn pools(backends: &str) -> Vec<Arc<Pool>> {
        let yaml = format!(
            "services:\n  - name: fp\n    listen: 127.0.0.1:1\n    backends: [{backends}]\n"
        );
        build_pools(
            &Config::from_yaml(&yaml, "t.yaml").unwrap(),
            &Default::default(),
        )
        .unwrap()
    }

    fn phases() -> broadcast::Receiver<ExecutionPhase> {
        broadcast::channel(1).1
    }

    fn record(pool: &Pool, key: &str, backend: usize) {
        let route = Route {
            backend,
            role: Role::Owner,
            reason: Reason::Key,
            may_fail_over: true,
            moved: None,
        };
        pool.state().record(key.as_bytes(), &route, Instant::now());
    }

    #[test]
    fn a_saved_table_comes_back_where_its_backends_remain() {
        let old = pools("10.0.0.1:80, 10.0.0.2:80, 10.0.0.3:80");
        record(&old[0], "on-1", 0);
        record(&old[0], "on-3", 2);
        let bytes = encode(&old, Instant::now(), false);
        // The new config dropped 10.0.0.3: its key is not carried over.
        let new = pools("10.0.0.2:80, 10.0.0.1:80");
        assert_eq!(merge(&bytes, &new, Instant::now()), Ok(1));
        let entry = new[0].state().table_entry(b"on-1").unwrap();
        assert_eq!(&*entry.backend, "10.0.0.1:80");
        assert!(new[0].state().table_entry(b"on-3").is_none());
        // Merging again adds nothing: the keys are known now.
        assert_eq!(merge(&bytes, &new, Instant::now()), Ok(0));
    }

    /// WPS jobs come back where their backend is still in the config; a running one pins its
    /// key again.
    #[test]
    fn jobs_come_back_and_running_ones_pin_their_keys() {
        use crate::policy::wps::JobState;
        let old = pools("10.0.0.1:80, 10.0.0.2:80");
        record(&old[0], "k1", 0);
        let (a, b) = (
            0x5e4f3a2b_1c0d_4f6a_8c2d_000000000001u128,
            0x5e4f3a2b_1c0d_4f6a_8c2d_000000000002u128,
        );
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let now = Instant::now();
        old[0].jobs().observe(
            a,
            at("10.0.0.1:80"),
            Some(b"k1"),
            Some(JobState::Running),
            now,
        );
        old[0]
            .jobs()
            .observe(b, at("10.0.0.2:80"), None, Some(JobState::Ended), now);
        let bytes = encode(&old, now, false);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(r#""id":"5e4f3a2b-1c0d-4f6a-8c2d-000000000001","backend":"10.0.0.1:80","key":"k1","running":true"#), "{text}");

        // The new config dropped 10.0.0.2: its job is not carried over.
        let new = pools("10.0.0.1:80");
        merge(&bytes, &new, Instant::now()).unwrap();
        let jobs = new[0].jobs();
        assert_eq!(jobs.backend_of(a, Instant::now()), Some(at("10.0.0.1:80")));
        assert_eq!(jobs.backend_of(b, Instant::now()), None);
        assert_eq!(jobs.running_on(at("10.0.0.1:80")), 1);
        assert_eq!(new[0].table().pinned(), 1, "the running job pins k1 again");
    }

    #[test]
    fn operator_states_come_back_unless_the_config_changed_them() {
        let old = pools("10.0.0.1:80, 10.0.0.2:80");
        old[0].set_state("10.0.0.2:80", BackendState::Drain);
        let bytes = encode(&old, Instant::now(), false);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(r#""backend_states":{"fp":[{"backend":"10.0.0.2:80","state":"drain","file_state":"ready"}]}"#), "{text}");
        let new = pools("10.0.0.2:80, 10.0.0.1:80");
        merge(&bytes, &new, Instant::now()).unwrap();
        let state_of = |p: &Pool, i: usize| p.state().operator_state(i);
        assert_eq!(state_of(&new[0], 0), BackendState::Drain);
        assert_eq!(state_of(&new[0], 1), BackendState::Ready);
        // A file written before operator states existed still reads.
        let plain = br#"{"version": 1, "written_unix": 0, "services": {}}"#;
        assert_eq!(merge(plain, &new, Instant::now()), Ok(0));
    }

    #[test]
    fn garbage_and_other_versions_are_refused_with_a_reason() {
        let p = pools("10.0.0.1:80");
        for bytes in [&b""[..], b"\x00\xff garbage", b"{\"version\": 1", b"[]"] {
            assert!(merge(bytes, &p, Instant::now()).is_err(), "{bytes:?}");
        }
        let other = br#"{"version": 99, "written_unix": 0, "services": {}}"#;
        let err = merge(other, &p, Instant::now()).unwrap_err();
        assert!(err.contains("version 99"), "{err}");
    }

    #[test]
    fn writes_are_atomic_and_the_keeper_reads_what_others_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let old = pools("10.0.0.1:80, 10.0.0.2:80");
        record(&old[0], "k", 1);
        let first = StateKeeper::start(dir.path(), old.clone(), phases(), None);
        first.save(false);
        let new = pools("10.0.0.1:80, 10.0.0.2:80");
        let second = StateKeeper::start(dir.path(), new.clone(), phases(), None);
        assert_eq!(
            &*new[0].state().table_entry(b"k").unwrap().backend,
            "10.0.0.2:80"
        );
        // The old process learns more and writes last (as it does when it exits after an
        // upgrade); the new one merges it at its next save.
        record(&old[0], "late", 0);
        std::thread::sleep(Duration::from_millis(20)); // a distinct modification time
        first.save(false);
        second.save(false);
        assert!(new[0].state().table_entry(b"late").is_some());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            [std::ffi::OsString::from(FILE_NAME)],
            "no temporary file left"
        );
    }

    #[test]
    fn the_new_process_of_an_upgrade_takes_the_hand_over_file_not_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let old_pools = pools("10.0.0.1:80, 10.0.0.2:80");
        record(&old_pools[0], "saved", 0);
        let old = StateKeeper::start(dir.path(), old_pools.clone(), phases(), None);
        old.save(false);
        // A periodic save is not a hand-over: waiting for one finds none, and says so.
        let waiting = pools("10.0.0.1:80, 10.0.0.2:80");
        let keeper = StateKeeper {
            path: dir.path().join(FILE_NAME),
            pools: waiting.clone(),
            seen: Mutex::new(None),
            phases: Mutex::new(None),
            failing: AtomicBool::new(false),
        };
        keeper.take_handover(Handover::before(dir.path()), Duration::from_millis(100));
        assert!(waiting[0].state().table_entry(b"saved").is_none());

        // The key the old process saw after its last periodic save comes with the hand-over.
        let handover = Handover::before(dir.path());
        record(&old_pools[0], "just-seen", 1);
        std::thread::sleep(Duration::from_millis(20)); // a distinct modification time
        old.save(true);
        let new = pools("10.0.0.2:80, 10.0.0.1:80, 10.0.0.3:80");
        StateKeeper::start(dir.path(), new.clone(), phases(), Some(handover));
        let entry = new[0].state().table_entry(b"just-seen").unwrap();
        assert_eq!(&*entry.backend, "10.0.0.2:80");
        assert!(new[0].state().table_entry(b"saved").is_some());
    }

    #[test]
    fn a_failing_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file goes: it can be neither read nor replaced.
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        std::fs::write(dir.path().join(FILE_NAME).join("x"), b"x").unwrap();
        let p = pools("10.0.0.1:80");
        record(&p[0], "k", 0);
        let keeper = StateKeeper::start(dir.path(), p, phases(), None);
        keeper.save(false);
        keeper.save(false);
        assert!(keeper.failing.load(Ordering::Relaxed));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(FILE_NAME)]);
    }
}
