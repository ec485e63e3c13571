//! The operator actions of the admin listener: `POST /backends/drain|ready|maint`, which set
//! a backend's operator state (only with an `admin.token`) and say what is wrong otherwise.

use super::{Admin, Reply};
use crate::config::BackendState;
use http::Method;
use serde_json::json;

impl Admin {
    /// `POST /backends/{drain,ready,maint}?service=S&backend=ADDR`: set a backend's operator
    /// state. A write needs a token: without `admin.token` anyone who reaches the listener
    /// could take machines out, so the endpoint is closed (403) and says why.
    pub(super) fn backend_action(
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
        // Its id, the address as written in the config, or what it resolved to.
        let current = s.pool.state();
        let Some(member) = current.members().iter().find(|m| {
            *m.identity == *backend || m.address == backend || m.addr.to_string() == backend
        }) else {
            return Reply::error(
                404,
                &format!("service '{service}' has no backend '{backend}'"),
            );
        };
        let Some(previous) = s.pool.set_state(&member.identity, state) else {
            return Reply::error(409, "the backend left the config meanwhile; try again");
        };
        Reply::json(
            200,
            &json!({
                "service": service,
                "backend": &*member.identity,
                "state": state.as_str(),
                "previous": previous.as_str(),
            }),
        )
    }
}
