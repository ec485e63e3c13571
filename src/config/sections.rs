//! Validation of the process-wide sections: `server`, `admin`, `access_log` and `state`.

use super::loader::Loader;
use super::*;
use file::{FileAccessLog, FileAdmin, FileServer, FileState};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

impl Loader<'_> {
    pub(super) fn server(&mut self, f: FileServer) -> ServerSettings {
        let d = ServerSettings::default();
        let threads = f.threads.unwrap_or(d.threads);
        if threads == 0 {
            self.error("server.threads", "must be at least 1");
        }
        let pid_file = self.absolute_path("server.pid_file", f.pid_file, d.pid_file);
        let upgrade_sock =
            self.absolute_path("server.upgrade_sock", f.upgrade_sock, d.upgrade_sock);
        if pid_file == upgrade_sock {
            self.error(
                "server.upgrade_sock",
                "must differ from server.pid_file: they are different files",
            );
        }
        let error_log = f.error_log.map(PathBuf::from);
        ServerSettings {
            threads,
            pid_file,
            upgrade_sock,
            grace_period_seconds: f.grace_period_seconds.unwrap_or(d.grace_period_seconds),
            graceful_shutdown_timeout_seconds: f
                .graceful_shutdown_timeout_seconds
                .unwrap_or(d.graceful_shutdown_timeout_seconds),
            error_log,
            work_stealing: f.work_stealing.unwrap_or(d.work_stealing),
            upstream_keepalive_pool_size: f
                .upstream_keepalive_pool_size
                .unwrap_or(d.upstream_keepalive_pool_size),
            preserve_header_case: f.preserve_header_case.unwrap_or(d.preserve_header_case),
            state_dir: f
                .state_dir
                .map(|dir| self.absolute_path("server.state_dir", Some(dir), PathBuf::new())),
        }
    }

    pub(super) fn absolute_path(
        &mut self,
        key: &str,
        value: Option<String>,
        default: PathBuf,
    ) -> PathBuf {
        let path = value.map(PathBuf::from).unwrap_or(default);
        if !path.is_absolute() {
            self.error(
                key,
                format!(
                    "`{}` must be an absolute path: the old and new process of an upgrade must agree on it",
                    path.display()
                ),
            );
        }
        path
    }

    pub(super) fn admin(&mut self, f: FileAdmin) -> Option<AdminSettings> {
        let listen = self.required("admin.listen", f.listen)?;
        let listen = self.listen_addr("admin.listen", &listen, Ipv4Addr::LOCALHOST.into())?;
        self.claim(
            |l| &mut l.listens,
            &listen,
            "admin.listen",
            "listen address",
        );
        let token = f.token.filter(|t| !t.is_empty());
        if let Some(t) = &token {
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                self.error(
                    "admin.token",
                    "must be at least 16 printable characters without spaces",
                );
            }
        }
        if !listen.ip().is_loopback() && token.is_none() && f.allow_public != Some(true) {
            self.error(
                "admin.listen",
                format!(
                    "{listen} is reachable from other machines: set admin.token, or admin.allow_public: true if a firewall protects it"
                ),
            );
        }
        Some(AdminSettings { listen, token })
    }

    pub(super) fn access_log(&mut self, f: FileAccessLog) -> Option<AccessLogSettings> {
        let format = match f.format.as_deref().unwrap_or("text") {
            "text" => AccessLogFormat::Text,
            "json" => AccessLogFormat::Json,
            other => {
                self.error(
                    "access_log.format",
                    format!("`{other}` is not a format: text or json"),
                );
                return None;
            }
        };
        let target = match f.path.as_deref().unwrap_or("stdout") {
            "stdout" | "-" => LogTarget::Stdout,
            "stderr" => LogTarget::Stderr,
            path if Path::new(path).is_absolute() => LogTarget::File(path.into()),
            path => {
                self.error(
                    "access_log.path",
                    format!("`{path}`: stdout, stderr or an absolute path"),
                );
                return None;
            }
        };
        (f.enabled != Some(false)).then_some(AccessLogSettings { format, target })
    }

    /// `state`: a Redis URL the client can use (checked here, not connected to: Redis may
    /// well be down when Roost starts) and a key prefix.
    pub(super) fn state(&mut self, f: FileState) -> Option<SharedStateSettings> {
        let redis = self.required("state.redis", f.redis)?;
        let redis = redis.trim().to_string();
        let scheme = redis.split("://").next().unwrap_or("");
        match scheme {
            "redis" | "valkey" | "unix" | "redis+unix" | "valkey+unix" => {}
            "rediss" | "valkeys" => {
                self.error(
                    "state.redis",
                    format!("`{redis}`: TLS to Redis is not built in; use redis:// on a trusted network or a local TLS tunnel"),
                );
                return None;
            }
            _ => {
                self.error(
                    "state.redis",
                    format!("`{redis}` is not a Redis URL (e.g. redis://127.0.0.1:6379/0)"),
                );
                return None;
            }
        }
        if let Err(e) = redis::Client::open(redis.as_str()) {
            self.error(
                "state.redis",
                format!("`{redis}` is not a Redis URL (e.g. redis://127.0.0.1:6379/0): {e}"),
            );
            return None;
        }
        let prefix = f.prefix.unwrap_or_else(|| DEFAULT_STATE_PREFIX.to_string());
        if prefix.is_empty() || prefix.bytes().any(|b| b.is_ascii_whitespace() || b == b'*') {
            self.error(
                "state.prefix",
                "must be non-empty, without spaces or `*` (it starts every key Roost writes)",
            );
            return None;
        }
        Some(SharedStateSettings { redis, prefix })
    }

    /// `IP:port`, or a bare port meaning `bare_ip:port`.
    pub(super) fn listen_addr(
        &mut self,
        key: &str,
        text: &str,
        bare_ip: IpAddr,
    ) -> Option<SocketAddr> {
        let text = text.trim();
        if let Ok(port) = text.parse::<u16>() {
            return Some(SocketAddr::new(bare_ip, port));
        }
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    key,
                    format!("`{text}` is not an IP:port address (e.g. 0.0.0.0:8093 or [::]:8093)"),
                );
                None
            }
        }
    }
}
