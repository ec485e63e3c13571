//! The admin listener's JSON views: `/status` (with each service's recent events),
//! `/history`, `/route`, and the gauges refreshed before `/metrics` is rendered. They read
//! the pools and do no I/O.

use super::{Admin, Reply};
use crate::config::{BackendState, MissingKey, WhenDown};
use crate::policy::route::{self, Unroutable};
use crate::service::pool::Pool;
use crate::telemetry::history::{Sample, KEPT, SAMPLE_EVERY};
use serde_json::{json, Value};
use std::time::SystemTime;

impl Admin {
    /// `roost_backend_up` from the pools' current health and `roost_wps_running_jobs` from
    /// their job tables; series of backends a reload removed disappear.
    pub(super) fn refresh_gauges(&self) {
        self.metrics.backend_up.reset();
        self.metrics.backend_state.reset();
        self.metrics.wps_running_jobs.reset();
        for s in &self.services {
            // Also counts the panic seconds up to now.
            s.pool.refresh_panic();
            if let Some(keys) = s.pool.state().table_len() {
                self.metrics
                    .affinity_keys
                    .with_label_values(&[s.pool.name.as_str()])
                    .set(keys as i64);
            }
            let unresolved = s.pool.state().unresolved().to_vec();
            self.metrics
                .backends_unresolved
                .with_label_values(&[s.pool.name.as_str()])
                .set(unresolved.len() as i64);
            for u in &unresolved {
                self.metrics
                    .backend_up
                    .with_label_values(&[s.pool.name.as_str(), u.address.as_str()])
                    .set(0);
            }
            for b in s.pool.status() {
                let addr = b.addr.to_string();
                let labels = [s.pool.name.as_str(), addr.as_str()];
                self.metrics
                    .backend_up
                    .with_label_values(&labels)
                    .set(i64::from(b.healthy));
                for st in BackendState::ALL {
                    self.metrics
                        .backend_state
                        .with_label_values(&[labels[0], labels[1], st.as_str()])
                        .set(i64::from(b.state == st));
                }
                self.metrics
                    .wps_running_jobs
                    .with_label_values(&[s.pool.name.as_str(), &b.addr.to_string()])
                    .set(b.running_jobs as i64);
            }
        }
    }

