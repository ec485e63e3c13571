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
//!
//! This file is the routing of requests, the token check and the `ServeHttp` glue; `views.rs`
//! renders the JSON answers (`/status`, `/history`, `/route`) and refreshes the gauges
//! `/metrics` reads; `actions.rs` is the operator actions (`POST /backends/ACTION`).

mod actions;
mod views;

use crate::service::pool::Pool;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        constant_time_eq(given, token.as_bytes())
    }
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
#[path = "handle_tests.rs"]
mod tests;
