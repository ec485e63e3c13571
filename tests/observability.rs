//! The admin listener and the access log against the real binary: /metrics counts match a
//! known mix of requests exactly, a killed backend shows up as down with a transition,
//! /route and `roost route` agree with where requests land, admin methods and paths are
//! checked, and access log lines come out in text and JSON.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

struct Observed {
    site: Site,
    admin: Admin,
}

/// Three backends behind `fp`, an admin listener, and `access_log` settings.
fn start(access_log: &str, extra: &str) -> Observed {
    let (site, admin) = Site::with_admin(extra, access_log, None);
    Observed { site, admin }
}

impl Observed {
    /// Each running backend's address, by the name it answers with.
    fn addr_by_name(&self) -> HashMap<String, String> {
        self.site
            .running()
            .map(|b| (b.name.clone(), b.addr.to_string()))
            .collect()
    }
}

#[test]
fn metrics_count_a_known_mix_exactly() {
    let o = start("access_log: { enabled: false }\n", "");
    let name_to_addr = o.addr_by_name();
    let mut per_backend: HashMap<String, usize> = HashMap::new();
    for i in 0..40 {
        let r = get_key(o.site.addr, &format!("k{i}")).unwrap();
        assert_eq!(r.status, 200);
        *per_backend
            .entry(name_to_addr[r.backend()].clone())
            .or_default() += 1;
    }
    for _ in 0..6 {
        let r = get(o.site.addr, "/", &[]).unwrap();
        assert_eq!(r.status, 200);
        *per_backend
            .entry(name_to_addr[r.backend()].clone())
            .or_default() += 1;
    }
    for _ in 0..3 {
        let r = get(o.site.addr, "/", &[("machineid", &"x".repeat(300))]).unwrap();
        assert_eq!(r.status, 400);
    }
    // A request is counted in `logging`, just after its response went out: wait for all 49.
    let duration_count = "roost_request_duration_seconds_count{service=\"fp\"}";
    wait_until(Duration::from_secs(5), "every request counted", || {
        sample(&o.admin.metrics(), duration_count) >= 49.0
    });
    let m = o.admin.metrics();
    for (addr, n) in &per_backend {
        let series =
            format!("roost_requests_total{{backend=\"{addr}\",class=\"2xx\",service=\"fp\"}}");
        assert_eq!(sample(&m, &series), *n as f64, "{series}\n{m}");
    }
    assert_eq!(
        sample(
            &m,
            "roost_requests_total{backend=\"none\",class=\"4xx\",service=\"fp\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(&m, "roost_requests_without_key_total{service=\"fp\"}"),
        6.0
    );
    assert_eq!(
        sample(&m, "roost_request_duration_seconds_count{service=\"fp\"}"),
        49.0
    );
    for addr in name_to_addr.values() {
        let up = format!("roost_backend_up{{backend=\"{addr}\",service=\"fp\"}}");
        assert_eq!(sample(&m, &up), 1.0, "{up}");
    }
    // The machineid is never a label.
    assert!(!m.contains("k1\""), "{m}");
}

#[test]
fn a_killed_backend_shows_as_down_with_a_transition() {
    let mut o = start(
        "",
        "    health_check: { path: /health, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }\n",
    );
    let addr = o.site.stop(1);
    wait_until(Duration::from_secs(10), "backend down in /metrics", || {
        sample(
            &o.admin.metrics(),
            &format!("roost_backend_up{{backend=\"{addr}\",service=\"fp\"}}"),
        ) == 0.0
            && !o.admin.metrics().is_empty()
    });
    let m = o.admin.metrics();
    let series =
        format!("roost_health_transitions_total{{backend=\"{addr}\",service=\"fp\",to=\"down\"}}");
    assert_eq!(sample(&m, &series), 1.0, "{m}");
    let status = o.admin.status();
    let down: Vec<&serde_json::Value> = status["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["healthy"] == false)
        .collect();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0]["addr"], addr.to_string());
}

