//! Roost: a sticky, health-checked HTTP load balancer for OGC Web Processing Services, built on
//! Cloudflare's Pingora.
//!
//! A WPS job leaves its status document and outputs on the disk of the machine that ran it, so
//! every request carrying the same `machineid` header must reach the same backend. Roost hashes
//! that header onto Pingora's Ketama ring (the same mapping as NGINX `hash ... consistent` for
//! `IP:port` servers), checks backends actively, and moves only a down backend's keys.
//!
//! # Layout
//! | module | owns |
//! |---|---|
//! | [`config`] | the YAML file: env expansion, validation with file:line:key errors, typed model |
//! | [`key`] | reading the affinity key from request headers (pure) |
//! | [`screen`] | refusing oversized or ambiguous requests before they are forwarded (pure) |
//! | [`select`] | the selection policy: owner, failover walk, reject, round robin (pure) |
//! | [`headers`] | forwarding headers added upstream (pure) |
//! | [`health`] | active health checks: probe, timeout, rise/fall, transition reports |
//! | [`pool`] | one service's Ketama load balancer, health loop and counters |
//! | [`proxy`] | the Pingora `ProxyHttp` for one service |
//! | [`guard`] | per-connection limits Pingora lacks: max connections, whole-header deadline |
//! | [`wps_affinity`] | WPS jobs → the backend that ran them, for requests without the key (pure) |
//! | [`metrics`] | every exported metric, by name, and the registry |
//! | [`access_log`] | one line per request, formatted and written off the request path |
//! | [`admin`] | the admin listener: /metrics, /status, /route and the status page |
//! | [`reload`] | SIGHUP: what a new config changes (pure plan) and applying it to the pools |
//! | [`server`] | building the Pingora server: proxies, health loops, reloader, drain watch |
//! | [`upgrade`] | `roost upgrade` / `roost reload`: controlling a running daemon |
//! | [`cli`] | command-line parsing and dispatch |

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod config;
pub mod guard;
pub mod headers;
pub mod health;
pub mod key;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod screen;
pub mod select;
pub mod server;
pub mod upgrade;
pub mod wps_affinity;
