//! Backends from DNS against a real DNS server: dnsmasq on loopback, answering from a hosts
//! file it re-reads on SIGHUP (A records) and from `--srv-host` (SRV records). A replica added
//! to DNS gets new keys within `refresh`; a replica removed moves only its keys; the DNS server
//! gone keeps the last set serving; SRV records give each backend its port and weight.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// dnsmasq on `127.0.0.1:port`, answering from `hosts` (and `extra` options) only.
fn dnsmasq(port: u16, hosts: &Path, extra: &[String]) -> Proc {
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--log-facility=-",
            "--local-ttl=0",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--user={}", user.trim()))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run dnsmasq (scripts/deps.sh installs dnsmasq-base)");
    let mut proc = Proc { child };
    // Ready once it answers on TCP (it listens on both).
    wait_until(Duration::from_secs(10), "dnsmasq listening", || {
        assert!(proc.is_running(), "dnsmasq exited");
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    proc
}

/// Demo backends `names` on 127.0.0.2, .3, ... all on one port (DNS gives addresses, the entry
/// the port).
fn replicas(names: &[&str]) -> (Vec<Backend>, u16) {
    let first = Backend::start_on(names[0], "127.0.0.2:0");
    let port = first.addr.port();
    let mut all = vec![first];
    for (i, name) in names.iter().enumerate().skip(1) {
        all.push(Backend::start_on(
            name,
            &format!("127.0.0.{}:{port}", i + 2),
        ));
    }
    (all, port)
}

fn owners(listen: SocketAddr, prefix: &str) -> HashMap<String, String> {
    (0..60)
        .map(|i| {
            let key = format!("{prefix}{i}");
            let r = get_key(listen, &key).unwrap();
            assert_eq!(r.status, 200, "{key}: {}", r.text());
            (key, r.backend().to_string())
        })
        .collect()
}

fn roost_with(listen: SocketAddr, admin: SocketAddr, entry: &str) -> Roost {
    let yaml = config_yaml(&format!(
        "  - name: fp\n    listen: {listen}\n    backends:\n      - {entry}\n    \
         health_check: {{ type: tcp, interval: 1s, timeout: 1s, rise: 1, fall: 1 }}\n"
    ))
    .replace(
        "services:\n",
        &format!("admin: {{ listen: {admin} }}\nservices:\n"),
    );
    Roost::start(&yaml, &[listen, admin])
}

#[test]
fn replicas_come_and_go_with_their_dns_records() {
    let (backends, port) = replicas(&["r2", "r3", "r4"]);
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 wps.test\n127.0.0.3 wps.test\n").unwrap();
    let dns_port = free_port();
    let dns = dnsmasq(dns_port, &hosts, &[]);
    let (listen, admin) = (listen_addr(), listen_addr());
    let entry = format!(
        "{{ dns: wps.test, port: {port}, refresh: 1s, resolver: \"127.0.0.1:{dns_port}\" }}"
    );
    let roost = roost_with(listen, admin, &entry);
    let log = || roost.log_text();

    // Both records are backends: keys spread over both.
    wait_until(Duration::from_secs(20), "keys on r2 and r3", || {
        let o = owners(listen, "k");
        o.values().any(|b| b == "r2") && o.values().any(|b| b == "r3")
    });
    let before = owners(listen, "k");

    // A replica added to DNS: a backend within `refresh`, new keys reach it; recorded
    // sessions stay where they are.
    std::fs::write(
        &hosts,
        "127.0.0.2 wps.test\n127.0.0.3 wps.test\n127.0.0.4 wps.test\n",
    )
    .unwrap();
    dns.signal("HUP");
    let added = format!("backend 127.0.0.4:{port} added (dns wps.test:{port})");
    wait_until(Duration::from_secs(20), "the new replica added", || {
        log().contains(&added)
    });
    wait_until(Duration::from_secs(20), "new keys on r4", || {
        owners(listen, "n").values().any(|b| b == "r4")
    });
    assert_eq!(owners(listen, "k"), before, "a recorded session moved");

    // A replica removed from DNS: only its keys move.
    std::fs::write(&hosts, "127.0.0.2 wps.test\n127.0.0.4 wps.test\n").unwrap();
    dns.signal("HUP");
    let removed = format!("backend 127.0.0.3:{port} removed (dns wps.test:{port})");
    wait_until(Duration::from_secs(20), "the replica removed", || {
        log().contains(&removed)
    });
    let after = owners(listen, "k");
    for (key, owner) in &before {
        if owner == "r3" {
            assert_ne!(after[key], "r3", "{key} still on the removed replica");
        } else {
            assert_eq!(
                &after[key], owner,
                "{key} moved although its replica stayed"
            );
        }
    }

    // The DNS server gone: the last set keeps serving, the outage is logged once.
    drop(dns);
    wait_until(Duration::from_secs(30), "the failed lookup logged", || {
        log().contains(&format!("dns: service fp: dns wps.test:{port}:"))
            && log().contains("keeping the backends it found before")
    });
    std::thread::sleep(Duration::from_secs(3)); // several more failed refreshes
    assert_eq!(owners(listen, "k"), after, "keys moved while DNS was down");
    assert_eq!(
        log()
            .matches("keeping the backends it found before")
            .count(),
        1,
        "{}",
        log()
    );
    let metrics = get(admin, "/metrics", &[]).unwrap().text();
    let failed = format!(
        "roost_dns_lookups_total{{name=\"dns wps.test:{port}\",result=\"failed\",service=\"fp\"}} "
    );
    assert!(metrics.contains(&failed), "{metrics}");

    // `roost -t` is strict: the lookup fails, it says so and exits 1.
    let (code, _, err) = run_roost(&["-t", "-c", roost.config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "services[0].backends[0].dns: service fp: dns wps.test:{port}"
        )),
        "{err}"
    );
    drop(backends);
}

