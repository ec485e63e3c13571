//! The shared state (`state.redis`) against a real `redis-server` and two real Roost
//! instances on loopback: a key learned through A is routed the same way by B, also where B's
//! own ring (B lists one backend more) would send it elsewhere, and the delay is measured; a
//! key that failed over on A is seen moved on B; Redis killed under load costs no request, is
//! logged once per instance, and the tables reconcile when it is back (empty); two instances
//! that learned a key differently while Redis was away agree afterwards on the entry recorded
//! first (the conflict rule).

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "shared-state-test-token-0123";

/// A `redis-server` on a run-time port, without persistence (a restart starts empty).
struct Redis {
    port: u16,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let mut redis = Redis {
            port: stable_port(),
            proc: None,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        redis
    }

    /// Start it (again) on its port and wait until it answers; on a timeout the panic carries
    /// Redis's own log (e.g. the port taken).
    fn restart(&mut self) {
        assert!(self.proc.is_none(), "already running");
        let log = self.dir.path().join("redis.log");
        let child = Command::new(redis_binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut proc = Proc { child };
        let start = Instant::now();
        while !self.command("PING").is_some_and(|r| r.starts_with("+PONG")) {
            if start.elapsed() > Duration::from_secs(20) || !proc.is_running() {
                panic!(
                    "redis-server on port {} did not answer (running: {}); its log:\n{}",
                    self.port,
                    proc.is_running(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc = Some(proc);
    }

    /// SIGKILL: gone at once, as a crashed Redis.
    fn kill(&mut self) {
        drop(self.proc.take().expect("running"));
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One inline command; the first reply line.
    fn command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Keys in database 0.
    fn dbsize(&self) -> u64 {
        let reply = self.command("DBSIZE").unwrap_or_default();
        reply.trim().trim_start_matches(':').parse().unwrap_or(0)
    }
}

/// The installed `redis-server` (`make deps` installs it).
fn redis_binary() -> String {
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!("redis-server is not installed; run `make deps` (or apt-get install redis-server)");
}

/// One Roost instance sharing through `redis`, in front of `backends`.
struct Instance {
    roost: Roost,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Instance {
    fn start(redis: &Redis, backends: &[SocketAddr], extra: &str) -> Instance {
        let (listen, admin) = (listen_addr(), listen_addr());
        let yaml = config_yaml(&service_yaml("fp", listen, backends, extra)).replace(
            "services:\n",
            &format!(
                "admin: {{ listen: {admin}, token: {TOKEN} }}\nstate: {{ redis: \"{}\", prefix: \"t:\" }}\nservices:\n",
                redis.url()
            ),
        );
        let roost = Roost::start(&yaml, &[listen, admin]);
        Instance {
            roost,
            listen,
            admin,
        }
    }

    /// `GET path` on the admin listener.
    fn admin_get(&self, path: &str) -> Option<String> {
        let auth = format!("Bearer {TOKEN}");
        let resp = get(self.admin, path, &[("Authorization", &auth)]).ok()?;
        Some(resp.text())
    }

    fn metric(&self, series: &str) -> Option<u64> {
        let text = self.admin_get("/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    fn wait_shared(&self, up: bool) {
        let want = u64::from(up);
        wait_until(Duration::from_secs(15), "roost_shared_state_up", || {
            self.metric("roost_shared_state_up ") == Some(want)
        });
    }

    /// `/route` for `key`: (the backend it goes to now, the table's backend if any).
    fn route(&self, key: &str) -> (String, Option<String>) {
        let text = self
            .admin_get(&format!("/route?service=fp&key={key}"))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        (
            v["backend"].as_str().unwrap_or("").to_string(),
            v["table"]["backend"].as_str().map(str::to_string),
        )
    }

    /// Send `key` through this instance: the address of the backend that answered.
    fn send(&self, key: &str, names: &HashMap<String, SocketAddr>) -> String {
        let resp = get_key(self.listen, key).unwrap();
        assert_eq!(resp.status, 200, "{key}: {}", resp.text());
        names[resp.backend()].to_string()
    }

    /// `backend`'s entry in `/status`.
    fn backend_status(&self, backend: SocketAddr) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.admin_get("/status").unwrap()).unwrap();
        v["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["addr"] == backend.to_string())
            .cloned()
            .unwrap()
    }

    /// The operator state `/status` shows for `backend`.
    fn state_of(&self, backend: SocketAddr) -> String {
        self.backend_status(backend)["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The WPS jobs `/status` counts as running on `backend`.
    fn running_jobs(&self, backend: SocketAddr) -> u64 {
        self.backend_status(backend)["running_jobs"]
            .as_u64()
            .unwrap()
    }

    /// `roost backend ACTION -c CONFIG fp BACKEND`, through this instance's admin API.
    fn backend_cmd(&self, action: &str, backend: SocketAddr) {
        let conf = self.roost.config.display().to_string();
        let (code, out, err) =
            run_roost(&["-c", &conf, "backend", action, "fp", &backend.to_string()]);
        assert_eq!(code, 0, "{out}{err}");
    }

    fn outages_logged(&self) -> usize {
        self.roost
            .log_text()
            .lines()
            .filter(|l| l.contains("shared state: Redis at") && l.contains("unreachable"))
            .count()
    }
}

fn start_backends(n: usize) -> (Vec<Backend>, HashMap<String, SocketAddr>) {
    let backends: Vec<Backend> = (1..=n).map(|i| Backend::start(&format!("b{i}"))).collect();
    let names = backends.iter().map(|b| (b.name.clone(), b.addr)).collect();
    (backends, names)
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Wait until `instance` routes every key of `want` to its backend.
fn wait_agrees(instance: &Instance, want: &HashMap<String, String>, what: &str) {
    wait_until(Duration::from_secs(15), what, || {
        want.iter().all(|(k, b)| instance.route(k).0 == *b)
    });
}

#[test]
fn keys_learned_through_one_instance_route_the_same_on_the_other() {
    let mut redis = Redis::start();
    let (backends, names) = start_backends(4);
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    // B has a fourth backend: its ring sends about a quarter of the keys elsewhere.
    // A failed-over key moves (no stand-in): the move is shared.
    let extra = "    affinity:\n      return_after_recovery: false\n";
    let a = Instance::start(&redis, &addrs[..3], extra);
    let b = Instance::start(&redis, &addrs, extra);
    a.wait_shared(true);
    b.wait_shared(true);

    let keys = keys("k", 500);
    let ring_b: HashMap<String, String> = keys.iter().map(|k| (k.clone(), b.route(k).0)).collect();
    let on_a: HashMap<String, String> = keys
        .iter()
        .map(|k| (k.clone(), a.send(k, &names)))
        .collect();
    let differ = keys.iter().filter(|k| ring_b[*k] != on_a[*k]).count();
    assert!(
        differ > 50,
        "B's ring differs for only {differ} of 500 keys"
    );
    wait_agrees(&b, &on_a, "B routing A's 500 keys");
    for k in &keys {
        assert_eq!(b.send(k, &names), on_a[k], "{k} through B");
    }
    assert!(redis.dbsize() >= 500, "the entries are in Redis");

    // The propagation delay: from A's answer to B's table having the key.
    let mut delays: Vec<Duration> = (0..100)
        .map(|i| {
            let key = format!("delay-{i}");
            let want = a.send(&key, &names);
            let t0 = Instant::now();
            loop {
                if b.route(&key).1.as_deref() == Some(want.as_str()) {
                    break t0.elapsed();
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "{key} never reached B"
                );
            }
        })
        .collect();
    delays.sort();
    let (median, p99, max) = (delays[50], delays[98], delays[99]);
    eprintln!(
        "propagation delay A -> B over 100 keys: median {median:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(
        max < Duration::from_secs(1),
        "max propagation delay {max:?}"
    );

    // A key that fails over on A (its backend killed) is seen moved on B, which has not
    // noticed the backend is down (it sent nothing there).
    let on_b1: Vec<&String> = keys
        .iter()
        .filter(|k| on_a[*k] == addrs[0].to_string())
        .collect();
    assert!(!on_b1.is_empty());
    let mut backends = backends;
    drop(backends.remove(0));
    let moved = on_b1[0];
    let now_on_a = a.send(moved, &names);
    assert_ne!(now_on_a, addrs[0].to_string());
    wait_until(Duration::from_secs(5), "the move reaching B", || {
        b.route(moved).1.as_deref() == Some(now_on_a.as_str())
    });
    assert_eq!(b.send(moved, &names), now_on_a);
    redis.kill();
}

#[test]
fn redis_killed_under_load_fails_no_request_and_reconciles_when_back() {
    let mut redis = Redis::start();
    let (backends, names) = start_backends(4);
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let a = Instance::start(&redis, &addrs[..3], "");
    let b = Instance::start(&redis, &addrs, "");
    a.wait_shared(true);
    b.wait_shared(true);

    let load_a = Load::with_prefix("la", a.listen, 4, 20);
    let load_b = Load::with_prefix("lb", b.listen, 4, 20);
    std::thread::sleep(Duration::from_millis(500)); // traffic before the outage
    redis.kill();
    a.wait_shared(false);
    b.wait_shared(false);
    // Learned on A while Redis is away: B cannot hear of them yet.
    let outage = keys("outage", 100);
    let on_a: HashMap<String, String> = outage
        .iter()
        .map(|k| (k.clone(), a.send(k, &names)))
        .collect();
    let differ = outage.iter().filter(|k| b.route(k).0 != on_a[*k]).count();
    assert!(
        differ > 0,
        "B's ring agrees with A on every key: nothing to prove"
    );
    wait_until(Duration::from_secs(5), "A counting failed writes", || {
        a.metric("roost_shared_state_errors_total{op=\"write\"} ")
            .unwrap_or(0)
            > 0
    });

    redis.restart();
    a.wait_shared(true);
    b.wait_shared(true);
    wait_agrees(&b, &on_a, "B routing the keys A learned during the outage");
    let report_a = load_a.stop();
    let report_b = load_b.stop();
    for (name, report) in [("A", &report_a), ("B", &report_b)] {
        assert!(report.ok > 100, "{name}: only {} requests", report.ok);
        assert!(
            report.failures.is_empty(),
            "{name}: {:?}",
            &report.failures[..report.failures.len().min(5)]
        );
        // Each instance kept its own table: every key stayed on one backend.
        for (key, seen) in &report.backends {
            assert!(seen.iter().all(|s| *s == seen[0]), "{name} {key}: {seen:?}");
        }
    }
    // Redis restarted empty: A and B pushed their tables back.
    wait_until(Duration::from_secs(5), "the tables pushed back", || {
        redis.dbsize() >= 100 + report_a.backends.len() as u64
    });
    assert_eq!(a.outages_logged(), 1, "{}", a.roost.log_text());
    assert_eq!(b.outages_logged(), 1, "{}", b.roost.log_text());
    drop(backends);
    redis.kill();
}

#[test]
fn the_entry_recorded_first_wins_when_two_instances_learned_a_key_differently() {
    // Redis is not there when both start: each learns on its own.
    let mut redis = Redis::start();
    redis.kill();
    let (backends, names) = start_backends(4);
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let a = Instance::start(&redis, &addrs[..3], "");
    let b = Instance::start(&redis, &addrs, "");
    a.wait_shared(false);
    b.wait_shared(false);
    let keys = keys("c", 200);
    let on_a: HashMap<String, String> = keys
        .iter()
        .map(|k| (k.clone(), a.send(k, &names)))
        .collect();
    std::thread::sleep(Duration::from_millis(50)); // B records its entries clearly later
    let on_b: HashMap<String, String> = keys
        .iter()
        .map(|k| (k.clone(), b.send(k, &names)))
        .collect();
    let conflicts = keys.iter().filter(|k| on_a[*k] != on_b[*k]).count();
    assert!(conflicts > 10, "only {conflicts} conflicting keys");

    redis.restart();
    a.wait_shared(true);
    b.wait_shared(true);
    // A recorded every key first: its entries stay, on both.
    wait_agrees(&b, &on_a, "B taking A's older entries");
    for k in &keys {
        assert_eq!(a.route(k).0, on_a[k], "{k}: A keeps its entry");
        assert_eq!(b.send(k, &names), on_a[k], "{k} through B");
    }
    let settled = a
        .metric("roost_shared_state_entries_total{event=\"conflict\",service=\"fp\"} ")
        .unwrap_or(0)
        + b.metric("roost_shared_state_entries_total{event=\"conflict\",service=\"fp\"} ")
            .unwrap_or(0);
    assert!(settled > 0, "no conflict counted");
    drop(backends);
    redis.kill();
}

#[test]
fn a_drain_set_through_one_instance_holds_on_the_other() {
    let mut redis = Redis::start();
    let (backends, names) = start_backends(3);
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let a = Instance::start(&redis, &addrs, "");
    let b = Instance::start(&redis, &addrs, "");
    a.wait_shared(true);
    b.wait_shared(true);
    let b2 = addrs[1];
    let t0 = Instant::now();
    a.backend_cmd("drain", b2);
    wait_until(Duration::from_secs(5), "the drain reaching B", || {
        b.state_of(b2) == "drain"
    });
    eprintln!("drain set on A seen on B after {:?}", t0.elapsed());
    // New keys through B avoid the draining backend.
    let fresh = keys("new", 60);
    for k in &fresh {
        assert_ne!(
            b.send(k, &names),
            b2.to_string(),
            "{k} reached the draining b2"
        );
    }
    a.backend_cmd("maint", b2);
    wait_until(Duration::from_secs(5), "maint reaching B", || {
        b.state_of(b2) == "maint"
    });
    // Set on B, back to ready on both.
    b.backend_cmd("ready", b2);
    wait_until(Duration::from_secs(5), "ready reaching A", || {
        a.state_of(b2) == "ready"
    });
    // An instance started later reads the states in Redis.
    a.backend_cmd("drain", addrs[2]);
    let c = Instance::start(&redis, &addrs, "");
    c.wait_shared(true);
    wait_until(
        Duration::from_secs(5),
        "the drain reaching a late instance",
        || c.state_of(addrs[2]) == "drain",
    );
    assert_eq!(c.state_of(b2), "ready");
    drop(backends);
    redis.kill();
}

#[test]
fn a_wps_job_started_through_one_instance_is_polled_through_the_other() {
    const JOB: &str = "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e11";
    let mut redis = Redis::start();
    let (backends, names) = start_backends(3);
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let extra = "    wps_affinity: true\n";
    let a = Instance::start(&redis, &addrs, extra);
    let b = Instance::start(&redis, &addrs, extra);
    a.wait_shared(true);
    b.wait_shared(true);
    let r = get(
        a.listen,
        &format!("/job/{JOB}?split=7"),
        &[("machineid", "k1")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let owner = r.backend().to_string();
    // B learns the job without any request through it (its own status documents would teach
    // it after a few rotated polls; the shared job makes the first poll right).
    wait_until(Duration::from_secs(5), "the job reaching B", || {
        b.running_jobs(names[&owner]) == 1
    });
    // Keyless polls through B (OWSLib polls statusLocation without machineid): without the
    // shared job, B's hash.missing would rotate them over all three backends.
    let path = format!("/outputs/{JOB}.xml");
    let polls: Vec<String> = (0..12)
        .map(|_| get(b.listen, &path, &[]).unwrap().backend().to_string())
        .collect();
    assert!(polls.iter().all(|p| *p == owner), "{polls:?}");
    // Any other keyless request still rotates on B.
    let others: std::collections::HashSet<String> = (0..6)
        .map(|_| get(b.listen, "/", &[]).unwrap().backend().to_string())
        .collect();
    assert_eq!(others.len(), 3);
    drop(backends);
    redis.kill();
}

/// Without `state.redis` nothing about Redis is exported: behaviour as before.
#[test]
fn without_a_state_section_nothing_is_shared() {
    let (backends, _) = start_backends(1);
    let (listen, admin) = (listen_addr(), listen_addr());
    let yaml = config_yaml(&service_yaml("fp", listen, &[backends[0].addr], "")).replace(
        "services:\n",
        &format!("admin: {{ listen: {admin} }}\nservices:\n"),
    );
    let roost = Roost::start(&yaml, &[listen, admin]);
    assert_eq!(get_key(listen, "x").unwrap().status, 200);
    let text = get(admin, "/metrics", &[]).unwrap().text();
    assert!(!text.contains("roost_shared_state_up "), "{text}");
    assert!(!roost.log_text().contains("shared state"));
}
