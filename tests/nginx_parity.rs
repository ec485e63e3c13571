//! Live parity with NGINX: the same backends behind NGINX `hash $http_machineid consistent;`
//! and behind Roost; 300 keys must land on the same backend through both. Needs `nginx` on
//! PATH (`make deps` installs it).

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

fn nginx_binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!("nginx is not installed; run `make deps` (or apt-get install nginx-light)");
}

#[test]
fn roost_and_nginx_choose_the_same_backends() {
    // Distinct IPs as well as ports, as on a real site.
    let backends: Vec<Backend> = (1..=4)
        .map(|i| Backend::start_on(&format!("b{i}"), &format!("127.0.0.{}:0", 20 + i)))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let weights = [1, 2, 1, 1];

    let dir = tempfile::tempdir().unwrap();
    let nginx_port = free_port();
    let servers: String = addrs
        .iter()
        .zip(weights)
        .map(|(a, w)| format!("    server {a} weight={w};\n"))
        .collect();
    let conf = format!(
        "# master_process off: a single process, so killing it leaves no orphaned worker.\n\
         daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
           fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
           upstream wps {{\n    hash $http_machineid consistent;\n{servers}  }}\n\
           server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://wps; }} }}\n}}\n",
        dir = dir.path().display()
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let nginx = Proc {
        child: Command::new(nginx_binary())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    };
    let nginx_addr: SocketAddr = format!("127.0.0.1:{nginx_port}").parse().unwrap();
    wait_until(
        std::time::Duration::from_secs(10),
        "nginx listening",
        || std::net::TcpStream::connect(nginx_addr).is_ok(),
    );

    let roost_addr = listen_addr();
    let list: String = addrs
        .iter()
        .zip(weights)
        .map(|(a, w)| format!("      - {{ address: {a}, weight: {w} }}\n"))
        .collect();
    let roost = Roost::start(
        &config_yaml(&format!(
            "  - name: wps\n    listen: {roost_addr}\n    backends:\n{list}"
        )),
        &[roost_addr],
    );

    let mut used = std::collections::HashSet::new();
    for i in 0..300 {
        let key = format!("parity-{i}");
        let via_nginx = get_key(nginx_addr, &key).unwrap();
        let via_roost = get_key(roost_addr, &key).unwrap();
        assert_eq!(via_nginx.status, 200);
        assert_eq!(via_roost.backend(), via_nginx.backend(), "{key}");
        used.insert(via_roost.backend().to_string());
    }
    assert_eq!(used.len(), 4, "every backend should own some of 300 keys");
    drop(roost);
    drop(nginx);
}
