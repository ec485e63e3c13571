//! A small HTTP/1.1 client over plain sockets: send raw bytes or a `GET`, and read one
//! [`Response`] (framed by `Content-Length`, chunked, or to EOF) exactly as it was received.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP response as received.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The demo backend's name, from the `X-Backend` header.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
}

/// Send raw bytes, then read one response until the server closes the connection.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(bytes)?;
    read_response(&mut BufReader::new(stream))
}

/// `GET path` with extra headers and `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes())
}

/// `GET /` with a machineid.
pub fn get_key(addr: SocketAddr, key: &str) -> io::Result<Response> {
    get(addr, "/", &[("machineid", key)])
}

/// Read one response (status line, headers, body by Content-Length, chunked, or to EOF).
pub fn read_response<R: Read>(reader: &mut BufReader<R>) -> io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no response"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}"))
        })?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = find("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| io::Error::other("bad content-length"))?;
        reader.take(len).read_to_end(&mut body)?;
        if body.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated body",
            ));
        }
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk"))?;
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                break;
            }
            let before = body.len();
            reader.take(size as u64).read_to_end(&mut body)?;
            if body.len() - before != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated chunk",
                ));
            }
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    } else if status != 204 && status != 304 {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
