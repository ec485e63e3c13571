//! Controlling a running daemon found through `server.pid_file`: `roost reload` (SIGHUP after
//! validating the file) and `roost upgrade`, the whole hot swap as one command that succeeds
//! or says what went wrong:
//!
//! 1. The new config was validated by the caller (nothing is touched when it is invalid).
//! 2. The running instance is found through `server.pid_file`.
//! 3. `roost -c FILE -u -d` (this very binary: run the *new* binary's `upgrade`) is started and
//!    waits on `server.upgrade_sock` for the listening sockets.
//! 4. Once that socket exists, the old process gets SIGQUIT: it hands the listeners over,
//!    keeps serving what it has in flight, and exits.
//! 5. Success when the new daemon runs (new pid in the pid file), accepts connections on every
//!    listener of the new config, and the old one is gone.
//!
//! Before step 3 it asks the running process (its admin `/status`, when the config has an
//! admin listener) where it listens, and says which listen addresses change. One the new
//! config no longer has would close with the old process, and its clients would lose the
//! service: that is refused unless `--allow-closing-listeners` says it is meant.

use crate::config::Config;
use crate::ops::admin_client::{self, reachable};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long Pingora's old process keeps accepting after handing the sockets over.
const PINGORA_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the new process may take to open the upgrade socket, and to take the listeners.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

