//! The per-service Pingora `ProxyHttp`: picks the backend for each request (affinity key →
//! ring, or round robin), answers refusals itself (400/503 with a one-line body), retries a
//! refused connection once on the next backend, and sets the forwarding headers.

use crate::config::{MissingKey, WhenDown};
use crate::policy::headers::{self, Forwarding};
use crate::policy::key::{self, Key};
use crate::policy::screen;
use crate::policy::select::Decision;
use crate::policy::wps::{self, JobScanner, JobTable};
use crate::service::pool::Pool;
use crate::telemetry::access_log::{AccessLog, Entry};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
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
    /// `wps_affinity`: the backend of each WPS job seen in a response, and what it did.
    jobs: JobTable,
    jobs_learned: IntCounter,
    jobs_routed: IntCounter,
    jobs_unavailable: IntCounter,
}

impl WpsProxy {
    pub fn new(pool: Arc<Pool>, draining: Arc<AtomicBool>, access_log: Option<AccessLog>) -> Self {
        let name = pool.name.as_str();
        Self {
            service: name.into(),
            access_log,
            duration: pool.metrics.duration.with_label_values(&[name]),
            without_key: pool.metrics.without_key.with_label_values(&[name]),
            retries: pool.metrics.retries.with_label_values(&[name]),
            jobs: JobTable::default(),
            jobs_learned: pool
                .metrics
                .wps_affinity
                .with_label_values(&[name, "learned"]),
            jobs_routed: pool
                .metrics
                .wps_affinity
                .with_label_values(&[name, "routed"]),
            jobs_unavailable: pool
                .metrics
                .wps_affinity
                .with_label_values(&[name, "unavailable"]),
            pool,
            draining,
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    /// The valid affinity key, kept for the access log.
    key: Option<String>,
    /// The backend chosen for this request.
    backend: Option<Backend>,
    /// A backend that refused the connection; the retry picks another one.
    refused: Option<Backend>,
    /// Whether the request may go to a backend other than its key's owner.
    may_fail_over: bool,
    /// Whether a connection to a backend failed for this request.
    connect_failed: bool,
    /// Whether the one retry after a refused connection was used.
    retried: bool,
    /// Request body bytes received so far, against `limits.max_body`.
    body_bytes: u64,
    max_body: u64,
    /// `wps_affinity`: looking for the WPS job in the response body as it streams past.
    job_scan: Option<JobScanner>,
}

/// A request Roost answers itself instead of forwarding.
struct Refusal {
    status: u16,
    message: String,
    retry_after: Option<u64>,
}

impl WpsProxy {
    /// Decide where this request goes. `exclude` is a backend that just refused it.
    fn choose(
        &self,
        session: &Session,
        exclude: Option<&Backend>,
        ctx: &mut RequestCtx,
    ) -> Result<Backend, Refusal> {
        let pool = &self.pool;
        let settings = pool.settings();
        let key = key::extract(&session.req_header().headers, &settings.header);
        if matches!(key, Key::Missing) && exclude.is_none() {
            self.without_key.inc();
        }
        if matches!(key, Key::Missing) && settings.wps_affinity {
            if let Some(backend) = self.job_backend(session, exclude) {
                // Refused: the retry goes by `hash.missing` (the job's backend is excluded).
                ctx.may_fail_over = true;
                return Ok(backend);
            }
        }
        let decision = match key {
            Key::Present(k) => {
                if ctx.key.is_none() && self.access_log.is_some() {
                    ctx.key = Some(String::from_utf8_lossy(k).into_owned());
                }
                ctx.may_fail_over = settings.when_down == WhenDown::Failover;
                pool.select_by_key(k, exclude)
            }
            Key::Invalid(reason) => {
                return Err(Refusal {
                    status: 400,
                    message: format!("{} header refused: {reason}", settings.header),
                    retry_after: None,
                })
            }
            Key::Missing => match settings.missing {
                MissingKey::RoundRobin => {
                    ctx.may_fail_over = true;
                    pool.select_round_robin(exclude)
                }
                MissingKey::ClientIp => {
                    ctx.may_fail_over = settings.when_down == WhenDown::Failover;
                    let ip = client_ip(session)
                        .map(|ip| ip.to_string())
                        .unwrap_or_default();
                    pool.select_by_key(ip.as_bytes(), exclude)
                }
                MissingKey::Reject => {
                    return Err(Refusal {
                        status: 400,
                        message: format!(
                            "missing {} header: service '{}' routes every request by it",
                            settings.header, pool.name
                        ),
                        retry_after: None,
                    })
                }
            },
        };
        match decision {
            Decision::Forward { backend, .. } => Ok(backend),
            Decision::OwnerDown => Err(self.owner_down()),
            Decision::NoneHealthy => Err(Refusal {
                status: 503,
                message: format!("no healthy backend for service '{}'", pool.name),
                retry_after: Some(self.pool.retry_after_secs()),
            }),
        }
    }

    /// `wps_affinity`: the backend that ran the job named in the request URL, when known and
    /// usable.
    fn job_backend(&self, session: &Session, exclude: Option<&Backend>) -> Option<Backend> {
        let uri = session
            .req_header()
            .uri
            .path_and_query()?
            .as_str()
            .as_bytes();
        let now = Instant::now();
        let addr = wps::job_ids(uri)
            .take(wps::MAX_IDS_PER_URL)
            .find_map(|id| self.jobs.backend_of(id, now))?;
        let backend = self.pool.usable_member(addr, exclude);
        match (&backend, exclude) {
            (Some(_), None) => self.jobs_routed.inc(),
            (None, None) => self.jobs_unavailable.inc(),
            _ => {} // the retry after a refused connection: counted once, above
        }
        backend
    }

    fn owner_down(&self) -> Refusal {
        Refusal {
            status: 503,
            message: format!(
                "the backend that holds this {}'s jobs is down (service '{}'); retry later",
                self.pool.settings().header,
                self.pool.name
            ),
            retry_after: Some(self.pool.retry_after_secs()),
        }
    }

    async fn respond(&self, session: &mut Session, refusal: &Refusal) -> Result<()> {
        let body = Bytes::from(format!("roost: {}\n", refusal.message));
        let mut resp = ResponseHeader::build(refusal.status, Some(4))?;
        resp.insert_header("Content-Type", "text/plain; charset=utf-8")?;
        resp.insert_header("Content-Length", body.len().to_string())?;
        resp.insert_header("Cache-Control", "no-store")?;
        if let Some(secs) = refusal.retry_after {
            resp.insert_header("Retry-After", secs.to_string())?;
        }
        // Closes the connection afterwards: an unread request body must not be taken for the
        // next request.
        session
            .as_downstream_mut()
            .write_error_response(resp, body)
            .await
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for WpsProxy {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // No modules: Pingora's default adds a (disabled) compression module that still runs
        // on every response. A WPS proxy passes bodies through untouched.
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            key: None,
            backend: None,
            refused: None,
            may_fail_over: false,
            connect_failed: false,
            retried: false,
            body_bytes: 0,
            max_body: u64::MAX,
            job_scan: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let settings = self.pool.settings();
        let req = session.req_header();
        if let Err(r) = screen::screen(
            &req.method,
            req.version,
            req.raw_path().len(),
            &req.headers,
            &settings.limits,
        ) {
            let refusal = Refusal {
                status: r.status,
                message: r.reason,
                retry_after: None,
            };
            self.respond(session, &refusal).await?;
            return Ok(true);
        }
        ctx.max_body = settings.limits.max_body;
        // Pingora's read timeout is per read: it bounds each pause in the body, not the whole.
        session.set_read_timeout(Some(settings.timeouts.client_body));
        session.set_keepalive(Some(settings.timeouts.keepalive.as_secs().max(1)));
        match self.choose(session, None, ctx) {
            Ok(backend) => {
                ctx.backend = Some(backend);
                Ok(false)
            }
            Err(refusal) => {
                self.respond(session, &refusal).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if let Some(refused) = ctx.refused.take() {
            // Retry after a refused connection: same rules, minus the backend that refused.
            match self.choose(session, Some(&refused), ctx) {
                Ok(backend) => ctx.backend = Some(backend),
                Err(refusal) => {
                    return Error::e_explain(ErrorType::HTTPStatus(refusal.status), refusal.message)
                }
            }
        }
        let Some(backend) = ctx.backend.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no backend chosen");
        };
        let addr = *backend.as_inet().expect("pools hold inet backends");
        let mut peer = HttpPeer::new(addr, false, String::new());
        let timeouts = self.pool.settings().timeouts;
        peer.options.connection_timeout = Some(timeouts.upstream_connect);
        peer.options.read_timeout = Some(timeouts.upstream_read);
        peer.options.write_timeout = Some(timeouts.upstream_write);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let backend = ctx.backend.as_ref().map(|b| b.addr.to_string());
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
            ctx.refused = ctx.backend.clone();
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
            if ctx.body_bytes > ctx.max_body {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    format!("request body exceeds {} bytes", ctx.max_body),
                );
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.pool.settings().wps_affinity
            && wps::worth_scanning(
                upstream_response.status.as_u16(),
                &upstream_response.headers,
            )
        {
            ctx.job_scan = Some(JobScanner::default());
        }
        Ok(())
    }

    /// `wps_affinity`: learn which job this response is about, chunk by chunk; the body is
    /// passed on untouched and never held back.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Some(scan), Some(chunk)) = (ctx.job_scan.as_mut(), body.as_ref()) {
            let job = scan.feed(chunk);
            if scan.is_done() {
                ctx.job_scan = None;
            }
            if let (Some(job), Some(addr)) = (job, ctx.backend.as_ref().and_then(|b| b.as_inet())) {
                self.jobs.learn(job, *addr, Instant::now());
                self.jobs_learned.inc();
            }
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.draining.load(Ordering::Relaxed) {
            // Pingora then answers with `Connection: close` and closes after the body.
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Only HTTP/1.0 clients omit Host: look the address up only then.
        let fallback_host = if upstream_request.headers.contains_key(http::header::HOST) {
            String::new()
        } else {
            ctx.backend
                .as_ref()
                .and_then(|b| self.pool.address_of(b))
                .unwrap_or_else(|| "localhost".to_string())
        };
        headers::apply(
            upstream_request,
            &Forwarding {
                client_ip: client_ip(session),
                trust_incoming: self.pool.settings().trust_forwarded_headers,
                fallback_host: &fallback_host,
            },
        );
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
        let refusal = match e.etype() {
            ErrorType::HTTPStatus(code) => Some(Refusal {
                status: *code,
                message: e
                    .context
                    .as_ref()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| format!("error {code}")),
                retry_after: (*code == 503).then(|| self.pool.retry_after_secs()),
            }),
            _ => match e.esource() {
                ErrorSource::Upstream if ctx.connect_failed && !ctx.may_fail_over => {
                    Some(self.owner_down())
                }
                ErrorSource::Upstream
                    if matches!(
                        e.etype(),
                        ErrorType::ConnectTimedout
                            | ErrorType::ReadTimedout
                            | ErrorType::WriteTimedout
                    ) =>
                {
                    Some(Refusal {
                        status: 504,
                        message: format!(
                            "gateway timeout: a backend of service '{}' did not answer in time",
                            self.pool.name
                        ),
                        retry_after: None,
                    })
                }
                ErrorSource::Upstream => Some(Refusal {
                    status: 502,
                    message: format!(
                        "bad gateway: a backend of service '{}' failed",
                        self.pool.name
                    ),
                    retry_after: None,
                }),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::ReadTimedout => Some(Refusal {
                        status: 408,
                        message: "request timeout: the request body stopped arriving".to_string(),
                        retry_after: None,
                    }),
                    // The client is gone; nothing to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    _ => Some(Refusal {
                        status: 400,
                        message: "bad request".to_string(),
                        retry_after: None,
                    }),
                },
                ErrorSource::Internal | ErrorSource::Unset => Some(Refusal {
                    status: 500,
                    message: "internal error".to_string(),
                    retry_after: None,
                }),
            },
        };
        let error_code = match &refusal {
            Some(r) => {
                if let Err(write_error) = self.respond(session, r).await {
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

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        // 0 when nothing was sent (the client went away first).
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        self.duration.observe(elapsed.as_secs_f64());
        self.pool.count_request(ctx.backend.as_ref(), status);
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
                backend: ctx.backend.as_ref().and_then(|b| b.as_inet().copied()),
                duration: elapsed,
                bytes: session.body_bytes_sent(),
            });
        }
    }
}
