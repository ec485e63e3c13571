//! The admin status page in a real browser (headless Chromium): after its script has run, the
//! table lists every backend with its health, and a screenshot shows a rendered table.

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
    let yaml = config_yaml(&service_yaml(
        "flyingpigeon",
        listen,
        &addrs,
        "    health_check: { path: /health, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }\n",
    ))
    .replace(
        "services:\n",
        &format!("admin: {{ listen: {admin} }}\nservices:\n"),
    )
    // The second backend is draining: the page says so.
    .replace(
        &format!("      - {}\n", addrs[1]),
        &format!("      - {{ address: \"{}\", state: drain }}\n", addrs[1]),
    );
    let roost = Roost::start(&yaml, &[listen, admin]);
    for i in 0..30 {
        get_key(listen, &format!("page-{i}")).unwrap();
    }
    let down = backends[2].take().unwrap().stop();
    wait_until(Duration::from_secs(10), "backend down", || {
        get(admin, "/status", &[])
            .unwrap()
            .text()
            .contains("\"healthy\": false")
    });

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{admin}/");
    let dom = headless(profile.path(), &url, &["--dump-dom"]);
    for addr in &addrs {
        let row = dom
            .split("<tr")
            .find(|r| r.contains(&format!("data-backend=\"{addr}\"")))
            .unwrap_or_else(|| panic!("no row for {addr} in\n{dom}"));
        let health = if *addr == down { ">down<" } else { ">up<" };
        assert!(row.contains(health), "{addr} should be {health}: {row}");
        let state = if *addr == addrs[1] {
            ">draining · "
        } else {
            ">ready<"
        };
        assert!(row.contains(state), "{addr} should show {state}: {row}");
    }
    assert!(dom.contains("flyingpigeon"), "{dom}");

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
