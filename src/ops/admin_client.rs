//! A small HTTP/1.1 client for Roost's own admin listener, used by the commands that talk to
//! a running process (`roost backend`, `roost upgrade`): one request to an address the config
//! names, a short JSON answer, then the connection closes.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The admin answers are small; more than this is not an admin answer.
const MAX_ANSWER: u64 = 1 << 20;

/// A listener on every address is reached on loopback.
pub fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// `METHOD target` with an empty body; the status and the JSON answer (`Null` when the body
/// is not JSON).
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    parse_answer(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

/// The status and JSON body of a `Connection: close` answer with a `Content-Length`.
fn parse_answer(raw: &[u8]) -> Option<(u16, Value)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(raw).ok()? else {
        return None;
    };
    let status = response.code?;
    let body = &raw[head..];
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(body.len());
    let value = serde_json::from_slice(body.get(..length)?).unwrap_or(Value::Null);
    Some((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_by_their_length() {
        let raw = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 17\r\n\r\n{\"error\":\"nope\"}\n";
        let (status, body) = parse_answer(raw).unwrap();
        assert_eq!(status, 403);
        assert_eq!(body["error"], "nope");
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\n"),
            None,
            "an incomplete head"
        );
        assert_eq!(parse_answer(b"garbage\r\n\r\n"), None);
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9900".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:9900".parse().unwrap());
        let one: SocketAddr = "127.0.0.5:9900".parse().unwrap();
        assert_eq!(reachable(one), one);
    }
}
