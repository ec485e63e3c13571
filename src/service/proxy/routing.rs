//! What the proxy's phases call: the backend choice through the route resolver (the key, a
//! job named in the URL, the sticky record and the moves of running jobs), a response's job
//! into the job table, a refusal written to the client.

use super::WpsProxy;
use crate::policy::key;
use crate::policy::refusal::Refusal;
use crate::policy::route::{self, Ask, Move};
use crate::policy::wps::{self, Sighting};
use crate::service::context::RequestCtx;
use crate::service::state::ServiceState;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::sync::Arc;
use std::time::Instant;

impl WpsProxy {
    /// Route this request with the one resolver; `exclude` is a member that just refused it.
    pub(super) fn choose(
        &self,
        session: &Session,
        exclude: Option<usize>,
        ctx: &mut RequestCtx,
    ) -> Result<usize, Refusal> {
        let state = Arc::clone(&ctx.state);
        let policy = &state.settings.route;
        let req = session.req_header();
        let key = key::extract(&req.headers, &policy.header);
        match key {
            key::Key::Missing if exclude.is_none() => self.without_key.inc(),
            key::Key::Present(k) if ctx.key.is_none() && self.access_log.is_some() => {
                ctx.key = Some(String::from_utf8_lossy(k).into_owned());
            }
            _ => {}
        }
        let ask = Ask {
            key: key.clone(),
            client_ip: client_ip(session),
            exclude,
            job: || self.job_backend(&state, req.uri.path_and_query(), exclude),
        };
        match route::resolve(policy, ask, &*state) {
            Ok(route) => {
                if let key::Key::Present(k) = key {
                    let moved = state.record(k, &route, Instant::now());
                    if let (Some(why), true) = (moved, policy.wps_affinity) {
                        self.jobs_moved(k, state.members()[route.backend].addr, why);
                    }
                }
                ctx.may_fail_over = route.may_fail_over;
                ctx.moved = route.moved;
                Ok(route.backend)
            }
            Err(why) => Err(why.refusal(policy)),
        }
    }

    /// `wps_affinity`: the member that ran the job named in the request URL, when known and
    /// usable.
    fn job_backend(
        &self,
        state: &ServiceState,
        target: Option<&http::uri::PathAndQuery>,
        exclude: Option<usize>,
    ) -> Option<usize> {
        let now = Instant::now();
        let addr = wps::job_ids(target?.as_str().as_bytes())
            .take(wps::MAX_IDS_PER_URL)
            .find_map(|id| self.pool.jobs().backend_of(id, now))?;
        let member = state.usable_at(addr, exclude);
        match (member, exclude) {
            (Some(_), None) => self.jobs_routed.inc(),
            (None, None) => self.jobs_unavailable.inc(),
            _ => {} // the retry after a refused connection: counted once, above
        }
        member
    }

    /// `key` just moved to `to`: each of its running jobs elsewhere is a "job moved machines"
    /// event (its files stay behind). Called once per move, not per request.
    fn jobs_moved(&self, key: &[u8], to: std::net::SocketAddr, why: Move) {
        for job in self.pool.jobs().moved_away(key, to) {
            self.job_moves[why as usize].inc();
            log::warn!(
                "wps_affinity: service={} job moved machines: job {} of key {:?} runs on {} \
                 but its key now goes to {} ({})",
                self.service,
                wps::format_uuid(job.id),
                String::from_utf8_lossy(key),
                job.from,
                to,
                why.as_str()
            );
        }
    }

    /// A response named a job: into the job table, with the state it reported and the
    /// request's key (so a running job pins it).
    pub(super) fn observe_job(&self, session: &Session, ctx: &RequestCtx, seen: Sighting) {
        let Some(i) = ctx.backend else {
            return;
        };
        let header = &ctx.state.settings.route.header;
        let key = match key::extract(&session.req_header().headers, header) {
            key::Key::Present(k) => Some(k),
            _ => None,
        };
        let addr = ctx.state.members()[i].addr;
        self.pool
            .jobs()
            .observe(seen.id, addr, key, seen.state, Instant::now());
        self.jobs_learned.inc();
    }

    pub(super) async fn respond(
        &self,
        session: &mut Session,
        refusal: &Refusal,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let body = Bytes::from(refusal.body());
        let mut resp = ResponseHeader::build(refusal.status, Some(4))?;
        for (name, value) in refusal.header_fields(body.len()) {
            resp.insert_header(name, value)?;
        }
        ctx.debug_header(&mut resp)?;
        // Closes the connection afterwards: an unread request body must not be taken for the
        // next request.
        session
            .as_downstream_mut()
            .write_error_response(resp, body)
            .await
    }
}

/// An upstream status for the "down" log line, without formatting on the request path.
pub(super) fn status_text(status: u16) -> &'static str {
    match status {
        502 => "answered 502",
        503 => "answered 503",
        504 => "answered 504",
        _ => "answered 5xx",
    }
}

pub(super) fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}
