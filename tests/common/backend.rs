//! Backends for Roost to proxy to: the demo backend binary ([`Backend`], answering with its
//! name) and an in-process [`FakeBackend`] that records or misbehaves on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{Proc, DEMO_BACKEND};

/// A demo backend answering with its name.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    proc: Proc,
}

impl Backend {
    /// Start on a loopback [`stable_port`](super::process::stable_port), so that a test can
    /// stop it and start it again on the same address.
    pub fn start(name: &str) -> Backend {
        let port = super::process::stable_port();
        Self::start_on(name, &format!("127.0.0.1:{port}"))
    }

    /// Start on a given address (e.g. to restart a killed backend on its old port).
    pub fn start_on(name: &str, listen: &str) -> Backend {
        let mut child = Command::new(DEMO_BACKEND)
            .args(["--name", name, "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn demo backend");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read backend banner");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("backend {name} said {line:?}"))
            .parse()
            .expect("backend address");
        Backend {
            name: name.to_string(),
            addr,
            proc: Proc { child },
        }
    }

    /// Stop it (connections are refused from now on); returns the address it had.
    pub fn stop(self) -> SocketAddr {
        self.addr
    }
}

/// How a [`FakeBackend`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers `200 ok` and records every request head it got.
    Record,
    /// Reads the request and never answers; counts the connections the proxy closed while it
    /// waited ([`FakeBackend::hung_up`]).
    Hang,
    /// Accepts each connection and closes it at once, before reading anything: a port that
    /// answers but does not speak HTTP.
    Close,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Sends a header promising 100000 bytes, 1000 of them, then resets the connection.
    ResetMidBody,
    /// Answers `200 ok` to every request of a keep-alive connection and keeps it open until
    /// [`FakeBackend::close_connections`] (a backend ending its idle connections).
    KeepAlive,
}

/// An in-process backend on a run-time port, for behaviour the demo backend does not have.
/// Its thread ends with the test process; it holds no external resources.
pub struct FakeBackend {
    pub addr: SocketAddr,
    pub heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The connections it accepted, in order ([`Misbehaviour::KeepAlive`] only).
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    hung_up: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeBackend {
    pub fn start(mode: Misbehaviour) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = heads.clone();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = conns.clone();
        let hung_up = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = hung_up.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if mode == Misbehaviour::Close {
                    drop(conn);
                    continue;
                }
                if mode == Misbehaviour::KeepAlive {
                    accepted
                        .lock()
                        .unwrap()
                        .push(conn.try_clone().expect("clone socket"));
                }
                let record = record.clone();
                let closed = closed.clone();
                std::thread::spawn(move || loop {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    record
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    match mode {
                        Misbehaviour::KeepAlive => {
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: fake\r\n\r\nok";
                            if conn.write_all(answer).is_err() {
                                return;
                            }
                            continue; // the next request on this connection
                        }
                        Misbehaviour::Record => {
                            let _ = conn.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: fake\r\nConnection: close\r\n\r\nok",
                            );
                        }
                        Misbehaviour::Hang => {
                            // Until the proxy closes its side (end of file) or 30 s pass.
                            let mut rest = [0u8; 512];
                            loop {
                                match conn.read(&mut rest) {
                                    Ok(0) => {
                                        closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                        break;
                                    }
                                    Ok(_) => continue,
                                    Err(_) => break,
                                }
                            }
                        }
                        Misbehaviour::Close => unreachable!("closed on accept"),
                        Misbehaviour::Garbage => {
                            let _ = conn.write_all(b"SURPRISE \x00\x01 not http at all\r\n\r\n");
                        }
                        Misbehaviour::ResetMidBody => {
                            let _ = conn
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
                            let _ = conn.write_all(&[b'x'; 1000]);
                            let _ = conn.flush();
                            std::thread::sleep(Duration::from_millis(100));
                            // SO_LINGER 0: close sends RST instead of FIN.
                            let sock = socket_linger_zero(&conn);
                            drop(sock);
                        }
                    }
                    return;
                });
            }
        });
        FakeBackend {
            addr,
            heads,
            conns,
            hung_up,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// How many connections it accepted ([`Misbehaviour::KeepAlive`] only).
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Closes every connection it accepted (FIN to the proxy), as a backend does with the
    /// connections its keep-alive timeout ends ([`Misbehaviour::KeepAlive`] only).
    pub fn close_connections(&self) {
        for conn in self.conns.lock().unwrap().iter() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }

    /// [`Misbehaviour::Hang`]: connections the proxy closed before an answer.
    pub fn hung_up(&self) -> usize {
        self.hung_up.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn socket_linger_zero(conn: &TcpStream) -> TcpStream {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid fd with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    conn.try_clone().expect("clone socket")
}
