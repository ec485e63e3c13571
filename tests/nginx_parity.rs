//! Live parity with NGINX: the same backends behind NGINX and behind Roost, and every key
//! must land on the same backend through both. `hash $http_machineid consistent;` against
//! Roost's default Ketama ring; plain `hash $http_machineid;` against `hash.algorithm:
//! nginx_hash`, with equal weights, with weights, with a server marked `down`, and with a
//! server that refuses connections. Needs `nginx` on PATH (`make deps` installs it).

mod common;

use common::*;
use roost::policy::nginx_hash::{NginxHash, Pick};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// NGINX with one `upstream NAME { LINES }` and one server per `(listen, name, lines)`.
fn nginx_with(dir: &std::path::Path, upstreams: &[(SocketAddr, &str, String)]) -> Proc {
    let mut http = nginx_http_settings(dir);
    for (listen, name, lines) in upstreams {
        http.push_str(&format!(
            "  upstream {name} {{\n{lines}  }}\n  server {{ listen {listen}; location / {{ proxy_pass http://{name}; }} }}\n"
        ));
    }
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!("{}http {{\n{http}}}\n", nginx_main_settings(dir)),
    )
    .unwrap();
    let listens: Vec<SocketAddr> = upstreams.iter().map(|(l, _, _)| *l).collect();
    start_nginx(&conf, &listens)
}

/// Send `keys` through `nginx` and `roost` (one keep-alive connection each) and assert that
/// both answer from the same backend; returns how many keys each backend got.
fn compare(
    what: &str,
    nginx: SocketAddr,
    roost: SocketAddr,
    keys: impl Iterator<Item = String>,
) -> BTreeMap<String, usize> {
    let mut via_nginx = Client::new(nginx, true);
    let mut via_roost = Client::new(roost, true);
    let mut used = BTreeMap::new();
    for key in keys {
        let n = via_nginx.request("GET", "/", &key, b"").unwrap();
        let r = via_roost.request("GET", "/", &key, b"").unwrap();
        assert_eq!(
            n.status, 200,
            "{what}: NGINX answered {} for {key}",
            n.status
        );
        assert_eq!(r.backend(), n.backend(), "{what}: key {key}");
        *used.entry(r.backend().to_string()).or_insert(0) += 1;
    }
    used
}

#[test]
fn roost_and_nginx_choose_the_same_backends() {
    // Distinct IPs as well as ports, as on a real site.
    let backends: Vec<Backend> = (1..=4)
        .map(|i| Backend::start_on(&format!("b{i}"), &format!("127.0.0.{}:0", 20 + i)))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let weights = [1, 2, 1, 1];

    let servers: Vec<(String, u32)> = addrs
        .iter()
        .zip(weights)
        .map(|(a, w)| (a.to_string(), w))
        .collect();
    consistent_parity("consistent", &servers);
}

/// `servers` (address as written, weight) behind NGINX's `hash $http_machineid consistent;`
/// and behind Roost's default ring: 300 keys through both must land on the same backends, and
/// every backend must own some of them.
fn consistent_parity(what: &str, servers: &[(String, u32)]) {
    let dir = tempfile::tempdir().unwrap();
    let nginx_addr = listen_addr();
    let lines: String = servers
        .iter()
        .map(|(a, w)| format!("    server {a} weight={w};\n"))
        .collect();
    let nginx = nginx_with(
        dir.path(),
        &[(
            nginx_addr,
            "wps",
            format!("    hash $http_machineid consistent;\n{lines}"),
        )],
    );
    let roost_addr = listen_addr();
    let list: String = servers
        .iter()
        .map(|(a, w)| format!("      - {{ address: \"{a}\", weight: {w} }}\n"))
        .collect();
    let roost = Roost::start(
        &config_yaml(&format!(
            "  - name: wps\n    listen: {roost_addr}\n    backends:\n{list}"
        )),
        &[roost_addr],
    );
    let used = compare(
        what,
        nginx_addr,
        roost_addr,
        (0..300).map(|i| format!("parity-{i}")),
    );
    assert_eq!(
        used.len(),
        servers.len(),
        "{what}: every backend should own some of 300 keys"
    );
    drop(roost);
    drop(nginx);
}

