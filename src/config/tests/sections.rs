//! The rules of each section: listeners, paths, admin, access log, affinity.

use super::*;

#[test]
fn admin_and_service_listen_must_differ() {
    let e = errors("admin: {listen: 127.0.0.1:9900}\nservices:\n  - {name: a, listen: 127.0.0.1:9900, backends: [10.0.0.1:1]}\n");
    assert!(e.has("services[0].listen", "also admin.listen"), "{e}");
    // A bare admin port binds loopback, not every interface.
    let c = load(&format!("admin: {{listen: 9900}}\n{MINIMAL}")).unwrap();
    assert_eq!(c.admin.unwrap().listen, "127.0.0.1:9900".parse().unwrap());
}

#[test]
fn pid_file_and_upgrade_sock_must_differ() {
    let e = errors(&format!(
        "server: {{pid_file: /tmp/x, upgrade_sock: /tmp/x}}\n{MINIMAL}"
    ));
    assert!(e.has("server.upgrade_sock", "must differ"), "{e}");
}

#[test]
fn under_the_unit_the_pid_file_must_be_the_one_systemd_waits_for() {
    let unit =
        |name: &str| (name == "ROOST_UNIT_PID_FILE").then(|| "/run/roost/roost.pid".to_string());
    let with = |server: &str| {
        Config::from_yaml_with(&format!("{server}{MINIMAL}"), "test.yaml", &unit, &resolver)
    };
    let e = with("server:\n  pid_file: /run/other.pid\n").unwrap_err();
    assert!(
        e.has(
            "server.pid_file",
            "is /run/other.pid but the service manager follows /run/roost/roost.pid"
        ),
        "{e}"
    );
    assert_eq!(e.0[0].line, Some(2));
    assert!(with("server:\n  pid_file: /run/roost/roost.pid\n").is_ok());
    // Not written: the default (/tmp/roost.pid) is not the unit's either.
    assert!(with("")
        .unwrap_err()
        .has("server.pid_file", "is /tmp/roost.pid"));
    // Outside the unit nothing is checked.
    assert!(load(&format!("server:\n  pid_file: /run/other.pid\n{MINIMAL}")).is_ok());
}

#[test]
fn ipv6_backends_and_listeners() {
    let c = load("services:\n  - {name: a, listen: \"[::1]:8093\", backends: [\"[::1]:9000\"]}\n")
        .unwrap();
    assert_eq!(c.services[0].listen, "[::1]:8093".parse().unwrap());
    assert_eq!(
        c.services[0].backends[0].addr,
        "[::1]:9000".parse().unwrap()
    );
}

#[test]
fn admin_on_a_public_address_needs_a_token_or_an_explicit_allow() {
    let base = "services:\n  - name: a\n    listen: 127.0.0.1:8093\n    backends: [10.0.0.1:1]\n";
    let e = errors(&format!("admin: {{ listen: 0.0.0.0:9900 }}\n{base}"));
    assert!(e.has("admin.listen", "set admin.token"), "{e}");
    let e = errors(&format!("admin: {{ listen: 9900, token: short }}\n{base}"));
    assert!(e.has("admin.token", "at least 16"), "{e}");
    let c = load(&format!(
        "admin: {{ listen: 0.0.0.0:9900, token: 0123456789abcdefXYZ }}\n{base}"
    ))
    .unwrap();
    assert_eq!(
        c.admin.unwrap().token.as_deref(),
        Some("0123456789abcdefXYZ")
    );
    let c = load(&format!(
        "admin: {{ listen: 0.0.0.0:9900, allow_public: true }}\n{base}"
    ))
    .unwrap();
    assert_eq!(c.admin.unwrap().listen, "0.0.0.0:9900".parse().unwrap());
    // A bare port is loopback and needs nothing.
    let c = load(&format!("admin: {{ listen: 9900 }}\n{base}")).unwrap();
    assert_eq!(c.admin.unwrap().listen, "127.0.0.1:9900".parse().unwrap());
}

