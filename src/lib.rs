//! Roost: a sticky, health-checked HTTP load balancer for OGC Web Processing Services, built on
//! Cloudflare's Pingora.
//!
//! A WPS job leaves its status document and outputs on the disk of the machine that ran it, so
//! every request carrying the same `machineid` header must reach the same backend. Roost hashes
//! that header onto Pingora's Ketama ring (the same mapping as NGINX `hash ... consistent` for
//! `IP:port` servers), checks backends actively, and moves only a down backend's keys.
//!
//! # Layout
//! The folders are the layers; a module only uses the layers above it in this table
//! (`doc/architecture.md` has the whole map).
//!
//! | layer | owns |
//! |---|---|
//! | [`config`] | the YAML file: env expansion, validation with file:line:key errors, typed model |
//! | [`policy`] | pure rules: key, screening, selection, forwarding headers, WPS job ids |
//! | [`telemetry`] | every exported metric, the access log, the status page's history and recent events |
//! | [`service`] | one service at run time: pool and health, the proxy, the connection guard |
//! | [`ops`] | the process: server assembly, SIGHUP reload, upgrade/reload commands, admin listener |
//! | [`cli`] | command-line parsing and dispatch |

pub mod cli;
pub mod config;
pub mod ops;
pub mod policy;
pub mod service;
pub mod telemetry;
