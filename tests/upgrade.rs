//! Hot upgrade (`roost upgrade`, i.e. `-u -d` + SIGQUIT) of a daemonized Roost under
//! continuous load: no request may fail or come back incomplete, a slow response in flight
//! finishes on the old process, and keys stay on their backends.
//! When a process stops listening (upgrade or graceful stop), a connection it accepted is
//! still answered.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn daemon_yaml(listen: SocketAddr, backends: &[SocketAddr], extra: &str) -> String {
    format!(
        "server:\n  threads: 2\n  pid_file: {{dir}}/roost.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  \
         error_log: {{dir}}/roost.log\n  grace_period_seconds: 4\n  graceful_shutdown_timeout_seconds: 2\n\
         services:\n{}",
        service_yaml("fp", listen, backends, extra)
    )
}

#[test]
fn three_upgrades_under_load_lose_nothing() {
    let backends: Vec<Backend> = (1..=4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let listen = listen_addr();
    let mut roost = Daemon::start(&daemon_yaml(listen, &addrs[..3], ""), &[listen]);

    let load = Load::start(listen, 6, 40);
    // Each new process may come with a different config: same, new health check, 4th backend.
    let configs = [
        daemon_yaml(listen, &addrs[..3], ""),
        daemon_yaml(
            listen,
            &addrs[..3],
            "    health_check: { path: /health, interval: 500ms, timeout: 400ms }\n",
        ),
        daemon_yaml(
            listen,
            &addrs,
            "    health_check: { path: /health, interval: 500ms, timeout: 400ms }\n",
        ),
    ];
    let mut pids = vec![roost.pid()];
    for config in configs {
        std::thread::sleep(Duration::from_millis(700));
        std::fs::write(
            &roost.config,
            config.replace("{dir}", &roost.dir.path().display().to_string()),
        )
        .unwrap();
        // A slow response in flight on the old process when it is told to go.
        let slow = std::thread::spawn(move || {
            Client::new(listen, false).request("GET", "/slow?ms=6000", "slow", b"")
        });
        std::thread::sleep(Duration::from_millis(300));
        let (code, out, err) = roost.upgrade();
        assert_eq!(code, 0, "{out}{err}\n{}", roost.log_text());
        assert!(out.contains("upgrade done"), "{out}");
        let resp = slow.join().unwrap().expect("slow request");
        assert_eq!(resp.status, 200);
        assert!(!resp.text().is_empty());
        let pid = roost.pid();
        assert!(!pids.contains(&pid), "new pid expected, got {pid} again");
        assert!(
            !roost.alive(pids[pids.len() - 1]),
            "old process still running"
        );
        pids.push(pid);
    }
    std::thread::sleep(Duration::from_millis(700));
    let report = load.stop();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed:\n{}\n{}",
        report.failures.len(),
        report.ok + report.failures.len(),
        report.failures.join("\n"),
        roost.log_text()
    );
    assert!(report.ok > 300, "only {} requests", report.ok);
    // Keys kept their backend across processes; the 4th backend only took keys over.
    for (key, seen) in &report.backends {
        let first = &seen[0];
        assert!(
            seen.iter().all(|b| b == first || b == "b4"),
            "{key} moved: {seen:?}"
        );
    }
    eprintln!(
        "upgrade under load: {} requests served across 3 upgrades, 0 failed",
        report.ok
    );
}