#[test]
fn srv_records_give_each_backend_its_port_and_weight() {
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 one.test\n127.0.0.1 two.test\n").unwrap();
    let dns_port = free_port();
    let srv = |target: &str, port: u16, weight: u16| {
        format!("--srv-host=_wps._tcp.fp.test,{target},{port},0,{weight}")
    };
    let _dns = dnsmasq(
        dns_port,
        &hosts,
        &[
            srv("one.test", one.addr.port(), 1),
            srv("two.test", two.addr.port(), 3),
        ],
    );
    let (listen, admin) = (listen_addr(), listen_addr());
    let roost = roost_with(
        listen,
        admin,
        &format!("{{ srv: _wps._tcp.fp.test, refresh: 1s, resolver: \"127.0.0.1:{dns_port}\" }}"),
    );
    let status: serde_json::Value =
        serde_json::from_slice(&get(admin, "/status", &[]).unwrap().body).unwrap();
    for b in status["services"][0]["backends"].as_array().unwrap() {
        assert_eq!(b["dns"], "srv _wps._tcp.fp.test", "{b}");
    }
    let mut got: Vec<(String, String, u64)> = status["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["addr"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    // An SRV backend is named by its target (its identity), at the target's address.
    let mut want = vec![
        (
            format!("one.test:{}", one.addr.port()),
            one.addr.to_string(),
            1,
        ),
        (
            format!("two.test:{}", two.addr.port()),
            two.addr.to_string(),
            3,
        ),
    ];
    want.sort();
    assert_eq!(got, want, "{}", roost.log_text());
    wait_until(Duration::from_secs(20), "keys on both SRV targets", || {
        let o = owners(listen, "s");
        o.values().any(|b| b == "one") && o.values().any(|b| b == "two")
    });
}

/// Where the ring puts `key`, by identity (`/route`: the owner with every backend as it is).
fn ring_owner(admin: SocketAddr, key: &str) -> String {
    let r = get(admin, &format!("/route?service=fp&key={key}"), &[]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["identity"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// A replica that comes back at another address under the same SRV target (a restarted pod
/// of a StatefulSet) is the same backend: no key moves, neither the recorded sessions nor the
/// ring's owners of keys never seen.
#[test]
fn an_srv_target_at_a_new_address_keeps_its_keys() {
    let a = Backend::start_on("a", "127.0.0.2:0");
    let port = a.addr.port();
    let b = Backend::start_on("b", &format!("127.0.0.3:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 a.test\n127.0.0.3 b.test\n").unwrap();
    let dns_port = free_port();
    let srv = |target: &str| format!("--srv-host=_wps._tcp.fp.test,{target},{port},0,1");
    let dns = dnsmasq(dns_port, &hosts, &[srv("a.test"), srv("b.test")]);
    let (listen, admin) = (listen_addr(), listen_addr());
    let roost = roost_with(
        listen,
        admin,
        &format!("{{ srv: _wps._tcp.fp.test, refresh: 1s, resolver: \"127.0.0.1:{dns_port}\" }}"),
    );
    wait_until(Duration::from_secs(20), "keys on a and b", || {
        let o = owners(listen, "k");
        o.values().any(|n| n == "a") && o.values().any(|n| n == "b")
    });
    let recorded = owners(listen, "k");
    let unseen: Vec<(String, String)> = (0..200)
        .map(|i| format!("u{i}"))
        .map(|k| {
            let owner = ring_owner(admin, &k);
            (k, owner)
        })
        .collect();
    assert!(unseen.iter().any(|(_, o)| o == &format!("b.test:{port}")));

    // b restarts at 127.0.0.4 (the same replica: a backend named "b" there).
    let b2 = Backend::start_on("b", &format!("127.0.0.4:{port}"));
    std::fs::write(&hosts, "127.0.0.2 a.test\n127.0.0.4 b.test\n").unwrap();
    dns.signal("HUP");
    let changed = format!(
        "backend b.test:{port} address 127.0.0.3:{port} -> 127.0.0.4:{port} (srv _wps._tcp.fp.test) (its keys stay)"
    );
    wait_until(Duration::from_secs(20), "the new address applied", || {
        roost.log_text().contains(&changed)
    });
    drop(b);
    assert_eq!(owners(listen, "k"), recorded, "a recorded session moved");
    for (key, owner) in &unseen {
        assert_eq!(&ring_owner(admin, key), owner, "{key} moved on the ring");
    }
    let r = get(admin, "/route?service=fp&key=u0", &[]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    if v["identity"] == format!("b.test:{port}") {
        assert_eq!(v["backend"], format!("127.0.0.4:{port}"));
    }
    // Counted: no move of any kind.
    let metrics = get(admin, "/metrics", &[]).unwrap().text();
    let moves: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("roost_affinity_moves_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(moves, 0.0, "{metrics}");
    drop(b2);
}
