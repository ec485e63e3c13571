//! The admin listener (`admin.listen`): `GET /metrics` (Prometheus text), `GET /status`
//! (JSON, with each service's recent events), `GET /route?service=S&key=K` (JSON: where K
//! goes now), `GET /history` (JSON: requests and p99 latency per backend over the last 15
//! minutes), `GET /healthz` (is this process serving: for container health checks and load
//! balancers), `GET /`, a status page (one HTML file embedded in the binary, no external
//! assets) that polls /status and /history, and the one kind of write,
//! `POST /backends/drain|ready|maint?service=S&backend=ADDR` (operator states; only with an
//! `admin.token`).
//!
//! Routing, auth and the answers are in [`Admin::handle`], which does no I/O beyond reading
//! the pools, so it is tested directly; the Pingora `ServeHttp` glue is a few lines.

use crate::config::{BackendState, MissingKey, WhenDown};
use crate::policy::route::{self, Unroutable};
use crate::service::pool::Pool;
use crate::telemetry::history::{Sample, KEPT, SAMPLE_EVERY};
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

const STATUS_PAGE: &str = include_str!("status.html");
/// The admin endpoints take no body; beyond this much of one the connection is closed.
const MAX_IGNORED_BODY: usize = 64 * 1024;

/// A service as the admin listener shows it.
pub struct AdminService {
    pub pool: Arc<Pool>,
    pub listen: SocketAddr,
}

pub struct Admin {
    services: Vec<AdminService>,
    token: Option<String>,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Set once the process is stopping or handing over (`/healthz` then answers 503).
    draining: Arc<AtomicBool>,
}

/// An answer before it is turned into an HTTP response.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).expect("JSON values serialize");
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "error": message }))
    }
}

