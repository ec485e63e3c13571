//! Test harness: real `roost` and demo-backend processes on loopback, ports chosen at run
//! time, and a small HTTP/1.1 client over plain sockets. Every process started here is killed
//! when its handle drops, also when a test panics.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ROOST: &str = env!("CARGO_BIN_EXE_roost");
pub const DEMO_BACKEND: &str = env!("CARGO_BIN_EXE_roost-demo-backend");

/// A port that was free a moment ago, for processes that cannot report a port they bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed and reaped on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. `libc`-free: "QUIT", "TERM", "HUP").
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                start.elapsed() < timeout,
                "process {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A demo backend answering with its name.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    proc: Proc,
}

impl Backend {
    /// Start on `127.0.0.1:0`.
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0")
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

/// A running `roost` with its config file in a temporary directory.
pub struct Roost {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Roost {
    /// Write `yaml` (with `{dir}` replaced by the temp dir) and start Roost on it; wait until
    /// every address in `wait_for` accepts connections.
    pub fn start(yaml: &str, wait_for: &[SocketAddr]) -> Roost {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("roost.yaml");
        std::fs::write(
            &config,
            yaml.replace("{dir}", &dir.path().display().to_string()),
        )
        .expect("write config");
        let log = dir.path().join("roost.log");
        let proc = spawn_roost(&config, &log, &[]);
        let mut roost = Roost {
            proc,
            dir,
            config,
            log,
        };
        for addr in wait_for {
            roost.wait_listening(*addr);
        }
        roost
    }

    pub fn wait_listening(&mut self, addr: SocketAddr) {
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if !self.proc.is_running() {
                panic!("roost exited early:\n{}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "roost not listening on {addr}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn spawn_roost(config: &Path, log: &Path, extra: &[&str]) -> Proc {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(ROOST)
        .arg("-c")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn roost");
    Proc { child }
}

/// Run `roost` to completion (for `-t` and `route`): (exit code, stdout, stderr).
pub fn run_roost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ROOST).args(args).output().expect("run roost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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

/// YAML for one service in front of `backends`, with optional extra service keys.
pub fn service_yaml(
    name: &str,
    listen: SocketAddr,
    backends: &[SocketAddr],
    extra: &str,
) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("      - {b}\n")).collect();
    format!(
        "  - name: {name}\n    listen: {listen}\n    backends:\n{}{extra}",
        list.concat()
    )
}

/// A whole config: server section in `{dir}` plus `services` YAML.
pub fn config_yaml(services: &str) -> String {
    format!(
        "server:\n  threads: 2\n  pid_file: {{dir}}/roost.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\nservices:\n{services}"
    )
}

/// Three demo backends b1..b3 behind one service `fp` (with `extra` service keys), and Roost.
pub struct Site {
    /// `None` while a test has that backend stopped.
    pub backends: Vec<Option<Backend>>,
    pub roost: Roost,
    pub addr: SocketAddr,
}

impl Site {
    pub fn start(extra: &str) -> Site {
        let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        let roost = Roost::start(
            &config_yaml(&service_yaml("fp", addr, &addrs, extra)),
            &[addr],
        );
        Site {
            backends: backends.into_iter().map(Some).collect(),
            roost,
            addr,
        }
    }

    /// The backends that are running now.
    pub fn running(&self) -> impl Iterator<Item = &Backend> {
        self.backends.iter().flatten()
    }

    /// Stop backend `i`; returns its address so that a test can restart it there.
    pub fn stop(&mut self, i: usize) -> SocketAddr {
        self.backends[i].take().expect("running").stop()
    }
}
