//! One WPS service at run time: its backend pool and health checks, the Pingora `ProxyHttp`
//! that serves it, and the connection guard in front of it. Built from `config`, decides with
//! `policy`, counts into `telemetry`; knows nothing of the admin listener or of reloads beyond
//! accepting a new config.

pub(crate) mod context;
pub(crate) mod guard;
pub(crate) mod health;
pub(crate) mod operator;
pub mod pool;
pub(crate) mod proxy;
pub(crate) mod state;
