//! The proxy settings a service inherits (http -> server -> location): timeouts, body size
//! and `proxy_set_header`, as Roost's `timeouts:` and `limits:`, or notes where Roost already
//! does what the header line asks.

use super::parse::Directive;
use super::translate::{value, Service, Translation};
use super::values;
use std::collections::BTreeMap;

/// Proxy settings as NGINX inherits them: an inner level's directive replaces the outer one
/// (for `proxy_set_header`, the inner list replaces the whole outer list).
#[derive(Debug, Clone, Default)]
pub struct Inherited {
    single: BTreeMap<&'static str, Directive>,
    headers: Option<Vec<Directive>>,
}

/// NGINX directive → (Roost section, key).
const SETTINGS: &[(&str, &str, &str)] = &[
    ("proxy_read_timeout", "timeouts", "upstream_read"),
    ("proxy_connect_timeout", "timeouts", "upstream_connect"),
    ("proxy_send_timeout", "timeouts", "upstream_write"),
    ("client_header_timeout", "timeouts", "client_header"),
    ("client_body_timeout", "timeouts", "client_body"),
    ("keepalive_timeout", "timeouts", "keepalive"),
    ("client_max_body_size", "limits", "max_body"),
];

impl Inherited {
    /// Take `d` if it is an inherited proxy setting; false otherwise.
    pub fn take(&mut self, d: &Directive, fresh_headers: &mut bool) -> bool {
        if let Some((name, _, _)) = SETTINGS.iter().find(|(n, _, _)| *n == d.name) {
            self.single.insert(name, d.clone());
            return true;
        }
        if d.name == "proxy_set_header" {
            if !*fresh_headers {
                self.headers = Some(Vec::new());
                *fresh_headers = true;
            }
            self.headers.get_or_insert_with(Vec::new).push(d.clone());
            return true;
        }
        false
    }
}

/// The settings in effect where `s` is proxied, as its limits, timeouts and header notes.
pub fn apply(settings: &Inherited, s: &mut Service, t: &mut Translation) {
    for (name, section, key) in SETTINGS {
        let Some(d) = settings.single.get(name) else {
            continue;
        };
        let Some(arg) = d.args.first() else { continue };
        let converted = if *section == "limits" {
            values::size(arg).map_err(str::to_string)
        } else {
            values::duration(arg).ok_or_else(|| "not an NGINX time".to_string())
        };
        match converted {
            Ok(v) => {
                let entry = (*key, value(values::quote(&v), d));
                if *section == "limits" {
                    s.limits.push(entry);
                } else {
                    s.timeouts.push(entry);
                }
            }
            Err(why) => t
                .report
                .ignore(d, &format!("{why}; Roost's default applies")),
        }
    }
    for d in settings.headers.iter().flatten() {
        let [name, val] = d.args.as_slice() else {
            t.report.ignore(d, "not understood");
            continue;
        };
        let same = match (name.to_ascii_lowercase().as_str(), val.as_str()) {
            ("host", "$host" | "$http_host") => Some("Roost forwards the client's Host unchanged"),
            ("x-forwarded-for", "$proxy_add_x_forwarded_for") => {
                Some("Roost appends the client address to X-Forwarded-For")
            }
            ("x-forwarded-proto", "$scheme" | "http") => Some("Roost sets X-Forwarded-Proto: http"),
            ("x-forwarded-host", "$host" | "$http_host") => {
                Some("Roost sets X-Forwarded-Host to the client's Host")
            }
            _ => None,
        };
        match same {
            Some(why) => s.notes.push(format!("{}: {why}", d.text())),
            None => t.report.ignore(
                d,
                "Roost does not set this header (it sends Host, X-Forwarded-For/-Proto/-Host)",
            ),
        }
    }
}
