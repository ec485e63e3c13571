//! Roost's admin listener as a test reads it: [`Admin`] holds its address and token (sent as
//! `Authorization: Bearer` on every request when set) and reads `/status`, one backend's
//! entry in it, `/metrics` and a metric's value; [`sample`] is the pure lookup of one series
//! in a Prometheus text exposition.

use std::net::SocketAddr;

use super::http::{get, Response};
use super::process::listen_addr;

/// An admin listener on a run-time port, with the token its config gives it (if any).
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Admin {
    /// A fresh loopback address for the listener; `token` as in `admin.token`.
    pub fn new(token: Option<&str>) -> Admin {
        Admin::at(listen_addr(), token)
    }

    /// The listener at `addr` (for a config a test writes itself).
    pub fn at(addr: SocketAddr, token: Option<&str>) -> Admin {
        Admin {
            addr,
            token: token.map(str::to_string),
        }
    }

    /// The top-level `admin:` section that configures this listener.
    pub fn yaml(&self) -> String {
        match &self.token {
            Some(token) => format!("admin: {{ listen: {}, token: {token} }}\n", self.addr),
            None => format!("admin: {{ listen: {} }}\n", self.addr),
        }
    }

    /// `GET path`, with the token when there is one; any status.
    pub fn get(&self, path: &str) -> Response {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        get(self.addr, path, &headers).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// The body of `GET path`, which must answer 200: a refusal is never read as "empty".
    pub fn text(&self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status, 200, "admin GET {path}: {}", r.text());
        r.text()
    }

    /// `GET path` as JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let text = self.text(path);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("admin GET {path}: {e}: {text}"))
    }

    /// `/status`.
    pub fn status(&self) -> serde_json::Value {
        self.json("/status")
    }

    /// The `/status` entry of the first service's backend at `addr`.
    pub fn backend_status(&self, addr: SocketAddr) -> serde_json::Value {
        let status = self.status();
        status["services"][0]["backends"]
            .as_array()
            .expect("backends in /status")
            .iter()
            .find(|b| b["addr"] == addr.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("{addr} not in /status: {status}"))
    }

    /// `/metrics`.
    pub fn metrics(&self) -> String {
        self.text("/metrics")
    }

    /// The value of `series` in `/metrics` now (see [`sample`]).
    pub fn metric(&self, series: &str) -> f64 {
        sample(&self.metrics(), series)
    }

    /// [`Admin::metric`] for a counter or a gauge of whole things, which must be one.
    pub fn count(&self, series: &str) -> u64 {
        let value = self.metric(series);
        assert!(
            value >= 0.0 && value.fract() == 0.0,
            "{series} is {value}, not a count"
        );
        value as u64
    }
}

/// The value of the sample `series` (its name and labels, the labels in Prometheus' sorted
/// order) in the text exposition `metrics`; 0 when it is absent, as an unused counter is.
/// A value that is not a number fails the test.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{series} has the value {v:?}"))
        })
}
