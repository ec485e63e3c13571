//! `wps_affinity` through the real binary: a job learned from an Execute response that arrives
//! in 7-byte chunks sends keyless requests for its status document and outputs to the backend
//! that ran it; without the switch, or when that backend is gone, `hash.missing` decides.
//! (`tests/e2e` does the same with real PyWPS servers, OWSLib and birdy.)

mod common;

use common::*;
use std::collections::HashSet;

const JOB: &str = "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e11";
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