pub fn run(config: &Config, conf_path: &Path, allow_closing: bool) -> ExitCode {
    match upgrade(config, conf_path, allow_closing) {
        Ok((old, new)) => {
            println!("roost: upgrade done: pid {old} -> {new}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("roost: upgrade failed: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `roost reload`: the file was validated by the caller; signal the daemon to re-read it.
pub fn reload(config: &Config) -> ExitCode {
    let pid_file = &config.server.pid_file;
    let Some(pid) = read_pid(pid_file) else {
        eprintln!(
            "roost: reload failed: no running instance: {} does not name a live process",
            pid_file.display()
        );
        return ExitCode::FAILURE;
    };
    match signal(pid, libc::SIGHUP) {
        Ok(()) => {
            println!("roost: sent SIGHUP to pid {pid}; its log says what changed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roost: reload failed: cannot signal pid {pid}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How the listen addresses change from the running process (`running`: service name and
/// listen address, from its `/status`) to `config`: a line per change, and the addresses
/// that would close.
pub fn listen_changes(
    running: &[(String, SocketAddr)],
    config: &Config,
) -> (Vec<String>, Vec<SocketAddr>) {
    let mut lines = Vec::new();
    let mut closing = Vec::new();
    let kept = |addr: &SocketAddr| config.services.iter().any(|s| s.listen == *addr);
    for (name, addr) in running {
        match config.service(name) {
            Some(s) if s.listen == *addr => {}
            Some(s) => lines.push(format!("service {name}: listen {addr} -> {}", s.listen)),
            None => lines.push(format!(
                "service {name} (listening on {addr}) is not in the new config"
            )),
        }
        if !kept(addr) {
            closing.push(*addr);
        }
    }
    for s in &config.services {
        if !running.iter().any(|(name, _)| *name == s.name) {
            lines.push(format!(
                "service {} is new: listens on {}",
                s.name, s.listen
            ));
        }
    }
    (lines, closing)
}

/// Where the running process listens, from its admin `/status`; `None` when it cannot say.
fn running_listeners(config: &Config) -> Option<Vec<(String, SocketAddr)>> {
    let admin = config.admin.as_ref()?;
    let (status, body) = admin_client::request(
        reachable(admin.listen),
        "GET",
        "/status",
        admin.token.as_deref(),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    body["services"]
        .as_array()?
        .iter()
        .map(|s| {
            Some((
                s["name"].as_str()?.to_string(),
                s["listen"].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

fn upgrade(config: &Config, conf_path: &Path, allow_closing: bool) -> Result<(i32, i32), String> {
    let server = &config.server;
    let old = read_pid(&server.pid_file).ok_or_else(|| {
        format!(
            "no running instance: {} does not name a live process (start one with -d)",
            server.pid_file.display()
        )
    })?;
    match running_listeners(config) {
        Some(running) => {
            let (lines, closing) = listen_changes(&running, config);
            for line in &lines {
                println!("roost: upgrade: {line}");
            }
            if !closing.is_empty() && !allow_closing {
                let list: Vec<String> = closing.iter().map(|a| a.to_string()).collect();
                return Err(format!(
                    "the new config does not listen on {} where pid {old} serves now: those \
                     listeners would close and their clients lose the service; nothing was \
                     changed (put them back, or pass --allow-closing-listeners)",
                    list.join(", ")
                ));
            }
        }
        None => println!(
            "roost: upgrade: the running process's listen addresses are unknown (no admin \
             listener reachable with this config); not compared"
        ),
    }
    let sock = &server.upgrade_sock;
    // Only a new process listens there, and only during a swap; a leftover file from an
    // earlier swap would look like the new process being ready.
    let _ = std::fs::remove_file(sock);

    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = Command::new(&exe)
        .arg("-c")
        .arg(conf_path)
        .args(["-u", "-d"])
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;

    let opened = wait(STEP_TIMEOUT, || {
        sock.exists() || child.try_wait().ok().flatten().is_some()
    });
    if let Some(status) = child.try_wait().ok().flatten() {
        return Err(format!(
            "the new process exited ({status}) before taking over; pid {old} keeps serving"
        ));
    }
    if !opened {
        let _ = child.kill();
        return Err(format!(
            "the new process did not open {} within {STEP_TIMEOUT:?}; pid {old} keeps serving",
            sock.display()
        ));
    }
    signal(old, libc::SIGQUIT).map_err(|e| {
        format!("cannot send SIGQUIT to pid {old}: {e}; the new process gives up on its own")
    })?;

    // `-d`: the new process's parent exits once the listeners are in and the daemon forked.
    let status = wait_child(&mut child, STEP_TIMEOUT)
        .ok_or_else(|| format!("the new process did not take over within {STEP_TIMEOUT:?}"))?;
    if !status.success() {
        return Err(format!("the new process failed ({status})"));
    }
    let mut new = None;
    wait(STEP_TIMEOUT, || {
        new = read_pid(&server.pid_file).filter(|&p| p != old);
        new.is_some()
    });
    let new = new.ok_or("the new daemon did not write its pid file")?;

    let drain = PINGORA_CLOSE_TIMEOUT
        + Duration::from_secs(server.grace_period_seconds)
        + Duration::from_secs(server.graceful_shutdown_timeout_seconds)
        + Duration::from_secs(5);
    if !wait(drain, || !alive(old)) {
        return Err(format!(
            "pid {new} serves, but the old pid {old} is still running after {drain:?}"
        ));
    }
    if !alive(new) {
        return Err(format!("the new daemon (pid {new}) exited; see its log"));
    }
    let deaf: Vec<String> = config
        .services
        .iter()
        .map(|s| s.listen)
        .filter(|&l| TcpStream::connect_timeout(&reachable(l), Duration::from_secs(2)).is_err())
        .map(|l| l.to_string())
        .collect();
    if !deaf.is_empty() {
        return Err(format!(
            "pid {new} serves, but nothing accepts connections on {}; see its log",
            deaf.join(", ")
        ));
    }
    Ok((old, new))
}

fn read_pid(path: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (pid > 0 && alive(pid)).then_some(pid)
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence and permission without sending anything. A zombie (an old
    // process that exited but was not reaped yet) counts as gone.
    signal(pid, 0).is_ok() && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn wait(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        sleep(POLL);
    }
}

fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_changes_name_moved_removed_and_new_services() {
        let config = Config::from_yaml(
            "services:\n  - {name: fp, listen: 127.0.0.1:8095, backends: [10.0.0.1:80]}\n  - {name: emu, listen: 127.0.0.1:8094, backends: [10.0.0.1:81]}\n  - {name: raven, listen: 127.0.0.1:8096, backends: [10.0.0.1:82]}\n",
            "t.yaml",
        )
        .unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let running = [
            ("fp".to_string(), a("127.0.0.1:8093")),
            ("emu".to_string(), a("127.0.0.1:8094")),
            ("mf".to_string(), a("127.0.0.1:8091")),
        ];
        let (lines, closing) = listen_changes(&running, &config);
        assert_eq!(
            lines,
            [
                "service fp: listen 127.0.0.1:8093 -> 127.0.0.1:8095",
                "service mf (listening on 127.0.0.1:8091) is not in the new config",
                "service raven is new: listens on 127.0.0.1:8096",
            ]
        );
        assert_eq!(closing, [a("127.0.0.1:8093"), a("127.0.0.1:8091")]);
        // Same listeners: nothing to say, nothing closes.
        let same = [
            ("fp".to_string(), a("127.0.0.1:8095")),
            ("emu".to_string(), a("127.0.0.1:8094")),
            ("raven".to_string(), a("127.0.0.1:8096")),
        ];
        assert_eq!(listen_changes(&same, &config), (vec![], vec![]));
    }
}
