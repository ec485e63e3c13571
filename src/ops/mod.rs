//! Running the process: assembling the Pingora server from a config, live reload on SIGHUP,
//! the hot upgrade and reload commands that control a running daemon, and the admin listener.
//! The top layer: it may use every other layer, and none uses it.

pub mod admin;
pub mod reload;
pub mod server;
pub mod upgrade;
