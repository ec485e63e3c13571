//! What a reload changes (pure): compare the running config with the new one and sort every
//! difference into what this process can apply in place and what needs a new process
//! (`roost -u`), with a description of each change for the log.

use crate::config::{Config, ServiceConfig};

/// What a reload will do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Services to reconfigure, each with a description of what changes.
    pub apply: Vec<(ServiceConfig, Vec<String>)>,
    /// Differences this process cannot apply; each needs `roost -u`.
    pub needs_upgrade: Vec<String>,
}

impl Plan {
    /// The config that runs once the plan is applied: the old one with the applied services
    /// replaced, so the next reload compares against what really runs.
    pub fn running_after(&self, old: &Config) -> Config {
        let mut running = old.clone();
        for (new, _) in &self.apply {
            if let Some(s) = running.services.iter_mut().find(|s| s.name == new.name) {
                *s = new.clone();
            }
        }
        running
    }
}

/// Compare the running config with a freshly loaded one.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    let (o, n) = (&old.server, &new.server);
    let server_changes = [
        ("threads", o.threads != n.threads),
        ("pid_file", o.pid_file != n.pid_file),
        ("upgrade_sock", o.upgrade_sock != n.upgrade_sock),
        (
            "grace_period_seconds",
            o.grace_period_seconds != n.grace_period_seconds,
        ),
        (
            "graceful_shutdown_timeout_seconds",
            o.graceful_shutdown_timeout_seconds != n.graceful_shutdown_timeout_seconds,
        ),
        ("error_log", o.error_log != n.error_log),
        ("work_stealing", o.work_stealing != n.work_stealing),
        (
            "upstream_keepalive_pool_size",
            o.upstream_keepalive_pool_size != n.upstream_keepalive_pool_size,
        ),
        (
            "preserve_header_case",
            o.preserve_header_case != n.preserve_header_case,
        ),
        ("state_dir", o.state_dir != n.state_dir),
    ];
    for (key, changed) in server_changes {
        if changed {
            plan.needs_upgrade.push(format!("server.{key} changed"));
        }
    }
    if old.admin != new.admin {
        plan.needs_upgrade.push("admin changed".to_string());
    }
    if old.access_log != new.access_log {
        plan.needs_upgrade.push("access_log changed".to_string());
    }
    if old.state != new.state {
        plan.needs_upgrade.push("state changed".to_string());
    }
    for service in &new.services {
        match old.service(&service.name) {
            None => plan.needs_upgrade.push(format!(
                "service {} added (listens on {})",
                service.name, service.listen
            )),
            Some(before) if before.listen != service.listen => plan.needs_upgrade.push(format!(
                "service {}: listen changed {} -> {}; the service keeps all its old settings",
                service.name, before.listen, service.listen
            )),
            Some(before) => {
                let changes = describe(before, service);
                if !changes.is_empty() {
                    plan.apply.push((service.clone(), changes));
                }
            }
        }
    }
    for service in &old.services {
        if new.service(&service.name).is_none() {
            plan.needs_upgrade.push(format!(
                "service {} removed (it keeps serving on {})",
                service.name, service.listen
            ));
        }
    }
    plan
}

/// A backend as the log names it: its address, with its `id` when it has one.
fn named(b: &crate::config::BackendConfig) -> String {
    match &b.id {
        Some(id) => format!("{} (id {id})", b.address),
        None => b.address.clone(),
    }
}

