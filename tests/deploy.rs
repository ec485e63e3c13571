//! Deployment files: the docker-compose file and the systemd unit parse and say what
//! doc/operations.md promises, the Dockerfile builds the binary CI builds, and the container
//! entrypoint keeps running across a hot swap (run here directly, without an engine; the image,
//! compose and the unit under systemd run for real in `scripts/deploy-check.sh`).

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn compose_file_replaces_the_seed_proxy() {
    let compose: serde_yaml::Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let proxy = &compose["services"]["proxy"];
    assert!(proxy.is_mapping(), "services.proxy missing");
    let ports: Vec<&str> = proxy["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for port in ["8093", "8091", "8094"] {
        assert!(
            ports.iter().any(|p| p.contains(port)),
            "{port} not published: {ports:?}"
        );
    }
    let volumes = format!("{:?}", proxy["volumes"]);
    assert!(volumes.contains(":/etc/roost/roost.yaml"), "{volumes}");
    // The sticky tables outlive the container: the config's default state_dir is a named
    // volume, and the image makes that directory the roost user's.
    assert!(volumes.contains("roost-state:/var/lib/roost"), "{volumes}");
    assert!(compose["volumes"]
        .as_mapping()
        .is_some_and(|v| v.contains_key(serde_yaml::Value::from("roost-state"))));
    assert!(read("conf/roost.yaml").contains("state_dir: ${ROOST_STATE_DIR:-/var/lib/roost}"));
    assert!(read("Dockerfile").contains("ROOST_STATE_DIR=/var/lib/roost"));
    assert!(std::path::Path::new(ROOT).join("conf/roost.yaml").exists());
    // Every variable the shipped config reads can be set through the compose environment.
    let env = proxy["environment"].as_mapping().unwrap();
    let config = read("conf/roost.yaml");
    for var in config
        .split("${")
        .skip(1)
        .filter_map(|s| s.split([':', '}']).next())
    {
        if [
            "ROOST_PID_FILE",
            "ROOST_UPGRADE_SOCK",
            "ROOST_ERROR_LOG",
            "ROOST_ACCESS_LOG",
            "ROOST_STATE_DIR",
        ]
        .contains(&var)
        {
            continue; // set by the image (paths inside the container)
        }
        assert!(
            env.contains_key(serde_yaml::Value::from(var)),
            "{var} is not in the compose environment"
        );
    }
}

#[test]
fn dockerfile_builds_what_ci_builds_and_runs_unprivileged() {
    let docker = read("Dockerfile");
    for needle in [
        "cmake",
        "cargo build --release --locked --bin roost",
        "USER roost",
        "HEALTHCHECK",
        "/etc/roost/roost.yaml",
        "tini",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks {needle}");
    }
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(
                std::path::Path::new(ROOT).join(src).exists(),
                "{line}: {src} does not exist"
            );
        }
    }
    // cargo refuses a manifest whose declared targets are missing: the build stage copies
    // every bench Cargo.toml names (scripts/deploy-check.sh runs the real build).
    for bench in bench_names(&read("Cargo.toml")) {
        assert!(
            docker.contains("COPY benches ./benches")
                && std::path::Path::new(ROOT)
                    .join(format!("benches/{bench}.rs"))
                    .exists(),
            "Cargo.toml declares the bench {bench}: the Dockerfile must copy benches/"
        );
    }
    // The build context is what the Dockerfile copies, not target/ or .git.
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "*"), "{ignore}");
}

/// The names of Cargo.toml's `[[bench]]` targets (just enough TOML for that).
fn bench_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if let Some(v) = line.strip_prefix("name = ").filter(|_| in_bench) {
            names.push(v.trim_matches('"').to_string());
        }
    }
    names
}

#[test]
fn systemd_unit_is_forking_with_a_hot_swap_reload_and_a_sandbox() {
    let unit = read("conf/roost.service");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(value("Type"), ["forking"]);
    assert_eq!(value("PIDFile"), ["/run/roost/roost.pid"]);
    assert!(value("Environment").contains(&"ROOST_PID_FILE=/run/roost/roost.pid".to_string()));
    assert!(value("ExecReload")[0].contains("roost upgrade -c /etc/roost/roost.yaml"));
    assert!(value("ExecStart")[0].ends_with("-d"));
    // No `roost -t` before the start: it is strict about backend hosts that do not resolve,
    // which the server starts without. The pid file check it did is done by the start itself.
    assert!(value("ExecStartPre").is_empty());
    assert!(value("Environment").contains(&"ROOST_UNIT_PID_FILE=/run/roost/roost.pid".to_string()));
    assert_eq!(value("User"), ["roost"]);
    assert_eq!(value("NoNewPrivileges"), ["yes"]);
    assert_eq!(value("ProtectSystem"), ["strict"]);
    // /var/lib/roost, the shipped config's state_dir, is writable under ProtectSystem=strict.
    assert_eq!(value("StateDirectory"), ["roost"]);
    assert_eq!(value("Restart"), ["on-failure"]);
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "{section}");
    }
}

#[test]
fn container_entrypoint_survives_a_hot_swap_and_stops_on_term() {
    let backend = Backend::start("b1");
    let dir = tempfile::tempdir().unwrap();
    let listen = listen_addr();
    let config = dir.path().join("roost.yaml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "server:\n  pid_file: ${{ROOST_PID_FILE}}\n  upgrade_sock: {d}/u.sock\n  error_log: {d}/roost.log\n  \
             grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n\
             services:\n  - name: fp\n    listen: {listen}\n    backends: [{}]\n",
            backend.addr
        ),
    )
    .unwrap();
    let pid_file = dir.path().join("roost.pid");
    let bin_dir = std::path::Path::new(ROOST).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut entry = Proc {
        child: Command::new(format!("{ROOT}/deploy/docker-entrypoint.sh"))
            .env("PATH", &path)
            .env("ROOST_CONFIG", &config)
            .env("ROOST_PID_FILE", &pid_file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let read_pid = || -> i32 {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    // Whatever happens, kill every Roost this test saw.
    struct Reaper(Vec<i32>);
    impl Drop for Reaper {
        fn drop(&mut self) {
            for &pid in &self.0 {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let mut reaper = Reaper(Vec::new());
    wait_until(Duration::from_secs(15), "roost listening", || {
        std::net::TcpStream::connect(listen).is_ok()
    });
    let old = read_pid();
    reaper.0.push(old);
    assert_eq!(get_key(listen, "abc").unwrap().status, 200);

    let out = Command::new(ROOST)
        .args(["upgrade", "-c", config.to_str().unwrap()])
        .env("ROOST_PID_FILE", &pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = read_pid();
    reaper.0.push(new);
    assert_ne!(new, old);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        entry.is_running(),
        "the entrypoint exited with the old process"
    );
    assert_eq!(get_key(listen, "abc").unwrap().status, 200);

    entry.signal("TERM");
    assert_eq!(entry.wait_exit(Duration::from_secs(20)), Some(0));
    wait_until(Duration::from_secs(10), "roost stopped", || {
        std::net::TcpStream::connect(listen).is_err()
    });
}
