//! `wps_affinity` through the real binary: a job learned from an Execute response that arrives
//! in 7-byte chunks sends keyless requests for its status document and outputs to the backend
//! that ran it; without the switch, or when that backend is gone, `hash.missing` decides.
//! A running job (its status documents say so) pins its key in the sticky table past
//! `affinity.ttl` until it ends, `/status` counts it on its backend, and its key moving away
//! from that backend is a counted, logged "job moved machines" event; a draining backend is
//! "drained: safe to stop" only once its last job has ended.
//! (`tests/e2e` does the same with real PyWPS servers, OWSLib and birdy.)

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

const JOB: &str = "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e11";
const TOKEN: &str = "wps-affinity-test-token-0123456789";
const AFFINITY: &str = "    wps_affinity: true\n";

/// Execute `JOB` with a key; the backend that answered.
fn execute(site: &Site) -> String {
    let r = get(
        site.addr,
        &format!("/job/{JOB}?split=7"),
        &[("machineid", "k1")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    // Passed on untouched.
    assert!(
        r.text().contains(&format!(
            "statusLocation=\"http://roost:8093/outputs/{JOB}.xml\""
        )),
        "{}",
        r.text()
    );
    r.backend().to_string()
}

/// Backends that answered `n` keyless GETs of `path`.
fn keyless(site: &Site, path: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = get(site.addr, path, &[]).unwrap();
            assert_eq!(r.status, 200, "{path}");
            r.backend().to_string()
        })
        .collect()
}

fn distinct(names: Vec<String>) -> HashSet<String> {
    names.into_iter().collect()
}

#[test]
fn keyless_requests_follow_a_job_learned_from_a_chunked_response() {
    let site = Site::start(AFFINITY);
    let owner = execute(&site);
    for path in [
        format!("/outputs/{JOB}.xml"),
        format!("/outputs/{JOB}/output.nc"),
        format!("/wps?service=WPS&version=2.0.0&request=GetStatus&jobid={JOB}"),
    ] {
        assert_eq!(
            distinct(keyless(&site, &path, 6)),
            HashSet::from([owner.clone()])
        );
    }
    // A job Roost never saw, and any other keyless request: round robin as before.
    let unknown = "/outputs/00000000-0000-0000-0000-000000000000.xml";
    assert_eq!(distinct(keyless(&site, unknown, 6)).len(), 3);
    assert_eq!(distinct(keyless(&site, "/", 6)).len(), 3);
}

#[test]
fn without_the_switch_hash_missing_decides() {
    let site = Site::start("");
    execute(&site);
    assert_eq!(
        distinct(keyless(&site, &format!("/outputs/{JOB}.xml"), 6)).len(),
        3
    );
}

#[test]
fn when_the_jobs_backend_is_gone_hash_missing_decides() {
    let mut site = Site::start(AFFINITY);
    let owner = execute(&site);
    let index = site
        .backends
        .iter()
        .position(|b| b.as_ref().is_some_and(|b| b.name == owner))
        .unwrap();
    site.stop(index);
    // No health check: the first request finds the connection refused and is retried by
    // round robin among the others; it never fails.
    let answered = distinct(keyless(&site, &format!("/outputs/{JOB}.xml"), 6));
    assert_eq!(answered.len(), 2, "{answered:?}");
    assert!(!answered.contains(&owner));
}

/// Three demo backends behind `fp` with `wps_affinity`, `extra` service keys and an admin
/// listener.
struct Jobs {
    site: Site,
    admin: Admin,
}

impl Jobs {
    fn start(extra: &str) -> Jobs {
        let (site, admin) = Site::with_admin(&format!("{AFFINITY}{extra}"), "", Some(TOKEN));
        Jobs { site, admin }
    }

    /// Execute `job` with `key`: the backend that accepted it.
    fn execute(&self, job: &str, key: &str) -> &Backend {
        let r = get(
            self.site.addr,
            &format!("/job/{job}"),
            &[("machineid", key)],
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let name = r.backend().to_string();
        self.site.running().find(|b| b.name == name).unwrap()
    }

    /// `running_jobs` of every backend in `/status`, by address.
    fn running_jobs(&self) -> Vec<(String, u64)> {
        let status = self.admin.status();
        status["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let n = b["running_jobs"].as_u64().expect("running_jobs");
                (b["addr"].as_str().unwrap().to_string(), n)
            })
            .collect()
    }

    /// `/route` for `key`: its `table` entry (`Null` when not in the table).
    fn entry(&self, key: &str) -> Value {
        self.admin.json(&format!("/route?service=fp&key={key}"))["table"].clone()
    }
}

