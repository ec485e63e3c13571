//! Backends from DNS (`backends: [{ dns: NAME, port: P }]`, `[{ srv: NAME }]`): the lookups,
//! with hickory-resolver, against `/etc/resolv.conf` or the entry's own `resolver`.
//!
//! What a lookup found becomes the entry's backends through the config
//! ([`ServiceConfig::with_found`], pure), applied like a reload by `ops::reload`, which looks each
//! entry up again every `refresh`. A failed or empty answer changes nothing: the last set that
//! was found keeps serving (a DNS outage must not empty a pool, nor move a session). Roost does
//! not hand the lookup to Pingora's `LoadBalancer` as a `ServiceDiscovery`: a service's ring,
//! members, counters and operator states are built together and swapped once (one config
//! version per request), so a change of backends goes through the same path as a reload.

use crate::config::{Config, ConfigError, DnsBackends, Found};
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;

/// How long one lookup (all its tries) may take: a slow DNS server delays the next refresh of
/// this entry, never a request.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

/// What `source`'s name resolves to now: one [`Found`] per backend, or why there is none.
pub async fn lookup(source: &DnsBackends) -> Result<Vec<Found>, String> {
    let resolver = resolver(source)?;
    let found = match tokio::time::timeout(LOOKUP_TIMEOUT, query(&resolver, source)).await {
        Ok(found) => found?,
        Err(_) => return Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    };
    if found.is_empty() {
        return Err("the answer has no address".to_string());
    }
    Ok(found)
}

async fn query(resolver: &TokioResolver, source: &DnsBackends) -> Result<Vec<Found>, String> {
    let name = source.name.as_str();
    match source.port {
        Some(port) => Ok(resolver
            .lookup_ip(name)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(|ip| Found {
                addr: SocketAddr::new(ip, port),
                weight: source.weight,
                target: None,
            })
            .collect()),
        None => {
            let records = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
            let mut found = Vec::new();
            for srv in records.iter() {
                // A target's first address is its backend: one record, one backend.
                let target = srv.target().to_utf8();
                let ips = resolver
                    .lookup_ip(srv.target().clone())
                    .await
                    .map_err(|e| format!("SRV target {target}: {e}"))?;
                if let Some(ip) = ips.iter().next() {
                    // SRV weight 0 means "no preference"; a Roost weight is at least 1.
                    let weight = u32::from(srv.weight()).max(1);
                    // The target names the backend (its identity), not the address it has
                    // today: a pod that comes back with a new IP keeps its keys.
                    found.push(Found {
                        addr: SocketAddr::new(ip, srv.port()),
                        weight,
                        target: Some(target.trim_end_matches('.').to_string()),
                    });
                }
            }
            Ok(found)
        }
    }
}

/// A resolver for one entry: its own server, or the system's configuration. No cache beyond
/// one lookup: each refresh asks the server (a replica that is gone must leave within
/// `refresh`, whatever TTL the records carry).
fn resolver(source: &DnsBackends) -> Result<TokioResolver, String> {
    let mut builder = match source.resolver {
        Some(server) => TokioResolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                Vec::new(),
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = Duration::from_secs(1);
    opts.attempts = 2;
    opts.cache_size = 0;
    Ok(builder.build())
}

/// Look every DNS entry of `config` up once, before the server starts (or `-t`, `roost
/// route` ...), so that the first state has their backends. Returns one error per entry whose
/// lookup failed: `roost -t` refuses them; a starting server warns and keeps looking.
pub fn initial(config: &mut Config) -> Vec<ConfigError> {
    if config.services.iter().all(|s| s.dns.is_empty()) {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return vec![ConfigError {
                file: config.source.clone(),
                line: None,
                key: None,
                message: format!("cannot start the DNS lookups: {e}"),
            }]
        }
    };
    let mut errors = Vec::new();
    for service in &mut config.services {
        for source in service.dns.clone() {
            match runtime.block_on(lookup(&source)) {
                Ok(found) => {
                    if let Some(next) = service.with_found(&source, &found) {
                        *service = next;
                    }
                }
                Err(why) => errors.push(ConfigError {
                    file: config.source.clone(),
                    line: source.line,
                    key: Some(source.key.clone()),
                    message: format!("service {}: {}: {why}", service.name, source.describe()),
                }),
            }
        }
    }
    errors
}
