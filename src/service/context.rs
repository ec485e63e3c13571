//! The state of one request as it passes Pingora's phases: the service-state snapshot it is
//! served under, the backend chosen and the retry bookkeeping, and (in debug builds) the config
//! version each phase used.

use crate::policy::route::Move;
use crate::policy::wps::JobScanner;
use crate::service::operator::InFlight;
use crate::service::state::ServiceState;
use pingora::http::ResponseHeader;
use pingora::Result;
use std::sync::Arc;
use std::time::Instant;

/// In debug builds, every response carries the config version each phase of its request used
/// (`filter=N peer=N ...`), so tests can prove that a request never mixes two configs.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const DEBUG_VERSION_HEADER: &str = "x-roost-debug-config";

/// Per-request state.
pub struct RequestCtx {
    /// The service state this request is served under, from start to end.
    pub(super) state: Arc<ServiceState>,
    pub(super) start: Instant,
    /// The valid affinity key, kept for the access log.
    pub(super) key: Option<String>,
    /// The member chosen for this request.
    pub(super) backend: Option<usize>,
    /// A member that refused the connection; the retry picks another one.
    pub(super) refused: Option<usize>,
    /// Whether the request may go to a backend other than its key's owner.
    pub(super) may_fail_over: bool,
    /// Whether a connection to a backend failed for this request.
    pub(super) connect_failed: bool,
    /// Whether the one retry after a refused connection was used.
    pub(super) retried: bool,
    /// Whether the chosen backend's answer (or failure) was reported to passive health, so
    /// that the end of the request does not report it again.
    pub(super) judged: bool,
    /// Request body bytes received so far, against `limits.max_body`.
    pub(super) body_bytes: u64,
    /// `wps_affinity`: looking for the WPS job in the response body as it streams past.
    pub(super) job_scan: Option<JobScanner>,
    /// Counts this request as in flight to its backend until the context drops (drain).
    pub(super) in_flight: Option<InFlight>,
    /// The key left the backend the sticky table recorded for it, and why (access log).
    pub(super) moved: Option<Move>,
    /// Debug builds: the config version each phase read, for [`DEBUG_VERSION_HEADER`].
    #[cfg(debug_assertions)]
    pub(super) phases: Vec<(&'static str, u64)>,
}

impl RequestCtx {
    /// A request served under `state` from start to end.
    pub(super) fn new(state: Arc<ServiceState>) -> Self {
        Self {
            state,
            start: Instant::now(),
            key: None,
            backend: None,
            refused: None,
            may_fail_over: false,
            connect_failed: false,
            retried: false,
            judged: false,
            body_bytes: 0,
            job_scan: None,
            in_flight: None,
            moved: None,
            #[cfg(debug_assertions)]
            phases: Vec::new(),
        }
    }

    /// Record the config version `phase` works under (debug builds only).
    pub(super) fn phase(&mut self, _phase: &'static str) {
        #[cfg(debug_assertions)]
        self.phases.push((_phase, self.state.version));
    }

    /// Debug builds: add [`DEBUG_VERSION_HEADER`] to the answer.
    pub(super) fn debug_header(&self, _resp: &mut ResponseHeader) -> Result<()> {
        #[cfg(debug_assertions)]
        {
            let seen: Vec<String> = self
                .phases
                .iter()
                .map(|(p, v)| format!("{p}={v}"))
                .collect();
            _resp.insert_header(DEBUG_VERSION_HEADER, seen.join(" "))?;
        }
        Ok(())
    }
}
