//! The configuration file as written: serde structs that mirror the YAML keys one to one.
//!
//! Every struct denies unknown keys, so a typo is an error rather than a silently ignored
//! setting. Every scalar is optional here and read leniently (a number may arrive as the string
//! an environment variable expanded to); defaults and validation live in the typed model
//! (`config::model`), the only layer the proxy sees.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    #[serde(default, deserialize_with = "lenient")]
    pub threads: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    pub pid_file: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub upgrade_sock: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub grace_period_seconds: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    pub error_log: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub work_stealing: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub upstream_keepalive_pool_size: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    pub preserve_header_case: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub state_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    #[serde(default, deserialize_with = "lenient")]
    pub listen: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub token: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub allow_public: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    #[serde(default, deserialize_with = "lenient")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub format: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub path: Option<String>,
}

/// `state`: the tables shared between instances through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    #[serde(default, deserialize_with = "lenient")]
    pub redis: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileService {
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub listen: Option<String>,
    #[serde(default)]
    pub hash: Option<FileHash>,
    #[serde(default)]
    pub backends: Option<Vec<FileBackend>>,
    #[serde(default)]
    pub health_check: Option<FileHealthCheck>,
    #[serde(default, deserialize_with = "lenient")]
    pub when_down: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub panic_threshold: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub trust_forwarded_headers: Option<bool>,
    #[serde(default)]
    pub limits: Option<FileLimits>,
    #[serde(default)]
    pub timeouts: Option<FileTimeouts>,
    #[serde(default, deserialize_with = "lenient")]
    pub wps_affinity: Option<bool>,
    #[serde(default)]
    pub affinity: Option<FileAffinity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAffinity {
    #[serde(default, deserialize_with = "lenient")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub ttl: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub max_keys: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    pub return_after_recovery: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub drain_idle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    #[serde(default, deserialize_with = "lenient")]
    pub max_header_bytes: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub max_headers: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    pub max_body: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    #[serde(default, deserialize_with = "lenient")]
    pub client_header: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub client_body: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub keepalive: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub upstream_connect: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub upstream_read: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub upstream_write: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHash {
    #[serde(default, deserialize_with = "lenient")]
    pub header: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub missing: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub algorithm: Option<String>,
}

/// A backend is written either as a bare `host:port` string or as a map with a weight; the
/// map may instead name a DNS name whose records are the backends (`dns:` + `port:`, `srv:`).
#[derive(Debug, Default)]
pub struct FileBackend {
    pub address: Option<String>,
    pub weight: Option<u32>,
    pub state: Option<String>,
    pub dns: Option<String>,
    pub srv: Option<String>,
    pub port: Option<u16>,
    pub refresh: Option<String>,
    pub resolver: Option<String>,
    pub id: Option<String>,
    /// Written as a bare string (so errors point at the item, not at an `address` key).
    pub short_form: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackendMap {
    #[serde(default, deserialize_with = "lenient")]
    address: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    weight: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    state: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    dns: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    srv: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    port: Option<u16>,
    #[serde(default, deserialize_with = "lenient")]
    refresh: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    resolver: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    id: Option<String>,
}

impl<'de> Deserialize<'de> for FileBackend {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BackendVisitor;
        impl<'de> Visitor<'de> for BackendVisitor {
            type Value = FileBackend;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "`host:port`, `{ address: host:port, weight: N, state: S, id: ID }`, \
                     `{ dns: NAME, port: P }` or `{ srv: NAME }`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileBackend, E> {
                Ok(FileBackend {
                    address: Some(v.to_string()),
                    short_form: true,
                    ..FileBackend::default()
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<FileBackend, M::Error> {
                // Going through the derived struct keeps its unknown-key errors.
                let m = FileBackendMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FileBackend {
                    address: m.address,
                    weight: m.weight,
                    state: m.state,
                    dns: m.dns,
                    srv: m.srv,
                    port: m.port,
                    refresh: m.refresh,
                    resolver: m.resolver,
                    id: m.id,
                    short_form: false,
                })
            }
        }
        deserializer.deserialize_any(BackendVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub interval: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub rise: Option<usize>,
    #[serde(default, deserialize_with = "lenient")]
    pub fall: Option<usize>,
}

/// Read any YAML scalar as `T` through its text, so `threads: "2"` (what `${THREADS:-2}`
/// expands to) and `threads: 2` mean the same. `~`/null means "not set".
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct LenientVisitor<T>(PhantomData<T>);

    impl<T> LenientVisitor<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        fn parse<E: de::Error>(text: &str) -> Result<Option<T>, E> {
            text.parse::<T>().map(Some).map_err(|e| {
                E::custom(format_args!(
                    "`{text}` is not {}: {e}",
                    describe(std::any::type_name::<T>())
                ))
            })
        }
    }

    impl<'de, T> Visitor<'de> for LenientVisitor<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(describe(std::any::type_name::<T>()))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Self::parse(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Self::parse(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Self::parse(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Self::parse(&v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Self::parse(&v.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
    }

    deserializer.deserialize_any(LenientVisitor(PhantomData))
}

/// Human words for the scalar types the file uses.
fn describe(type_name: &str) -> &'static str {
    match type_name {
        "bool" => "true or false",
        "alloc::string::String" => "a text value",
        _ => "a whole number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Result<FileService, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_may_be_strings() {
        let hc: FileHealthCheck = serde_yaml::from_str("rise: '2'\nfall: 3").unwrap();
        assert_eq!((hc.rise, hc.fall), (Some(2), Some(3)));
        let err = serde_yaml::from_str::<FileHealthCheck>("rise: two").unwrap_err();
        assert!(
            err.to_string().contains("`two` is not a whole number"),
            "{err}"
        );
    }

    #[test]
    fn backends_short_and_long_forms() {
        let s = service("backends: ['10.0.0.1:80', {address: '10.0.0.2:80', weight: 2}]").unwrap();
        let b = s.backends.unwrap();
        assert_eq!(b[0].address.as_deref(), Some("10.0.0.1:80"));
        assert_eq!(b[0].weight, None);
        assert_eq!(b[1].weight, Some(2));
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        assert!(service("nmae: x")
            .unwrap_err()
            .contains("unknown field `nmae`"));
        assert!(service("hash: {heder: x}")
            .unwrap_err()
            .contains("unknown field `heder`"));
        assert!(service("backends: [{address: 'a:1', weigth: 2}]")
            .unwrap_err()
            .contains("unknown field `weigth`"));
        assert!(service("health_check: {intervall: 5s}")
            .unwrap_err()
            .contains("unknown field `intervall`"));
    }

    #[test]
    fn null_means_unset() {
        let s = service("name: ~\nwhen_down:").unwrap();
        assert!(s.name.is_none() && s.when_down.is_none());
    }
}