#[test]
fn access_log_settings() {
    let base = "services:\n  - name: a\n    listen: 127.0.0.1:8093\n    backends: [10.0.0.1:1]\n";
    let c = load(base).unwrap();
    assert_eq!(
        c.access_log,
        Some(AccessLogSettings {
            format: AccessLogFormat::Text,
            target: LogTarget::Stdout
        })
    );
    let c = load(&format!("access_log: {{ enabled: false }}\n{base}")).unwrap();
    assert_eq!(c.access_log, None);
    let c = load(&format!(
        "access_log: {{ format: json, path: /var/log/roost/a.log }}\n{base}"
    ))
    .unwrap();
    assert_eq!(
        c.access_log,
        Some(AccessLogSettings {
            format: AccessLogFormat::Json,
            target: LogTarget::File("/var/log/roost/a.log".into())
        })
    );
    let e = errors(&format!(
        "access_log: {{ format: xml, path: rel.log }}\n{base}"
    ));
    assert!(e.has("access_log.format", "text or json"), "{e}");
    let e = errors(&format!("access_log: {{ path: rel.log }}\n{base}"));
    assert!(e.has("access_log.path", "absolute"), "{e}");
}

#[test]
fn wps_affinity_is_off_unless_asked_for() {
    assert!(!load(MINIMAL).unwrap().services[0].wps_affinity);
    let c = load(&format!("{MINIMAL}    wps_affinity: true\n")).unwrap();
    assert!(c.services[0].wps_affinity);
    // From the environment, like every scalar.
    let c = load(&format!(
        "{MINIMAL}    wps_affinity: \"${{AFFINITY:-true}}\"\n"
    ))
    .unwrap();
    assert!(c.services[0].wps_affinity);
    let e = errors(&format!("{MINIMAL}    wps_affinity: yes please\n"));
    assert!(
        e.has("services[0].wps_affinity", "is not true or false"),
        "{e}"
    );
    assert_eq!(e.0[0].line, Some(5), "{e}");
}

#[test]
fn panic_threshold_defaults_to_all_down_and_may_be_off() {
    let threshold =
        |yaml: &str| load(&format!("{MINIMAL}{yaml}")).unwrap().services[0].panic_threshold;
    assert_eq!(threshold(""), Some(DEFAULT_PANIC_THRESHOLD));
    assert_eq!(DEFAULT_PANIC_THRESHOLD, 0);
    assert_eq!(threshold("    panic_threshold: 50\n"), Some(50));
    assert_eq!(threshold("    panic_threshold: \"25%\"\n"), Some(25));
    assert_eq!(threshold("    panic_threshold: 100\n"), Some(100));
    assert_eq!(threshold("    panic_threshold: off\n"), None);
    assert_eq!(threshold("    panic_threshold: false\n"), None);
    for bad in ["101", "-1", "half"] {
        let e = errors(&format!("{MINIMAL}    panic_threshold: {bad}\n"));
        assert!(
            e.has(
                "services[0].panic_threshold",
                "percentage from 0 to 100 or `off`"
            ),
            "{e}"
        );
        assert_eq!(e.0[0].line, Some(5), "{e}");
    }
}

#[test]
fn affinity_defaults_and_errors() {
    let a = load(MINIMAL).unwrap().services[0].affinity;
    assert_eq!(a, Affinity::default());
    assert!(a.enabled && a.return_after_recovery);
    assert_eq!(
        (a.ttl, a.max_keys),
        (DEFAULT_AFFINITY_TTL, DEFAULT_AFFINITY_MAX_KEYS)
    );
    let c = load(&format!(
        "{MINIMAL}    affinity: {{ ttl: 2h, max_keys: 10, return_after_recovery: false }}\n"
    ))
    .unwrap();
    let a = c.services[0].affinity;
    assert_eq!((a.ttl, a.max_keys), (Duration::from_secs(7200), 10));
    assert!(!a.return_after_recovery);
    let e = errors(&format!(
        "{MINIMAL}    affinity: {{ ttl: forever, max_keys: 0, drain: yes }}\n"
    ));
    assert!(
        e.has("services[0].affinity.drain", "unknown field"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{MINIMAL}    affinity: {{ ttl: forever, max_keys: 0 }}\n"
    ));
    assert!(
        e.has("services[0].affinity.max_keys", "at least 1"),
        "{e:?}"
    );
    let e = errors(&format!("{MINIMAL}    affinity: {{ ttl: forever }}\n"));
    assert!(e.has("services[0].affinity.ttl", "not a duration"), "{e:?}");
}

