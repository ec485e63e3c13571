//! Translation pins: NGINX text in, Roost YAML out, and the YAML loads as a Roost config.

use super::parse::parse_str;
use super::translate::translate;
use super::*;
use crate::config::{BackendState, Config, HashAlgorithm, MissingKey};
use std::time::Duration;

fn import(text: &str) -> (String, translate::Report) {
    let d = parse_str(text, Path::new("nginx.conf")).unwrap();
    let t = translate(&d);
    (emit(&t, "nginx.conf"), t.report)
}

/// Load `yaml` as Roost would, with `${VAR}`s from `vars` and host `wpsN` at 10.1.0.N.
fn load(yaml: &str, vars: &[(&str, &str)]) -> Config {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let resolve = |address: &str| -> std::io::Result<Vec<std::net::SocketAddr>> {
        let (host, port) = address.rsplit_once(':').unwrap();
        let n = host.strip_prefix("wps").unwrap_or("9");
        Ok(vec![format!("10.1.0.{n}:{port}").parse().unwrap()])
    };
    Config::from_yaml_with(yaml, "out.yaml", &env, &resolve)
        .unwrap_or_else(|e| panic!("{e}\n--- yaml:\n{yaml}"))
}

const SEED: &str = "\
worker_processes 1;
events { worker_connections 1024; }
http {
  # one upstream per WPS service
  upstream flyingpigeon {
    hash $http_machineid;
    server wps1:8093;
    server wps2:8093;
  }
  server {
    listen 8093;
    location / {
      proxy_pass http://flyingpigeon;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
";

#[test]
fn the_seed_translates_exactly() {
    let (yaml, report) = import(SEED);
    assert!(report.approximated.is_empty(), "{report:?}");
    let c = load(&yaml, &[]);
    let s = &c.services[0];
    assert_eq!(s.name, "flyingpigeon");
    assert_eq!(s.listen, "0.0.0.0:8093".parse().unwrap());
    assert_eq!(s.hash.header, "machineid");
    assert_eq!(s.hash.algorithm, HashAlgorithm::NginxHash);
    assert_eq!(s.hash.missing, MissingKey::RoundRobin);
    let addrs: Vec<&str> = s.backends.iter().map(|b| b.address.as_str()).collect();
    assert_eq!(addrs, ["wps1:8093", "wps2:8093"]);
    // Comments say where each value came from and what was ignored.
    assert!(yaml.contains("# hash $http_machineid"), "{yaml}");
    assert!(yaml.contains("# server wps1:8093"), "{yaml}");
    assert!(
        yaml.contains("nginx.conf:1: `worker_processes 1`"),
        "{yaml}"
    );
    assert!(
        yaml.contains("Roost forwards the client's Host unchanged"),
        "{yaml}"
    );
    assert!(yaml.contains("# Approximated (where a request goes may differ from NGINX): none"));
}

#[test]
fn consistent_is_ketama_and_weights_and_settings_carry_over() {
    let (yaml, report) = import(
        "http {\n  client_max_body_size 400m;\n  proxy_read_timeout 600;\n\
         upstream emu { hash $http_X_Machine_Id consistent; keepalive 16;\n\
           server 10.0.0.1:8094 weight=3 max_fails=2 fail_timeout=5s; server 10.0.0.2:8094; }\n\
         server { listen 127.0.0.1:${EMU_PORT}; proxy_connect_timeout 3s;\n\
           location / { proxy_pass http://emu/; proxy_read_timeout 5m; keepalive_timeout 30s; } }\n}\n",
    );
    assert!(report.approximated.is_empty(), "{report:?}");
    assert!(
        report
            .ignored
            .iter()
            .any(|i| i.contains("max_fails=2 fail_timeout=5s")),
        "{report:?}"
    );
    let c = load(&yaml, &[("EMU_PORT", "9094")]);
    assert_eq!(c.server.upstream_keepalive_pool_size, 16);
    let s = &c.services[0];
    assert_eq!(s.listen, "127.0.0.1:9094".parse().unwrap());
    assert_eq!(s.hash.header, "x-machine-id");
    assert_eq!(s.hash.algorithm, HashAlgorithm::Ketama);
    assert_eq!(s.backends[0].weight, 3);
    assert_eq!(s.backends[1].weight, 1);
    assert_eq!(s.limits.max_body, 400 * 1024 * 1024);
    // The location's read timeout replaces the http one; the server's connect timeout holds.
    assert_eq!(s.timeouts.upstream_read, Duration::from_secs(300));
    assert_eq!(s.timeouts.upstream_connect, Duration::from_secs(3));
    assert_eq!(s.timeouts.keepalive, Duration::from_secs(30));
    assert!(yaml.contains("\"127.0.0.1:${EMU_PORT}\""), "{yaml}");
}

#[test]
fn routing_differences_are_listed() {
    let (yaml, report) = import(
        "http {\n\
         upstream a { ip_hash; server 10.0.0.1:80; server 10.0.0.2:80 backup; server 10.0.0.3:80 down; }\n\
         upstream b { server 10.0.0.4:80; server 10.0.0.5:80; }\n\
         upstream c { least_conn; server 10.0.0.6:80; }\n\
         server { listen 8080; location / { proxy_pass http://a; } location /admin { return 403; } }\n\
         server { listen 8081; location / { proxy_pass http://b; } }\n\
         server { listen 8082; location /wps { proxy_pass http://c; } }\n}\n",
    );
    let all = report.approximated.join("\n");
    for needle in [
        "`ip_hash`: Roost hashes the client address only for requests without the key header",
        "first three octets",
        "`server 10.0.0.2:80 backup`: backup",
        "`return 403`: changes routing",
        "`upstream b`: no hash: NGINX balances every request round robin",
        "`least_conn`: a balancing method Roost does not have",
        "`location /wps`: Roost proxies every path",
    ] {
        assert!(all.contains(needle), "{needle}:\n{all}");
    }
    let c = load(&yaml, &[]);
    let a = &c.services[0];
    assert_eq!(a.hash.missing, MissingKey::ClientIp);
    // The backup is left out; the down server stays (its weight counts), in maintenance.
    let addrs: Vec<&str> = a.backends.iter().map(|b| b.address.as_str()).collect();
    assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.3:80"]);
    let states: Vec<BackendState> = a.backends.iter().map(|b| b.state).collect();
    assert_eq!(states, [BackendState::Ready, BackendState::Maint]);
    assert!(
        !all.contains("10.0.0.3:80 down"),
        "down is exact now:\n{all}"
    );
    assert_eq!(c.services.len(), 3);
    assert!(yaml.contains("#   - nginx.conf:2: `ip_hash`"), "{yaml}");
}

#[test]
fn names_listens_and_targets() {
    let (yaml, report) = import(
        "http {\n\
         upstream wps { hash $http_machineid consistent; server 10.0.0.1:80; }\n\
         server { location / { proxy_pass http://wps; } }\n\
         server { listen 9000 ssl; listen [::]:9000; location / { proxy_pass http://wps; } }\n\
         server { listen 9001; location / { proxy_pass http://10.0.0.9:8080; } }\n\
         server { listen 9002; location / { proxy_pass https://wps; } }\n\
         upstream unused { server 10.0.0.2:80; }\n}\n",
    );
    let all = report.approximated.join("\n");
    assert!(
        all.contains("`ssl`: Roost's listeners speak plain HTTP/1.1"),
        "{all}"
    );
    assert!(all.contains("plain HTTP to backends"), "{all}");
    let ignored = report.ignored.join("\n");
    assert!(
        ignored.contains("same port on another address"),
        "{ignored}"
    );
    assert!(
        ignored.contains("`upstream unused`: no server proxies"),
        "{ignored}"
    );
    let c = load(&yaml, &[]);
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["wps", "wps-2", "10.0.0.9-8080"]);
    assert_eq!(c.services[0].listen, "0.0.0.0:80".parse().unwrap());
    assert_eq!(c.services[2].backends[0].address, "10.0.0.9:8080");
}

#[test]
fn an_empty_import_still_loads() {
    let (yaml, _) = import("events {}\n");
    assert!(yaml.contains("services: []"), "{yaml}");
}
