//! Validation of one `services[]` entry: name, listener, hash policy, limits, timeouts and
//! health check (its backends are in `backends.rs`).

use super::lines::join_key;
use super::loader::{is_service_name, Loader};
use super::*;
use file::{FileHealthCheck, FileService};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use std::net::Ipv4Addr;

impl Loader<'_> {
    pub(super) fn service(
        &mut self,
        f: FileService,
        path: &str,
        resolver: Resolver,
    ) -> Option<ServiceConfig> {
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
        let panic_threshold = self.panic_threshold(f.panic_threshold, &key("panic_threshold"));
        let backends = backends?;
        Some(ServiceConfig {
            name: name?,
            listen: listen?,
            hash: hash?,
            backends: backends.backends,
            unresolved: backends.unresolved,
            dns: backends.dns,
            health_check,
            when_down: when_down?,
            panic_threshold: panic_threshold?,
            trust_forwarded_headers: f.trust_forwarded_headers.unwrap_or(false),
            limits: self.limits(f.limits.unwrap_or_default(), &key("limits"))?,
            timeouts: self.timeouts(f.timeouts.unwrap_or_default(), &key("timeouts"))?,
            wps_affinity: f.wps_affinity.unwrap_or(false),
            affinity: self.affinity(f.affinity.unwrap_or_default(), &key("affinity"))?,
        })
    }

    /// `panic_threshold`: a percentage (`0`..`100`, `%` optional) or `off`.
    fn panic_threshold(&mut self, f: Option<String>, path: &str) -> Option<Option<u8>> {
        let Some(text) = f else {
            return Some(Some(DEFAULT_PANIC_THRESHOLD));
        };
        let value = text.trim();
        if matches!(value, "off" | "false") {
            return Some(None);
        }
        match value
            .strip_suffix('%')
            .unwrap_or(value)
            .trim()
            .parse::<u8>()
        {
            Ok(p) if p <= 100 => Some(Some(p)),
            _ => {
                self.error(
                    path,
                    format!("`{text}` is not a percentage from 0 to 100 or `off`"),
                );
                None
            }
        }
    }

    pub(super) fn affinity(&mut self, f: file::FileAffinity, path: &str) -> Option<Affinity> {
        let key = |k: &str| join_key(path, k);
        let d = Affinity::default();
        let max_keys = match f.max_keys {
            Some(0) => {
                self.error(
                    &key("max_keys"),
                    "must be at least 1 (set `enabled: false` to turn the table off)",
                );
                return None;
            }
            other => other.unwrap_or(d.max_keys),
        };
        Some(Affinity {
            enabled: f.enabled.unwrap_or(d.enabled),
            ttl: self.duration(&key("ttl"), f.ttl, d.ttl)?,
            max_keys,
            return_after_recovery: f.return_after_recovery.unwrap_or(d.return_after_recovery),
            drain_idle: self.duration(&key("drain_idle"), f.drain_idle, d.drain_idle)?,
        })
    }

    pub(super) fn limits(&mut self, f: file::FileLimits, path: &str) -> Option<Limits> {
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

    pub(super) fn timeouts(&mut self, f: file::FileTimeouts, path: &str) -> Option<Timeouts> {
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
    pub(super) fn size(&mut self, key: &str, text: Option<String>) -> Option<Option<u64>> {
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

    pub(super) fn hash_policy(&mut self, f: file::FileHash, path: &str) -> Option<HashPolicy> {
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
        let algorithm = match f.algorithm.as_deref() {
            None | Some("ketama") => HashAlgorithm::Ketama,
            Some("nginx_hash") => HashAlgorithm::NginxHash,
            Some(other) => {
                self.error(
                    &join_key(path, "algorithm"),
                    format!("`{other}` is not one of: ketama, nginx_hash"),
                );
                HashAlgorithm::Ketama
            }
        };
        header.map(|header| HashPolicy {
            header,
            missing: missing.unwrap_or(MissingKey::RoundRobin),
            algorithm,
        })
    }

    pub(super) fn health_check(
        &mut self,
        f: FileHealthCheck,
        path: &str,
    ) -> Option<HealthCheckConfig> {
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
}
