//! What the operator set for each backend of a service (`ready`, `drain`, `maint`: from
//! `backends[].state` or `POST /backends/...`) and what a drain needs to know about it
//! (requests in flight, when it last served, how long its requests took). Shared by every config version of the service,
//! like health: a reload keeps a backend's state unless the file changes that backend's
//! `state`, and the newest word wins (the file edited, or the API called after it).
//!
//! The request path reads it with atomic loads only: each member of a [`ServiceState`] holds
//! its backend's [`Operated`].
//!
//! [`ServiceState`]: crate::service::state::ServiceState

use crate::config::{BackendState, ServiceConfig};
use crate::policy::sticky::Identity;
use crate::telemetry::history::Latency;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One backend's operator state and activity.
#[derive(Debug)]
pub struct Operated {
    state: AtomicU8,
    /// What the file said when it was last applied: a reload applies the file's state only
    /// when it differs from this.
    from_file: AtomicU8,
    in_flight: AtomicUsize,
    /// Milliseconds after the registry's epoch: the last time a request to it started or
    /// ended, and the last state change.
    last_active: AtomicU64,
    changed: AtomicU64,
    epoch: Instant,
    /// How long its requests took (the status page's p99 chart); kept across versions like
    /// the rest.
    pub latency: Latency,
}

fn code(s: BackendState) -> u8 {
    s as u8
}

fn state_of(code: u8) -> BackendState {
    BackendState::ALL
        .into_iter()
        .find(|s| *s as u8 == code)
        .unwrap_or_default()
}

impl Operated {
    pub fn state(&self) -> BackendState {
        state_of(self.state.load(Ordering::Relaxed))
    }

    /// What the config file says for it (`backends[].state`).
    pub fn file_state(&self) -> BackendState {
        state_of(self.from_file.load(Ordering::Relaxed))
    }

    /// Requests sent to it and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How long since a request to it last started or ended (since the state was set, when
    /// it has served nothing since).
    pub fn idle(&self, now: Instant) -> Duration {
        let last = self
            .last_active
            .load(Ordering::Relaxed)
            .max(self.changed.load(Ordering::Relaxed));
        now.saturating_duration_since(self.epoch + Duration::from_millis(last))
    }

    /// How long it has been in its current state.
    pub fn in_state_for(&self, now: Instant) -> Duration {
        let changed = self.changed.load(Ordering::Relaxed);
        now.saturating_duration_since(self.epoch + Duration::from_millis(changed))
    }

    fn stamp(&self, field: &AtomicU64, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        field.store(ms, Ordering::Relaxed);
    }

    /// A request is on its way to this backend until the returned guard drops.
    pub fn start_request(self: &Arc<Self>, now: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.stamp(&self.last_active, now);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight to a backend (see [`Operated::start_request`]).
#[derive(Debug)]
pub struct InFlight(Arc<Operated>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.stamp(&self.0.last_active, Instant::now());
    }
}

/// The operator states of one service's backends, by identity.
#[derive(Debug)]
pub struct Operator {
    epoch: Instant,
    backends: Mutex<HashMap<Identity, Arc<Operated>>>,
    /// Whether any backend is closed to new work: while none is (the usual case), the ring
    /// walk does not look at states at all.
    any_closed: AtomicBool,
}

impl Default for Operator {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            backends: Mutex::default(),
            any_closed: AtomicBool::new(false),
        }
    }
}

/// A state saved by [`Operator::export`], to be restored by [`Operator::import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    pub backend: String,
    pub state: BackendState,
    /// The file's state when it was saved: a file changed since then wins.
    pub from_file: BackendState,
}

