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
//! 5. Success when the new daemon runs (new pid in the pid file) and the old one is gone.

use crate::config::Config;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long Pingora's old process keeps accepting after handing the sockets over.
const PINGORA_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the new process may take to open the upgrade socket, and to take the listeners.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

pub fn run(config: &Config, conf_path: &Path) -> ExitCode {
    match upgrade(config, conf_path) {
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

fn upgrade(config: &Config, conf_path: &Path) -> Result<(i32, i32), String> {
    let server = &config.server;
    let old = read_pid(&server.pid_file).ok_or_else(|| {
        format!(
            "no running instance: {} does not name a live process (start one with -d)",
            server.pid_file.display()
        )
    })?;
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
