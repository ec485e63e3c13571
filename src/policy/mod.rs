//! Pure request policy: which bytes are the affinity key, what is refused before forwarding,
//! which backend a request goes to, which headers it carries upstream, which WPS job a
//! URL or response names, and what real traffic says about a backend's health. No sockets, no clocks read here: every rule is unit-tested with
//! plain values. Depends only on `config`.

pub mod framing;
pub mod head_scan;
pub mod headers;
pub mod ketama;
pub mod key;
pub mod nginx_hash;
pub(crate) mod outlier;
pub(crate) mod refusal;
pub mod route;
pub mod screen;
pub(crate) mod select;
pub mod sticky;
pub(crate) mod target;
pub(crate) mod wps;
