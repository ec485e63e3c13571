//! The admin status page in a real browser (headless Chromium). Without a driver: after its
//! script has run, the DOM lists every backend with its state and a screenshot shows a
//! rendered page. Driven by Playwright (`tests/status_page/drive.mjs`): the token entered on
//! the page, a key looked up, charts drawn from real traffic, a backend drained with its
//! button, and the page at 1280x800 and on a phone.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

fn chromium() -> &'static str {
    for candidate in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!("chromium is not installed; run `make deps` (apt-get install chromium)");
}

/// Run headless Chromium on `url` with `args`; returns stdout.
fn headless(profile: &std::path::Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=4000",
            "--window-size=1200,700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_page_lists_every_backend_in_a_browser() {
    let mut backends: Vec<Option<Backend>> = (1..=3)
        .map(|i| Some(Backend::start(&format!("b{i}"))))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().flatten().map(|b| b.addr).collect();
    let admin = listen_addr();
    let listen = listen_addr();
    let panicky = listen_addr();
    let check =
        "    health_check: { path: /health, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }\n";
    // A second service on the first and third backends, in panic mode once the third is
    // down (1 of 2 usable is 50 %).
    let services = service_yaml("flyingpigeon", listen, &addrs, check)
        + &service_yaml(
            "panicky",
            panicky,
            &[addrs[0], addrs[2]],
            &format!("{check}    panic_threshold: 60\n"),
        );
    let yaml = config_yaml(&services)
        .replace(
            "services:\n",
            &format!("admin: {{ listen: {admin} }}\nservices:\n"),
        )
        // The second backend is draining: the page says so.
        .replace(
            &format!("      - {}\n", addrs[1]),
            &format!("      - {{ address: \"{}\", state: drain }}\n", addrs[1]),
        );
    let roost = Roost::start(&yaml, &[listen, admin, panicky]);
    for i in 0..30 {
        get_key(listen, &format!("page-{i}")).unwrap();
    }
    let down = backends[2].take().unwrap().stop();
    wait_until(
        Duration::from_secs(10),
        "backend down, panicky in panic",
        || {
            let status: serde_json::Value =
                serde_json::from_str(&get(admin, "/status", &[]).unwrap().text()).unwrap();
            let services = status["services"].as_array().unwrap();
            services[1]["panic"] == true
                && services.iter().all(|s| {
                    s["backends"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|b| b["healthy"] == false)
                })
        },
    );

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{admin}/");
    let dom = headless(profile.path(), &url, &["--dump-dom"]);
    for addr in &addrs {
        let row = dom
            .split("<tr")
            .find(|r| r.contains(&format!("data-backend=\"{addr}\"")))
            .unwrap_or_else(|| panic!("no row for {addr} in\n{dom}"));
        let state = if *addr == down {
            "data-state=\"down\""
        } else if *addr == addrs[1] {
            "data-state=\"drain\""
        } else {
            "data-state=\"up\""
        };
        assert!(row.contains(state), "{addr} should show {state}: {row}");
    }
    assert!(dom.contains("flyingpigeon"), "{dom}");
    // Panic mode is per service: its heading says so and its backends show `panic`, up or
    // down; the same backends in the other service do not.
    let panic_section = dom
        .split("<section ")
        .find(|s| s.starts_with("class=\"panel service\" data-service=\"panicky\""))
        .unwrap_or_else(|| panic!("no section for panicky in\n{dom}"));
    assert!(panic_section.contains("PANIC MODE"), "{panic_section}");
    assert_eq!(
        panic_section.matches("data-state=\"panic\"").count(),
        2,
        "{panic_section}"
    );
    assert!(panic_section.contains("health: down"), "{panic_section}");
    // The stopped backend's transition is in the recent events, with the probe's reason.
    let event = dom
        .split("<li ")
        .find(|li| li.starts_with("data-kind=\"down\"") && li.contains(&down.to_string()))
        .unwrap_or_else(|| panic!("no down event for {down} in\n{dom}"));
    assert!(event.contains("failed checks; last: "), "{event}");
    // The drain says what it still waits for.
    assert!(dom.contains(" running jobs · "), "{dom}");
    // No token entered: no operator buttons.
    assert!(!dom.contains("data-action="), "{dom}");

    // The screenshot of the page must hold much more than an empty page's.
    let shots = tempfile::tempdir().unwrap();
    let page_png = shots.path().join("status.png");
    let blank_png = shots.path().join("blank.png");
    headless(
        profile.path(),
        &url,
        &[&format!("--screenshot={}", page_png.display())],
    );
    headless(
        profile.path(),
        "about:blank",
        &[&format!("--screenshot={}", blank_png.display())],
    );
    let page = std::fs::metadata(&page_png).expect("screenshot").len();
    let blank = std::fs::metadata(&blank_png)
        .expect("blank screenshot")
        .len();
    assert!(
        page > blank * 5 && page > 10_000,
        "screenshot {page} B vs blank {blank} B"
    );
    // Kept for a human look: target/status-page.png.
    let _ = std::fs::copy(
        &page_png,
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/status-page.png"),
    );
    drop(roost);
}

/// `tests/status_page/node_modules`, where `scripts/deps.sh` installs playwright-core.
fn driver_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/status_page");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed; run `make deps` (npm ci in tests/status_page)"
    );
    dir
}