/// Keys NGINX maps in each case; the pure `NginxHash` table must agree on all of them.
const NGINX_KEYS: usize = 3_000;
/// Keys also sent through a real Roost per case (a debug Roost on a loaded machine answers in
/// ~15 ms; NGINX in ~1 ms).
const ROOST_KEYS: usize = 400;

/// One backend of a parity case: (name, address, weight, state).
type Member = (String, SocketAddr, u32, State);

#[derive(Clone, Copy, PartialEq)]
enum State {
    Up,
    /// `down` in NGINX; down by its health check in Roost (it refuses connections).
    MarkedDown,
    /// `down` in NGINX; `state: maint` in Roost (what `roost import-nginx` writes for it).
    Maint,
    /// Refuses connections; neither proxy is told.
    Refusing,
}

/// Plain `hash $http_machineid;` against `nginx_hash`: equal weights, weights, a server
/// marked `down`, and a server that refuses connections.
#[test]
fn nginx_hash_matches_plain_nginx_hash() {
    let backends: Vec<Backend> = (1..=4)
        .map(|i| Backend::start_on(&format!("b{i}"), &format!("127.0.0.{}:0", 30 + i)))
        .collect();
    // An address that refuses connections: a backend that was started and stopped.
    let dead = Backend::start_on("dead", "127.0.0.39:0").stop();
    wait_until(Duration::from_secs(10), "stopped backend refusing", || {
        std::net::TcpStream::connect(dead).is_err()
    });
    let up = |i: usize, w: u32| (backends[i].name.clone(), backends[i].addr, w, State::Up);
    let cases: Vec<(&str, Vec<Member>)> = vec![
        ("equal", (0..4).map(|i| up(i, 1)).collect()),
        ("weighted", vec![up(0, 1), up(1, 3), up(2, 2), up(3, 1)]),
        (
            // Its weight still counts in both, so no other key moves.
            "marked_down",
            vec![
                up(0, 2),
                ("dead".into(), dead, 1, State::MarkedDown),
                up(1, 1),
                up(2, 1),
            ],
        ),
        (
            // The same as Roost's operator state: no health check needed.
            "marked_maint",
            vec![
                up(0, 2),
                ("dead".into(), dead, 1, State::Maint),
                up(1, 1),
                up(2, 1),
            ],
        ),
        (
            // NGINX finds out by its failed connection (then max_fails=1 keeps it out for
            // fail_timeout) and retries along its rehash sequence; Roost, with no health
            // check, retries the refused connection the same way.
            "refusing",
            vec![
                up(0, 1),
                up(1, 1),
                ("dead".into(), dead, 1, State::Refusing),
                up(3, 1),
            ],
        ),
    ];

    let dir = tempfile::tempdir().unwrap();
    let nginx_listens: Vec<SocketAddr> = cases.iter().map(|_| listen_addr()).collect();
    let roost_listens: Vec<SocketAddr> = cases.iter().map(|_| listen_addr()).collect();
    let upstreams: Vec<(SocketAddr, &str, String)> = cases
        .iter()
        .zip(&nginx_listens)
        .map(|((name, members), l)| {
            let lines: String = members
                .iter()
                .map(|(_, a, w, state)| {
                    let down = if matches!(*state, State::MarkedDown | State::Maint) {
                        " down"
                    } else {
                        ""
                    };
                    format!("    server {a} weight={w}{down};\n")
                })
                .collect();
            (*l, *name, format!("    hash $http_machineid;\n{lines}"))
        })
        .collect();
    let nginx = nginx_with(dir.path(), &upstreams);

    let admin = listen_addr();
    let services: String = cases
        .iter()
        .zip(&roost_listens)
        .map(|((name, members), l)| {
            let list: String = members
                .iter()
                .map(|(_, a, w, state)| {
                    let maint = if *state == State::Maint { ", state: maint" } else { "" };
                    format!("      - {{ address: {a}, weight: {w}{maint} }}\n")
                })
                .collect();
            let check = if members.iter().any(|m| m.3 == State::MarkedDown) {
                "    health_check: { type: tcp, interval: 500ms, timeout: 500ms, rise: 1, fall: 1 }\n"
            } else {
                ""
            };
            format!(
                "  - name: {name}\n    listen: {l}\n    hash: {{ algorithm: nginx_hash }}\n    backends:\n{list}{check}"
            )
        })
        .collect();
    let yaml = config_yaml(&services).replace(
        "services:\n",
        &format!("admin:\n  listen: {admin}\nservices:\n"),
    );
    let mut wait_for = roost_listens.clone();
    wait_for.push(admin);
    let roost = Roost::start(&yaml, &wait_for);
    wait_until(
        Duration::from_secs(20),
        "Roost's health check marking the dead backend down",
        || {
            get(admin, "/status", &[]).is_ok_and(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                v["services"].as_array().into_iter().flatten().any(|s| {
                    s["name"] == "marked_down"
                        && s["backends"][1]["healthy"] == false
                        && s["backends"][0]["healthy"] == true
                })
            })
        },
    );

    for ((name, members), (nginx_at, roost_at)) in
        cases.iter().zip(nginx_listens.iter().zip(&roost_listens))
    {
        let table = NginxHash::new(members.iter().map(|m| m.2));
        let keys: Vec<String> = (0..NGINX_KEYS)
            .map(|k| format!("{name}-machine-{k}"))
            .collect();
        let mut via_nginx = Client::new(*nginx_at, true);
        let mut used = BTreeMap::new();
        for key in &keys {
            let n = via_nginx.request("GET", "/", key, b"").unwrap();
            assert_eq!(
                n.status, 200,
                "{name}: NGINX answered {} for {key}",
                n.status
            );
            let Pick::Hashed { index, .. } =
                table.pick(key.as_bytes(), |i| members[i].3 == State::Up)
            else {
                panic!("{name}: {key} fell back to round robin")
            };
            assert_eq!(members[index].0, n.backend(), "{name}: key {key}");
            *used.entry(members[index].0.clone()).or_insert(0) += 1;
        }
        let up = members.iter().filter(|m| m.3 == State::Up).count();
        assert_eq!(
            used.len(),
            up,
            "{name}: every usable backend owns keys: {used:?}"
        );
        if *name == "weighted" {
            // 1:3:2:1
            assert!(
                used["b2"] > used["b3"] && used["b3"] > used["b1"],
                "{used:?}"
            );
        }
        let through_roost = compare(
            name,
            *nginx_at,
            *roost_at,
            keys.iter().take(ROOST_KEYS).cloned(),
        );
        assert!(
            !through_roost.contains_key("dead"),
            "{name}: {through_roost:?}"
        );
        assert_eq!(through_roost.len(), up, "{name}: {through_roost:?}");
    }

    // `roost route` names the same owners (all backends up) for the equal case.
    let file = roost.config.display().to_string();
    let mut via_nginx = Client::new(nginx_listens[0], true);
    for k in 0..30 {
        let key = format!("route-{k}");
        let (code, out, err) = run_roost(&["route", "-c", &file, "equal", &key]);
        assert_eq!(code, 0, "{err}");
        let n = via_nginx.request("GET", "/", &key, b"").unwrap();
        let owner = backends.iter().find(|x| x.name == n.backend()).unwrap();
        assert_eq!(out.trim(), owner.addr.to_string(), "{key}");
    }
    drop(roost);
    drop(nginx);
}

