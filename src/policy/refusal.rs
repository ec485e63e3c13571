//! The one refusal type: an answer Roost writes itself instead of forwarding a request (a
//! screening verdict, a key it will not route on, no usable backend, a backend that failed, a
//! connection the guard turns away).
//!
//! A [`Refusal`] renders itself both as raw HTTP/1 bytes (for the connection guard, which
//! answers before Pingora has parsed anything) and as the header fields of a Pingora response;
//! both come from [`Refusal::header_fields`], and the length is always computed from the body,
//! never written by hand. [`for_failure`] is the one mapping from a proxying error to the
//! refusal a client gets. Pure: no I/O.

use pingora::{ErrorSource, ErrorType};

/// An answer Roost writes itself. Every refusal closes the connection after it: an unread
/// request body must never be taken for the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// One line for the client, without the `roost: ` prefix or the newline.
    pub message: String,
    /// Seconds, for `Retry-After` (503 only).
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same refusal with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// `limits.max_connections` reached: the guard closes the connection at once.
    pub fn too_many_connections() -> Self {
        Self::new(503, "too many connections; retry").retry_after(1)
    }

    /// The raw header scan found something it must not pass on (bare LF, CL with TE, ...).
    pub fn malformed_header() -> Self {
        Self::new(400, "malformed or ambiguous request header")
    }

    /// `timeouts.client_header` ran out before the header was complete.
    pub fn header_timeout() -> Self {
        Self::new(408, "the request header did not arrive in time")
    }

    /// The body sent to the client.
    pub fn body(&self) -> String {
        format!("roost: {}\n", self.message)
    }

    /// The header fields of the answer for a body of `body_len` bytes, in the order they are
    /// sent. `Connection: close` is left to the writer (Pingora adds it itself).
    pub fn header_fields(&self, body_len: usize) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("Content-Type", "text/plain; charset=utf-8".to_string()),
            ("Content-Length", body_len.to_string()),
            ("Cache-Control", "no-store".to_string()),
        ];
        if let Some(secs) = self.retry_after {
            fields.push(("Retry-After", secs.to_string()));
        }
        fields
    }

    /// The whole answer as HTTP/1.1 bytes, for writing straight to a socket.
    pub fn to_http1(&self) -> Vec<u8> {
        let body = self.body();
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in self.header_fields(body.len()) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

/// What went wrong while proxying, as [`for_failure`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub etype: &'a ErrorType,
    pub source: &'a ErrorSource,
    /// The error's explanation (for `HTTPStatus` errors Roost raised itself: the message).
    pub context: Option<&'a str>,
    /// A connection to a backend failed for this request.
    pub connect_failed: bool,
    /// The request may go to a backend other than its key's owner.
    pub may_fail_over: bool,
}

/// What the client is told about a request that could not be proxied; `None` when the
/// client is gone and nothing can be answered. `service` and `header` name the service and its
/// key header in messages; `retry_after` is the wait for a 503.
pub fn for_failure(f: Failure, service: &str, header: &str, retry_after: u64) -> Option<Refusal> {
    if let ErrorType::HTTPStatus(code) = f.etype {
        let message = f
            .context
            .map_or_else(|| format!("error {code}"), str::to_string);
        let refusal = Refusal::new(*code, message);
        return Some(if *code == 503 {
            refusal.retry_after(retry_after)
        } else {
            refusal
        });
    }
    Some(match f.source {
        ErrorSource::Upstream if f.connect_failed && !f.may_fail_over => {
            owner_down(service, header).retry_after(retry_after)
        }
        ErrorSource::Upstream
            if matches!(
                f.etype,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ) =>
        {
            Refusal::new(
                504,
                format!("gateway timeout: a backend of service '{service}' did not answer in time"),
            )
        }
        ErrorSource::Upstream => Refusal::new(
            502,
            format!("bad gateway: a backend of service '{service}' failed"),
        ),
        ErrorSource::Downstream => match f.etype {
            ErrorType::ReadTimedout => {
                Refusal::new(408, "request timeout: the request body stopped arriving")
            }
            // The client is gone; nothing to answer.
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                return None
            }
            _ => Refusal::new(400, "bad request"),
        },
        ErrorSource::Internal | ErrorSource::Unset => Refusal::new(500, "internal error"),
    })
}

