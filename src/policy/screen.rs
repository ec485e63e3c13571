//! Request screening (pure): what Roost refuses before choosing a backend, so that nothing
//! ambiguous or oversized is ever forwarded. Pingora's parser already rejects malformed
//! syntax (bad header lines, obs-fold, NUL, bare CR); this adds the limits from the config
//! and the framing rules that request smuggling exploits.

use crate::config::Limits;
use crate::policy::refusal::Refusal;
use http::{header, HeaderMap, Method, Version};

fn reject(status: u16, reason: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal::new(status, reason))
}

/// Methods a WPS or any plain HTTP backend may see. CONNECT and TRACE are refused: Roost is
/// not a tunnel, and TRACE echoes credentials back.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
];

/// Check one request head. `target_len` is the length of the request target as received.
pub fn screen(
    method: &Method,
    version: Version,
    target_len: usize,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<(), Refusal> {
    if !METHODS.contains(method) {
        return reject(405, format!("method {method} is not allowed"));
    }
    if version != Version::HTTP_11 && version != Version::HTTP_10 {
        return reject(505, "only HTTP/1.0 and HTTP/1.1 are served");
    }
    if headers.len() > limits.max_headers {
        return reject(
            431,
            format!("more than {} request headers", limits.max_headers),
        );
    }
    // Request line plus `name: value\r\n` per header, as on the wire.
    let size = method.as_str().len()
        + target_len
        + 12
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if size > limits.max_header_bytes {
        return reject(
            431,
            format!(
                "request header of {size} bytes exceeds {}",
                limits.max_header_bytes
            ),
        );
    }

    let lengths: Vec<&[u8]> = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if chunked {
        // Both framings at once is the classic smuggling setup: never guess which wins.
        if !lengths.is_empty() {
            return reject(400, "both Content-Length and Transfer-Encoding");
        }
        let codings: Vec<&[u8]> = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked") {
            return reject(501, "only `Transfer-Encoding: chunked` is supported");
        }
        if version == Version::HTTP_10 {
            return reject(400, "Transfer-Encoding in an HTTP/1.0 request");
        }
    }
    if let Some(first) = lengths.first() {
        // Even equal copies: forwarded as they are, a backend may take either or refuse
        // (RFC 9112 §6.3 lets a proxy only refuse them or send one).
        if lengths.len() > 1 {
            return reject(400, "more than one Content-Length header");
        }
        let length = std::str::from_utf8(first)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
        match length {
            None => return reject(400, "invalid Content-Length"),
            Some(n) if n > limits.max_body => {
                return reject(
                    413,
                    format!("request body of {n} bytes exceeds {}", limits.max_body),
                )
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 2048,
            max_headers: 10,
            max_body: 1000,
            max_connections: 10,
        }
    }

    fn check(method: &str, headers: &[(&str, &str)]) -> Result<(), Refusal> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        screen(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            Version::HTTP_11,
            10,
            &map,
            &limits(),
        )
    }

    fn status(r: Result<(), Refusal>) -> u16 {
        r.err().map_or(200, |e| e.status)
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(status(check("GET", &[("host", "x")])), 200);
        assert_eq!(status(check("POST", &[("content-length", "1000")])), 200);
        assert_eq!(
            status(check("POST", &[("transfer-encoding", "chunked")])),
            200
        );
    }

    #[test]
    fn smuggling_framings_are_refused() {
        assert_eq!(
            status(check(
                "POST",
                &[("content-length", "5"), ("content-length", "5")]
            )),
            400
        );
        assert_eq!(
            status(check(
                "POST",
                &[("content-length", "5"), ("transfer-encoding", "chunked")]
            )),
            400
        );
        assert_eq!(
            status(check(
                "POST",
                &[("content-length", "5"), ("content-length", "6")]
            )),
            400
        );
        assert_eq!(status(check("POST", &[("content-length", "+5")])), 400);
        assert_eq!(status(check("POST", &[("content-length", "5, 5")])), 400);
        assert_eq!(
            status(check("POST", &[("transfer-encoding", "gzip, chunked")])),
            501
        );
        assert_eq!(
            status(check(
                "POST",
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ]
            )),
            501
        );
    }

    #[test]
    fn limits_give_their_statuses() {
        assert_eq!(status(check("POST", &[("content-length", "1001")])), 413);
        let many: Vec<(String, String)> =
            (0..11).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(status(check("GET", &refs)), 431);
        let big = "v".repeat(3000);
        assert_eq!(status(check("GET", &[("x-big", &big)])), 431);
    }

    #[test]
    fn methods_and_versions() {
        assert_eq!(status(check("CONNECT", &[])), 405);
        assert_eq!(status(check("TRACE", &[])), 405);
        assert_eq!(status(check("BREW", &[])), 405);
        let r = screen(
            &Method::GET,
            Version::HTTP_2,
            1,
            &HeaderMap::new(),
            &limits(),
        );
        assert_eq!(status(r), 505);
    }
}