/// The listener closes when a stop (or the hand-over of an upgrade) begins. A request whose
/// header has started arriving is still answered: on a connection the listener accepted in
/// its last moments, or the next request on a keep-alive connection. A connection idle between
/// keep-alive requests is closed at once, so its client reconnects.
#[test]
fn a_stop_answers_the_requests_whose_header_has_started_arriving() {
    let backend = Backend::start("b1");
    let addr = listen_addr();
    let yaml = config_yaml(&service_yaml(
        "fp",
        addr,
        &[backend.addr],
        "    limits: { max_connections: 3 }\n",
    ));
    let mut roost = Roost::start(&yaml, &[addr]);
    let kept_alive = |key: &str| {
        let mut client = Client::new(addr, true);
        wait_until(Duration::from_secs(5), "a keep-alive request", || {
            client
                .request("GET", "/", key, b"")
                .is_ok_and(|r| r.status == 200 && r.header("connection") == Some("keep-alive"))
        });
        client.connection().expect("kept open")
    };
    let mut idle = kept_alive("idle");
    let mut next = kept_alive("next");
    next.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A new connection that has sent part of its first request header. Roost has surely
    // counted it when a fourth connection is one too many; if instead the probe got through
    // (the two arrived together and this one was refused), try again.
    let mut first = None;
    wait_until(Duration::from_secs(10), "a counted connection", || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let counted = get_key(addr, "probe").is_ok_and(|r| r.status == 503);
        first = counted.then_some(conn);
        counted
    });

    roost.proc.signal("TERM");
    // Pingora drops connections waiting for a request header right after the listener closes;
    // each header is completed a while later, one after the other.
    for (mut conn, key) in [(first.unwrap(), "first"), (next, "next")] {
        std::thread::sleep(Duration::from_millis(300));
        conn.write_all(format!("machineid: {key}\r\n\r\n").as_bytes())
            .unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = read_response(&mut BufReader::new(conn))
            .unwrap_or_else(|e| panic!("{key}: {e}\n{}", roost.log_text()));
        assert_eq!((r.status, r.backend()), (200, "b1"), "{key}");
        assert_eq!(r.header("connection"), Some("close"), "{key}");
    }

    // The idle keep-alive connection is closed as soon as those headers were read, before the
    // process exits at the end of its 1 s grace period.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(idle.read(&mut [0u8; 64]).unwrap(), 0, "closed");
    assert!(roost.proc.is_running(), "closed by the process exit");
    assert_eq!(roost.proc.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn upgrade_with_a_bad_config_touches_nothing() {
    let backend = Backend::start("b1");
    let listen = listen_addr();
    let mut roost = Daemon::start(&daemon_yaml(listen, &[backend.addr], ""), &[listen]);
    let pid = roost.pid();
    let good = std::fs::read_to_string(&roost.config).unwrap();
    std::fs::write(&roost.config, good.replace("threads: 2", "threads: two")).unwrap();
    let (code, _, err) = roost.upgrade();
    assert_ne!(code, 0);
    assert!(err.contains("server.threads"), "{err}");
    assert!(err.contains("nothing was started"), "{err}");
    assert_eq!(roost.pid(), pid);
    assert!(roost.alive(pid));
    assert_eq!(get_key(listen, "abc").unwrap().status, 200);
}

#[test]
fn upgrade_without_a_running_instance_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roost.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ pid_file: {0}/roost.pid, upgrade_sock: {0}/u.sock }}\n\
             services:\n  - name: fp\n    listen: 127.0.0.1:{1}\n    backends: [127.0.0.1:1]\n",
            dir.path().display(),
            free_port()
        ),
    )
    .unwrap();
    let (code, _, err) = run_roost(&["upgrade", "-c", &config.display().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("no running instance"), "{err}");
}

