//! The per-service Pingora `ProxyHttp`: the request's path through Pingora's phases.
//!
//! - `new_ctx` takes the request's one snapshot of the service state; every later phase
//!   reads that snapshot, never the live pool, so a reload in the middle of a request cannot
//!   mix two configs.
//! - `request_filter` screens the request and routes it with the route resolver; refusals
//!   are written as [`Refusal`]s.
//! - `upstream_peer` connects; a refused connection is retried once on the backend the
//!   resolver picks without the refusing one.
//! - the upstream filters set the forwarding headers and watch responses for WPS jobs
//!   (`wps_affinity`); `logging` counts and logs.
//! - passive health: each attempt's outcome is reported to the pool once: a refused
//!   connection in `fail_to_connect`, the response status in `upstream_response_filter`, a
//!   connection reset before any answer in `logging` (`policy::outlier` says what counts).
//!
//! This file is the proxy and its phases; `routing.rs` holds what the phases call: the
//! backend choice through the route resolver, the WPS job bookkeeping, writing a refusal.

mod routing;

use routing::{client_ip, status_text};

use crate::policy::headers::{self, Forwarding};
use crate::policy::outlier;
use crate::policy::refusal::{self, Failure};
use crate::policy::route::Move;
use crate::policy::screen;
use crate::policy::target;
use crate::policy::wps::{self, JobScanner};
use crate::service::context::RequestCtx;
use crate::service::pool::Pool;
use crate::telemetry::access_log::{AccessLog, Entry};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, OrErr, Result};
use prometheus::{Histogram, IntCounter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long an idle pooled connection to a backend is kept for reuse.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct WpsProxy {
    pool: Arc<Pool>,
    service: Arc<str>,
    access_log: Option<AccessLog>,
    duration: Histogram,
    without_key: IntCounter,
    retries: IntCounter,
    /// Set once this process is handing over to a new one or stopping: from then on every
    /// response closes its connection, so keep-alive clients reconnect (to the new process)
    /// instead of sending into a connection that is about to be dropped.
    draining: Arc<AtomicBool>,
    /// `wps_affinity`: what the pool's job table did.
    jobs_learned: IntCounter,
    jobs_routed: IntCounter,
    jobs_unavailable: IntCounter,
    /// `roost_wps_job_moves_total` by [`Move`].
    job_moves: [IntCounter; Move::ALL.len()],
    /// `server.preserve_header_case`: whether backend responses are read with the map that
    /// remembers their header names' case (the client side: `ops::server`).
    preserve_header_case: bool,
}

impl WpsProxy {
    pub fn new(
        pool: Arc<Pool>,
        draining: Arc<AtomicBool>,
        access_log: Option<AccessLog>,
        preserve_header_case: bool,
    ) -> Self {
        let name = pool.name.as_str();
        let m = &pool.metrics;
        Self {
            service: name.into(),
            access_log,
            duration: m.duration.with_label_values(&[name]),
            without_key: m.without_key.with_label_values(&[name]),
            retries: m.retries.with_label_values(&[name]),
            jobs_learned: m.wps_affinity.with_label_values(&[name, "learned"]),
            jobs_routed: m.wps_affinity.with_label_values(&[name, "routed"]),
            jobs_unavailable: m.wps_affinity.with_label_values(&[name, "unavailable"]),
            job_moves: Move::ALL
                .map(|why| m.wps_job_moves.with_label_values(&[name, why.as_str()])),
            pool,
            draining,
            preserve_header_case,
        }
    }
}

#[async_trait]
impl ProxyHttp for WpsProxy {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // No modules: Pingora's default adds a (disabled) compression module that still runs
        // on every response. A WPS proxy passes bodies through untouched.
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.pool.state())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.phase("filter");
        // Requests a client pipelines are answered in order, each its own session (RFC 9112
        // §9.3.2); without this Pingora answers the first and drops the rest. The guard hands
        // on only requests whose framing it accepted, and every refusal closes the connection.
        session.as_downstream_mut().set_pipelining_enabled(true);
        let (limits, timeouts) = (ctx.state.settings.limits, ctx.state.settings.timeouts);
        let req = session.req_header();
        let screened = screen::screen(
            &req.method,
            req.version,
            req.raw_path().len(),
            &req.headers,
            &limits,
        );
        if let Err(refusal) = screened {
            self.respond(session, &refusal, ctx).await?;
            return Ok(true);
        }
        // Pingora's read timeout is per read: it bounds each pause in the body, not the whole.
        session.set_read_timeout(Some(timeouts.client_body));
        // Keep the connection, with no keep-alive timer of Pingora's (it would arm one for
        // every request): the connection guard bounds the wait with `timeouts.keepalive`.
        session.set_keepalive(Some(0));
        match self.choose(session, None, ctx) {
            Ok(backend) => {
                ctx.backend = Some(backend);
                Ok(false)
            }
            Err(refusal) => {
                self.respond(session, &refusal, ctx).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.phase("peer");
        if let Some(refused) = ctx.refused.take() {
            // Retry after a refused connection: same rules, minus the backend that refused.
            match self.choose(session, Some(refused), ctx) {
                Ok(backend) => {
                    ctx.backend = Some(backend);
                    ctx.judged = false;
                }
                Err(refusal) => {
                    return Error::e_explain(ErrorType::HTTPStatus(refusal.status), refusal.message)
                }
            }
        }
        let Some(i) = ctx.backend else {
            return Error::e_explain(ErrorType::InternalError, "no backend chosen");
        };
        // In flight to this member until the request ends (or a retry replaces it).
        let member = &ctx.state.members()[i];
        ctx.in_flight = Some(member.operated.start_request(Instant::now()));
        let mut peer = HttpPeer::new(ctx.state.members()[i].addr, false, String::new());
        let timeouts = &ctx.state.settings.timeouts;
        peer.options.connection_timeout = Some(timeouts.upstream_connect);
        peer.options.read_timeout = Some(timeouts.upstream_read);
        peer.options.write_timeout = Some(timeouts.upstream_write);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        peer.options.h1_no_header_case = !self.preserve_header_case;
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(i), false) = (ctx.backend, ctx.judged) {
            ctx.judged = true;
            if outlier::fails_backend(&e.etype) {
                self.pool.failed(&ctx.state, i, e.etype.as_str());
            }
        }
        let backend = ctx.backend.map(|i| ctx.state.members()[i].addr.to_string());
        self.pool
            .metrics
            .connect_failures
            .with_label_values(&[&*self.service, backend.as_deref().unwrap_or("-")])
            .inc();
        ctx.connect_failed = true;
        // Nothing reached the backend, so even a POST is safe to send elsewhere; once only,
        // so a dead backend costs one extra connect and not a walk round the whole ring.
        let retry = ctx.may_fail_over && !ctx.retried;
        if retry {
            ctx.retried = true;
            ctx.refused = ctx.backend;
            self.retries.inc();
        }
        e.set_retry(retry);
        e
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Content-Length was checked up front; this catches chunked bodies.
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            let max_body = ctx.state.settings.limits.max_body;
            if ctx.body_bytes > max_body {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    format!("request body exceeds {max_body} bytes"),
                );
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.phase("upstream_request");
        // RFC 9112 §3.2.2: an absolute-form target goes on in origin-form, with its authority
        // as Host (the one the client sent is ignored).
        if let Some((path, authority)) = target::origin_form(upstream_request.raw_path()) {
            let uri = path
                .parse()
                .or_err(ErrorType::InvalidHTTPHeader, "origin-form of the target")?;
            upstream_request.set_uri(uri);
            upstream_request.insert_header(http::header::HOST, authority)?;
        }
        let state = &ctx.state;
        // Only HTTP/1.0 clients omit Host: look the address up only then.
        let fallback_host = match (
            upstream_request.headers.contains_key(http::header::HOST),
            ctx.backend,
        ) {
            (false, Some(i)) => state.members()[i].address.as_str(),
            (false, None) => "localhost",
            (true, _) => "",
        };
        headers::apply(
            upstream_request,
            &Forwarding {
                client_ip: client_ip(session),
                trust_incoming: state.settings.trust_forwarded_headers,
                fallback_host,
            },
        );
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.phase("upstream_response");
        let status = upstream_response.status.as_u16();
        // A 1xx (100 Continue) is not the answer yet.
        if let (Some(i), false, true) = (ctx.backend, ctx.judged, status >= 200) {
            ctx.judged = true;
            if outlier::status_fails_backend(status) {
                self.pool.failed(&ctx.state, i, status_text(status));
            } else if status < 500 {
                // A 500/501 is about the request: it neither counts against the backend nor
                // shows that it serves.
                self.pool.answered(&ctx.state, i);
            }
        }
        if ctx.state.settings.route.wps_affinity
            && wps::worth_scanning(
                upstream_response.status.as_u16(),
                &upstream_response.headers,
            )
        {
            ctx.job_scan = Some(JobScanner::default());
        }
        Ok(())
    }

    /// `wps_affinity`: learn which job this response is about and its state, chunk by chunk;
    /// the body is passed on untouched and never held back.
    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(scan) = ctx.job_scan.as_mut() else {
            return Ok(None);
        };
        let mut seen = body.as_ref().and_then(|chunk| scan.feed(chunk));
        if end_of_stream {
            seen = seen.or_else(|| scan.finish());
        }
        if scan.is_done() {
            ctx.job_scan = None;
        }
        if let Some(seen) = seen {
            self.observe_job(session, ctx, seen);
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.phase("response");
        ctx.debug_header(upstream_response)?;
        if self.draining.load(Ordering::Relaxed) {
            // Pingora then answers with `Connection: close` and closes after the body.
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy
    where
        RequestCtx: Send + Sync,
    {
        let policy = &ctx.state.settings.route;
        let failure = Failure {
            etype: e.etype(),
            source: e.esource(),
            context: e.context.as_ref().map(|c| c.as_str()),
            connect_failed: ctx.connect_failed,
            may_fail_over: ctx.may_fail_over,
        };
        let answer = refusal::for_failure(
            failure,
            &policy.service,
            policy.header.as_str(),
            policy.retry_after,
        );
        let error_code = match &answer {
            Some(r) => {
                ctx.phase("fail");
                if let Err(write_error) = self.respond(session, r, ctx).await {
                    log::debug!("could not send error response: {write_error}");
                }
                r.status
            }
            None => 0,
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // A connection that broke before the backend answered (reset, closed): the other
        // outcomes were reported when they happened.
        if let (Some(e), Some(i), false) = (e, ctx.backend, ctx.judged) {
            if e.esource() == &pingora::ErrorSource::Upstream && outlier::fails_backend(e.etype()) {
                ctx.judged = true;
                self.pool.failed(&ctx.state, i, e.etype().as_str());
            }
        }
        // 0 when nothing was sent (the client went away first).
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // A job named by a body whose end the filter did not see (its state, if any, was not
        // in it).
        if let Some(seen) = ctx.job_scan.take().and_then(|mut scan| scan.finish()) {
            self.observe_job(session, ctx, seen);
        }
        let elapsed = ctx.start.elapsed();
        self.duration.observe(elapsed.as_secs_f64());
        ctx.state.count(ctx.backend, status, elapsed);
        if let Some(log) = &self.access_log {
            let req = session.req_header();
            log.log(Entry {
                time: SystemTime::now(),
                service: Arc::clone(&self.service),
                client: client_ip(session),
                method: req.method.as_str().to_string(),
                path: req.uri.to_string(),
                status,
                key: ctx.key.take(),
                backend: ctx.backend.map(|i| ctx.state.members()[i].addr),
                duration: elapsed,
                bytes: session.body_bytes_sent(),
                moved: ctx.moved.map(|m| m.as_str()),
            });
        }
    }
}