#[test]
fn route_endpoint_and_command_agree_with_real_requests() {
    let o = start("access_log: { enabled: false }\n", "");
    let by_name = o.addr_by_name();
    let config = o.site.roost.config.display().to_string();
    for i in 0..200 {
        let key = format!("route-{i}");
        let landed = &by_name[get_key(o.site.addr, &key).unwrap().backend()];
        let r = o.admin.get(&format!("/route?service=fp&key={key}"));
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(v["backend"], landed.as_str(), "{key}");
        assert_eq!(v["role"], "owner");
        if i % 10 == 0 {
            // The command is slower (a process per call): every tenth key.
            let (code, out, err) = run_roost(&["route", "-c", &config, "fp", &key]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(out.trim(), landed, "{key}");
        }
    }
}

#[test]
fn admin_refuses_other_methods_and_unknown_paths() {
    let o = start("access_log: { enabled: false }\n", "");
    for method in ["POST", "PUT", "DELETE"] {
        let r = raw(
            o.admin.addr,
            format!("{method} /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET"));
    }
    assert_eq!(o.admin.get("/nope").status, 404);
    assert_eq!(o.admin.get("/route?service=fp").status, 400);
    let page = o.admin.get("/");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("<title>Roost status</title>"), "{html}");
    assert!(html.contains("id=\"route-form\""), "{html}");
    // One embedded file: nothing loaded from elsewhere.
    for external in ["src=\"http", "href=\"http", "@import", "<link "] {
        assert!(!html.contains(external), "{external} in the page");
    }
}

#[test]
fn access_log_lines_in_text_and_json() {
    let o = start("", "");
    let r = get(o.site.addr, "/some/path?x=1", &[("machineid", "alpha")]).unwrap();
    let backend = o
        .site
        .running()
        .find(|b| b.name == r.backend())
        .unwrap()
        .addr;
    get(o.site.addr, "/", &[("machineid", &"y".repeat(300))]).unwrap();
    // Both lines: with two worker threads the second request may be logged first.
    wait_until(Duration::from_secs(5), "text access log", || {
        let log = o.site.roost.log_text();
        log.contains("\" 400 key=- backend=- ") && log.contains("/some/path?x=1")
    });
    let log = o.site.roost.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("/some/path?x=1"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(" fp 127.0.0.1 \"GET /some/path?x=1\" 200 key=alpha "),
        "{line}"
    );
    assert!(line.contains(&format!("backend={backend} ")), "{line}");

    let json_dir = tempfile::tempdir().unwrap();
    let json_path = json_dir.path().join("access.log");
    let o = start(
        &format!(
            "access_log: {{ format: json, path: {} }}\n",
            json_path.display()
        ),
        "",
    );
    get(o.site.addr, "/wps?service=WPS", &[("machineid", "beta")]).unwrap();
    let mut text = String::new();
    wait_until(Duration::from_secs(5), "json access log", || {
        text = std::fs::read_to_string(&json_path).unwrap_or_default();
        text.contains("beta")
    });
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["service"], "fp");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/wps?service=WPS");
    assert_eq!(v["status"], 200);
    assert_eq!(v["machineid"], "beta");
    assert!(v["backend"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(v["bytes"].as_u64().unwrap() > 0);
}

#[test]
fn a_graceful_stop_writes_the_lines_of_requests_answered_while_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut o = start(&format!("access_log: {{ path: {} }}\n", path.display()), "");
    // The grace period is 1 s (`config_yaml`): these are answered during it, the last one
    // shortly before the process exits. The stop comes 400 ms after they start: a stopping
    // Pingora accepts no new connection, so each must have been accepted by then, also on a
    // busy machine.
    let addr = o.site.addr;
    let slow: Vec<_> = [600, 900, 1200]
        .into_iter()
        .map(|ms| {
            std::thread::spawn(move || {
                get(
                    addr,
                    &format!("/slow?ms={ms}"),
                    &[("machineid", &format!("slow-{ms}"))],
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    o.site.roost.proc.signal("TERM");
    for s in slow {
        assert_eq!(s.join().unwrap().expect("a slow answer").status, 200);
    }
    assert_eq!(
        o.site.roost.proc.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        o.site.roost.log_text()
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for ms in [600, 900, 1200] {
        assert!(
            text.contains(&format!("key=slow-{ms} ")),
            "slow-{ms}:\n{text}"
        );
    }
}
