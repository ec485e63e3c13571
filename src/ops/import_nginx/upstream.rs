//! One `upstream` block: its `server` lines become backends (weights kept, `backup` left out,
//! `down` kept as `state: maint`, so that its weight still counts) and its balancing method becomes `hash:`
//! (`hash $http_NAME` -> nginx_hash, `... consistent` -> ketama, `ip_hash` -> client_ip).

use super::parse::Directive;
use super::translate::{value, Service, Translation, Value};
use super::values;

/// The upstream `block` as `s`'s backends and hashing.
pub fn translate(block: &Directive, s: &mut Service, t: &mut Translation) {
    let mut method: Option<&Directive> = None;
    for d in block.children() {
        match d.name.as_str() {
            "server" => server_line(d, s, t),
            "hash" | "ip_hash" | "least_conn" | "random" | "least_time" | "sticky" | "ntlm" => {
                method = Some(d)
            }
            "keepalive" => {}
            _ => t.report.ignore(d, "does not change where requests go"),
        }
    }
    let Some(d) = method else {
        t.report.approximate(
            block,
            "no hash: NGINX balances every request round robin; Roost does so for requests \
             without the key header and keeps a request that carries one on its key's backend",
        );
        return;
    };
    match (d.name.as_str(), d.args.as_slice()) {
        ("hash", [key, rest @ ..]) if rest.is_empty() || rest == ["consistent"] => {
            let Some(header) = values::header_of(key) else {
                t.report.approximate(
                    d,
                    "Roost hashes on one request header ($http_NAME); this key is not one; \
                     left at Roost's default (header machineid)",
                );
                return;
            };
            s.hash.push(("header", value(values::quote(&header), d)));
            if rest.is_empty() {
                s.hash.push((
                    "algorithm",
                    Value {
                        yaml: "nginx_hash".into(),
                        from: "plain hash (no consistent): NGINX's own mapping, key for key".into(),
                    },
                ));
            } else {
                s.hash.push((
                    "algorithm",
                    Value {
                        yaml: "ketama".into(),
                        from: "consistent: the same Ketama ring as NGINX, key for key".into(),
                    },
                ));
            }
        }
        ("ip_hash", []) => {
            s.hash.push(("missing", value("client_ip".into(), d)));
            t.report.approximate(
                d,
                "Roost hashes the client address only for requests without the key header \
                 (hash.missing: client_ip), on the whole address with Ketama; NGINX's ip_hash \
                 hashes the first three octets of an IPv4 address (a /24 stays together) with \
                 its own function, for every request: each client moves once, and requests \
                 carrying a machineid header follow the header",
            );
        }
        _ => t.report.approximate(
            d,
            "a balancing method Roost does not have; Roost hashes on the machineid header",
        ),
    }
}

fn server_line(d: &Directive, s: &mut Service, t: &mut Translation) {
    let Some(addr) = d.args.first() else {
        t.report.approximate(d, "server without an address");
        return;
    };
    let address = match values::backend(addr) {
        Ok(a) => a,
        Err(why) => {
            t.report.approximate(d, &why);
            return;
        }
    };
    let mut weight = "1".to_string();
    let mut state = "";
    let mut notes = Vec::new();
    for param in &d.args[1..] {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        match k {
            "weight" => weight = v.to_string(),
            "max_fails" | "fail_timeout" => notes.push(param.as_str()),
            "backup" => {
                t.report.approximate(
                    d,
                    "backup: Roost has no backup tier; left out (NGINX's hash never picks a \
                     backup either; NGINX used it only when no other server could be tried)",
                );
                return;
            }
            // Exact: kept in the list (its weight counts, as in NGINX) and never sent a
            // request; its keys go where NGINX sends them (the next server on the ring, or
            // NGINX's rehash under `nginx_hash`).
            "down" => state = ", state: maint",
            _ => t
                .report
                .approximate(d, &format!("`{param}`: not translated")),
        }
    }
    if !notes.is_empty() {
        t.report.ignore(
            d,
            &format!(
                "{}: not translated; Roost retries a refused connection on the next backend as \
                 NGINX does, and takes a backend out after health_check.fall (default 3) failed \
                 real requests in a row, until its health_check (or, without one, a trial \
                 request after 5-30 s) brings it back",
                notes.join(" ")
            ),
        );
    }
    s.backends.push(value(
        format!(
            "{{ address: {}, weight: {weight}{state} }}",
            values::quote(&address)
        ),
        d,
    ));
}
