//! From NGINX directives to Roost services: one service per `server { listen; location {
//! proxy_pass http://UPSTREAM; } }`, its backends and hashing from the `upstream` block, its
//! timeouts and limits from the proxy directives in effect (http → server → location, inner
//! ones replacing outer ones as in NGINX). Every directive met is accounted for in a
//! [`Report`]: translated, approximated (where a request goes may differ from NGINX) or
//! ignored (it does not change where a request goes).

use super::parse::Directive;
use super::settings::Inherited;
use super::values;
use std::collections::BTreeMap;

/// What became of the directives.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub approximated: Vec<String>,
    pub ignored: Vec<String>,
}

impl Report {
    pub(super) fn approximate(&mut self, d: &Directive, why: &str) {
        self.approximated
            .push(format!("{}: `{}`: {why}", d.at(), d.text()));
    }

    pub(super) fn ignore(&mut self, d: &Directive, why: &str) {
        self.ignored
            .push(format!("{}: `{}`: {why}", d.at(), d.text()));
    }
}

/// A Roost setting with the NGINX text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub yaml: String,
    pub from: String,
}

pub(super) fn value(yaml: String, d: &Directive) -> Value {
    Value {
        yaml,
        from: d.text(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    pub name: String,
    pub from: String,
    pub listen: Option<Value>,
    /// `hash:` keys in order (`header`, `algorithm`, `missing`).
    pub hash: Vec<(&'static str, Value)>,
    pub backends: Vec<Value>,
    pub limits: Vec<(&'static str, Value)>,
    pub timeouts: Vec<(&'static str, Value)>,
    /// Translated directives that need no setting of their own (Roost does it anyway).
    pub notes: Vec<String>,
}

/// The whole translation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Translation {
    pub services: Vec<Service>,
    /// Sum of the upstreams' `keepalive`, for `server.upstream_keepalive_pool_size`.
    pub keepalive: Option<Value>,
    pub report: Report,
}

/// Directives in `server`/`location` that decide where or whether a request is proxied, with
/// no Roost equivalent.
const ROUTING: &[&str] = &[
    "return",
    "rewrite",
    "if",
    "try_files",
    "root",
    "alias",
    "allow",
    "deny",
    "auth_basic",
    "auth_request",
    "error_page",
    "limit_req",
    "limit_conn",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "proxy_ssl_server_name",
    "map",
    "split_clients",
    "geo",
];

pub fn translate(top: &[Directive]) -> Translation {
    let mut t = Translation::default();
    let mut https = Vec::new();
    for d in top {
        match d.name.as_str() {
            "http" => https.push(d),
            "stream" | "mail" => t.report.approximate(
                d,
                "TCP/mail proxying has no Roost equivalent; not translated",
            ),
            "events" => t
                .report
                .ignore(d, "process settings; see Roost's server section"),
            _ => t
                .report
                .ignore(d, "process setting; see Roost's server section"),
        }
    }
    for http in https {
        translate_http(http, &mut t);
    }
    t
}

struct Upstream<'a> {
    block: &'a Directive,
    used: bool,
}

fn translate_http(http: &Directive, t: &mut Translation) {
    let mut upstreams: BTreeMap<&str, Upstream> = BTreeMap::new();
    let mut inherited = Inherited::default();
    let mut fresh = false;
    let mut servers = Vec::new();
    for d in http.children() {
        match d.name.as_str() {
            "upstream" if d.block.is_some() && d.args.len() == 1 => {
                upstreams.insert(
                    d.args[0].as_str(),
                    Upstream {
                        block: d,
                        used: false,
                    },
                );
            }
            "server" if d.block.is_some() => servers.push(d),
            name if ROUTING.contains(&name) => t
                .report
                .approximate(d, "changes routing; no Roost equivalent"),
            _ if inherited.take(d, &mut fresh) => {}
            _ => t.report.ignore(d, "does not change where requests go"),
        }
    }
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for server in servers {
        translate_server(server, &inherited, &mut upstreams, &mut names, t);
    }
    let mut keepalive = 0u64;
    let mut from = Vec::new();
    for (name, up) in &upstreams {
        if !up.used {
            t.report
                .ignore(up.block, "no server proxies to this upstream");
        }
        for d in up.block.children().iter().filter(|d| d.name == "keepalive") {
            if let Some(n) = d.args.first().and_then(|a| a.parse::<u64>().ok()) {
                keepalive += n;
                from.push(format!("{} (upstream {name})", d.text()));
            }
        }
    }
    if keepalive > 0 {
        t.keepalive = Some(Value {
            yaml: keepalive.to_string(),
            from: format!(
                "{}: NGINX keeps that many idle connections per worker and upstream; Roost one pool per process",
                from.join(" + ")
            ),
        });
    }
}

fn translate_server(
    server: &Directive,
    http: &Inherited,
    upstreams: &mut BTreeMap<&str, Upstream>,
    names: &mut BTreeMap<String, usize>,
    t: &mut Translation,
) {
    let mut own = http.clone();
    let mut fresh = false;
    let mut listens = Vec::new();
    let mut locations = Vec::new();
    for d in server.children() {
        match d.name.as_str() {
            "listen" => listens.push(d),
            "location" if d.block.is_some() => locations.push(d),
            "server_name" => t.report.ignore(
                d,
                "Roost tells services apart by listen address only (see below if two servers share one)",
            ),
            name if ROUTING.contains(&name) => {
                t.report.approximate(d, "changes routing; no Roost equivalent")
            }
            _ if own.take(d, &mut fresh) => {}
            _ => t.report.ignore(d, "does not change where requests go"),
        }
    }
    // The proxied locations: (location, proxy_pass, settings in effect there).
    let mut proxied: Vec<(&Directive, &Directive, Inherited)> = Vec::new();
    for loc in &locations {
        let mut here = own.clone();
        let mut fresh = false;
        let mut pass = None;
        for d in loc.children() {
            match d.name.as_str() {
                "proxy_pass" => pass = Some(d),
                name if ROUTING.contains(&name) => t
                    .report
                    .approximate(d, "changes routing; no Roost equivalent"),
                "location" => t.report.approximate(
                    d,
                    "nested location: Roost sends every path of a listener to one service",
                ),
                _ if here.take(d, &mut fresh) => {}
                _ => t.report.ignore(d, "does not change where requests go"),
            }
        }
        match pass {
            Some(pass) => proxied.push((loc, pass, here)),
            None => t.report.approximate(
                loc,
                "answered by NGINX itself (no proxy_pass); Roost would proxy these paths",
            ),
        }
    }
    let Some((loc, pass, settings)) = proxied.first() else {
        t.report.ignore(server, "proxies nothing; not translated");
        return;
    };
    for (other, other_pass, _) in &proxied[1..] {
        if other_pass.args != pass.args {
            t.report.approximate(
                other,
                &format!(
                    "proxies elsewhere than `{}`; Roost sends every path of a listener to one service",
                    pass.text()
                ),
            );
        }
    }
    if loc.args.as_slice() != ["/"] {
        t.report.approximate(
            loc,
            "Roost proxies every path of the listener, not only this location",
        );
    }
    let Some(target) = proxy_target(pass, t) else {
        return;
    };
    let mut service = Service {
        from: format!("server at {}", server.at()),
        ..Default::default()
    };
    match upstreams.get_mut(target.as_str()) {
        Some(up) => {
            up.used = true;
            service.from = format!("upstream {target} ({}), {}", up.block.at(), service.from);
            super::upstream::translate(up.block, &mut service, t);
        }
        None => match values::backend(&target) {
            Ok(address) => {
                service.backends.push(value(
                    format!("{{ address: {}, weight: 1 }}", values::quote(&address)),
                    pass,
                ));
                t.report.approximate(
                    pass,
                    "one server and no hash: NGINX forwards every request to it; so does Roost",
                );
            }
            Err(why) => {
                t.report.approximate(pass, &why);
                return;
            }
        },
    }
    service.name = unique_name(&target, names);
    listen(&listens, server, &mut service, t);
    super::settings::apply(settings, &mut service, t);
    t.services.push(service);
}

/// `proxy_pass http://NAME[/]` → NAME; anything else is reported.
fn proxy_target(pass: &Directive, t: &mut Translation) -> Option<String> {
    let [url] = pass.args.as_slice() else {
        t.report.approximate(pass, "not understood");
        return None;
    };
    let Some(rest) = url.strip_prefix("http://") else {
        t.report.approximate(
            pass,
            "Roost talks plain HTTP to backends (no TLS, no Unix sockets); not translated",
        );
        return None;
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.starts_with('$') {
        t.report.approximate(
            pass,
            "the target is chosen per request by a variable; not translated",
        );
        return None;
    }
    if !path.is_empty() && path != "/" {
        t.report.approximate(
            pass,
            "NGINX replaces the location's prefix with this URI; Roost forwards the path unchanged",
        );
    }
    Some(host.to_string())
}

fn unique_name(target: &str, names: &mut BTreeMap<String, usize>) -> String {
    let mut base: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    if base.is_empty() {
        base = "service".into();
    }
    let n = names.entry(base.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        base
    } else {
        format!("{base}-{n}")
    }
}

fn listen(listens: &[&Directive], server: &Directive, s: &mut Service, t: &mut Translation) {
    let Some(first) = listens.first() else {
        s.listen = Some(Value {
            yaml: values::quote("0.0.0.0:80"),
            from: "no listen: NGINX's default *:80".into(),
        });
        return;
    };
    for (i, d) in listens.iter().enumerate() {
        let Some(addr) = d.args.first() else {
            t.report.approximate(d, "listen without an address");
            continue;
        };
        for param in &d.args[1..] {
            let p = param.split('=').next().unwrap_or_default();
            if ["ssl", "http2", "quic", "proxy_protocol", "http3"].contains(&p) {
                t.report.approximate(
                    d,
                    &format!("`{param}`: Roost's listeners speak plain HTTP/1.1"),
                );
            }
        }
        if i == 0 {
            match values::listen(addr) {
                Ok(a) => {
                    s.listen = Some(value(values::quote(&a), d));
                }
                Err(why) => t.report.approximate(d, &why),
            }
            continue;
        }
        let port = |a: &str| a.rsplit(':').next().unwrap_or(a).to_string();
        if port(addr) == port(&first.args[0]) {
            t.report.ignore(
                d,
                "same port on another address (IPv6?): Roost listens on one address per service",
            );
        } else {
            t.report.approximate(
                d,
                &format!(
                    "a second port: Roost listens on one address per service (server at {})",
                    server.at()
                ),
            );
        }
    }
}
