//! Test harness: real `roost` and demo-backend processes on loopback, ports chosen at run
//! time, and a small HTTP/1.1 client over plain sockets. Every process started here is killed
//! when its handle drops, also when a test panics.
//!
//! Each file provides one thing; everything is re-exported here, so a test says
//! `use common::*;` and never names the file.
//!
//! | file | provides |
//! |---|---|
//! | `process.rs` | binary paths, run-time ports (`free_port`; `stable_port` for a server restarted on its port), `wait_until`, `Proc`, `rss_kib` |
//! | `http.rs` | `Response`, `raw`, `get`, `get_key`, `read_response` |
//! | `keys.rs` | `keys` (names for affinity keys), `mapping` (which backend answers each), `keys_on` (one backend's) |
//! | `backend.rs` | the demo `Backend`, the in-process `FakeBackend` and its `Misbehaviour` |
//! | `daemon.rs` | config YAML (`config_yaml`, `service_yaml`, `top_level`), `Roost` (foreground), `Daemon` (`-d`), `run_roost`, `Site` (`start`, `with_admin`) |
//! | `admin.rs` | `Admin`: the admin listener's YAML, `/status`, a backend's status, `/metrics`, a metric (`sample`) |
//! | `load.rs` | `Client`, `Load`, `LoadReport` |
//! | `nginx.rs` | `nginx_binary`, `nginx_main_settings`, `nginx_http_settings`, `start_nginx` |

// Each test binary uses only part of the harness: what it leaves out is neither dead code
// nor an unused re-export.
#![allow(dead_code, unused_imports)]

mod admin;
mod backend;
mod daemon;
mod http;
mod keys;
mod load;
mod nginx;
mod process;

pub use admin::*;
pub use backend::*;
pub use daemon::*;
pub use http::*;
pub use keys::*;
pub use load::*;
pub use nginx::*;
pub use process::*;
