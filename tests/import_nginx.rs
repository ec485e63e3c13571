//! `roost import-nginx` end to end: a birdhouse-style NGINX setup (an `nginx.conf` including
//! `conf.d/*.conf`, one upstream and one server per WPS service, `${VAR}` placeholders as in
//! an envsubst template) is imported; the output passes `roost -t`; NGINX (on the rendered
//! template) and Roost (on the imported config) then run side by side, and every key must
//! reach the same backend through both: 10,000 keys for the `consistent` upstream.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Replace `${NAME}` by its value, as envsubst renders a template for NGINX.
fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

fn roost_with_env(args: &[&str], vars: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(ROOST);
    cmd.args(args).envs(vars);
    cmd
}

/// Send `keys` through both proxies, `threads` keep-alive connections each, and return the
/// keys on which they disagree (and how many keys each backend got through Roost).
fn disagreements(
    nginx: SocketAddr,
    roost: SocketAddr,
    keys: Vec<String>,
    threads: usize,
) -> (Vec<String>, BTreeMap<String, usize>) {
    let chunks: Vec<Vec<String>> = keys
        .chunks(keys.len().div_ceil(threads))
        .map(|c| c.to_vec())
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                let mut via_nginx = Client::new(nginx, true);
                let mut via_roost = Client::new(roost, true);
                let mut differ = Vec::new();
                let mut used = BTreeMap::new();
                for key in chunk {
                    let n = via_nginx.request("GET", "/", &key, b"").unwrap();
                    let r = via_roost.request("GET", "/", &key, b"").unwrap();
                    assert_eq!(n.status, 200, "NGINX answered {} for {key}", n.status);
                    assert_eq!(r.status, 200, "Roost answered {} for {key}", r.status);
                    if n.backend() != r.backend() {
                        differ.push(format!(
                            "{key}: nginx {} roost {}",
                            n.backend(),
                            r.backend()
                        ));
                    }
                    *used.entry(r.backend().to_string()).or_insert(0usize) += 1;
                }
                (differ, used)
            })
        })
        .collect();
    let mut differ = Vec::new();
    let mut used = BTreeMap::new();
    for h in handles {
        let (d, u) = h.join().unwrap();
        differ.extend(d);
        for (k, v) in u {
            *used.entry(k).or_insert(0) += v;
        }
    }
    (differ, used)
}

