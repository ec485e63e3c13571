//! Each backend's operator state (ready, drain, maint) as this pool applies it: set through
//! the admin API, learned from other instances (`state.redis`), and the changes kept for
//! sharing.

use super::Pool;
use crate::config::BackendState;
use crate::service::operator::Operator;
use crate::telemetry::events::Kind;
use std::sync::Arc;

impl Pool {
    /// The operator states (ready, drain, maint) of this service's backends.
    pub fn operator(&self) -> &Arc<Operator> {
        &self.operator
    }

    /// Set backend `identity`'s operator state (admin API). Returns its previous state, or
    /// `None` when the service has no backend written so. With `state.redis`, the other
    /// instances are told.
    pub fn set_state(&self, identity: &str, state: BackendState) -> Option<BackendState> {
        let old = self.change_state(identity, state, "operator")?;
        if let Some(pending) = self
            .shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            pending.retain(|(b, _)| b != identity);
            pending.push((identity.to_string(), state));
        }
        Some(old)
    }

    /// An operator state set through another instance (`state.redis`): applied like one set
    /// here, not shared again. Returns whether it changed anything.
    pub fn apply_shared_state(&self, identity: &str, state: BackendState) -> bool {
        self.change_state(identity, state, "set through another instance")
            .is_some_and(|old| old != state)
    }

    /// Share the operator states set through the API from now on.
    pub fn share_states(&self) {
        *self.shared_states.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// The operator states set here since the last call, in order, to be shared.
    pub fn take_state_changes(&self) -> Vec<(String, BackendState)> {
        self.shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// States that could not be shared (Redis is down): kept, unless set again since.
    pub fn restore_state_changes(&self, unsent: Vec<(String, BackendState)>) {
        if let Some(pending) = self
            .shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            let newer = std::mem::take(pending);
            pending.extend(
                unsent
                    .into_iter()
                    .filter(|(b, _)| !newer.iter().any(|(n, _)| n == b)),
            );
            pending.extend(newer);
        }
    }

    /// Whether a state set here for `identity` waits to be shared (it then wins over what
    /// Redis says at a reconcile: it is newer).
    pub fn state_pending(&self, identity: &str) -> bool {
        self.shared_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|p| p.iter().any(|(b, _)| b == identity))
    }

    fn change_state(&self, identity: &str, state: BackendState, why: &str) -> Option<BackendState> {
        let old = self.operator.set(identity, state)?;
        if old != state {
            log::warn!(
                "service {}: backend {identity}: {} -> {} ({why})",
                self.name,
                old.as_str(),
                state.as_str()
            );
            self.metrics
                .backend_state_changes
                .with_label_values(&[self.name.as_str(), state.as_str()])
                .inc();
            self.events.push(
                Kind::State,
                identity,
                format!("{} -> {} ({why})", old.as_str(), state.as_str()),
            );
            // A backend in maintenance leaves the panic count.
            self.refresh_panic();
        }
        Some(old)
    }
}