    pub(super) fn status(&self) -> Value {
        let services: Vec<Value> = self
            .services
            .iter()
            .map(|s| {
                let state = s.pool.state();
                let settings = &state.settings;
                let backends: Vec<Value> = s
                    .pool
                    .status()
                    .into_iter()
                    .map(|b| {
                        json!({
                            "address": b.address,
                            "identity": b.identity,
                            "addr": b.addr.to_string(),
                            "weight": b.weight,
                            "dns": b.dns,
                            "healthy": b.healthy,
                            "ejected": b.ejected,
                            "requests": b.requests,
                            "state": b.state.as_str(),
                            "state_seconds": b.in_state_for.as_secs(),
                            "in_flight": b.in_flight,
                            "idle_seconds": b.idle.as_secs(),
                            "drained": b.drained,
                            "running_jobs": b.running_jobs,
                            "keys": b.keys,
                        })
                    })
                    .collect();
                let unresolved: Vec<Value> = state
                    .unresolved()
                    .iter()
                    .map(|u| {
                        json!({
                            "address": u.address,
                            "identity": u.identity(),
                            "weight": u.weight,
                            "state": u.state.as_str(),
                            "reason": u.reason,
                        })
                    })
                    .collect();
                let requests: u64 = state.request_counts().iter().sum();
                let health_check = settings.health_check.as_ref().map(|hc| {
                    json!({
                        "type": match hc.kind {
                            crate::config::CheckKind::Http { .. } => "http",
                            crate::config::CheckKind::Tcp => "tcp",
                        },
                        "interval_ms": hc.interval.as_millis() as u64,
                        "timeout_ms": hc.timeout.as_millis() as u64,
                        "rise": hc.rise,
                        "fall": hc.fall,
                    })
                });
                json!({
                    "name": s.pool.name,
                    "listen": s.listen.to_string(),
                    "config_version": state.version,
                    "hash_header": settings.route.header.as_str(),
                    "missing": match settings.route.missing {
                        MissingKey::RoundRobin => "round_robin",
                        MissingKey::ClientIp => "client_ip",
                        MissingKey::Reject => "reject",
                    },
                    "when_down": match settings.route.when_down {
                        WhenDown::Failover => "failover",
                        WhenDown::Reject => "reject",
                    },
                    "health_check": health_check,
                    "drain_idle_seconds": settings.affinity.drain_idle.as_secs(),
                    "panic_threshold": settings.panic_threshold,
                    "panic": s.pool.in_panic(),
                    "requests": requests,
                    "backends": backends,
                    "unresolved": unresolved,
                    "events": events_json(&s.pool),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "services": services,
        })
    }

    /// `GET /history[?service=S]`: per backend of each service (as the current config has
    /// them), one point per [`SAMPLE_EVERY`] over the last 15 minutes, oldest first; the last
    /// point is the interval still running (`"partial": true`).
    pub(super) fn history(&self, query: &str) -> Reply {
        let wanted = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.into_owned());
        if let Some(name) = &wanted {
            if !self.services.iter().any(|s| s.pool.name == *name) {
                return Reply::error(404, &format!("no service named '{name}'"));
            }
        }
        let services: Vec<Value> = self
            .services
            .iter()
            .filter(|s| wanted.as_ref().is_none_or(|w| *w == s.pool.name))
            .map(|s| {
                let (samples, current) = s.pool.history();
                let all: Vec<(&Sample, bool)> = samples
                    .iter()
                    .map(|x| (x, false))
                    .chain(current.iter().map(|x| (x, true)))
                    .collect();
                let backends: Vec<Value> = s
                    .pool
                    .state()
                    .members()
                    .iter()
                    .map(|m| {
                        let addr = m.addr.to_string();
                        let points: Vec<Value> = all
                            .iter()
                            .filter_map(|(sample, partial)| {
                                let p = sample.backends.iter().find(|p| p.backend == addr)?;
                                Some(json!({
                                    "time": unix_seconds(sample.at),
                                    "seconds": round3(sample.seconds),
                                    "requests": p.requests,
                                    "rps": round3(p.rate(sample.seconds)),
                                    "p99_ms": p.p99.map(|d| round3(d.as_secs_f64() * 1000.0)),
                                    "partial": partial,
                                }))
                            })
                            .collect();
                        json!({ "address": m.address, "addr": addr, "points": points })
                    })
                    .collect();
                json!({ "name": s.pool.name, "backends": backends })
            })
            .collect();
        Reply::json(
            200,
            &json!({
                "interval_seconds": SAMPLE_EVERY.as_secs(),
                "kept": KEPT,
                "services": services,
            }),
        )
    }

    pub(super) fn route(&self, query: &str) -> Reply {
        let mut service = None;
        let mut key = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "service" => service = Some(v.into_owned()),
                "key" => key = Some(v.into_owned()),
                _ => {}
            }
        }
        let (Some(service), Some(key)) = (service, key) else {
            return Reply::error(400, "usage: /route?service=NAME&key=MACHINEID");
        };
        let Some(s) = self.services.iter().find(|s| s.pool.name == service) else {
            return Reply::error(404, &format!("no service named '{service}'"));
        };
        // The same validation and resolver as a proxied request.
        let state = s.pool.state();
        let policy = &state.settings.route;
        let (member, role, reason, outcome) = match route::lookup(policy, &key, &*state) {
            Ok(r) => (
                Some(&state.members()[r.backend]),
                Some(r.role.as_str()),
                Some(r.reason.as_str()),
                "forward",
            ),
            Err(why @ (Unroutable::InvalidKey(_) | Unroutable::MissingKey)) => {
                return Reply::error(400, &why.refusal(policy).message)
            }
            Err(why) => (None, None, None, why.as_str()),
        };
        let entry = state.table_entry(key.trim().as_bytes());
        Reply::json(
            200,
            &json!({
                "service": service,
                "key": key,
                "backend": member.map(|m| m.addr.to_string()),
                "identity": member.map(|m| &*m.identity),
                "role": role,
                "reason": reason,
                "decision": outcome,
                "panic": state.ignores_health(),
                "in_table": entry.is_some(),
                "table": entry.map(|e| json!({
                    "backend": &*e.backend,
                    "since_seconds": e.since.elapsed().as_secs(),
                    "idle_seconds": e.last_seen.elapsed().as_secs(),
                    "stand_in": e.stand_in.as_deref(),
                    "pinned_by_jobs": e.pins,
                })),
            }),
        )
    }
}

/// A service's recent events, newest first.
fn events_json(pool: &Pool) -> Vec<Value> {
    let now = SystemTime::now();
    pool.events()
        .into_iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "time": humantime::format_rfc3339_seconds(e.at).to_string(),
                "age_seconds": now.duration_since(e.at).unwrap_or_default().as_secs(),
                "kind": e.kind.as_str(),
                "backend": e.backend,
                "detail": e.detail,
            })
        })
        .collect()
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
