//! Loader tests: every error kind, with its key path and line. `loader.rs`: the whole file and
//! the error machinery; `sections.rs`: the rules of each section.

mod loader;
mod sections;

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn env(name: &str) -> Option<String> {
    match name {
        "PORT" => Some("9001".into()),
        "THREADS" => Some("3".into()),
        "HOST" => Some("10.1.1.1".into()),
        _ => None,
    }
}

/// Resolves `wps1`/`wps2` like a tiny /etc/hosts; everything else fails.
fn resolver(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    let (host, port) = address.rsplit_once(':').unwrap();
    let ip = match host {
        "wps1" => "10.9.0.1",
        "wps2" => "10.9.0.2",
        _ => return Err(std::io::Error::other("no such host")),
    };
    Ok(vec![format!("{ip}:{port}").parse().unwrap()])
}

fn load(yaml: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml_with(yaml, "test.yaml", &env, &resolver)
}

fn errors(yaml: &str) -> ConfigErrors {
    load(yaml).expect_err("expected errors")
}

const MINIMAL: &str = "\
services:
  - name: fp
    listen: 0.0.0.0:8093
    backends: [10.0.0.1:8093]
";
