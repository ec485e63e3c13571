//! Running the process: assembling the Pingora server from a config, live reload on SIGHUP,
//! the hot upgrade and reload commands that control a running daemon, and the admin listener.
//! The top layer: it may use every other layer, and none uses it.

pub(crate) mod admin;
pub(crate) mod admin_client;
pub(crate) mod backend_cmd;
pub mod discovery;
pub(crate) mod import_nginx;
pub(crate) mod logging;
pub(crate) mod reload;
pub mod server;
pub mod shared_state;
pub mod state_file;
pub(crate) mod stop;
pub(crate) mod upgrade;
