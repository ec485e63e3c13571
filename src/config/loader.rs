//! The loader: one pass over a YAML document that collects every problem, each with file,
//! line and key path. This file holds the machinery (env expansion, per-section serde with
//! error recovery, the shared value checks); the sections themselves are validated in
//! `sections.rs` (server, admin, access log), `service.rs` and `backends.rs`.

use super::env::expand;
use super::error::ConfigError;
use super::lines::{join_index, join_key, LineIndex};
use super::*;
use file::{FileAccessLog, FileAdmin, FileServer, FileService, FileState};
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// serde errors reported per section before giving up on it.
const MAX_ERRORS_PER_SECTION: usize = 32;

pub(super) struct Loader<'a> {
    pub(super) source: &'a str,
    pub(super) lines: LineIndex,
    pub(super) errors: Vec<ConfigError>,
    /// Service names and listen addresses seen so far → the key path that claimed them.
    pub(super) names: HashMap<String, String>,
    pub(super) listens: HashMap<SocketAddr, String>,
    /// Keys already reported as broken (an unexpandable `${VAR}`, a bad type, an unknown
    /// key): later complaints about them would only bury the real error.
    reported: Vec<String>,
}

impl<'a> Loader<'a> {
    /// Load and validate `text`: the config, or every error found, ordered by line.
    pub(super) fn run(
        text: &str,
        source: &'a str,
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
        match loader.load(text, env, resolver) {
            Some(config) if loader.errors.is_empty() => Ok(config),
            _ => {
                loader.errors.sort_by_key(|e| e.line.unwrap_or(0));
                Err(ConfigErrors(loader.errors))
            }
        }
    }

    pub(super) fn error(&mut self, key: &str, message: impl Into<String>) {
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
                Some("server" | "admin" | "access_log" | "state" | "services") => {}
                Some(other) => {
                    let other = other.to_string();
                    self.error(
                        &other,
                        format!(
                            "unknown key `{other}` (expected `server`, `admin`, `access_log`, `state` or `services`)"
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
        let state = match top.remove("state") {
            Some(v) => self
                .section::<FileState>(v, "state")
                .and_then(|s| self.state(s)),
            None => None,
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
        self.unit_pid_file(&server, env);
        Some(Config {
            source: self.source.to_string(),
            server,
            admin,
            access_log,
            state,
            services,
        })
    }

    /// Under the systemd unit (which sets `ROOST_UNIT_PID_FILE` next to its `PIDFile=`) or the
    /// container's entrypoint, `server.pid_file` must be that file: they find the started
    /// daemon, and follow a hot upgrade, through it alone (systemd would wait its whole start
    /// timeout, the entrypoint would exit).
    fn unit_pid_file(&mut self, server: &ServerSettings, env: &dyn Fn(&str) -> Option<String>) {
        let Some(unit) = env("ROOST_UNIT_PID_FILE").filter(|u| !u.is_empty()) else {
            return;
        };
        if server.pid_file != std::path::Path::new(&unit) {
            self.error(
                "server.pid_file",
                format!(
                    "is {} but the service manager follows {unit} (ROOST_UNIT_PID_FILE, set \
                     by the systemd unit to its PIDFile= and by the container's entrypoint): \
                     make them the same file",
                    server.pid_file.display()
                ),
            );
        }
    }

    /// Expand `${VAR}` in every string scalar, reporting each failure at its key.
    pub(super) fn expand_env(
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
    pub(super) fn section<T: DeserializeOwned>(
        &mut self,
        mut value: Value,
        path: &str,
    ) -> Option<T> {
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

    pub(super) fn required<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.error(key, "is required");
        }
        value
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        text: Option<String>,
        default: Duration,
    ) -> Option<Duration> {
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

    pub(super) fn at_least_one(&mut self, key: &str, n: usize) -> Option<usize> {
        if n == 0 {
            self.error(key, "must be at least 1");
            return None;
        }
        Some(n)
    }

    /// Record that `key` uses `value`; report it when an earlier key already did.
    pub(super) fn claim<T: std::hash::Hash + Eq + std::fmt::Display + Clone>(
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

pub(super) fn is_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
