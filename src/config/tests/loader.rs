//! The whole file: defaults, every key, syntax errors, unknown keys, every error at once.

use super::*;

#[test]
fn minimal_file_gets_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.server, ServerSettings::default());
    assert_eq!(c.admin, None);
    let s = &c.services[0];
    assert_eq!(s.name, "fp");
    assert_eq!(s.listen, "0.0.0.0:8093".parse().unwrap());
    assert_eq!(s.hash.header, "machineid");
    assert_eq!(s.hash.missing, MissingKey::RoundRobin);
    assert_eq!(s.when_down, WhenDown::Failover);
    assert_eq!(s.health_check, None);
    assert!(!s.trust_forwarded_headers);
    assert_eq!(
        s.backends,
        vec![BackendConfig {
            address: "10.0.0.1:8093".into(),
            addr: "10.0.0.1:8093".parse().unwrap(),
            weight: 1,
            state: BackendState::Ready,
            dns: None,
            id: None,
        }]
    );
}

#[test]
fn full_file() {
    let c = load(
        "\
server:
  threads: ${THREADS}
  pid_file: /run/roost/roost.pid
  upgrade_sock: /run/roost/upgrade.sock
  grace_period_seconds: 5
  graceful_shutdown_timeout_seconds: '3'
  error_log: /var/log/roost.log
  work_stealing: false
  upstream_keepalive_pool_size: 64
  preserve_header_case: true
admin:
  listen: 127.0.0.1:9900
services:
  - name: flyingpigeon
    listen: \"0.0.0.0:${PORT:-8093}\"
    hash: { header: MachineID, missing: client_ip }
    backends:
      - ${HOST}:8093
      - { address: wps1:8093, weight: 2 }
    health_check:
      type: http
      path: /wps?service=WPS&request=GetCapabilities
      host: wps.local
      interval: 1s
      timeout: 500ms
      rise: 1
      fall: 4
    when_down: reject
    trust_forwarded_headers: true
  - name: emu
    listen: 8094
    backends: [wps2:8094]
    health_check: { type: tcp }
",
    )
    .unwrap();
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.pid_file, PathBuf::from("/run/roost/roost.pid"));
    assert_eq!(c.server.graceful_shutdown_timeout_seconds, 3);
    assert!(!c.server.work_stealing);
    assert_eq!(c.server.upstream_keepalive_pool_size, 64);
    assert!(c.server.preserve_header_case);
    assert!(!ServerSettings::default().preserve_header_case);
    assert_eq!(
        c.admin.as_ref().unwrap().listen,
        "127.0.0.1:9900".parse().unwrap()
    );
    let fp = c.service("flyingpigeon").unwrap();
    assert_eq!(fp.listen, "0.0.0.0:9001".parse().unwrap());
    assert_eq!(fp.hash.header, "machineid");
    assert_eq!(fp.hash.missing, MissingKey::ClientIp);
    assert_eq!(fp.backends[0].addr, "10.1.1.1:8093".parse().unwrap());
    assert_eq!(fp.backends[1].address, "wps1:8093");
    assert_eq!(fp.backends[1].addr, "10.9.0.1:8093".parse().unwrap());
    assert_eq!(fp.backends[1].weight, 2);
    assert_eq!(
        fp.health_check,
        Some(HealthCheckConfig {
            kind: CheckKind::Http {
                path: http::uri::PathAndQuery::from_static(
                    "/wps?service=WPS&request=GetCapabilities"
                ),
                host: Some(http::HeaderValue::from_static("wps.local"))
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 4,
        })
    );
    assert_eq!(fp.when_down, WhenDown::Reject);
    assert!(fp.trust_forwarded_headers);
    let emu = c.service("emu").unwrap();
    assert_eq!(emu.listen, "0.0.0.0:8094".parse().unwrap());
    let hc = emu.health_check.as_ref().unwrap();
    assert_eq!(hc.kind, CheckKind::Tcp);
    assert_eq!(
        (hc.interval, hc.timeout, hc.rise, hc.fall),
        (DEFAULT_HC_INTERVAL, DEFAULT_HC_TIMEOUT, 2, 3)
    );
}

