//! Load for tests that change things under traffic: a keep-alive or one-connection-per-request
//! [`Client`], and [`Load`], several client threads whose every answer is checked, summed up
//! in a [`LoadReport`].

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::http::{read_response, Response};

/// An HTTP/1.1 client that keeps its connection alive until the server says
/// `Connection: close` (then reconnects), or opens one connection per request.
pub struct Client {
    addr: SocketAddr,
    keep_alive: bool,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr, keep_alive: bool) -> Client {
        Client {
            addr,
            keep_alive,
            conn: None,
        }
    }

    /// Another handle on the connection kept alive after the last request, if any.
    pub fn connection(&self) -> Option<TcpStream> {
        let conn = self.conn.as_ref()?;
        Some(conn.get_ref().try_clone().expect("clone a socket"))
    }

    /// Send one request with a machineid and an optional body; read the whole answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        body: &[u8],
    ) -> io::Result<Response> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                BufReader::new(s)
            }
        };
        let connection = if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nmachineid: {key}\r\nConnection: {connection}\r\n",
            self.addr
        );
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        conn.get_mut().write_all(&bytes)?;
        let resp = read_response(&mut conn)?;
        let closes = resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if self.keep_alive && !closes {
            self.conn = Some(conn);
        }
        Ok(resp)
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    /// One line per failed request: what was sent and what went wrong.
    pub failures: Vec<String>,
    /// key → every backend that answered it, in order.
    pub backends: std::collections::HashMap<String, Vec<String>>,
}

/// Continuous load from several threads until [`Load::stop`]: half the clients keep their
/// connection alive, half open one per request; GETs and POSTs with a body alternate. Every
/// answer is checked to be complete and correct.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadReport>>,
}

impl Load {
    /// Clients `0..clients`, client `c` cycling through keys `load-{c}-0..keys_per_client`.
    pub fn start(addr: SocketAddr, clients: usize, keys_per_client: usize) -> Load {
        Self::with_prefix("load", addr, clients, keys_per_client)
    }

    /// As [`Load::start`] with keys `{prefix}-{c}-{i}`: a second load on keys of its own.
    pub fn with_prefix(
        prefix: &'static str,
        addr: SocketAddr,
        clients: usize,
        keys_per_client: usize,
    ) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut client = Client::new(addr, c % 2 == 0);
                    let mut report = LoadReport::default();
                    let body = vec![b'x'; 16 * 1024 + c];
                    let mut i = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let key = format!("{prefix}-{c}-{}", i % keys_per_client);
                        let post = i % 2 == 1;
                        let (method, sent) = if post {
                            ("POST", &body[..])
                        } else {
                            ("GET", &b""[..])
                        };
                        match client.request(method, "/", &key, sent) {
                            Ok(resp) if resp.status == 200 => {
                                let name = resp.backend().to_string();
                                let want = if post {
                                    format!("{name} received {} bytes\n", sent.len())
                                } else {
                                    format!("{name}\n")
                                };
                                if resp.text() == want {
                                    report.ok += 1;
                                    report.backends.entry(key).or_default().push(name);
                                } else {
                                    report.failures.push(format!(
                                        "{method} {key}: body {:?}, wanted {want:?}",
                                        resp.text()
                                    ));
                                }
                            }
                            Ok(resp) => report.failures.push(format!(
                                "{method} {key}: status {} {}",
                                resp.status,
                                resp.text().trim()
                            )),
                            Err(e) => report.failures.push(format!("{method} {key}: {e}")),
                        }
                        i += 1;
                    }
                    report
                })
            })
            .collect();
        Load { stop, threads }
    }

    pub fn stop(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadReport::default();
        for t in self.threads {
            let r = t.join().expect("load thread");
            all.ok += r.ok;
            all.failures.extend(r.failures);
            for (k, v) in r.backends {
                all.backends.entry(k).or_default().extend(v);
            }
        }
        all
    }
}
