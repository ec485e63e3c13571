//! The state file's keeper: the periodic save and the merge of another writer's file, the
//! save at the hand-over of an upgrade and the new process's wait for it, the save at stop;
//! every write atomic.

use super::{apply, encode, merge, parse, FILE_NAME, HANDOVER_WAIT, SAVE_EVERY};
use crate::service::pool::Pool;
use async_trait::async_trait;
use log::{info, warn};
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;

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
#[path = "keeper_tests.rs"]
mod tests;