/// The lossless switch from the seed's plain `hash` to Ketama (doc/migrating-from-nginx.md):
/// Roost with `nginx_hash` sends 300 active keys exactly where NGINX does (and its sticky
/// table learns them); a reload to `ketama` moves none of them, and keys Roost has not seen
/// follow the Ketama ring (those of an NGINX `hash ... consistent` upstream), many of them
/// elsewhere than the plain hash would put them.
#[test]
fn the_switch_from_nginx_hash_to_ketama_moves_no_active_key() {
    let backends: Vec<Backend> = (1..=4)
        .map(|i| Backend::start_on(&format!("b{i}"), &format!("127.0.0.{}:0", 40 + i)))
        .collect();
    let servers: String = backends
        .iter()
        .map(|b| format!("    server {};\n", b.addr))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (plain, consistent) = (listen_addr(), listen_addr());
    let nginx = nginx_with(
        dir.path(),
        &[
            (
                plain,
                "plain",
                format!("    hash $http_machineid;\n{servers}"),
            ),
            (
                consistent,
                "consistent",
                format!("    hash $http_machineid consistent;\n{servers}"),
            ),
        ],
    );
    let listen = listen_addr();
    let list: String = backends
        .iter()
        .map(|b| format!("      - {}\n", b.addr))
        .collect();
    let yaml = |algorithm: &str| {
        config_yaml(&format!(
            "  - name: wps\n    listen: {listen}\n    hash: {{ algorithm: {algorithm} }}\n    backends:\n{list}"
        ))
    };
    let roost = Roost::start(&yaml("nginx_hash"), &[listen]);

    // Step 1: Roost in NGINX's place, key for key.
    let active = || (0..300).map(|i| format!("active-{i}"));
    compare("nginx_hash, before the switch", plain, listen, active());

    // Step 2: the switch, by reload.
    std::fs::write(
        &roost.config,
        yaml("ketama").replace("{dir}", &roost.dir.path().display().to_string()),
    )
    .unwrap();
    roost.proc.signal("HUP");
    wait_until(Duration::from_secs(10), "the reload to ketama", || {
        roost
            .log_text()
            .contains("hash.algorithm nginx_hash -> ketama (keys the sticky table holds stay")
    });
    compare("active keys after the switch", plain, listen, active());

    // New keys: Ketama, as NGINX's consistent hash places them.
    let fresh: Vec<String> = (0..300).map(|i| format!("fresh-{i}")).collect();
    compare(
        "new keys after the switch",
        consistent,
        listen,
        fresh.iter().cloned(),
    );
    let mut elsewhere = 0;
    let (mut via_plain, mut via_consistent) =
        (Client::new(plain, true), Client::new(consistent, true));
    for key in &fresh {
        let p = via_plain.request("GET", "/", key, b"").unwrap();
        let c = via_consistent.request("GET", "/", key, b"").unwrap();
        elsewhere += usize::from(p.backend() != c.backend());
    }
    assert!(
        elsewhere > 100,
        "only {elsewhere} of 300 new keys differ between the two hashes: the test proves nothing"
    );
    drop(roost);
    drop(nginx);
}

/// Backends written as host names: NGINX hashes each server's name as written, and so does
/// Roost (the identity of a backend is its address as written), so a `host:port` list maps
/// as NGINX's too. `localhost` is the one name every machine resolves; each backend listens
/// on every address it resolves to (127.0.0.1, and ::1 where the machine has it), so the
/// address either proxy connects to does not matter, only the name hashed.
#[test]
fn host_name_lists_map_as_nginx() {
    let mut backends: Vec<Backend> = Vec::new();
    let mut ports = Vec::new();
    for i in 1..=3 {
        let b = Backend::start_on(&format!("h{i}"), "127.0.0.1:0");
        let port = b.addr.port();
        backends.push(b);
        if std::net::TcpListener::bind(("::1", 0)).is_ok() {
            backends.push(Backend::start_on(
                &format!("h{i}"),
                &format!("[::1]:{port}"),
            ));
        }
        ports.push(port);
    }
    let servers: Vec<(String, u32)> = ports
        .iter()
        .map(|p| (format!("localhost:{p}"), 1))
        .collect();
    consistent_parity("host names", &servers);
    drop(backends);
}
