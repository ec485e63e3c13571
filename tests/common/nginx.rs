//! A test NGINX: the installed binary, main and `http` settings that keep its files in a temp
//! dir, and [`start_nginx`], which waits until it listens.

use super::process::Proc;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The installed `nginx` binary (`make deps` installs it).
pub fn nginx_binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!("nginx is not installed; run `make deps` (or apt-get install nginx-light)");
}

/// Main-context settings for a test NGINX whose files all live in `dir`: one process in the
/// foreground (killing it leaves no orphaned worker), no access log.
pub fn nginx_main_settings(dir: &Path) -> String {
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 256; }}\n",
        dir = dir.display()
    )
}

/// The `http` settings that keep a test NGINX's temporary files in `dir`.
pub fn nginx_http_settings(dir: &Path) -> String {
    format!(
        "  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n",
        dir = dir.display()
    )
}

/// Start NGINX on `conf` (prefix: its directory) and wait until every address in `wait_for`
/// accepts connections.
pub fn start_nginx(conf: &Path, wait_for: &[SocketAddr]) -> Proc {
    let dir = conf.parent().expect("config in a directory");
    let mut nginx = Proc {
        child: Command::new(nginx_binary())
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    };
    for addr in wait_for {
        let start = Instant::now();
        while TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            assert!(nginx.is_running(), "nginx exited early:\n{log}");
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "nginx not listening on {addr}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    nginx
}