/// What differs between two versions of one service, for the log.
fn describe(old: &ServiceConfig, new: &ServiceConfig) -> Vec<String> {
    let mut changes = Vec::new();
    let found_by = |b: &crate::config::BackendConfig| {
        b.dns
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    };
    // A backend is the same backend while its identity stays (an `id`, the address as
    // written, an SRV target): its keys stay with it, even at a new address.
    for b in &new.backends {
        match old.backends.iter().find(|o| o.identity() == b.identity()) {
            None => changes.push(format!("backend {} added{}", named(b), found_by(b))),
            Some(o) => {
                if o.addr != b.addr {
                    changes.push(format!(
                        "backend {} address {} -> {}{} (its keys stay)",
                        named(b),
                        o.addr,
                        b.addr,
                        found_by(b)
                    ));
                }
                if o.weight != b.weight {
                    changes.push(format!(
                        "backend {} weight {} -> {}",
                        named(b),
                        o.weight,
                        b.weight
                    ));
                }
            }
        }
    }
    for o in &old.backends {
        if !new.backends.iter().any(|b| b.identity() == o.identity()) {
            changes.push(format!("backend {} removed{}", named(o), found_by(o)));
        }
    }
    for d in &new.dns {
        if !old.dns.iter().any(|o| o.describe() == d.describe()) {
            changes.push(format!(
                "{} added (refresh {})",
                d.describe(),
                humantime::format_duration(d.refresh)
            ));
        }
    }
    for o in &old.dns {
        if !new.dns.iter().any(|d| d.describe() == o.describe()) {
            changes.push(format!("{} removed", o.describe()));
        }
    }
    // Backends left out because their host does not resolve: the state must list (and the
    // reloader retry) exactly the new file's.
    for u in &new.unresolved {
        if !old.unresolved.iter().any(|o| o.address == u.address) {
            changes.push(format!("backend {} left out ({})", u.address, u.reason));
        }
    }
    for o in &old.unresolved {
        let listed = |a: &str| a == o.address;
        if !new.unresolved.iter().any(|u| listed(&u.address))
            && !new.backends.iter().any(|b| listed(&b.address))
        {
            changes.push(format!(
                "backend {} removed (its host never resolved)",
                o.address
            ));
        }
    }
    if old.health_check != new.health_check {
        changes.push(match (&old.health_check, &new.health_check) {
            (None, Some(_)) => "health_check added".to_string(),
            (Some(_), None) => {
                "health_check removed (no probes: a backend is up unless real traffic takes it out)"
                    .to_string()
            }
            _ => "health_check changed".to_string(),
        });
    }
    if old.when_down != new.when_down {
        changes.push(format!(
            "when_down {:?} -> {:?}",
            old.when_down, new.when_down
        ));
    }
    if old.panic_threshold != new.panic_threshold {
        let show = |t: Option<u8>| t.map_or_else(|| "off".to_string(), |p| format!("{p}%"));
        changes.push(format!(
            "panic_threshold {} -> {}",
            show(old.panic_threshold),
            show(new.panic_threshold)
        ));
    }
    if old.hash.algorithm != new.hash.algorithm {
        // With the sticky table on, the keys it holds stay where they are: only the others
        // follow the new mapping (the lossless switch of doc/migrating-from-nginx.md).
        let which = if new.affinity.enabled {
            "keys the sticky table holds stay; new keys are mapped anew"
        } else {
            "keys are mapped anew"
        };
        changes.push(format!(
            "hash.algorithm {} -> {} ({which})",
            old.hash.algorithm.as_str(),
            new.hash.algorithm.as_str()
        ));
    }
    if (&old.hash.header, old.hash.missing) != (&new.hash.header, new.hash.missing) {
        changes.push(format!(
            "hash {}/{:?} -> {}/{:?}",
            old.hash.header, old.hash.missing, new.hash.header, new.hash.missing
        ));
    }
    let (ol, nl) = (&old.limits, &new.limits);
    let limits = [
        (
            "max_header_bytes",
            ol.max_header_bytes as u64,
            nl.max_header_bytes as u64,
        ),
        ("max_headers", ol.max_headers as u64, nl.max_headers as u64),
        ("max_body", ol.max_body, nl.max_body),
        (
            "max_connections",
            ol.max_connections as u64,
            nl.max_connections as u64,
        ),
    ];
    for (name, before, after) in limits {
        if before != after {
            changes.push(format!("limits.{name} {before} -> {after}"));
        }
    }
    let (ot, nt) = (&old.timeouts, &new.timeouts);
    let timeouts = [
        ("client_header", ot.client_header, nt.client_header),
        ("client_body", ot.client_body, nt.client_body),
        ("keepalive", ot.keepalive, nt.keepalive),
        ("upstream_connect", ot.upstream_connect, nt.upstream_connect),
        ("upstream_read", ot.upstream_read, nt.upstream_read),
        ("upstream_write", ot.upstream_write, nt.upstream_write),
    ];
    for (name, before, after) in timeouts {
        if before != after {
            changes.push(format!(
                "timeouts.{name} {} -> {}",
                humantime::format_duration(before),
                humantime::format_duration(after)
            ));
        }
    }
    if old.trust_forwarded_headers != new.trust_forwarded_headers {
        changes.push(format!(
            "trust_forwarded_headers -> {}",
            new.trust_forwarded_headers
        ));
    }
    if old.wps_affinity != new.wps_affinity {
        changes.push(format!("wps_affinity -> {}", new.wps_affinity));
    }
    let (oa, na) = (&old.affinity, &new.affinity);
    if oa.enabled != na.enabled {
        changes.push(format!("affinity.enabled -> {}", na.enabled));
    }
    if oa.ttl != na.ttl {
        changes.push(format!(
            "affinity.ttl {} -> {}",
            humantime::format_duration(oa.ttl),
            humantime::format_duration(na.ttl)
        ));
    }
    if oa.max_keys != na.max_keys {
        changes.push(format!(
            "affinity.max_keys {} -> {}",
            oa.max_keys, na.max_keys
        ));
    }
    if oa.return_after_recovery != na.return_after_recovery {
        changes.push(format!(
            "affinity.return_after_recovery -> {}",
            na.return_after_recovery
        ));
    }
    if changes.is_empty() && old != new {
        // Same addresses, weights and policy, but e.g. a backend written differently.
        changes.push("backend list rewritten".to_string());
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "test.yaml").unwrap()
    }

    const BASE: &str = "\
services:
  - name: fp
    listen: 127.0.0.1:8093
    backends: [10.0.0.1:8093, 10.0.0.2:8093]
  - name: emu
    listen: 127.0.0.1:8094
    backends: [10.0.0.1:8094]