#[test]
fn a_birdhouse_nginx_config_imports_and_routes_like_nginx() {
    // Three WPS services, two backends each on distinct loopback IPs.
    let services = [
        ("flyingpigeon", 8093, ""),
        ("malleefowl", 8091, ""),
        ("emu", 8094, " consistent"),
    ];
    let mut backends = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    let mut vars = BTreeMap::new();
    for (i, (name, _, consistent)) in services.iter().enumerate() {
        let b: Vec<Backend> = (1..=2)
            .map(|j| {
                Backend::start_on(
                    &format!("{name}{j}"),
                    &format!("127.0.0.{}:0", 40 + i * 2 + j),
                )
            })
            .collect();
        let upper = name.to_uppercase();
        let servers: String = b
            .iter()
            .map(|x| format!("    server {};\n", x.addr))
            .collect();
        std::fs::write(
            conf_d.join(format!("{name}.conf")),
            format!(
                "# {name} WPS\nupstream {name} {{\n    hash $http_machineid{consistent};\n{servers}}}\n\n\
                 server {{\n    listen 127.0.0.1:${{{upper}_PORT}};\n    location / {{\n        proxy_pass http://{name};\n\
                 \x20       proxy_set_header Host $host:$server_port;\n        proxy_set_header X-Forwarded-Proto $scheme;\n\
                 \x20       proxy_read_timeout ${{WPS_TIMEOUT}};\n    }}\n}}\n"
            ),
        )
        .unwrap();
        backends.push(b);
        vars.insert(format!("{upper}_PORT"), String::new());
    }
    let template = format!(
        "{}http {{\n{}  client_max_body_size 400m;\n  include conf.d/*.conf;\n}}\n",
        nginx_main_settings(dir.path()),
        nginx_http_settings(dir.path())
    );
    let main = dir.path().join("nginx.conf.template");
    std::fs::write(&main, &template).unwrap();

    // Import: exact, so no --allow-approximate needed.
    let out = dir.path().join("roost.yaml");
    let import = Command::new(ROOST)
        .args([
            "import-nginx",
            main.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(import.status.success(), "{stderr}");
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(yaml.contains("algorithm: nginx_hash"), "{yaml}");
    assert!(yaml.contains("algorithm: ketama"), "{yaml}");
    assert!(yaml.contains("\"127.0.0.1:${EMU_PORT}\""), "{yaml}");
    assert!(yaml.contains("upstream_read: \"${WPS_TIMEOUT}\""), "{yaml}");
    assert!(yaml.contains("max_body: \"400MiB\""), "{yaml}");
    assert!(yaml.contains("Host $host:$server_port"), "{yaml}");

    // The imported file names no pid file: give it one in the temp dir (and an upgrade
    // socket), as an operator adds the server section.
    std::fs::write(
        &out,
        format!(
            "server:\n  pid_file: {d}/roost.pid\n  upgrade_sock: {d}/upgrade.sock\n  grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n{yaml}",
            d = dir.path().display()
        ),
    )
    .unwrap();

    // Ports for both proxies; NGINX gets the rendered template.
    let mut roost_vars = vars.clone();
    let mut nginx_vars = vars.clone();
    let mut listens = Vec::new();
    for (name, _, _) in &services {
        let key = format!("{}_PORT", name.to_uppercase());
        let (n, r) = (listen_addr(), listen_addr());
        nginx_vars.insert(key.clone(), n.port().to_string());
        roost_vars.insert(key, r.port().to_string());
        listens.push((n, r));
    }
    nginx_vars.insert("WPS_TIMEOUT".into(), "120s".into());
    roost_vars.insert("WPS_TIMEOUT".into(), "120s".into());

    let check = roost_with_env(&["-c", out.to_str().unwrap(), "-t"], &roost_vars)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "roost -t: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("3 services, 6 backends"));

    let rendered = dir.path().join("nginx.conf");
    std::fs::write(&rendered, render(&template, &nginx_vars)).unwrap();
    for (name, _, _) in &services {
        let f = conf_d.join(format!("{name}.conf"));
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, render(&text, &nginx_vars)).unwrap();
    }
    let nginx = start_nginx(&rendered, &listens.iter().map(|l| l.0).collect::<Vec<_>>());

    let log = std::fs::File::create(dir.path().join("roost.log")).unwrap();
    let mut roost = Proc {
        child: roost_with_env(&["-c", out.to_str().unwrap()], &roost_vars)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    };
    for (_, r) in &listens {
        wait_until(
            std::time::Duration::from_secs(20),
            "roost listening",
            || {
                assert!(
                    roost.is_running(),
                    "{}",
                    read(&dir.path().join("roost.log"))
                );
                std::net::TcpStream::connect(r).is_ok()
            },
        );
    }

    for (i, (name, _, consistent)) in services.iter().enumerate() {
        let count = if consistent.is_empty() { 500 } else { 10_000 };
        let keys = (0..count).map(|k| format!("{name}-{k}")).collect();
        let (differ, used) = disagreements(listens[i].0, listens[i].1, keys, 8);
        assert!(
            differ.is_empty(),
            "{name}: {} of {count} keys differ, e.g. {:?}",
            differ.len(),
            &differ[..differ.len().min(5)]
        );
        assert_eq!(used.len(), 2, "{name}: both backends own keys: {used:?}");
    }
    drop(roost);
    drop(nginx);
    drop(backends);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// What the command answers: approximations listed and nothing written (exit 1) unless
/// `--allow-approximate`; a syntax error names file:line (exit 2); stdout without `-o`.
#[test]
fn approximations_refuse_to_write_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        "http {\n  upstream wps { ip_hash; server 127.0.0.1:8093; server 127.0.0.2:8093 backup; }\n\
         server { listen 127.0.0.1:18093; location / { proxy_pass http://wps; } }\n}\n",
    )
    .unwrap();
    let out = dir.path().join("roost.yaml");
    let (c, o) = (conf.to_str().unwrap(), out.to_str().unwrap());

    let (code, stdout, stderr) = run_roost(&["import-nginx", c, "-o", o]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("2 directives without an exact Roost equivalent"),
        "{stderr}"
    );
    assert!(stderr.contains("nginx.conf:2: `ip_hash`"), "{stderr}");
    assert!(stderr.contains("backup"), "{stderr}");
    assert!(stderr.contains("--allow-approximate"), "{stderr}");
    assert!(!out.exists(), "nothing is written");

    let (code, _, stderr) = run_roost(&["import-nginx", c, "-o", o, "--allow-approximate"]);
    assert_eq!(code, 0, "{stderr}");
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(yaml.contains("missing: client_ip"), "{yaml}");
    assert!(
        yaml.contains("#   - ") && yaml.contains("ip_hash"),
        "{yaml}"
    );
    let (code, stdout, stderr) = run_roost(&["-c", o, "-t"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Without -o the config goes to stdout.
    std::fs::write(
        &conf,
        "http { upstream wps { hash $http_machineid consistent; server 127.0.0.1:8093; }\n\
         server { listen 18093; location / { proxy_pass http://wps; } } }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_roost(&["import-nginx", c]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("algorithm: ketama"), "{stdout}");

    std::fs::write(&conf, "http {\n  upstream wps {\n    server a:1\n  }\n}\n").unwrap();
    let (code, _, stderr) = run_roost(&["import-nginx", c]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("nginx.conf:4: directive \"server\" is not terminated"),
        "{stderr}"
    );
}