/// `running_jobs` as `/status` should show it: `n` on `owner`, 0 elsewhere.
fn running_only_on(jobs: &Jobs, owner: SocketAddr, n: u64) -> Vec<(String, u64)> {
    jobs.site
        .running()
        .map(|b| (b.addr.to_string(), if b.addr == owner { n } else { 0 }))
        .collect()
}

#[test]
fn a_running_jobs_key_stays_pinned_past_the_ttl_and_expires_after_the_job_ends() {
    let jobs = Jobs::start("    affinity: { ttl: 3s }\n");
    let owner = jobs.execute(JOB, "k1");
    let owner_addr = owner.addr;
    // A key without a job, to show the TTL at work.
    assert_eq!(get_key(jobs.site.addr, "no-job").unwrap().status, 200);
    assert_eq!(jobs.entry("k1")["pinned_by_jobs"], 1);
    assert_eq!(jobs.running_jobs(), running_only_on(&jobs, owner_addr, 1));

    // The client polls the status document without its key (as OWSLib does): the key is not
    // refreshed, yet stays in the table long past its TTL while the job runs.
    let status_doc = format!("/outputs/{JOB}.xml");
    wait_until(Duration::from_secs(30), "k1 idle for 5 s", || {
        let poll = get(jobs.site.addr, &status_doc, &[]).unwrap();
        assert!(poll.text().contains("ProcessStarted"), "{}", poll.text());
        let entry = jobs.entry("k1");
        assert!(!entry.is_null(), "a key with a running job expired");
        // A client's poll interval, not a wait for anything.
        std::thread::sleep(Duration::from_millis(200));
        entry["idle_seconds"].as_u64().unwrap() >= 5
    });
    assert!(jobs.entry("no-job").is_null(), "the TTL is 3 s");
    assert_eq!(jobs.running_jobs(), running_only_on(&jobs, owner_addr, 1));

    // The job ends; the next status document says so, and the key is idle from then on.
    let done = get(owner_addr, &format!("/finish/{JOB}"), &[]).unwrap();
    assert_eq!(done.status, 200);
    let poll = get(jobs.site.addr, &status_doc, &[]).unwrap();
    assert!(poll.text().contains("ProcessSucceeded"), "{}", poll.text());
    let entry = jobs.entry("k1");
    assert_eq!(entry["pinned_by_jobs"], 0, "{entry}");
    assert!(entry["idle_seconds"].as_u64().unwrap() < 3, "{entry}");
    assert_eq!(jobs.running_jobs(), running_only_on(&jobs, owner_addr, 0));
    wait_until(Duration::from_secs(15), "k1 expires after the job", || {
        jobs.entry("k1").is_null()
    });
}

