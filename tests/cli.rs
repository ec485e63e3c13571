//! The command line: `-t` on good and bad files, every shipped config, `route`, and a bad file
//! at start-up.

mod common;

use common::*;
use std::time::Duration;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn every_shipped_config_passes_t() {
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("docker-compose.yaml") {
            let (code, out, err) = run_roost(&["-t", "-c", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {err}", path.display());
            assert!(out.contains(": OK ("), "{out}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected conf/roost.yaml and conf/example-local.yaml"
    );
}

#[test]
fn t_on_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "ok.yaml",
        "services:\n  - {name: a, listen: 127.0.0.1:1, backends: [10.0.0.1:80, 10.0.0.2:80]}\n",
    );
    let (code, out, err) = run_roost(&["-t", "-c", &file]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("roost: {file}: OK (1 services, 2 backends)")
    );
}

/// A file that loads but would cut slow requests off at a stop: `-t` says so on stderr and
/// still accepts it.
#[test]
fn t_warns_when_a_stop_would_cut_a_slow_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "short.yaml",
        "server: { grace_period_seconds: 30 }\nservices:\n  - {name: a, listen: 127.0.0.1:1, backends: [10.0.0.1:80]}\n",
    );
    let (code, out, err) = run_roost(&["-t", "-c", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK (1 services, 1 backends)"), "{out}");
    assert!(
        err.contains("warning: services[0] (a): timeouts.upstream_read (300 s) is longer than"),
        "{err}"
    );
}

#[test]
fn t_on_a_bad_file_prints_every_error_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "bad.yaml",
        "\
services:
  - name: a
    listen: 0.0.0.0:8093
    backends: [10.0.0.1]
  - name: a
    listen: 0.0.0.0:8094
    backends: [{address: 10.0.0.2:80, weight: 0}]
    when_down: later
",
    );
    let (code, out, err) = run_roost(&["-t", "-c", &file]);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    for expected in [
        format!("{file}:4: services[0].backends[0]: `10.0.0.1` has no port"),
        format!("{file}:5: services[1].name: duplicate service name `a`"),
        format!("{file}:7: services[1].backends[0].weight: must be at least 1"),
        format!("{file}:8: services[1].when_down: `later` is not one of: failover, reject"),
        format!("roost: {file}: 4 errors; nothing was started"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn t_on_a_missing_file() {
    let (code, _, err) = run_roost(&["-t", "-c", "/nonexistent/roost.yaml"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/nonexistent/roost.yaml: cannot read configuration"),
        "{err}"
    );
}

#[test]
fn unset_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "env.yaml",
        "services:\n  - {name: a, listen: \"127.0.0.1:${ROOST_TEST_SURELY_UNSET}\", backends: [10.0.0.1:80]}\n",
    );
    let (code, _, err) = run_roost(&["-t", "-c", &file]);
    assert_ne!(code, 0);
    assert!(err.contains("ROOST_TEST_SURELY_UNSET is not set"), "{err}");
}

#[test]
fn route_prints_the_backend_and_rejects_unknown_services() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "r.yaml",
        "services:\n  - {name: fp, listen: 127.0.0.1:1, backends: [127.0.0.11:8093, 127.0.0.12:8093, 127.0.0.13:8093]}\n",
    );
    // Pinned against NGINX `hash $http_machineid consistent` (see pool.rs tests).
    for (key, backend) in [
        ("abc", "127.0.0.11:8093"),
        ("def", "127.0.0.13:8093"),
        ("ghi", "127.0.0.12:8093"),
    ] {
        let (code, out, err) = run_roost(&["route", "-c", &file, "fp", key]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), backend, "{key}");
    }
    let (code, _, err) = run_roost(&["route", "-c", &file, "nope", "abc"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no service named 'nope'") && err.contains("fp"),
        "{err}"
    );
    let (code, _, _) = run_roost(&["route", "-c", &file, "fp", " "]);
    assert_eq!(code, 2);
}

/// `roost route` answers only for keys the proxy would route: a key the proxy refuses with 400
/// (too long, not printable ASCII) is refused here too, with the proxy's reason.
#[test]
fn route_refuses_the_keys_the_proxy_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "r.yaml",
        "services:\n  - {name: fp, listen: 127.0.0.1:1, backends: [127.0.0.11:8093, 127.0.0.12:8093]}\n",
    );
    let long = "k".repeat(300);
    for (key, reason) in [
        (long.as_str(), "too long"),
        ("caf\u{e9}", "printable ASCII"),
    ] {
        let (code, out, err) = run_roost(&["route", "-c", &file, "fp", key]);
        assert_eq!(code, 2, "{key}: printed {out:?}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("machineid header refused") && err.contains(reason),
            "{err}"
        );
    }
}

/// What `-t` accepts, the proxy can build and run: health-check paths and hosts Pingora would
/// refuse are config errors with file, line and key, and a tricky but valid path runs.
#[test]
fn a_config_that_validates_builds() {
    let dir = tempfile::tempdir().unwrap();
    for (case, check, key) in [
        ("path", "{ path: \"/status<x>\" }", "health_check.path"),
        ("space", "{ path: \"/a b\" }", "health_check.path"),
        (
            "host",
            "{ path: /health, host: \"wps\\x01\" }",
            "health_check.host",
        ),
    ] {
        let file = write(
            &dir,
            "hc.yaml",
            &format!(
                "services:\n  - name: fp\n    listen: 127.0.0.1:1\n    backends: [127.0.0.1:9]\n    health_check: {check}\n"
            ),
        );
        let (code, out, err) = run_roost(&["-c", &file, "-t"]);
        assert_eq!(code, 1, "{case}: {out}");
        assert!(
            err.contains(&format!("hc.yaml:5: services[0].{key}")),
            "{case}: {err}"
        );
    }

    let backend = Backend::start("b1");
    let listen = listen_addr();
    let yaml = config_yaml(&service_yaml(
        "fp",
        listen,
        &[backend.addr],
        "    health_check: { path: \"/wps?service=WPS&request=GetCapabilities&q=%3Cx%3E\", host: wps.example.org, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }\n",
    ));
    let (_tmp, config, log) = config_dir(&yaml);
    let config_text = config.display().to_string();
    let (code, out, err) = run_roost(&["-c", &config_text, "-t"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut proc = spawn_roost(&config, &log, &[]);
    wait_until(Duration::from_secs(15), "roost serves", || {
        get_key(listen, "abc").is_ok_and(|r| r.status == 200)
    });
    assert!(
        proc.is_running(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn a_bad_file_at_startup_exits_without_listening() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = write(
        &dir,
        "bad.yaml",
        &format!("services:\n  - {{name: a, listen: 127.0.0.1:{port}, backends: [10.0.0.1]}}\n"),
    );
    let log = dir.path().join("log");
    let mut roost = spawn_roost(std::path::Path::new(&file), &log, &[]);
    let code = roost.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("has no port"));
}

#[test]
fn version_and_help() {
    let (code, out, _) = run_roost(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("roost "), "{out}");
    let (code, out, _) = run_roost(&["--help"]);
    assert_eq!(code, 0);
    for flag in ["-c", "-t", "-d", "-u", "route"] {
        assert!(out.contains(flag), "{flag} missing from help:\n{out}");
    }
}