impl Operator {
    fn lock(&self) -> MutexGuard<'_, HashMap<Identity, Arc<Operated>>> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend `identity`'s entry, made (with the file's `state`) when it has none yet.
    /// Building a state only reads: the file's states are applied by [`apply_file`] once the
    /// reload is certain.
    ///
    /// [`apply_file`]: Self::apply_file
    pub fn entry(&self, identity: &Identity, state: BackendState) -> Arc<Operated> {
        let mut map = self.lock();
        let entry = map.entry(Arc::clone(identity)).or_insert_with(|| {
            Arc::new(Operated {
                state: AtomicU8::new(code(state)),
                from_file: AtomicU8::new(code(state)),
                in_flight: AtomicUsize::new(0),
                last_active: AtomicU64::new(0),
                changed: AtomicU64::new(0),
                epoch: self.epoch,
                latency: Latency::default(),
            })
        });
        let entry = Arc::clone(entry);
        drop(map);
        self.refresh();
        entry
    }

    /// `config` is now the service's config: each backend whose `state` in the file changed
    /// takes it (the file was edited after any API call); backends no longer in the file are
    /// forgotten. Returns the changes made, for the log.
    pub fn apply_file(&self, config: &ServiceConfig) -> Vec<(Identity, BackendState)> {
        let now = Instant::now();
        let mut changes = Vec::new();
        let mut map = self.lock();
        map.retain(|id, _| config.backends.iter().any(|b| b.identity() == &**id));
        for b in &config.backends {
            let Some(op) = map.get(b.identity()) else {
                continue;
            };
            let file = code(b.state);
            if op.from_file.swap(file, Ordering::Relaxed) != file
                && op.state.swap(file, Ordering::Relaxed) != file
            {
                op.stamp(&op.changed, now);
                changes.push((b.identity().into(), b.state));
            }
        }
        drop(map);
        self.refresh();
        changes
    }

    /// Set `backend`'s state (the API). Returns the state it had, or `None` when the service
    /// has no such backend.
    pub fn set(&self, backend: &str, state: BackendState) -> Option<BackendState> {
        let now = Instant::now();
        let map = self.lock();
        let op = map.get(backend)?;
        let old = state_of(op.state.swap(code(state), Ordering::Relaxed));
        if old != state {
            op.stamp(&op.changed, now);
        }
        drop(map);
        self.refresh();
        Some(old)
    }

    pub fn get(&self, backend: &str) -> Option<Arc<Operated>> {
        self.lock().get(backend).cloned()
    }

    /// Whether any backend is closed to new work (so the ring walk must look at states).
    pub fn any_closed(&self) -> bool {
        self.any_closed.load(Ordering::Relaxed)
    }

    fn refresh(&self) {
        let closed = self.lock().values().any(|o| !o.state().takes_new_work());
        self.any_closed.store(closed, Ordering::Relaxed);
    }

    /// The states that differ from the file's, to save (restart, upgrade).
    pub fn export(&self) -> Vec<SavedState> {
        let mut out: Vec<SavedState> = self
            .lock()
            .iter()
            .filter(|(_, o)| o.state.load(Ordering::Relaxed) != o.from_file.load(Ordering::Relaxed))
            .map(|(id, o)| SavedState {
                backend: id.to_string(),
                state: o.state(),
                from_file: state_of(o.from_file.load(Ordering::Relaxed)),
            })
            .collect();
        out.sort_by(|a, b| a.backend.cmp(&b.backend));
        out
    }

    /// Restore saved states: each applies unless the backend is gone or the file's state for
    /// it changed since it was saved. Returns how many applied.
    pub fn import(&self, saved: &[SavedState]) -> usize {
        let now = Instant::now();
        let map = self.lock();
        let mut applied = 0;
        for s in saved {
            let Some(op) = map.get(s.backend.as_str()) else {
                continue;
            };
            if op.from_file.load(Ordering::Relaxed) == code(s.from_file) {
                op.state.store(code(s.state), Ordering::Relaxed);
                op.stamp(&op.changed, now);
                applied += 1;
            }
        }
        drop(map);
        self.refresh();
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(states: &[&str]) -> ServiceConfig {
        let backends: Vec<String> = states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "      - {{ address: \"127.0.0.1:{}\", state: {s} }}",
                    9001 + i
                )
            })
            .collect();
        let yaml = format!(
            "services:\n  - name: s\n    listen: \"127.0.0.1:8000\"\n    backends:\n{}\n",
            backends.join("\n")
        );
        Config::from_yaml(&yaml, "t.yaml")
            .unwrap()
            .services
            .remove(0)
    }

    fn build(op: &Operator, c: &ServiceConfig) -> Vec<Arc<Operated>> {
        c.backends
            .iter()
            .map(|b| op.entry(&b.identity().into(), b.state))
            .collect()
    }

    #[test]
    fn the_file_gives_the_first_state_and_the_api_overrides_it() {
        let op = Operator::default();
        let c = config(&["ready", "drain"]);
        let m = build(&op, &c);
        assert_eq!(m[1].state(), BackendState::Drain);
        assert!(op.any_closed());
        assert_eq!(
            op.set("127.0.0.1:9002", BackendState::Ready),
            Some(BackendState::Drain)
        );
        assert!(!op.any_closed());
        assert_eq!(op.set("127.0.0.1:9009", BackendState::Ready), None);
        // A reload of the same file keeps what the API set...
        build(&op, &c);
        assert!(op.apply_file(&c).is_empty());
        assert_eq!(m[1].state(), BackendState::Ready);
        // ...and a file that changes the backend's state wins.
        let edited = config(&["maint", "drain"]);
        build(&op, &edited);
        let changes = op.apply_file(&edited);
        assert_eq!(changes.len(), 1);
        assert_eq!(m[0].state(), BackendState::Maint);
        assert_eq!(m[1].state(), BackendState::Ready);
    }

    #[test]
    fn saved_states_come_back_unless_the_file_changed_since() {
        let op = Operator::default();
        let c = config(&["ready", "ready"]);
        build(&op, &c);
        op.set("127.0.0.1:9001", BackendState::Drain);
        let saved = op.export();
        assert_eq!(saved.len(), 1);

        let fresh = Operator::default();
        let m = build(&fresh, &c);
        assert_eq!(fresh.import(&saved), 1);
        assert_eq!(m[0].state(), BackendState::Drain);

        let other = Operator::default();
        let m = build(&other, &config(&["maint", "ready"]));
        assert_eq!(other.import(&saved), 0, "the file says maint now: it wins");
        assert_eq!(m[0].state(), BackendState::Maint);
    }

    #[test]
    fn in_flight_requests_are_counted_until_their_guard_drops() {
        let op = Operator::default();
        let m = build(&op, &config(&["ready"]));
        let t0 = Instant::now();
        let a = m[0].start_request(t0);
        let b = m[0].start_request(t0);
        assert_eq!(m[0].in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(m[0].in_flight(), 0);
        assert!(m[0].idle(Instant::now() + Duration::from_secs(2)) >= Duration::from_secs(1));
    }

    #[test]
    fn backends_that_leave_the_file_are_forgotten() {
        let op = Operator::default();
        build(&op, &config(&["ready", "drain"]));
        op.apply_file(&config(&["ready"]));
        assert!(op.get("127.0.0.1:9002").is_none());
        assert!(!op.any_closed());
    }
}