#[test]
fn a_key_moved_while_its_job_runs_is_counted_and_logged_once() {
    let mut jobs = Jobs::start(
        "    health_check: { path: /health, interval: 300ms, timeout: 250ms, rise: 1, fall: 1 }\n",
    );
    let job = "0a7d3c52-9b1e-4f6a-8c2d-5e4f3a2b1c0d";
    let owner = jobs.execute(job, "k2");
    let (owner_name, owner_addr) = (owner.name.clone(), owner.addr);
    // Polled with its key through WPS 2.0 GetStatus: running, on its owner.
    let get_status = format!("/wps?service=WPS&version=2.0.0&request=GetStatus&jobid={job}");
    let r = get(jobs.site.addr, &get_status, &[("machineid", "k2")]).unwrap();
    assert!(r.text().contains("<wps:Status>Running"), "{}", r.text());
    assert_eq!(jobs.running_jobs(), running_only_on(&jobs, owner_addr, 1));

    let index = jobs
        .site
        .backends
        .iter()
        .position(|b| b.as_ref().is_some_and(|b| b.name == owner_name))
        .unwrap();
    jobs.site.backends[index].take().unwrap().stop();
    wait_until(Duration::from_secs(15), "the owner down", || {
        jobs.site
            .roost
            .log_text()
            .contains(&format!("backend={owner_addr} state=down"))
    });
    // when_down: failover: every request goes to one stand-in; the job move is one event.
    let mut stand_ins = HashSet::new();
    for _ in 0..5 {
        let r = get(jobs.site.addr, &get_status, &[("machineid", "k2")]).unwrap();
        assert_eq!(r.status, 200);
        stand_ins.insert(r.backend().to_string());
    }
    assert_eq!(stand_ins.len(), 1, "{stand_ins:?}");
    assert!(!stand_ins.contains(&owner_name));
    let stand_in = jobs
        .site
        .running()
        .find(|b| stand_ins.contains(&b.name))
        .unwrap()
        .addr;
    let moves = "roost_wps_job_moves_total{reason=\"owner_down\",service=\"fp\"}";
    assert_eq!(jobs.admin.count(moves), 1);
    let log = jobs.site.roost.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("job moved machines"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for part in [
        "WARN",
        job,
        &format!("runs on {owner_addr}"),
        &format!("goes to {stand_in}"),
        "owner_down",
    ] {
        assert!(lines[0].contains(part), "{part} missing: {}", lines[0]);
    }
}

#[test]
fn a_draining_backend_is_drained_only_once_its_last_job_has_ended() {
    let jobs = Jobs::start("    affinity: { drain_idle: 1s }\n");
    let job = "5e4f3a2b-1c0d-4f6a-8c2d-0a7d3c529b1e";
    let owner = jobs.execute(job, "k3");
    let (owner_name, owner_addr) = (owner.name.clone(), owner.addr);
    let conf = jobs.site.roost.config.display().to_string();
    let (code, out, err) = run_roost(&[
        "-c",
        &conf,
        "backend",
        "drain",
        "fp",
        &owner_addr.to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // The job's polls still reach its draining backend.
    let status_doc = format!("/outputs/{job}.xml");
    let poll = get(jobs.site.addr, &status_doc, &[]).unwrap();
    assert_eq!(poll.backend(), owner_name);
    assert!(poll.text().contains("ProcessStarted"), "{}", poll.text());
    // Idle for longer than drain_idle, but a job runs there: not safe to stop.
    wait_until(Duration::from_secs(15), "the owner idle for 2 s", || {
        jobs.admin.backend_status(owner_addr)["idle_seconds"]
            .as_u64()
            .unwrap()
            >= 2
    });
    let b = jobs.admin.backend_status(owner_addr);
    assert_eq!(
        (b["state"].as_str(), b["running_jobs"].as_u64()),
        (Some("drain"), Some(1)),
        "{b}"
    );
    assert_eq!(b["drained"], false, "{b}");

    // The job ends; once its status document said so and drain_idle has passed: drained.
    get(owner_addr, &format!("/finish/{job}"), &[]).unwrap();
    let poll = get(jobs.site.addr, &status_doc, &[]).unwrap();
    assert_eq!(poll.backend(), owner_name);
    assert!(poll.text().contains("ProcessSucceeded"), "{}", poll.text());
    assert_eq!(jobs.admin.backend_status(owner_addr)["running_jobs"], 0);
    wait_until(Duration::from_secs(15), "drained: safe to stop", || {
        jobs.admin.backend_status(owner_addr)["drained"] == true
    });
}

/// A restart with `server.state_dir` keeps the job table: the new process sends a keyless
/// poll of a job it never saw to the backend that runs it, knows the job still runs (and so
/// pins its key), and counts the poll as routed by job.
#[test]
fn a_restart_keeps_the_job_table() {
    let backends: Vec<Backend> = (1..=3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (listen, admin) = (listen_addr(), Admin::new(Some(TOKEN)));
    let yaml = top_level(
        &config_yaml(&service_yaml("fp", listen, &addrs, AFFINITY)),
        &admin.yaml(),
    )
    .replace("server:\n", "server:\n  state_dir: \"{dir}/state\"\n");
    let mut roost = Roost::start(&yaml, &[listen, admin.addr]);
    let job = "0a7d3c52-9b1e-4f6a-8c2d-5e4f3a2b1c0d";
    let started = get(listen, &format!("/job/{job}"), &[("machineid", "job-key")]).unwrap();
    let owner = started.backend().to_string();
    let doc = format!("/outputs/{job}.xml");
    let poll = get(listen, &doc, &[("machineid", "job-key")]).unwrap();
    assert!(poll.text().contains("ProcessStarted"), "{}", poll.text());

    roost.proc.signal("TERM");
    assert_eq!(roost.proc.wait_exit(Duration::from_secs(20)), Some(0));
    let log = roost.log.clone();
    roost.proc = spawn_roost(&roost.config, &log, &[]);
    roost.wait_listening(listen);
    roost.wait_listening(admin.addr);
    assert!(
        roost.log_text().contains("1 WPS job(s) carried over"),
        "{}",
        roost.log_text()
    );
    let status = admin.status();
    let running: u64 = status["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["running_jobs"].as_u64().unwrap())
        .sum();
    assert_eq!(running, 1, "{status}");
    for _ in 0..5 {
        let r = get(listen, &doc, &[]).unwrap();
        assert_eq!(r.backend(), owner, "a keyless poll after the restart");
    }
    let metrics = admin.metrics();
    assert!(
        metrics.contains("roost_wps_affinity_total{event=\"routed\",service=\"fp\"} 5"),
        "{metrics}"
    );
}
