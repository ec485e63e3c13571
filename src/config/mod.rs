//! Configuration loading: YAML text → environment expansion → serde file structs → validated
//! typed model. Owns every rule about what a valid file is; knows nothing about proxying.
//!
//! The loader collects *all* problems it can find, each with file, line and key path, instead
//! of stopping at the first. serde stops at the first error inside one struct, so each section
//! and each service is deserialized on its own; semantic checks (addresses, duplicates, ranges)
//! run on everything that did deserialize.

mod env;
mod error;
mod file;
mod lines;
mod model;

pub use env::{expand, EnvError};
pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use file::{FileAccessLog, FileAdmin, FileBackend, FileHealthCheck, FileServer, FileService};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use lines::{join_index, join_key, LineIndex};
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Resolves `host:port` backend names. Injected so that tests need no DNS.
pub type Resolver<'a> = &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>;

/// The system resolver (blocking; used only at load and reload time).
pub fn system_resolver(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    address.to_socket_addrs().map(Iterator::collect)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Read and validate the file at `path` with the process environment and system DNS.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: source.clone(),
                line: None,
                key: None,
                message: format!("cannot read configuration: {e}"),
            }])
        })?;
        Self::from_yaml_with(&text, &source, &process_env, &system_resolver)
    }

    /// Validate YAML `text` with the process environment; `source` names it in messages.
    pub fn from_yaml(text: &str, source: &str) -> Result<Config, ConfigErrors> {
        Self::from_yaml_with(text, source, &process_env, &system_resolver)
    }

    /// Validate YAML `text` with an explicit environment and resolver.
    pub fn from_yaml_with(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
        resolver: Resolver,
    ) -> Result<Config, ConfigErrors> {
        let mut loader = Loader {
            source,
            lines: LineIndex::default(),
            errors: Vec::new(),
            names: HashMap::new(),
            listens: HashMap::new(),
            reported: Vec::new(),
        };
        let config = loader.load(text, env, resolver);
        match config {
            Some(config) if loader.errors.is_empty() => Ok(config),
            _ => {
                loader.errors.sort_by_key(|e| e.line.unwrap_or(0));
                Err(ConfigErrors(loader.errors))
            }
        }
    }
}

/// serde errors reported per section before giving up on it.
const MAX_ERRORS_PER_SECTION: usize = 32;

struct Loader<'a> {
    source: &'a str,
    lines: LineIndex,
    errors: Vec<ConfigError>,
    /// Service names and listen addresses seen so far → the key path that claimed them.
    names: HashMap<String, String>,
    listens: HashMap<SocketAddr, String>,
    /// Keys already reported as broken (an unexpandable `${VAR}`, a bad type, an unknown
    /// key): later complaints about them would only bury the real error.
    reported: Vec<String>,
}