/// `when_down: reject` and the key's owner is down (Retry-After is the caller's to add).
pub fn owner_down(service: &str, header: &str) -> Refusal {
    Refusal::new(
        503,
        format!(
            "the backend that holds this {header}'s jobs is down (service '{service}'); retry later"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split raw bytes into head and body and check the declared length against the body.
    fn framed(bytes: &[u8]) -> (String, usize, usize) {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        let declared = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .unwrap();
        (head.to_string(), declared, body.len())
    }

    #[test]
    fn raw_answers_declare_their_real_length() {
        let long = Refusal::new(400, "x".repeat(300));
        for r in [
            Refusal::too_many_connections(),
            Refusal::malformed_header(),
            Refusal::header_timeout(),
            Refusal::new(431, "more than 100 request headers"),
            Refusal::new(503, "é ünïcode").retry_after(7),
            long,
        ] {
            let (head, declared, sent) = framed(&r.to_http1());
            assert_eq!(declared, sent, "{head}");
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", r.status)),
                "{head}"
            );
            assert!(head.contains("\r\nConnection: close"), "{head}");
            assert_eq!(
                head.contains("Retry-After"),
                r.retry_after.is_some(),
                "{head}"
            );
        }
    }

    #[test]
    fn the_guard_answers_have_the_expected_heads() {
        let raw = String::from_utf8(Refusal::too_many_connections().to_http1()).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Retry-After: 1\r\n"), "{raw}");
        assert!(
            raw.ends_with("\r\n\r\nroost: too many connections; retry\n"),
            "{raw}"
        );
        let raw = String::from_utf8(Refusal::header_timeout().to_http1()).unwrap();
        assert!(raw.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{raw}");
    }

    fn failure<'a>(etype: &'a ErrorType, source: &'a ErrorSource) -> Failure<'a> {
        Failure {
            etype,
            source,
            context: None,
            connect_failed: false,
            may_fail_over: true,
        }
    }

    #[test]
    fn failures_map_to_refusals() {
        let status = |etype: ErrorType, source: ErrorSource| {
            for_failure(failure(&etype, &source), "fp", "machineid", 5).map(|r| r.status)
        };
        assert_eq!(
            status(ErrorType::HTTPStatus(413), ErrorSource::Unset),
            Some(413)
        );
        assert_eq!(
            status(ErrorType::ReadTimedout, ErrorSource::Upstream),
            Some(504)
        );
        assert_eq!(
            status(ErrorType::ConnectTimedout, ErrorSource::Upstream),
            Some(504)
        );
        assert_eq!(
            status(ErrorType::ConnectRefused, ErrorSource::Upstream),
            Some(502)
        );
        assert_eq!(
            status(ErrorType::ReadTimedout, ErrorSource::Downstream),
            Some(408)
        );
        assert_eq!(
            status(ErrorType::ConnectionClosed, ErrorSource::Downstream),
            None
        );
        assert_eq!(status(ErrorType::ReadError, ErrorSource::Downstream), None);
        assert_eq!(
            status(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream),
            Some(400)
        );
        assert_eq!(
            status(ErrorType::InternalError, ErrorSource::Internal),
            Some(500)
        );
    }

    #[test]
    fn a_refused_connection_to_a_sticky_owner_is_owner_down() {
        let (etype, source) = (ErrorType::ConnectRefused, ErrorSource::Upstream);
        let mut f = failure(&etype, &source);
        f.connect_failed = true;
        f.may_fail_over = false;
        let r = for_failure(f, "fp", "machineid", 5).unwrap();
        assert_eq!((r.status, r.retry_after), (503, Some(5)));
        assert!(r.message.contains("machineid"), "{}", r.message);
    }

    #[test]
    fn status_errors_keep_their_message_and_503_gets_retry_after() {
        let (etype, source) = (ErrorType::HTTPStatus(503), ErrorSource::Internal);
        let mut f = failure(&etype, &source);
        f.context = Some("no healthy backend");
        let r = for_failure(f, "fp", "machineid", 3).unwrap();
        assert_eq!(r, Refusal::new(503, "no healthy backend").retry_after(3));
    }
}
