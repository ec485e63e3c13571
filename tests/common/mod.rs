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

/// A loopback address on a [`free_port`], for Roost to listen on.
pub fn listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
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
        let (dir, config, log) = config_dir(yaml);
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

/// A temp dir holding `roost.yaml` (`yaml` with `{dir}` replaced by the dir) and the path
/// for `roost.log`.
pub fn config_dir(yaml: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("roost.yaml");
    std::fs::write(
        &config,
        yaml.replace("{dir}", &dir.path().display().to_string()),
    )
    .expect("write config");
    let log = dir.path().join("roost.log");
    (dir, config, log)
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
        let addr = listen_addr();
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
    pub fn start(addr: SocketAddr, clients: usize, keys_per_client: usize) -> Load {
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
                        let key = format!("load-{c}-{}", i % keys_per_client);
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

/// Roost started with `-d` (as in production), found through its pid file. Every pid it
/// ever had is killed on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    pub pids: Vec<i32>,
}

impl Daemon {
    /// Write `yaml` (`{dir}` = the temp dir; the server section must use `{dir}/roost.pid`
    /// and `error_log: {dir}/roost.log`) and start `roost -d`.
    pub fn start(yaml: &str, wait_for: &[SocketAddr]) -> Daemon {
        let (dir, config, log) = config_dir(yaml);
        let mut d = Daemon {
            dir,
            config,
            log,
            pids: Vec::new(),
        };
        let status = Command::new(ROOST)
            .arg("-c")
            .arg(&d.config)
            .arg("-d")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run roost -d");
        assert!(status.success(), "roost -d failed:\n{}", d.log_text());
        d.pid();
        for addr in wait_for {
            wait_until(Duration::from_secs(15), "roost listening", || {
                TcpStream::connect(addr).is_ok()
            });
        }
        d
    }

    /// The pid in the pid file now (remembered for cleanup).
    pub fn pid(&mut self) -> i32 {
        let file = self.dir.path().join("roost.pid");
        let mut pid = 0;
        wait_until(Duration::from_secs(10), "pid file", || {
            pid = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            pid > 0
        });
        if !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
        pid
    }

    pub fn signal(&self, pid: i32, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }

    pub fn alive(&self, pid: i32) -> bool {
        // SAFETY: as above; signal 0 only checks existence.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        exists && !zombie
    }

    /// `roost upgrade -c CONFIG`: (exit code, stdout, stderr).
    pub fn upgrade(&mut self) -> (i32, String, String) {
        let config = self.config.display().to_string();
        let out = run_roost(&["upgrade", "-c", &config]);
        self.pid();
        out
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for &pid in &self.pids {
            self.signal(pid, libc::SIGKILL);
        }
    }
}

/// How a [`FakeBackend`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers `200 ok` and records every request head it got.
    Record,
    /// Reads the request and never answers.
    Hang,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Sends a header promising 100000 bytes, 1000 of them, then resets the connection.
    ResetMidBody,
}

/// An in-process backend on a run-time port, for behaviour the demo backend does not have.
/// Its thread ends with the test process; it holds no external resources.
pub struct FakeBackend {
    pub addr: SocketAddr,
    pub heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeBackend {
    pub fn start(mode: Misbehaviour) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = heads.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let record = record.clone();
                std::thread::spawn(move || {
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
                        Misbehaviour::Record => {
                            let _ = conn.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: fake\r\nConnection: close\r\n\r\nok",
                            );
                        }
                        Misbehaviour::Hang => std::thread::sleep(Duration::from_secs(30)),
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
                });
            }
        });
        FakeBackend { addr, heads }
    }

    pub fn requests(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
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

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
