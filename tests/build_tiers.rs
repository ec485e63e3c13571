//! The Makefile's tiers: `make run`, `make test` and `make bench` use one release build, so a
//! `make test` followed by `make run` does not compile the release binary (and Pingora) a
//! second time with other features; `make test` runs the quick tier and the MSRV check.

use std::collections::BTreeSet;
use std::process::Command;

/// The commands `make -n TARGETS` would run (nothing is run).
fn dry_run(targets: &[&str]) -> String {
    let out = Command::new("make")
        .arg("-n")
        .args(targets)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run make -n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_release_build_serves_run_test_and_bench() {
    let mut builds = BTreeSet::new();
    for target in ["run", "test", "bench"] {
        let commands = dry_run(&[target]);
        let release: Vec<&str> = commands
            .lines()
            .filter(|l| l.contains("cargo build") && l.contains("--release"))
            .collect();
        assert!(
            !release.is_empty(),
            "make {target} builds no release binary"
        );
        builds.extend(release.into_iter().map(str::trim).map(String::from));
    }
    assert_eq!(builds.len(), 1, "different release builds: {builds:#?}");
}

#[test]
fn make_test_runs_the_quick_tier_and_the_msrv_check() {
    let commands = dry_run(&["test"]);
    for step in [
        "cargo fmt --check",
        "cargo clippy --all-targets -- -D warnings",
        "cargo test --lib",
        "scripts/msrv.sh",
        "cargo test --all-targets",
    ] {
        assert!(
            commands.contains(step),
            "make test lacks `{step}`:\n{commands}"
        );
    }
}
