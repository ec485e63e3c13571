//! What Roost tells the operator: every exported metric (one registry per server), the access
//! log written off the request path, and the recent past the status page shows (per-backend
//! history of rates and latency, recent events).

pub(crate) mod access_log;
pub mod events;
pub mod history;
pub mod metrics;
