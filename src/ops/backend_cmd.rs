//! `roost backend drain|ready|maint -c FILE SERVICE ADDR`: set a backend's operator state in
//! the running process, through its admin listener (`POST /backends/ACTION`, with
//! `admin.token` from the same config). A small HTTP/1.1 client of its own: one request to a
//! listener the config names, answered with a short JSON document, then the connection
//! closes.

use crate::config::{BackendState, Config};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The admin answers are small; more than this is not an admin answer.
const MAX_ANSWER: u64 = 1 << 20;

pub fn run(config: &Config, action: BackendState, service: &str, backend: &str) -> ExitCode {
    let Some(admin) = &config.admin else {
        eprintln!(
            "roost: {}: no admin listener (admin.listen) to send the operator action to",
            config.source
        );
        return ExitCode::FAILURE;
    };
    if config.service(service).is_none() {
        eprintln!("roost: no service named '{service}' in {}", config.source);
        return ExitCode::from(2);
    }
    let target = format!(
        "/backends/{}?service={}&backend={}",
        action.as_str(),
        encode(service),
        encode(backend)
    );
    let addr = reachable(admin.listen);
    match post(addr, &target, admin.token.as_deref()) {
        Ok((200, body)) => {
            let previous = body["previous"].as_str().unwrap_or("?");
            let name = body["backend"].as_str().unwrap_or(backend);
            println!(
                "roost: service {service}: backend {name}: {previous} -> {}",
                action.as_str()
            );
            if action == BackendState::Drain {
                println!(
                    "roost: it keeps its sessions; GET /status shows \"drained\": true once it is safe to stop"
                );
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let why = body["error"].as_str().unwrap_or("(no error message)");
            eprintln!("roost: {addr} answered {status}: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("roost: cannot reach the admin listener at {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A listener on every address is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// POST `target` with an empty body; the status and the JSON answer.
fn post(addr: SocketAddr, target: &str, token: Option<&str>) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
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