#[test]
fn hash_algorithm_defaults_to_ketama() {
    assert_eq!(
        load(MINIMAL).unwrap().services[0].hash.algorithm,
        HashAlgorithm::Ketama
    );
    let c = load(&format!("{MINIMAL}    hash: {{ algorithm: nginx_hash }}\n")).unwrap();
    assert_eq!(c.services[0].hash.algorithm, HashAlgorithm::NginxHash);
    let c = load(&format!("{MINIMAL}    hash: {{ algorithm: ketama }}\n")).unwrap();
    assert_eq!(c.services[0].hash.algorithm, HashAlgorithm::Ketama);
    let e = errors(&format!(
        "{MINIMAL}    hash:\n      header: machineid\n      algorithm: crc32\n"
    ));
    assert!(
        e.has(
            "services[0].hash.algorithm",
            "`crc32` is not one of: ketama, nginx_hash"
        ),
        "{e}"
    );
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].line, Some(7), "{e}");
    assert!(e.to_string().starts_with("test.yaml:7"), "{e}");
}

#[test]
fn the_state_section_shares_through_redis() {
    // Without it: nothing shared, as before.
    assert_eq!(load(MINIMAL).unwrap().state, None);
    let c = load(&format!(
        "state: {{ redis: \"redis://10.0.0.5:6379/0\" }}\n{MINIMAL}"
    ))
    .unwrap();
    let state = c.state.unwrap();
    assert_eq!(state.redis, "redis://10.0.0.5:6379/0");
    assert_eq!(state.prefix, DEFAULT_STATE_PREFIX);
    let c = load(&format!(
        "state:\n  redis: \"redis://:secret@${{HOST}}:6379/2\"\n  prefix: \"site-a:\"\n{MINIMAL}"
    ))
    .unwrap();
    let state = c.state.unwrap();
    assert_eq!(state.redis, "redis://:secret@10.1.1.1:6379/2");
    assert_eq!(state.prefix, "site-a:");

    let e = errors(&format!("state:\n  prefix: x\n{MINIMAL}"));
    assert!(e.has("state.redis", "is required"), "{e}");
    let e = errors(&format!(
        "state:\n  redis: \"http://10.0.0.5:6379\"\n{MINIMAL}"
    ));
    assert!(e.has("state.redis", "not a Redis URL"), "{e}");
    assert_eq!(e.0[0].line, Some(2), "{e}");
    let e = errors(&format!(
        "state:\n  redis: \"rediss://10.0.0.5:6379\"\n{MINIMAL}"
    ));
    assert!(e.has("state.redis", "TLS"), "{e}");
    let e = errors(&format!(
        "state:\n  redis: \"redis://10.0.0.5:notaport\"\n{MINIMAL}"
    ));
    assert!(e.has("state.redis", "not a Redis URL"), "{e}");
    let e = errors(&format!(
        "state:\n  redis: \"redis://10.0.0.5\"\n  prefix: \"a b\"\n{MINIMAL}"
    ));
    assert!(e.has("state.prefix", "without spaces"), "{e}");
    assert_eq!(e.0[0].line, Some(3), "{e}");
    let e = errors(&format!(
        "state:\n  redis: \"redis://10.0.0.5\"\n  ttl: 5s\n{MINIMAL}"
    ));
    assert!(e.has("state.ttl", "unknown field"), "{e}");
}
