//! Roost itself: config YAML for tests, a foreground [`Roost`] and a daemonized [`Daemon`]
//! with their config and log in a temporary directory, `roost` run to completion, and a
//! [`Site`] of three demo backends behind one service (with an [`Admin`] listener if asked).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::admin::Admin;
use super::backend::Backend;
use super::process::{listen_addr, wait_until, Proc, ROOST};

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

/// `yaml` (a [`config_yaml`]) with the top-level sections `top` (whole lines, e.g.
/// `Admin::yaml` or `access_log: …`) added before `services:`.
pub fn top_level(yaml: &str, top: &str) -> String {
    yaml.replacen("services:\n", &format!("{top}services:\n"), 1)
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
        Site::start_with(extra, "", &[])
    }

    /// The same with an admin listener (`token` as in `admin.token`) and the top-level
    /// sections `top` (e.g. `access_log`); Roost is started once the admin listener accepts.
    pub fn with_admin(extra: &str, top: &str, token: Option<&str>) -> (Site, Admin) {
        let admin = Admin::new(token);
        let site = Site::start_with(extra, &format!("{}{top}", admin.yaml()), &[admin.addr]);
        (site, admin)
    }

    /// [`Site::start`] with the top-level sections `top`, also waiting for `wait_for`.
    fn start_with(extra: &str, top: &str, wait_for: &[SocketAddr]) -> Site {
        let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
        let addr = listen_addr();
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        let yaml = top_level(&config_yaml(&service_yaml("fp", addr, &addrs, extra)), top);
        let roost = Roost::start(&yaml, &[&[addr], wait_for].concat());
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