impl Loader<'_> {
    fn error(&mut self, key: &str, message: impl Into<String>) {
        if self.reported.iter().any(|p| is_within(key, p)) {
            return;
        }
        self.errors.push(ConfigError {
            file: self.source.to_string(),
            line: self.lines.line_of(key),
            key: (!key.is_empty()).then(|| key.to_string()),
            message: message.into(),
        });
    }

    fn load(
        &mut self,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        resolver: Resolver,
    ) -> Option<Config> {
        let mut root: Value = match serde_yaml::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                self.errors.push(ConfigError {
                    file: self.source.to_string(),
                    line: e.location().map(|l| l.line()),
                    key: None,
                    message: format!("invalid YAML: {e}"),
                });
                return None;
            }
        };
        self.lines = LineIndex::new(text);
        self.expand_env(&mut root, &mut String::new(), env);

        let Value::Mapping(mut top) = root else {
            self.error(
                "",
                "expected a mapping with `server`, `admin` and `services`",
            );
            return None;
        };
        for key in top.keys() {
            match key.as_str() {
                Some("server" | "admin" | "access_log" | "services") => {}
                Some(other) => {
                    let other = other.to_string();
                    self.error(
                        &other,
                        format!(
                            "unknown key `{other}` (expected `server`, `admin`, `access_log` or `services`)"
                        ),
                    );
                }
                None => self.error("", format!("unexpected non-text key {key:?}")),
            }
        }

        let server_file: FileServer = match top.remove("server") {
            Some(v) => self.section(v, "server").unwrap_or_default(),
            None => FileServer::default(),
        };
        let server = self.server(server_file);
        let admin = match top.remove("admin") {
            Some(v) => self
                .section::<FileAdmin>(v, "admin")
                .and_then(|a| self.admin(a)),
            None => None,
        };
        let access_log = match top.remove("access_log") {
            Some(v) => self
                .section::<FileAccessLog>(v, "access_log")
                .and_then(|a| self.access_log(a)),
            None => self.access_log(FileAccessLog::default()),
        };
        let services = match top.remove("services") {
            Some(Value::Sequence(items)) if !items.is_empty() => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let path = join_index("services", i);
                    let file = self.section::<FileService>(item, &path)?;
                    self.service(file, &path, resolver)
                })
                .collect(),
            Some(Value::Sequence(_)) | None => {
                self.error("services", "at least one service is required");
                Vec::new()
            }
            Some(_) => {
                self.error("services", "expected a list of services");
                Vec::new()
            }
        };
        Some(Config {
            source: self.source.to_string(),
            server,
            admin,
            access_log,
            services,
        })
    }

    /// Expand `${VAR}` in every string scalar, reporting each failure at its key.
    fn expand_env(
        &mut self,
        value: &mut Value,
        path: &mut String,
        env: &dyn Fn(&str) -> Option<String>,
    ) {
        match value {
            Value::String(s) => match expand(s, env) {
                Ok(expanded) => {
                    if let std::borrow::Cow::Owned(new) = expanded {
                        *s = new;
                    }
                }
                Err(e) => {
                    let at = path.clone();
                    self.error(&at, e.to_string());
                    self.reported.push(at);
                }
            },
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let mut child = join_index(path, i);
                    self.expand_env(item, &mut child, env);
                }
            }
            Value::Mapping(map) => {
                for (key, item) in map.iter_mut() {
                    let name = key.as_str().map(str::to_string).unwrap_or_default();
                    let mut child = join_key(path, &name);
                    self.expand_env(item, &mut child, env);
                }
            }
            Value::Tagged(tagged) => self.expand_env(&mut tagged.value, path, env),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Deserialize one section, reporting each serde error at the key path it names.
    ///
    /// serde stops at the first error; to report them all, the offending key is removed and
    /// the section deserialized again (every file field is optional, so the rest still reads).
    /// Errors that cannot be removed that way (a bad list item) end the section.
    fn section<T: DeserializeOwned>(&mut self, mut value: Value, path: &str) -> Option<T> {
        for _ in 0..MAX_ERRORS_PER_SECTION {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) => return Some(v),
                Err(e) => e,
            };
            let mut segments: Vec<String> = Vec::new();
            let mut at = path.to_string();
            for segment in e.path().iter() {
                at = match segment {
                    serde_path_to_error::Segment::Seq { index } => join_index(&at, *index),
                    serde_path_to_error::Segment::Map { key } => {
                        segments.push(key.clone());
                        join_key(&at, key)
                    }
                    serde_path_to_error::Segment::Enum { variant } => join_key(&at, variant),
                    serde_path_to_error::Segment::Unknown => at,
                };
                if let serde_path_to_error::Segment::Seq { .. } = segment {
                    segments.push(String::new()); // marks a list: not removable below
                }
            }
            let message = e.into_inner().to_string();
            // Point at the unknown key itself, whether or not serde's path already does.
            if let Some(name) = unknown_field(&message) {
                if segments.last().map(String::as_str) != Some(name) {
                    segments.push(name.to_string());
                    at = join_key(&at, name);
                }
            }
            self.error(&at, message);
            self.reported.push(at);
            if !remove_key(&mut value, &segments) {
                return None;
            }
        }
        None
    }

    fn server(&mut self, f: FileServer) -> ServerSettings {
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
        }
    }

    fn absolute_path(&mut self, key: &str, value: Option<String>, default: PathBuf) -> PathBuf {
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

    fn admin(&mut self, f: FileAdmin) -> Option<AdminSettings> {
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

    fn access_log(&mut self, f: FileAccessLog) -> Option<AccessLogSettings> {
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

    fn required<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.error(key, "is required");
        }
        value
    }

    /// `IP:port`, or a bare port meaning `bare_ip:port`.
    fn listen_addr(&mut self, key: &str, text: &str, bare_ip: IpAddr) -> Option<SocketAddr> {
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

    fn service(&mut self, f: FileService, path: &str, resolver: Resolver) -> Option<ServiceConfig> {
        let key = |k: &str| join_key(path, k);
        let name = self.required(&key("name"), f.name);
        if let Some(name) = &name {
            if !is_service_name(name) {
                self.error(
                    &key("name"),
                    format!("`{name}` must be 1-64 letters, digits, `-`, `_` or `.`"),
                );
            }
            self.claim(|l| &mut l.names, name, &key("name"), "service name");
        }
        let listen = self.required(&key("listen"), f.listen);
        let listen =
            listen.and_then(|l| self.listen_addr(&key("listen"), &l, Ipv4Addr::UNSPECIFIED.into()));
        if let Some(listen) = &listen {
            self.claim(|l| &mut l.listens, listen, &key("listen"), "listen address");
        }
        let hash = self.hash_policy(f.hash.unwrap_or_default(), &key("hash"));
        let backends = self.backends(f.backends, &key("backends"), resolver);
        let health_check = f
            .health_check
            .and_then(|hc| self.health_check(hc, &key("health_check")));
        let when_down = match f.when_down.as_deref() {
            None | Some("failover") => Some(WhenDown::Failover),
            Some("reject") => Some(WhenDown::Reject),
            Some(other) => {
                self.error(
                    &key("when_down"),
                    format!("`{other}` is not one of: failover, reject"),
                );
                None
            }
        };
        Some(ServiceConfig {
            name: name?,
            listen: listen?,
            hash: hash?,
            backends: backends?,
            health_check,
            when_down: when_down?,
            trust_forwarded_headers: f.trust_forwarded_headers.unwrap_or(false),
            limits: self.limits(f.limits.unwrap_or_default(), &key("limits"))?,
            timeouts: self.timeouts(f.timeouts.unwrap_or_default(), &key("timeouts"))?,
            wps_affinity: f.wps_affinity.unwrap_or(false),
        })
    }

    fn limits(&mut self, f: file::FileLimits, path: &str) -> Option<Limits> {
        let key = |k: &str| join_key(path, k);
        let d = Limits::default();
        let header_bytes = self.size(&key("max_header_bytes"), f.max_header_bytes)?;
        let max_header_bytes = match header_bytes {
            None => d.max_header_bytes,
            Some(n) if (1024..=PINGORA_MAX_HEADER_BYTES as u64).contains(&n) => n as usize,
            Some(n) => {
                self.error(
                    &key("max_header_bytes"),
                    format!("{n} is outside 1KiB..1MiB (Pingora's own limit)"),
                );
                return None;
            }
        };
        let max_headers = match f.max_headers {
            None => d.max_headers,
            Some(n) if (8..=PINGORA_MAX_HEADERS).contains(&n) => n,
            Some(n) => {
                self.error(
                    &key("max_headers"),
                    format!("{n} is outside 8..{PINGORA_MAX_HEADERS} (Pingora's own limit)"),
                );
                return None;
            }
        };
        let max_body = self
            .size(&key("max_body"), f.max_body)?
            .unwrap_or(d.max_body);
        let max_connections = match f.max_connections {
            None => d.max_connections,
            Some(0) => {
                self.error(&key("max_connections"), "must be at least 1");
                return None;
            }
            Some(n) => n,
        };
        Some(Limits {
            max_header_bytes,
            max_headers,
            max_body,
            max_connections,
        })
    }

    fn timeouts(&mut self, f: file::FileTimeouts, path: &str) -> Option<Timeouts> {
        let key = |k: &str| join_key(path, k);
        let d = Timeouts::default();
        Some(Timeouts {
            client_header: self.duration(
                &key("client_header"),
                f.client_header,
                d.client_header,
            )?,
            client_body: self.duration(&key("client_body"), f.client_body, d.client_body)?,
            keepalive: self.duration(&key("keepalive"), f.keepalive, d.keepalive)?,
            upstream_connect: self.duration(
                &key("upstream_connect"),
                f.upstream_connect,
                d.upstream_connect,
            )?,
            upstream_read: self.duration(
                &key("upstream_read"),
                f.upstream_read,
                d.upstream_read,
            )?,
            upstream_write: self.duration(
                &key("upstream_write"),
                f.upstream_write,
                d.upstream_write,
            )?,
        })
    }

    /// A byte size: `1048576`, `512KiB`, `400MB`, `1GiB`. `Some(None)`: not set.
    fn size(&mut self, key: &str, text: Option<String>) -> Option<Option<u64>> {
        let Some(text) = text else {
            return Some(None);
        };
        match parse_size(&text) {
            Some(n) if n > 0 => Some(Some(n)),
            _ => {
                self.error(
                    key,
                    format!("`{text}` is not a size like 65536, 64KiB, 400MB or 1GiB"),
                );
                None
            }
        }
    }

    fn hash_policy(&mut self, f: file::FileHash, path: &str) -> Option<HashPolicy> {
        let header = f.header.unwrap_or_else(|| DEFAULT_HASH_HEADER.to_string());
        let header = match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error(
                    &join_key(path, "header"),
                    format!("`{header}` is not a valid HTTP header name"),
                );
                None
            }
        };
        let missing = match f.missing.as_deref() {
            None | Some("round_robin") => Some(MissingKey::RoundRobin),
            Some("client_ip") => Some(MissingKey::ClientIp),
            Some("reject") => Some(MissingKey::Reject),
            Some(other) => {
                self.error(
                    &join_key(path, "missing"),
                    format!("`{other}` is not one of: round_robin, client_ip, reject"),
                );
                None
            }
        };
        header.map(|header| HashPolicy {
            header,
            missing: missing.unwrap_or(MissingKey::RoundRobin),
        })
    }

    fn backends(
        &mut self,
        list: Option<Vec<FileBackend>>,
        path: &str,
        resolver: Resolver,
    ) -> Option<Vec<BackendConfig>> {
        let Some(list) = list.filter(|l| !l.is_empty()) else {
            self.error(path, "at least one backend is required");
            return None;
        };
        let mut out = Vec::with_capacity(list.len());
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut ok = true;
        for (i, b) in list.into_iter().enumerate() {
            let item = join_index(path, i);
            let Some(backend) = self.backend(b, &item, resolver) else {
                ok = false;
                continue;
            };
            if let Some(first) = seen.insert(backend.addr, i) {
                self.error(
                    &item,
                    format!(
                        "backend {} ({}) is listed twice (also {path}[{first}])",
                        backend.address, backend.addr
                    ),
                );
                ok = false;
            }
            out.push(backend);
        }
        ok.then_some(out)
    }

    fn backend(&mut self, b: FileBackend, item: &str, resolver: Resolver) -> Option<BackendConfig> {
        // A bare string has no `.address` key; report at the item itself.
        let address_key = if b.short_form {
            item.to_string()
        } else {
            join_key(item, "address")
        };
        let weight = b.weight.unwrap_or(DEFAULT_WEIGHT);
        if weight == 0 {
            self.error(
                &join_key(item, "weight"),
                "must be at least 1 (remove the backend to stop sending it traffic)",
            );
        }
        let address = self.required(&address_key, b.address)?.trim().to_string();
        let addr = self.resolve(&address_key, &address, resolver)?;
        (weight > 0).then_some(BackendConfig {
            address,
            addr,
            weight,
        })
    }

    /// `IP:port` parses directly; `host:port` goes through the resolver, first address wins.
    fn resolve(&mut self, key: &str, address: &str, resolver: Resolver) -> Option<SocketAddr> {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            if addr.port() == 0 {
                self.error(key, format!("`{address}`: port 0 is not a backend port"));
                return None;
            }
            return Some(addr);
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            self.error(
                key,
                format!("`{address}` has no port (write host:port, e.g. 10.0.0.11:8093)"),
            );
            return None;
        };
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                self.error(key, format!("`{address}`: `{port}` is not a port number"));
                return None;
            }
        }
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            self.error(key, format!("`{address}` is not a host:port address"));
            return None;
        }
        match resolver(address) {
            Ok(addrs) => match addrs.first() {
                Some(addr) => Some(*addr),
                None => {
                    self.error(key, format!("`{host}` resolves to no address"));
                    None
                }
            },
            Err(e) => {
                self.error(key, format!("cannot resolve `{host}`: {e}"));
                None
            }
        }
    }

    fn health_check(&mut self, f: FileHealthCheck, path: &str) -> Option<HealthCheckConfig> {
        let key = |k: &str| join_key(path, k);
        let kind = match f.kind.as_deref() {
            None | Some("http") => {
                let path_value = f.path.unwrap_or_else(|| DEFAULT_HC_PATH.to_string());
                let path = match PathAndQuery::try_from(path_value.as_str()) {
                    Ok(p) if path_value.starts_with('/') => Some(p),
                    _ => {
                        self.error(
                            &key("path"),
                            format!(
                                "`{path_value}` is not a request path: it must start with `/` and use only URL characters (percent-encode the rest, e.g. %20)"
                            ),
                        );
                        None
                    }
                };
                let host = match f.host.map(|h| HeaderValue::try_from(h.trim())) {
                    None => Some(None),
                    Some(Ok(h)) if !h.is_empty() => Some(Some(h)),
                    Some(_) => {
                        self.error(
                            &key("host"),
                            "is not a valid Host header value (printable characters, no control bytes)",
                        );
                        None
                    }
                };
                match (path, host) {
                    (Some(path), Some(host)) => Some(CheckKind::Http { path, host }),
                    _ => None,
                }
            }
            Some("tcp") => {
                for (name, set) in [("path", f.path.is_some()), ("host", f.host.is_some())] {
                    if set {
                        self.error(&key(name), "only applies to `type: http`");
                    }
                }
                Some(CheckKind::Tcp)
            }
            Some(other) => {
                self.error(&key("type"), format!("`{other}` is not one of: http, tcp"));
                None
            }
        };
        let interval = self.duration(&key("interval"), f.interval, DEFAULT_HC_INTERVAL);
        let timeout = self.duration(&key("timeout"), f.timeout, DEFAULT_HC_TIMEOUT);
        if let (Some(i), Some(t)) = (interval, timeout) {
            if t > i {
                self.error(
                    &key("timeout"),
                    format!(
                        "{} is longer than the interval ({}): checks would pile up",
                        humantime::format_duration(t),
                        humantime::format_duration(i)
                    ),
                );
            }
        }
        let rise = self.at_least_one(&key("rise"), f.rise.unwrap_or(DEFAULT_HC_RISE));
        let fall = self.at_least_one(&key("fall"), f.fall.unwrap_or(DEFAULT_HC_FALL));
        Some(HealthCheckConfig {
            kind: kind?,
            interval: interval?,
            timeout: timeout?,
            rise: rise?,
            fall: fall?,
        })
    }

    fn duration(&mut self, key: &str, text: Option<String>, default: Duration) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => {
                self.error(key, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    key,
                    format!("`{text}` is not a duration like 500ms, 5s or 1m ({e})"),
                );
                None
            }
        }
    }

    fn at_least_one(&mut self, key: &str, n: usize) -> Option<usize> {
        if n == 0 {
            self.error(key, "must be at least 1");
            return None;
        }
        Some(n)
    }

    /// Record that `key` uses `value`; report it when an earlier key already did.
    fn claim<T: std::hash::Hash + Eq + std::fmt::Display + Clone>(
        &mut self,
        seen: fn(&mut Self) -> &mut HashMap<T, String>,
        value: &T,
        key: &str,
        what: &str,
    ) {
        match seen(self).get(value).cloned() {
            Some(first) => self.error(key, format!("duplicate {what} `{value}` (also {first})")),
            None => {
                seen(self).insert(value.clone(), key.to_string());
            }
        }
    }
}

/// `400MB` → 400_000_000, `1GiB` → 2^30; a bare number is bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Whether `key` is `path` or a key below it.
fn is_within(key: &str, path: &str) -> bool {
    key.strip_prefix(path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Remove the map key at `segments` (map keys; an empty segment is a list index) from `value`.
/// Returns false when the path goes through a list or does not exist.
fn remove_key(value: &mut Value, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for key in parents {
        if key.is_empty() {
            return false;
        }
        match node.get_mut(key.as_str()) {
            Some(child) => node = child,
            None => return false,
        }
    }
    match node {
        Value::Mapping(map) if !last.is_empty() => map.remove(last.as_str()).is_some(),
        _ => false,
    }
}

/// `unknown field `x`, expected ...` → `x`.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn is_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests;