";

    #[test]
    fn a_backend_left_out_for_its_host_is_applied_and_described() {
        let dns = |a: &str| -> std::io::Result<Vec<std::net::SocketAddr>> {
            match a {
                "wps1:8093" => Ok(vec!["10.0.0.1:8093".parse().unwrap()]),
                _ => Err(std::io::Error::other("no such host")),
            }
        };
        let load = |backends: &str| {
            let yaml = format!(
                "services:\n  - name: fp\n    listen: 127.0.0.1:8093\n    backends: {backends}\n"
            );
            Config::from_yaml_with(&yaml, "test.yaml", &|_| None, &dns).unwrap()
        };
        let old = load("[wps1:8093]");
        // Added to the file while its host does not resolve: the state must list it (and the
        // reloader retry it) although no address changed.
        let new = load("[wps1:8093, wps2:8093]");
        let p = plan(&old, &new);
        assert_eq!(p.apply.len(), 1, "{p:?}");
        assert!(
            p.apply[0].1[0].starts_with("backend wps2:8093 left out (cannot resolve `wps2`"),
            "{p:?}"
        );
        // Then it resolves: added as any new backend.
        let resolved = new.services[0]
            .retry_unresolved(&|_| Ok(vec!["10.0.0.2:8093".parse().unwrap()]))
            .unwrap();
        let mut after = new.clone();
        after.services[0] = resolved;
        assert_eq!(plan(&new, &after).apply[0].1, ["backend wps2:8093 added"]);
        // Or it leaves the file before it ever resolved.
        assert_eq!(
            plan(&new, &old).apply[0].1,
            ["backend wps2:8093 removed (its host never resolved)"]
        );
    }

    #[test]
    fn identical_configs_change_nothing() {
        assert_eq!(plan(&config(BASE), &config(BASE)), Plan::default());
    }

    #[test]
    fn backend_changes_are_applied_and_described() {
        let new = config(&BASE.replace(
            "[10.0.0.1:8093, 10.0.0.2:8093]",
            "[{ address: 10.0.0.1:8093, weight: 3 }, 10.0.0.3:8093]\n    when_down: reject\n    health_check: { type: tcp }",
        ));
        let p = plan(&config(BASE), &new);
        assert!(p.needs_upgrade.is_empty(), "{p:?}");
        assert_eq!(p.apply.len(), 1);
        let (service, changes) = &p.apply[0];
        assert_eq!(service.name, "fp");
        assert_eq!(
            changes,
            &[
                "backend 10.0.0.1:8093 weight 1 -> 3",
                "backend 10.0.0.3:8093 added",
                "backend 10.0.0.2:8093 removed",
                "health_check added",
                "when_down Failover -> Reject",
            ]
        );
        let running = p.running_after(&config(BASE));
        assert_eq!(running.services[0], *service);
        assert_eq!(running.services[1], config(BASE).services[1]);
    }

    #[test]
    fn listener_changes_need_an_upgrade_and_leave_the_service_alone() {
        let new = config(
            &BASE
                .replace("127.0.0.1:8093", "127.0.0.1:9093")
                .replace("10.0.0.2:8093", "10.0.0.9:8093"),
        );
        let p = plan(&config(BASE), &new);
        assert!(p.apply.is_empty(), "{p:?}");
        assert_eq!(p.needs_upgrade.len(), 1);
        assert!(p.needs_upgrade[0].contains("listen changed"), "{p:?}");
        assert_eq!(p.running_after(&config(BASE)), config(BASE));
    }

    #[test]
    fn added_and_removed_services_and_server_settings_need_an_upgrade() {
        let new = config(
            "\
server: { threads: 4, preserve_header_case: true }
admin: { listen: 9900 }
services:
  - name: fp
    listen: 127.0.0.1:8093
    backends: [10.0.0.1:8093, 10.0.0.2:8093]
  - name: raven
    listen: 127.0.0.1:9099
    backends: [10.0.0.1:9099]
",
        );
        let p = plan(&config(BASE), &new);
        assert!(p.apply.is_empty(), "{p:?}");
        let all = p.needs_upgrade.join("\n");
        for needle in [
            "server.threads changed",
            "server.preserve_header_case changed",
            "admin changed",
            "service raven added",
            "service emu removed",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
    }

    #[test]
    fn affinity_changes_are_applied_and_described() {
        let new = config(&BASE.replace(
            "[10.0.0.1:8094]",
            "[10.0.0.1:8094]\n    affinity: { ttl: 1h, return_after_recovery: false }",
        ));
        let p = plan(&config(BASE), &new);
        assert!(p.needs_upgrade.is_empty(), "{p:?}");
        assert_eq!(
            p.apply[0].1,
            [
                "affinity.ttl 1day -> 1h",
                "affinity.return_after_recovery -> false"
            ]
        );
    }

    #[test]
    fn limits_and_timeouts_are_described_as_what_they_are() {
        let new = config(&BASE.replace(
            "[10.0.0.1:8094]",
            "[10.0.0.1:8094]\n    limits: { max_body: 1000 }\n    timeouts: { upstream_read: 2s, keepalive: 1m }",
        ));
        let p = plan(&config(BASE), &new);
        assert_eq!(p.apply.len(), 1, "{p:?}");
        assert_eq!(
            p.apply[0].1,
            [
                "limits.max_body 536870912 -> 1000",
                "timeouts.upstream_read 5m -> 2s",
            ]
        );
    }

    #[test]
    fn a_change_of_hash_algorithm_is_applied_and_described() {
        let new = config(&BASE.replace(
            "[10.0.0.1:8094]",
            "[10.0.0.1:8094]\n    hash: { algorithm: nginx_hash }",
        ));
        let p = plan(&config(BASE), &new);
        assert!(p.needs_upgrade.is_empty(), "{p:?}");
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.apply[0].0.name, "emu");
        assert_eq!(
            p.apply[0].1,
            ["hash.algorithm ketama -> nginx_hash (keys the sticky table holds stay; new keys are mapped anew)"]
        );
    }

    #[test]
    fn wps_affinity_is_applied_in_place() {
        let new =
            config(&BASE.replace("[10.0.0.1:8094]", "[10.0.0.1:8094]\n    wps_affinity: true"));
        let p = plan(&config(BASE), &new);
        assert!(p.needs_upgrade.is_empty(), "{p:?}");
        assert_eq!(p.apply.len(), 1);
        assert_eq!(p.apply[0].0.name, "emu");
        assert_eq!(p.apply[0].1, ["wps_affinity -> true"]);
    }

    #[test]
    fn panic_threshold_is_applied_in_place() {
        let new = config(&BASE.replace(
            "[10.0.0.1:8094]",
            "[10.0.0.1:8094]\n    panic_threshold: off",
        ));
        let p = plan(&config(BASE), &new);
        assert!(p.needs_upgrade.is_empty(), "{p:?}");
        assert_eq!(p.apply[0].1, ["panic_threshold 0% -> off"]);
        let p = plan(
            &new,
            &config(&BASE.replace(
                "[10.0.0.1:8094]",
                "[10.0.0.1:8094]\n    panic_threshold: 50",
            )),
        );
        assert_eq!(p.apply[0].1, ["panic_threshold off -> 50%"]);
    }

    #[test]
    fn a_backend_at_a_new_address_is_the_same_backend() {
        let load = |ip: &str| {
            let ip: std::net::SocketAddr = ip.parse().unwrap();
            let dns = move |_: &str| -> std::io::Result<Vec<std::net::SocketAddr>> { Ok(vec![ip]) };
            let yaml = "services:\n  - name: fp\n    listen: 127.0.0.1:8093\n    backends: [wps1:8093, { address: 10.0.0.2:8093, id: two }]\n";
            Config::from_yaml_with(yaml, "test.yaml", &|_| None, &dns).unwrap()
        };
        let p = plan(&load("10.0.0.1:8093"), &load("10.0.0.7:8093"));
        assert_eq!(
            p.apply[0].1,
            ["backend wps1:8093 address 10.0.0.1:8093 -> 10.0.0.7:8093 (its keys stay)"],
            "{p:?}"
        );
        // An id given to a backend that had none is a new identity: its keys move.
        let old = config(
            "services:\n  - name: fp\n    listen: 127.0.0.1:8093\n    backends: [10.0.0.2:8093]\n",
        );
        let new = config("services:\n  - name: fp\n    listen: 127.0.0.1:8093\n    backends: [{ address: 10.0.0.2:8093, id: two }]\n");
        assert_eq!(
            plan(&old, &new).apply[0].1,
            [
                "backend 10.0.0.2:8093 (id two) added",
                "backend 10.0.0.2:8093 removed"
            ]
        );
    }
}