#[test]
fn yaml_syntax_error_has_line() {
    let e = errors("services:\n  - name: a\n    listen: [oops\n");
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].line.is_some());
    assert!(e.0[0].message.starts_with("invalid YAML"), "{e}");
}

#[test]
fn unknown_keys_name_key_and_line() {
    let e = errors(
        "\
servers: {}
services:
  - name: a
    listen: 1.2.3.4:1
    backends: [10.0.0.1:1]
    helth_check: {}
",
    );
    assert!(e.has("servers", "unknown key `servers`"), "{e}");
    assert!(
        e.has("services[0].helth_check", "unknown field `helth_check`"),
        "{e}"
    );
    let line = |k: &str| {
        e.0.iter()
            .find(|x| x.key.as_deref() == Some(k))
            .unwrap()
            .line
    };
    assert_eq!(line("servers"), Some(1));
    assert_eq!(line("services[0].helth_check"), Some(6));
}

#[test]
fn unknown_keys_in_nested_sections() {
    let e = errors(
        "\
server: { thread: 2 }
admin: { listen: 127.0.0.1:1, tokn: x }
services:
  - name: a
    listen: 1.2.3.4:1
    backends: [{ address: 10.0.0.1:1, weigth: 2 }]
",
    );
    assert!(e.has("server.thread", "unknown field"), "{e}");
    assert!(e.has("admin.tokn", "unknown field"), "{e}");
    assert!(
        e.has("services[0].backends[0].weigth", "unknown field"),
        "{e}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let e = errors(
        "\
server:
  threads: 0
  pid_file: roost.pid
services:
  - name: a
    listen: 0.0.0.0:8093
    backends:
      - 10.0.0.1
      - { address: 10.0.0.2:80, weight: 0 }
      - ${UNSET_VAR}:80
      - nowhere:80
      - 10.0.0.3:0
      - 10.0.0.4:http
  - name: a
    listen: 0.0.0.0:8093
    hash: { header: \"bad header\", missing: maybe }
    backends: []
    health_check: { type: udp, interval: 1x, timeout: 0s, rise: 0, fall: 0 }
    when_down: panic
  - name: \"bad name!\"
    listen: nope
    backends: [10.0.0.5:80, 10.0.0.5:80]
",
    );
    let expect = [
        ("server.threads", "at least 1", 2),
        ("server.pid_file", "absolute path", 3),
        ("services[0].backends[0]", "has no port", 8),
        ("services[0].backends[1].weight", "at least 1", 9),
        ("services[0].backends[2]", "UNSET_VAR is not set", 10),
        ("services[0].backends[4]", "port 0", 12),
        ("services[0].backends[5]", "not a port number", 13),
        (
            "services[1].name",
            "duplicate service name `a` (also services[0].name)",
            14,
        ),
        ("services[1].listen", "duplicate listen address", 15),
        (
            "services[1].hash.header",
            "not a valid HTTP header name",
            16,
        ),
        (
            "services[1].hash.missing",
            "not one of: round_robin, client_ip, reject",
            16,
        ),
        ("services[1].backends", "at least one backend", 17),
        ("services[1].health_check.type", "not one of: http, tcp", 18),
        ("services[1].health_check.interval", "not a duration", 18),
        ("services[1].health_check.timeout", "longer than zero", 18),
        ("services[1].health_check.rise", "at least 1", 18),
        ("services[1].health_check.fall", "at least 1", 18),
        ("services[1].when_down", "not one of: failover, reject", 19),
        ("services[2].name", "letters, digits", 20),
        ("services[2].listen", "not an IP:port", 21),
        ("services[2].backends[1]", "listed twice", 22),
    ];
    exactly(&e, &expect);
    // Errors come in file order.
    let lines: Vec<_> = e.0.iter().map(|x| x.line.unwrap()).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn an_unresolvable_host_is_kept_aside_with_everything_the_file_says_of_it() {
    let c = load(
        "\
services:
  - name: fp
    listen: 0.0.0.0:8093
    backends:
      - wps1:8093
      - { address: nowhere:8093, weight: 3, state: drain }
      - 10.0.0.3:8093
",
    )
    .expect("an unresolvable host is not a load error");
    let s = &c.services[0];
    let resolved: Vec<&str> = s.backends.iter().map(|b| b.address.as_str()).collect();
    assert_eq!(resolved, ["wps1:8093", "10.0.0.3:8093"]);
    assert_eq!(s.unresolved.len(), 1);
    let u = &s.unresolved[0];
    assert_eq!(u.address, "nowhere:8093");
    assert_eq!((u.weight, u.state), (3, BackendState::Drain));
    assert_eq!(u.key, "services[0].backends[1].address");
    assert_eq!(u.line, Some(6));
    assert!(
        u.reason.contains("cannot resolve `nowhere`"),
        "{}",
        u.reason
    );
    // Listed twice is still an error, resolvable or not.
    let e = errors(
        "services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends: [nowhere:1, nowhere:1]\n",
    );
    assert!(e.has("services[0].backends[1]", "listed twice"), "{e}");
}

#[test]
fn a_service_whose_every_host_is_unresolvable_loads_with_no_backend() {
    let c =
        load("services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends: [gone:1, away:2]\n")
            .unwrap();
    assert!(c.services[0].backends.is_empty());
    assert_eq!(c.services[0].unresolved.len(), 2);
}

#[test]
fn a_retry_adds_what_resolves_now_and_keeps_the_rest_aside() {
    let c = load(
        "services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends: [10.9.0.1:80, late:80, never:80, twin:80]\n",
    )
    .unwrap();
    let s = &c.services[0];
    assert_eq!(s.unresolved.len(), 3);
    let nothing_yet =
        |_: &str| -> std::io::Result<Vec<SocketAddr>> { Err(std::io::Error::other("still down")) };
    assert!(s.retry_unresolved(&nothing_yet).is_none());
    let now = |a: &str| -> std::io::Result<Vec<SocketAddr>> {
        match a {
            "late:80" => Ok(vec!["10.9.0.7:80".parse().unwrap()]),
            // The address of a backend already listed: not a second copy of it.
            "twin:80" => Ok(vec!["10.9.0.1:80".parse().unwrap()]),
            _ => Err(std::io::Error::other("still down")),
        }
    };
    let next = s.retry_unresolved(&now).expect("late resolves");
    let addrs: Vec<String> = next
        .backends
        .iter()
        .map(|b| format!("{}={}", b.address, b.addr))
        .collect();
    assert_eq!(addrs, ["10.9.0.1:80=10.9.0.1:80", "late:80=10.9.0.7:80"]);
    let aside: Vec<(&str, &str)> = next
        .unresolved
        .iter()
        .map(|u| (u.address.as_str(), u.reason.as_str()))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(
        aside[0].0 == "never:80" && aside[0].1.contains("still down"),
        "{aside:?}"
    );
    assert!(
        aside[1].0 == "twin:80" && aside[1].1.contains("another backend"),
        "{aside:?}"
    );
}

#[test]
fn a_host_that_stops_resolving_keeps_the_address_it_runs_with() {
    let running = load(
        "services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends: [wps1:80, wps2:80]\n",
    )
    .unwrap();
    // The reload's lookup of wps2 fails (a DNS blip): wps2 keeps 10.9.0.2, its keys stay.
    let blip = |a: &str| -> std::io::Result<Vec<SocketAddr>> {
        match a {
            "wps1:80" => Ok(vec!["10.9.0.1:80".parse().unwrap()]),
            _ => Err(std::io::Error::other("timed out")),
        }
    };
    let text = "services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends: [wps1:80, { address: wps2:80, weight: 2 }, wps3:80]\n";
    let mut new = Config::from_yaml_with(text, "test.yaml", &env, &blip).unwrap();
    new.services[0].keep_resolved(&running.services[0]);
    let s = &new.services[0];
    let got: Vec<String> = s
        .backends
        .iter()
        .map(|b| format!("{}={} w{}", b.address, b.addr, b.weight))
        .collect();
    assert_eq!(got, ["wps1:80=10.9.0.1:80 w1", "wps2:80=10.9.0.2:80 w2"]);
    // wps3 never ran: it stays aside.
    assert_eq!(s.unresolved.len(), 1);
    assert_eq!(s.unresolved[0].address, "wps3:80");
}

#[test]
fn dns_entries_are_kept_with_their_refresh_resolver_weight_and_state() {
    let c = load(
        "\
services:
  - name: fp
    listen: 0.0.0.0:8093
    backends:
      - 10.0.0.1:8093
      - { dns: tasks.flyingpigeon, port: 8093, refresh: 5s, resolver: \"127.0.0.1:5353\", weight: 2 }
      - { srv: _wps._tcp.fp.default.svc.cluster.local., state: drain }
",
    )
    .unwrap();
    let s = &c.services[0];
    assert_eq!(
        s.backends.len(),
        1,
        "the file's own backend; DNS ones come from lookups"
    );
    let [a, srv] = &s.dns[..] else {
        panic!("{:?}", s.dns)
    };
    assert_eq!(
        (
            a.name.as_str(),
            a.port,
            a.refresh,
            a.resolver,
            a.weight,
            a.state
        ),
        (
            "tasks.flyingpigeon",
            Some(8093),
            Duration::from_secs(5),
            Some("127.0.0.1:5353".parse().unwrap()),
            2,
            BackendState::Ready
        )
    );
    assert_eq!(
        (a.key.as_str(), a.line),
        ("services[0].backends[1].dns", Some(6))
    );
    assert_eq!(a.describe(), "dns tasks.flyingpigeon:8093");
    // The root dot is dropped; SRV records carry their ports; the default refresh is 10 s.
    assert_eq!(srv.describe(), "srv _wps._tcp.fp.default.svc.cluster.local");
    assert_eq!(
        (srv.port, srv.refresh, srv.state),
        (None, DEFAULT_DNS_REFRESH, BackendState::Drain)
    );
    // A service of DNS entries alone loads (its backends come with the first lookup).
    assert!(load("services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends: [{ dns: wps, port: 1 }]\n").is_ok());
}

#[test]
fn dns_entry_errors_name_their_key() {
    let e = errors(
        "\
services:
  - name: fp
    listen: 0.0.0.0:8093
    backends:
      - { dns: tasks.fp }
      - { dns: \"bad name!\", port: 1 }
      - { srv: _wps._tcp.fp, port: 8093 }
      - { dns: a.b, port: 1, refresh: 100ms, resolver: nowhere }
      - { dns: c.d, srv: e.f, port: 1 }
      - { address: 10.0.0.1:80, port: 81, refresh: 1s }
      - { dns: x.y, port: 1 }
      - { dns: x.y, port: 1, weight: 3 }
",
    );
    let expect = [
        ("services[0].backends[0].port", "is required", 5),
        ("services[0].backends[1].dns", "is not a DNS name", 6),
        ("services[0].backends[2].port", "leave `port` out", 7),
        ("services[0].backends[3].refresh", "at least 1s", 8),
        (
            "services[0].backends[3].resolver",
            "not the IP:port of a DNS server",
            8,
        ),
        (
            "services[0].backends[4]",
            "`dns` and `srv` are two entries",
            9,
        ),
        (
            "services[0].backends[5].port",
            "goes with `dns:` or `srv:`",
            10,
        ),
        (
            "services[0].backends[5].refresh",
            "goes with `dns:` or `srv:`",
            10,
        ),
        (
            "services[0].backends[7]",
            "dns x.y:1 is listed twice (also services[0].backends[6].dns)",
            12,
        ),
    ];
    exactly(&e, &expect);
}

#[test]
fn a_lookup_replaces_what_its_entry_found_and_nothing_else() {
    let mut c = load(
        "services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends: [10.0.0.1:80, { dns: wps, port: 80 }, { srv: _w._tcp.x }]\n",
    )
    .unwrap();
    let a = |s: &str| Found {
        addr: s.parse().unwrap(),
        weight: 1,
        target: None,
    };
    let (dns, srv) = (c.services[0].dns[0].clone(), c.services[0].dns[1].clone());
    let s = c.services[0]
        .with_found(
            &dns,
            &[a("10.0.0.2:80"), a("10.0.0.3:80"), a("10.0.0.1:80")],
        )
        .expect("new addresses");
    // The file's 10.0.0.1 is not added twice.
    let listed = |s: &ServiceConfig| -> Vec<String> {
        s.backends
            .iter()
            .map(|b| {
                format!(
                    "{} w{} {}",
                    b.address,
                    b.weight,
                    b.dns.as_deref().unwrap_or("file")
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        listed(&s),
        [
            "10.0.0.1:80 w1 file",
            "10.0.0.2:80 w1 dns wps:80",
            "10.0.0.3:80 w1 dns wps:80"
        ]
    );
    // The same answer in another order changes nothing.
    assert!(s
        .with_found(&dns, &[a("10.0.0.3:80"), a("10.0.0.2:80")])
        .is_none());
    // SRV records: their own ports and weights, beside the A entry's.
    let target = Found {
        weight: 5,
        target: Some("wps-0.x".into()),
        ..a("10.0.0.9:8093")
    };
    let s = s.with_found(&srv, std::slice::from_ref(&target)).unwrap();
    // One replica gone from the A answer: only it leaves.
    let s = s.with_found(&dns, &[a("10.0.0.3:80")]).unwrap();
    assert_eq!(
        listed(&s),
        [
            "10.0.0.1:80 w1 file",
            "10.0.0.3:80 w1 dns wps:80",
            "wps-0.x:8093 w5 srv _w._tcp.x"
        ]
    );
    // The SRV target comes back at another address: the same backend (its identity is the
    // target's name), at the new address.
    let moved = Found {
        addr: a("10.0.0.10:8093").addr,
        ..target
    };
    let t = s.with_found(&srv, &[moved]).unwrap();
    let b = t
        .backends
        .iter()
        .find(|b| b.address == "wps-0.x:8093")
        .unwrap();
    assert_eq!(
        (b.identity(), b.addr),
        ("wps-0.x:8093", a("10.0.0.10:8093").addr)
    );
    // A reload of the same file starts with what the entries found; an entry whose resolver
    // changed starts empty (its next lookup fills it).
    let mut reloaded = c.clone();
    reloaded.services[0].keep_discovered(&s);
    assert_eq!(listed(&reloaded.services[0]), listed(&s));
    c.services[0].dns[0].resolver = Some(a("127.0.0.1:53").addr);
    c.services[0].keep_discovered(&s);
    assert_eq!(
        listed(&c.services[0]),
        ["10.0.0.1:80 w1 file", "wps-0.x:8093 w5 srv _w._tcp.x"]
    );
}

#[test]
fn unset_variable_is_reported_once_at_its_key() {
    let e = errors(
        "services:\n  - name: a\n    listen: \"0.0.0.0:${NOPE}\"\n    backends: [10.0.0.1:1]\n",
    );
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.has("services[0].listen", "NOPE is not set"));
    assert_eq!(e.0[0].line, Some(3));
    assert_eq!(
        e.to_string(),
        "test.yaml:3: services[0].listen: environment variable NOPE is not set (set it, or write ${NOPE:-default})"
    );
}

#[test]
fn structural_errors() {
    assert!(errors("- a\n- b\n").0[0]
        .message
        .contains("expected a mapping"));
    assert!(errors("server: {}\n").has("services", "at least one service"));
    assert!(errors("services: []\n").has("services", "at least one service"));
    assert!(errors("services: {a: 1}\n").has("services", "expected a list"));
    assert!(errors("services:\n  - name: a\n").has("services[0].listen", "is required"));
    assert!(
        errors("services:\n  - listen: 1.2.3.4:5\n    backends: [10.0.0.1:1]\n")
            .has("services[0].name", "is required")
    );
    assert!(
        errors("services:\n  - {name: a, listen: 1.2.3.4:5, backends: [{weight: 2}]}\n")
            .has("services[0].backends[0].address", "is required")
    );
    assert!(errors("services:\n  - {name: a, listen: 1.2.3.4:5, backends: [10.0.0.1:1], health_check: {type: tcp, path: /}}\n")
        .has("services[0].health_check.path", "only applies to `type: http`"));
    assert!(errors("services:\n  - {name: a, listen: 1.2.3.4:5, backends: [10.0.0.1:1], health_check: {path: wps}}\n")
        .has("services[0].health_check.path", "must start with `/`"));
    assert!(errors("services:\n  - {name: a, listen: 1.2.3.4:5, backends: [10.0.0.1:1], health_check: {interval: 1s, timeout: 2s}}\n")
        .has("services[0].health_check.timeout", "longer than the interval"));
    assert!(errors("server: {threads: two}\nservices: []\n")
        .has("server.threads", "`two` is not a whole number"));
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let e = Config::load(Path::new("/nonexistent/roost.yaml")).unwrap_err();
    assert_eq!(e.0[0].file, "/nonexistent/roost.yaml");
    assert!(e.0[0].message.contains("cannot read"), "{e}");
}

#[test]
fn an_unknown_or_mistyped_key_does_not_hide_the_other_errors_of_its_section() {
    let e = errors(
        "\
server:
  threads: many
  pid_file: relative.pid
  colour: blue
services:
  - name: fp
    listen: 0.0.0.0:8093
    backends: []
    helth_check: {}
  - name: fp
    listen: 0.0.0.0:8094
    backends: [10.0.0.1:8093]
",
    );
    assert!(e.has("server.threads", "many"), "{e}");
    assert!(e.has("server.colour", "unknown field"), "{e}");
    assert!(e.has("server.pid_file", "absolute"), "{e}");
    assert!(e.has("services[0].helth_check", "unknown field"), "{e}");
    assert!(e.has("services[0].backends", "at least one backend"), "{e}");
    assert!(e.has("services[1].name", "duplicate"), "{e}");
    // The removed `threads` is reported once, not again as "missing" or defaulted silently.
    assert_eq!(
        e.0.iter()
            .filter(|x| x.key.as_deref() == Some("server.threads"))
            .count(),
        1
    );
    assert_eq!(e.0.len(), 6, "{e}");
}

/// `e` holds exactly the `expect`ed errors: (key, part of the message, line), in test.yaml.
fn exactly(e: &ConfigErrors, expect: &[(&str, &str, usize)]) {
    for &(key, needle, line) in expect {
        let found =
            e.0.iter()
                .find(|x| x.key.as_deref() == Some(key) && x.message.contains(needle));
        let found = found.unwrap_or_else(|| panic!("no error `{needle}` at {key} in:\n{e}"));
        assert_eq!(found.line, Some(line), "{found}");
        assert_eq!(found.file, "test.yaml");
    }
    assert_eq!(e.0.len(), expect.len(), "unexpected extra errors:\n{e}");
}

#[test]
fn a_backend_id_is_its_identity_and_must_be_unique() {
    let c = load(
        "services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends:\n      - { address: 10.0.0.1:80, id: wps1 }\n      - 10.0.0.2:80\n",
    )
    .unwrap();
    let b = &c.services[0].backends;
    assert_eq!(
        (b[0].identity(), b[0].id.as_deref()),
        ("wps1", Some("wps1"))
    );
    assert_eq!((b[1].identity(), b[1].id.as_deref()), ("10.0.0.2:80", None));
    let e = errors(
        "services:\n  - name: fp\n    listen: 0.0.0.0:8093\n    backends:\n      - { address: 10.0.0.1:80, id: wps1 }\n      - { address: 10.0.0.2:80, id: wps1 }\n      - { address: 10.0.0.3:80, id: 'two words' }\n      - { dns: wps, port: 80, id: x }\n      - { address: 10.0.0.4:80, id: 10.0.0.5:80 }\n      - 10.0.0.5:80\n",
    );
    exactly(
        &e,
        &[
            (
                "services[0].backends[1]",
                "id `wps1` is used twice (also services[0].backends[0])",
                6,
            ),
            (
                "services[0].backends[2].id",
                "`two words` is not a backend id",
                7,
            ),
            ("services[0].backends[3].id", "an `id` names one backend", 8),
            (
                "services[0].backends[5]",
                "backend 10.0.0.5:80 is listed twice (also services[0].backends[4])",
                10,
            ),
        ],
    );
}