#[test]
fn status_page_in_playwright_lookup_charts_drain_and_phone() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let admin = listen_addr();
    let listen = listen_addr();
    let token = "page-token-0123456789abcdef";
    let yaml = config_yaml(&service_yaml(
        "flyingpigeon",
        listen,
        &addrs,
        "    health_check: { path: /health, interval: 500ms, timeout: 400ms, rise: 1, fall: 2 }\n",
    ))
    .replace(
        "services:\n",
        &format!("admin: {{ listen: {admin}, token: {token} }}\nservices:\n"),
    );
    let roost = Roost::start(&yaml, &[listen, admin]);
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];

    // Real traffic for as long as the browser looks: 60 keys, about 50 requests a second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = get_key(listen, &format!("page-{}", sent % 60));
                sent += 1;
                // A steady rate, not a wait for anything.
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };
    // Every key has been forwarded once, so the looked-up one is in the sticky table.
    wait_until(Duration::from_secs(30), "60 keys in the table", || {
        let status: serde_json::Value =
            serde_json::from_str(&get(admin, "/status", &auth).unwrap().text()).unwrap();
        status["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["keys"].as_u64().unwrap())
            .sum::<u64>()
            >= 60
    });
    let key = "page-7";
    let route: serde_json::Value = serde_json::from_str(
        &get(
            admin,
            &format!("/route?service=flyingpigeon&key={key}"),
            &auth,
        )
        .unwrap()
        .text(),
    )
    .unwrap();
    let expected = route["backend"].as_str().unwrap().to_string();
    // Drain a backend that does not own the looked-up key.
    let drain = addrs
        .iter()
        .map(ToString::to_string)
        .find(|a| *a != expected)
        .unwrap();

    let shots = tempfile::tempdir().unwrap();
    let shot = shots.path().join("status-page.png");
    let phone = shots.path().join("status-page-phone.png");
    let out = Command::new("node")
        .arg("drive.mjs")
        .current_dir(driver_dir())
        .env("PAGE_URL", format!("http://{admin}/"))
        .env("TOKEN", token)
        .env("SERVICE", "flyingpigeon")
        .env("KEY", key)
        .env("DRAIN", &drain)
        .env("SHOT", &shot)
        .env("PHONE_SHOT", &phone)
        .env("CHROMIUM", chromium())
        .env("TIMEOUT_MS", "60000")
        .output()
        .expect("run node (apt-get install nodejs; see scripts/deps.sh)");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic.join().unwrap();
    assert!(
        out.status.success(),
        "drive.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("one JSON line");

    // The token: without it the page shows the 401 and no buttons; with it, three per backend.
    assert!(seen["without_token_error"]
        .as_str()
        .unwrap()
        .contains("401"));
    assert_eq!(seen["buttons_without_token"], 0);
    assert_eq!(seen["buttons_with_token"], 9);
    // The lookup shows what /route says.
    assert_eq!(seen["route"]["backend"], expected.as_str(), "{seen}");
    assert_eq!(seen["route"]["decision"], "forward");
    assert_eq!(seen["route"]["role"], route["role"]);
    assert_eq!(seen["route"]["reason"], route["reason"]);
    assert_eq!(seen["route"]["in sticky table"], "yes");
    assert!(seen["route"]["recorded on"]
        .as_str()
        .unwrap()
        .starts_with(expected.as_str()));
    // Charts from real traffic: every backend's two charts have a line of 2 or more points,
    // and /history has the requests behind them.
    let charts = seen["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 3);
    for c in charts {
        assert!(c["rps_segments"].as_u64().unwrap() >= 2, "{c}");
        assert!(c["p99_segments"].as_u64().unwrap() >= 2, "{c}");
        assert!(c["p99_text"].as_str().unwrap().ends_with(" ms"), "{c}");
    }
    let history: serde_json::Value =
        serde_json::from_str(&get(admin, "/history", &auth).unwrap().text()).unwrap();
    let mut charted = 0;
    for b in history["services"][0]["backends"].as_array().unwrap() {
        let points = b["points"].as_array().unwrap();
        let requests: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
        assert!(points.len() >= 2 && requests > 0, "{b}");
        assert!(points.iter().any(|p| p["p99_ms"].as_f64().is_some()), "{b}");
        charted += requests;
    }
    assert!(charted > 0 && charted <= sent, "{charted} of {sent}");
    // The drain button: the row says drain, and /status agrees.
    assert_eq!(seen["state_before"], "up");
    assert_eq!(seen["state_after"], "drain");
    assert_eq!(seen["drain_disabled"], true);
    let status: serde_json::Value =
        serde_json::from_str(&get(admin, "/status", &auth).unwrap().text()).unwrap();
    for b in status["services"][0]["backends"].as_array().unwrap() {
        let want = if b["addr"] == drain.as_str() {
            "drain"
        } else {
            "ready"
        };
        assert_eq!(b["state"], want, "{b}");
    }
    assert!(
        seen["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains(&drain)),
        "{seen}"
    );
    // A phone: nothing wider than its screen; no script errors.
    assert!(seen["phone_overflow"].as_i64().unwrap() <= 0, "{seen}");
    assert_eq!(seen["page_errors"], serde_json::json!([]));
    for png in [&shot, &phone] {
        let size = std::fs::metadata(png).expect("screenshot").len();
        assert!(size > 20_000, "{} is {size} B", png.display());
    }
    // Kept for a human look (doc/status-page.png is one of these).
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
    let _ = std::fs::copy(&shot, format!("{target}/status-page-1280.png"));
    let _ = std::fs::copy(&phone, format!("{target}/status-page-phone.png"));
    drop(roost);
    drop(backends);
}
