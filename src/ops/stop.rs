//! The end of the process, on SIGTERM (stop) or SIGQUIT (hot upgrade, after the listeners
//! were handed over):
//!
//! - from the first sign of it, every response closes its connection (the shared `draining`
//!   flag), so keep-alive clients reconnect, to the new process during an upgrade;
//! - Pingora then closes the listeners and sleeps the whole `grace_period_seconds` before it
//!   exits, however little is left to do. Roost ends the process as soon as nothing is left:
//!   every listener closed and cleaned up with no connection open (so no request in flight)
//!   and the access log written out; then the state file is saved one last time (it then has
//!   every key the process recorded) and the process exits. The grace period still bounds the
//!   wait for slow requests; an idle process stops in well under a second after the
//!   listeners close.

use crate::ops::state_file::StateKeeper;
use crate::service::guard::Connections;
use crate::telemetry::access_log::Progress;
use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How often a stopping process looks whether it is done.
const POLL: Duration = Duration::from_millis(20);

/// What must be finished before the process may end early.
#[derive(Default)]
pub struct Outstanding {
    pub connections: Vec<Connections>,
    pub access_log: Option<Arc<Progress>>,
    /// Saves the sticky tables last (when `server.state_dir` is set).
    pub state: Option<Arc<StateKeeper>>,
}

impl Outstanding {
    /// Nothing in flight, every log line written.
    pub fn done(&self) -> bool {
        self.connections.iter().all(Connections::finished)
            && self.access_log.as_ref().is_none_or(|p| p.complete())
    }
}

/// Follows Pingora's execution phases: sets `draining` when the process starts handing over
/// or stopping, and ends the process once [`Outstanding`] is done during the grace period.
pub struct StopWatch {
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    pub draining: Arc<AtomicBool>,
    pub outstanding: Arc<Outstanding>,
}

#[async_trait]
impl BackgroundService for StopWatch {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        loop {
            match phases.recv().await {
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulUpgradeCloseTimeout
                    | ExecutionPhase::GracefulTerminate
                    | ExecutionPhase::ShutdownStarted,
                ) => {
                    if !self.draining.swap(true, Ordering::Relaxed) {
                        log::info!("draining: every response from now on closes its connection");
                    }
                }
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    // Pingora's main thread now sleeps the grace period; this thread ends the
                    // process once nothing is left (it is not a runtime task, so it does not
                    // depend on the runtimes Pingora is about to shut down).
                    let outstanding = Arc::clone(&self.outstanding);
                    std::thread::spawn(move || exit_when_done(&outstanding));
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn exit_when_done(outstanding: &Outstanding) {
    let start = Instant::now();
    while !outstanding.done() {
        std::thread::sleep(POLL);
    }
    if let Some(keeper) = &outstanding.state {
        keeper.save_at_exit();
    }
    log::info!(
        "stopped: no request in flight {} ms into the grace period; exiting",
        start.elapsed().as_millis()
    );
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_waits_for_the_access_log() {
        let waiting = Outstanding {
            access_log: Some(Arc::new(Progress::queued(2))),
            ..Default::default()
        };
        assert!(!waiting.done(), "two lines not written yet");
        let written = Outstanding {
            access_log: Some(Arc::new(Progress::default())),
            ..Default::default()
        };
        assert!(written.done());
        assert!(Outstanding::default().done());
    }
}