#[test]
fn reload_command_signals_the_daemon_after_validating() {
    let b1 = Backend::start("b1");
    let b2 = Backend::start("b2");
    let listen = listen_addr();
    let mut roost = Daemon::start(&daemon_yaml(listen, &[b1.addr], ""), &[listen]);
    let pid = roost.pid();
    let config = roost.config.display().to_string();
    let dir = roost.dir.path().display().to_string();

    std::fs::write(&roost.config, "services: [").unwrap();
    let (code, _, err) = run_roost(&["reload", "-c", &config]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid YAML"), "{err}");

    std::fs::write(
        &roost.config,
        daemon_yaml(listen, &[b2.addr], "").replace("{dir}", &dir),
    )
    .unwrap();
    let (code, out, err) = run_roost(&["reload", "-c", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("pid {pid}")), "{out}");
    wait_until(Duration::from_secs(10), "reload applied", || {
        get_key(listen, "abc").is_ok_and(|r| r.backend() == "b2")
    });
    assert_eq!(roost.pid(), pid);
}

/// A long grace period bounds slow requests; it is not slept when nothing is in flight. With
/// `grace_period_seconds: 30`, an idle stop ends within seconds; a stop with a 3 s response in
/// flight ends once that response is answered; an idle hot upgrade takes Pingora's 5 s
/// hand-over and little more.
#[test]
fn stops_and_upgrades_end_when_nothing_is_in_flight() {
    use std::time::Instant;
    let backend = Backend::start("b1");
    let listen = listen_addr();
    let long_grace =
        |yaml: String| yaml.replace("grace_period_seconds: 1", "grace_period_seconds: 30");
    let yaml = long_grace(config_yaml(&service_yaml(
        "fp",
        listen,
        &[backend.addr],
        "",
    )));

    let mut idle = Roost::start(&yaml, &[listen]);
    assert_eq!(get_key(listen, "k").unwrap().status, 200);
    let t0 = Instant::now();
    idle.proc.signal("TERM");
    assert_eq!(idle.proc.wait_exit(Duration::from_secs(20)), Some(0));
    let idle_stop = t0.elapsed();
    assert!(
        idle_stop < Duration::from_secs(10),
        "an idle stop took {idle_stop:?}"
    );
    assert!(
        idle.log_text().contains("stopped: no request in flight"),
        "{}",
        idle.log_text()
    );
    drop(idle);

    let admin = listen_addr();
    let with_admin = yaml.replace(
        "services:\n",
        &format!("admin: {{ listen: {admin} }}\nservices:\n"),
    );
    let mut busy = Roost::start(&with_admin, &[listen, admin]);
    let slow = std::thread::spawn(move || {
        get(listen, "/slow?ms=3000", &[("machineid", "slow")]).map(|r| r.status)
    });
    // The slow request is on its way to the backend before the stop.
    wait_until(
        Duration::from_secs(10),
        "the slow request in flight",
        || get(admin, "/status", &[]).is_ok_and(|r| r.text().contains("\"in_flight\": 1")),
    );
    let t0 = Instant::now();
    busy.proc.signal("TERM");
    assert_eq!(busy.proc.wait_exit(Duration::from_secs(30)), Some(0));
    let busy_stop = t0.elapsed();
    assert_eq!(slow.join().unwrap().expect("the slow answer"), 200);
    assert!(
        busy_stop >= Duration::from_millis(1500) && busy_stop < Duration::from_secs(20),
        "the stop with a 3 s request in flight took {busy_stop:?}"
    );
    drop(busy);

    let mut daemon = Daemon::start(
        &long_grace(
            daemon_yaml(listen, &[backend.addr], "")
                .replace("grace_period_seconds: 4", "grace_period_seconds: 30"),
        ),
        &[listen],
    );
    let t0 = Instant::now();
    let (code, out, err) = daemon.upgrade();
    assert_eq!(code, 0, "{out}{err}");
    let upgrade = t0.elapsed();
    assert!(
        upgrade < Duration::from_secs(20),
        "an idle upgrade took {upgrade:?}"
    );
    assert_eq!(get_key(listen, "k").unwrap().status, 200);
    // A normal upgrade logs no error (Pingora's wait for the sockets is logged as info).
    let log = daemon.log_text();
    assert!(!log.contains(" ERROR "), "{log}");
}

/// `roost upgrade` says which listen addresses change, and refuses a config that drops one
/// the running process serves (its clients would lose the service) unless
/// `--allow-closing-listeners` is given; then the new address serves and the old one is closed.
#[test]
fn an_upgrade_that_would_close_a_listener_is_refused_unless_allowed() {
    let backend = Backend::start("b1");
    let (listen, moved, admin) = (listen_addr(), listen_addr(), listen_addr());
    let yaml = |l: SocketAddr| {
        daemon_yaml(l, &[backend.addr], "").replace(
            "services:\n",
            &format!("admin: {{ listen: {admin} }}\nservices:\n"),
        )
    };
    let mut daemon = Daemon::start(&yaml(listen), &[listen, admin]);
    let before = daemon.pid();
    std::fs::write(
        &daemon.config,
        yaml(moved).replace("{dir}", &daemon.dir.path().display().to_string()),
    )
    .unwrap();

    let (code, out, err) = daemon.upgrade();
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "roost: upgrade: service fp: listen {listen} -> {moved}"
        )),
        "{out}"
    );
    assert!(
        err.contains(&format!("does not listen on {listen}"))
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(daemon.pid(), before, "the running process must stay");
    assert_eq!(get_key(listen, "k").unwrap().status, 200);

    let conf = daemon.config.display().to_string();
    let (code, out, err) = run_roost(&["upgrade", "-c", &conf, "--allow-closing-listeners"]);
    assert_eq!(code, 0, "{out}{err}\n{}", daemon.log_text());
    assert!(out.contains("upgrade done"), "{out}");
    assert_ne!(daemon.pid(), before);
    assert_eq!(get_key(moved, "k").unwrap().status, 200);
    assert!(
        std::net::TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_err(),
        "the dropped listener still accepts"
    );
}
