//! What Roost tells the operator: every exported metric (one registry per server) and the
//! access log written off the request path.

pub(crate) mod access_log;
pub mod metrics;