impl Admin {
    pub fn new(services: Vec<AdminService>, token: Option<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            services,
            token,
            metrics,
            started: Instant::now(),
            draining: Arc::default(),
        }
    }

    /// `/healthz` follows `draining`: the flag the process sets when it starts to stop.
    pub fn with_draining(mut self, draining: Arc<AtomicBool>) -> Self {
        self.draining = draining;
        self
    }

    /// Answer one request. `authorization` is the raw `Authorization` header.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        authorization: Option<&[u8]>,
    ) -> Reply {
        if let Some(action) = path.strip_prefix("/backends/") {
            return self.backend_action(method, action, query.unwrap_or(""), authorization);
        }
        if method != Method::GET {
            let mut reply = Reply::error(405, "this endpoint only answers GET");
            reply.headers.push(("Allow", "GET"));
            return reply;
        }
        // Says only whether this process serves: no token, so any health checker may ask.
        if path == "/healthz" {
            return if self.draining.load(Ordering::Relaxed) {
                Reply::json(503, &json!({ "status": "stopping" }))
            } else {
                Reply::json(
                    200,
                    &json!({ "status": "serving", "services": self.services.len() }),
                )
            };
        }
        // The page holds no data (it fetches /status with the token), so it needs none.
        if path == "/" {
            return Reply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: STATUS_PAGE.as_bytes().to_vec(),
                headers: Vec::new(),
            };
        }
        if !["/metrics", "/status", "/route", "/history"].contains(&path) {
            return Reply::error(
                404,
                "unknown path; try /, /healthz, /status, /metrics, /route, /history or POST /backends/drain|ready|maint",
            );
        }
        if !self.authorized(authorization) {
            let mut reply = Reply::error(401, "missing or wrong bearer token");
            reply.headers.push(("WWW-Authenticate", "Bearer"));
            return reply;
        }
        match path {
            "/metrics" => {
                self.refresh_gauges();
                Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: self.metrics.render(),
                    headers: Vec::new(),
                }
            }
            "/status" => Reply::json(200, &self.status()),
            "/history" => self.history(query.unwrap_or("")),
            _ => self.route(query.unwrap_or("")),
        }
    }

    /// `POST /backends/{drain,ready,maint}?service=S&backend=ADDR`: set a backend's operator
    /// state. A write needs a token: without `admin.token` anyone who reaches the listener
    /// could take machines out, so the endpoint is closed (403) and says why.
    fn backend_action(
        &self,
        method: &Method,
        action: &str,
        query: &str,
        authorization: Option<&[u8]>,
    ) -> Reply {
        let Some(state) = BackendState::parse(action) else {
            return Reply::error(
                404,
                "unknown action; POST /backends/drain, /backends/ready or /backends/maint",
            );
        };
        if method != Method::POST {
            let mut reply = Reply::error(405, "operator actions are POST requests");
            reply.headers.push(("Allow", "POST"));
            return reply;
        }
        if self.token.is_none() {
            return Reply::error(
                403,
                "operator actions need admin.token in the config (Authorization: Bearer TOKEN)",
            );
        }
        if !self.authorized(authorization) {
            let mut reply = Reply::error(401, "missing or wrong bearer token");
            reply.headers.push(("WWW-Authenticate", "Bearer"));
            return reply;
        }
        let (mut service, mut backend) = (None, None);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "service" => service = Some(v.into_owned()),
                "backend" => backend = Some(v.into_owned()),
                _ => {}
            }
        }
        let (Some(service), Some(backend)) = (service, backend) else {
            return Reply::error(
                400,
                "usage: POST /backends/ACTION?service=NAME&backend=ADDRESS",
            );
        };
        let Some(s) = self.services.iter().find(|s| s.pool.name == service) else {
            return Reply::error(404, &format!("no service named '{service}'"));
        };
        // The address as written in the config, or what it resolved to.
        let current = s.pool.state();
        let Some(member) = current
            .members()
            .iter()
            .find(|m| m.address == backend || m.addr.to_string() == backend)
        else {
            return Reply::error(
                404,
                &format!("service '{service}' has no backend '{backend}'"),
            );
        };
        let Some(previous) = s.pool.set_state(&member.address, state) else {
            return Reply::error(409, "the backend left the config meanwhile; try again");
        };
        Reply::json(
            200,
            &json!({
                "service": service,
                "backend": member.address,
                "state": state.as_str(),
                "previous": previous.as_str(),
            }),
        )
    }

    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        constant_time_eq(given, token.as_bytes())
    }

    /// `roost_backend_up` from the pools' current health and `roost_wps_running_jobs` from
    /// their job tables; series of backends a reload removed disappear.
    fn refresh_gauges(&self) {
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

    fn status(&self) -> Value {
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
    fn history(&self, query: &str) -> Reply {
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

    fn route(&self, query: &str) -> Reply {
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
        let (backend, role, reason, outcome) = match route::lookup(policy, &key, &*state) {
            Ok(r) => (
                Some(state.members()[r.backend].addr.to_string()),
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
                "backend": backend,
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

/// Compare without an early exit, so the time taken does not tell how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // A POST may carry a body nobody reads: consume it (bounded) so that the connection
        // stays in step for the next request.
        let mut body_bytes = 0usize;
        while body_bytes <= MAX_IGNORED_BODY {
            match session.read_request_body().await {
                Ok(Some(chunk)) => body_bytes += chunk.len(),
                _ => break,
            }
        }
        if body_bytes > MAX_IGNORED_BODY {
            session.set_keepalive(None);
        }
        let req = session.req_header();
        let reply = self.handle(
            &req.method,
            req.uri.path(),
            req.uri.query(),
            req.headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        );
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("Content-Type", reply.content_type)
            .header("Content-Length", reply.body.len())
            .header("Cache-Control", "no-store");
        for (k, v) in reply.headers {
            builder = builder.header(k, v);
        }
        builder.body(reply.body).unwrap_or_else(|_| {
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Vec::new())
                .expect("static response")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn admin(token: Option<&str>) -> Admin {
        let config = Config::from_yaml(
            "services:\n  - name: fp\n    listen: 127.0.0.1:8093\n    backends: [127.0.0.11:8093, 127.0.0.12:8093, 127.0.0.13:8093]\n",
            "t.yaml",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let services = config
            .services
            .iter()
            .map(|s| AdminService {
                pool: Arc::new(Pool::new(s, Arc::clone(&metrics)).unwrap()),
                listen: s.listen,
            })
            .collect();
        Admin::new(services, token.map(str::to_string), metrics)
    }

    fn get(a: &Admin, path: &str, query: Option<&str>) -> Reply {
        a.handle(&Method::GET, path, query, None)
    }

    fn json_of(r: &Reply) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn route_agrees_with_the_nginx_pins() {
        let a = admin(None);
        // machine-0 → .12, abc → .11 (see pool::tests).
        for (key, want) in [("machine-0", "127.0.0.12:8093"), ("abc", "127.0.0.11:8093")] {
            let r = get(&a, "/route", Some(&format!("service=fp&key={key}")));
            assert_eq!(r.status, 200);
            let v = json_of(&r);
            assert_eq!(v["backend"], want, "{key}");
            assert_eq!(v["role"], "owner");
            assert_eq!(v["decision"], "forward");
        }
    }

    #[test]
    fn route_errors() {
        let a = admin(None);
        assert_eq!(get(&a, "/route", None).status, 400);
        assert_eq!(get(&a, "/route", Some("service=fp")).status, 400);
        assert_eq!(get(&a, "/route", Some("service=nope&key=a")).status, 404);
        assert_eq!(get(&a, "/route", Some("service=fp&key=")).status, 400);
        let long = "k".repeat(300);
        assert_eq!(
            get(&a, "/route", Some(&format!("service=fp&key={long}"))).status,
            400
        );
        // Percent-encoded keys are decoded.
        let r = get(&a, "/route", Some("service=fp&key=a%20b"));
        assert_eq!(json_of(&r)["key"], "a b");
    }

    #[test]
    fn status_lists_every_backend() {
        let v = json_of(&get(&admin(None), "/status", None));
        let backends = v["services"][0]["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 3);
        assert_eq!(backends[1]["addr"], "127.0.0.12:8093");
        assert_eq!(backends[1]["healthy"], true);
        assert_eq!(backends[1]["running_jobs"], 0);
        assert_eq!(backends[1]["keys"], 0);
        assert_eq!(backends[1]["ejected"], false);
        assert_eq!(v["services"][0]["panic"], false);
        assert_eq!(v["services"][0]["panic_threshold"], 0);
        assert_eq!(v["services"][0]["listen"], "127.0.0.1:8093");
        assert_eq!(v["services"][0]["when_down"], "failover");
        assert_eq!(v["services"][0]["missing"], "round_robin");
    }

    #[test]
    fn methods_paths_and_tokens() {
        let a = admin(Some("s3cret-token-0123456789"));
        let post = a.handle(&Method::POST, "/status", None, None);
        assert_eq!(post.status, 405);
        assert_eq!(post.headers, [("Allow", "GET")]);
        let get_action = get(
            &a,
            "/backends/drain",
            Some("service=fp&backend=127.0.0.11:8093"),
        );
        assert_eq!(get_action.status, 405);
        assert_eq!(get_action.headers, [("Allow", "POST")]);
        assert_eq!(get(&a, "/nope", None).status, 404);
        assert_eq!(
            get(&a, "/", None).status,
            200,
            "the page itself holds no data"
        );
        assert_eq!(get(&a, "/status", None).status, 401);
        let healthz = get(&a, "/healthz", None);
        assert_eq!(healthz.status, 200, "no token needed");
        assert_eq!(json_of(&healthz)["status"], "serving");
        let stopping = Arc::new(AtomicBool::new(true));
        let a = a.with_draining(stopping);
        assert_eq!(get(&a, "/healthz", None).status, 503);
        let wrong = a.handle(&Method::GET, "/metrics", None, Some(b"Bearer nope"));
        assert_eq!(wrong.status, 401);
        let right = a.handle(
            &Method::GET,
            "/metrics",
            None,
            Some(b"Bearer s3cret-token-0123456789"),
        );
        assert_eq!(right.status, 200);
        assert!(String::from_utf8_lossy(&right.body).contains("roost_backend_up"));
    }

    #[test]
    fn history_has_a_point_per_sample_and_the_running_interval() {
        let a = admin(None);
        let pool = &a.services[0].pool;
        // Before the first sample: no interval yet.
        let v = json_of(&get(&a, "/history", None));
        assert_eq!(v["interval_seconds"], 10);
        assert_eq!(v["services"][0]["backends"][0]["points"], json!([]));
        pool.sample_history();
        let state = pool.state();
        for _ in 0..50 {
            state.count(Some(1), 200, std::time::Duration::from_millis(3));
        }
        pool.sample_history();
        state.count(Some(1), 200, std::time::Duration::from_millis(3));
        let v = json_of(&get(&a, "/history", Some("service=fp")));
        let b = &v["services"][0]["backends"][1];
        assert_eq!(b["addr"], "127.0.0.12:8093");
        let points = b["points"].as_array().unwrap();
        assert_eq!(points.len(), 2, "{points:?}");
        assert_eq!(points[0]["requests"], 50);
        assert_eq!(points[0]["partial"], false);
        let p99 = points[0]["p99_ms"].as_f64().unwrap();
        assert!(p99 > 2.0 && p99 <= 3.0, "{p99}");
        assert_eq!(points[1]["requests"], 1);
        assert_eq!(points[1]["partial"], true);
        let idle = &v["services"][0]["backends"][0]["points"][0];
        assert_eq!(idle["requests"], 0);
        assert_eq!(idle["p99_ms"], Value::Null);
        assert_eq!(get(&a, "/history", Some("service=nope")).status, 404);
    }

    fn post(a: &Admin, path: &str, query: &str, token: Option<&[u8]>) -> Reply {
        a.handle(&Method::POST, path, Some(query), token)
    }

    #[test]
    fn operator_actions_need_a_token_and_name_what_is_wrong() {
        let q = "service=fp&backend=127.0.0.12:8093";
        let open = admin(None);
        let r = post(&open, "/backends/drain", q, None);
        assert_eq!(r.status, 403);
        assert!(json_of(&r)["error"]
            .as_str()
            .unwrap()
            .contains("admin.token"));

        let a = admin(Some("s3cret-token-0123456789"));
        let token: &[u8] = b"Bearer s3cret-token-0123456789";
        assert_eq!(post(&a, "/backends/drain", q, None).status, 401);
        assert_eq!(
            post(&a, "/backends/drain", q, Some(b"Bearer nope")).status,
            401
        );
        assert_eq!(post(&a, "/backends/nap", q, Some(token)).status, 404);
        assert_eq!(
            post(&a, "/backends/drain", "service=fp", Some(token)).status,
            400
        );
        assert_eq!(
            post(
                &a,
                "/backends/drain",
                "service=no&backend=1.2.3.4:1",
                Some(token)
            )
            .status,
            404
        );
        assert_eq!(
            post(
                &a,
                "/backends/drain",
                "service=fp&backend=127.0.0.99:1",
                Some(token)
            )
            .status,
            404
        );

        let r = post(&a, "/backends/drain", q, Some(token));
        assert_eq!(r.status, 200);
        assert_eq!(json_of(&r)["previous"], "ready");
        assert_eq!(json_of(&r)["state"], "drain");
        let status = json_of(&a.handle(&Method::GET, "/status", None, Some(token)));
        let b = &status["services"][0]["backends"][1];
        assert_eq!(b["state"], "drain");
        assert_eq!(b["in_flight"], 0);
        // Just drained: the idle time (default 5 min) has not passed yet.
        assert_eq!(b["drained"], false);
        // `/route` follows: machine-0 (owned by .12) goes elsewhere now.
        let r = a.handle(
            &Method::GET,
            "/route",
            Some("service=fp&key=machine-0"),
            Some(token),
        );
        assert_ne!(json_of(&r)["backend"], "127.0.0.12:8093");
        let r = post(&a, "/backends/ready", q, Some(token));
        assert_eq!(json_of(&r)["previous"], "drain");
        // Both changes are in the service's recent events, newest first, with their reason.
        let status = json_of(&a.handle(&Method::GET, "/status", None, Some(token)));
        let events = status["services"][0]["events"].as_array().unwrap();
        let details: Vec<&str> = events
            .iter()
            .map(|e| e["detail"].as_str().unwrap())
            .collect();
        assert_eq!(
            details,
            ["drain -> ready (operator)", "ready -> drain (operator)"]
        );
        assert_eq!(events[0]["kind"], "state");
        assert_eq!(events[0]["backend"], "127.0.0.12:8093");
        let metrics = a.handle(&Method::GET, "/metrics", None, Some(token));
        let text = String::from_utf8_lossy(&metrics.body);
        assert!(
            text.contains("roost_backend_state_changes_total{service=\"fp\",to=\"drain\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "roost_backend_state{backend=\"127.0.0.12:8093\",service=\"fp\",state=\"ready\"} 1"
            ),
            "{text}"
        );
    }
}
