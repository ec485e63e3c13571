//! Validation of a service's `backends` list: addresses (resolved at load), weights and
//! duplicates. A host that does not resolve is not an error here: the backend is kept aside as
//! [`UnresolvedBackend`] (the server starts without it and retries it; `roost -t` refuses it),
//! because a stopped WPS container must not stop the proxy of the others.

use super::lines::{join_index, join_key};
use super::loader::Loader;
use super::*;
use file::FileBackend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

impl Loader<'_> {
    pub(super) fn backends(
        &mut self,
        list: Option<Vec<FileBackend>>,
        path: &str,
        resolver: Resolver,
    ) -> Option<Listed> {
        let Some(list) = list.filter(|l| !l.is_empty()) else {
            self.error(path, "at least one backend is required");
            return None;
        };
        let mut out = Vec::with_capacity(list.len());
        let mut unresolved = Vec::new();
        let mut dns: Vec<DnsBackends> = Vec::new();
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        // Identities (an `id`, else the address as written) must be unique: the ring, the
        // sticky table and the operator states know a backend by it.
        let mut identities: HashMap<String, usize> = HashMap::new();
        let mut ok = true;
        for (i, b) in list.into_iter().enumerate() {
            let item = join_index(path, i);
            let backend = match self.backend(b, &item, resolver) {
                None => {
                    ok = false;
                    continue;
                }
                Some(Entry::Unresolved(u)) => {
                    if let Some(first) = identities.insert(u.identity().to_string(), i) {
                        self.error(&item, twice(u.identity(), u.id.is_some(), path, first));
                        ok = false;
                    }
                    unresolved.push(u);
                    continue;
                }
                Some(Entry::Dns(d)) => {
                    if let Some(first) = dns
                        .iter()
                        .position(|o| o.name == d.name && o.port == d.port)
                    {
                        self.error(
                            &item,
                            format!("{} is listed twice (also {})", d.describe(), dns[first].key),
                        );
                        ok = false;
                    }
                    dns.push(d);
                    continue;
                }
                Some(Entry::Resolved(backend)) => backend,
            };
            if let Some(first) = identities.insert(backend.identity().to_string(), i) {
                let identity = backend.identity();
                self.error(&item, twice(identity, backend.id.is_some(), path, first));
                ok = false;
            } else if let Some(first) = seen.insert(backend.addr, i) {
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
        ok.then_some(Listed {
            backends: out,
            unresolved,
            dns,
        })
    }

    pub(super) fn backend(
        &mut self,
        b: FileBackend,
        item: &str,
        resolver: Resolver,
    ) -> Option<Entry> {
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
        let state = match b.state.as_deref().map(str::trim) {
            None => Some(BackendState::Ready),
            Some(s) => BackendState::parse(s).or_else(|| {
                self.error(
                    &join_key(item, "state"),
                    format!("'{s}' is not a backend state: ready, drain or maint"),
                );
                None
            }),
        };
        let id = self.backend_id(b.id.as_deref(), item);
        if b.dns.is_some() || b.srv.is_some() {
            if b.id.is_some() {
                self.error(
                    &join_key(item, "id"),
                    "an `id` names one backend, and a DNS entry finds several: an SRV record's \
                     target name is its backend's identity, an A/AAAA answer's address is",
                );
                return None;
            }
            let dns = self.dns_entry(b, item, weight, state?);
            return (weight > 0).then_some(dns?).map(Entry::Dns);
        }
        for (key, given) in [
            ("port", b.port.is_some()),
            ("refresh", b.refresh.is_some()),
            ("resolver", b.resolver.is_some()),
        ] {
            if given {
                self.error(
                    &join_key(item, key),
                    "goes with `dns:` or `srv:` (an `address` has its port in it)",
                );
            }
        }
        let address = self.required(&address_key, b.address)?.trim().to_string();
        let lookup = self.resolve(&address_key, &address, resolver)?;
        if weight == 0 {
            return None;
        }
        let (state, id) = (state?, id?);
        Some(match lookup {
            Ok(addr) => Entry::Resolved(BackendConfig {
                address,
                addr,
                weight,
                state,
                dns: None,
                id,
            }),
            Err(reason) => Entry::Unresolved(UnresolvedBackend {
                address,
                id,
                weight,
                state,
                reason,
                line: self.lines.line_of(&address_key),
                key: address_key,
            }),
        })
    }

    /// `IP:port` parses directly; `host:port` goes through the resolver, first address wins.
    /// `None`: the address is malformed (an error is recorded); `Some(Err(why))`: it is well
    /// formed but the lookup failed or found nothing.
    pub(super) fn resolve(
        &mut self,
        key: &str,
        address: &str,
        resolver: Resolver,
    ) -> Option<Result<SocketAddr, String>> {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            if addr.port() == 0 {
                self.error(key, format!("`{address}`: port 0 is not a backend port"));
                return None;
            }
            return Some(Ok(addr));
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
        Some(lookup(address, resolver))
    }
}

/// "listed twice", for a backend whose identity another one of `path` (item `first`) has.
fn twice(identity: &str, is_id: bool, path: &str, first: usize) -> String {
    if is_id {
        format!("id `{identity}` is used twice (also {path}[{first}]): each backend needs its own")
    } else {
        format!("backend {identity} is listed twice (also {path}[{first}])")
    }
}

impl Loader<'_> {
    /// `id:` of a backend: `Some(None)` when not given, `None` when it is invalid (an error
    /// is recorded).
    fn backend_id(&mut self, id: Option<&str>, item: &str) -> Option<Option<String>> {
        let Some(id) = id.map(str::trim) else {
            return Some(None);
        };
        if id.is_empty()
            || id.len() > 255
            || id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(
                &join_key(item, "id"),
                format!("`{id}` is not a backend id: 1 to 255 characters, no spaces (e.g. wps1)"),
            );
            return None;
        }
        Some(Some(id.to_string()))
    }
}

/// One backend of the list: resolved, kept aside until its host resolves, or a DNS name whose
/// records are backends.
pub(super) enum Entry {
    Resolved(BackendConfig),
    Unresolved(UnresolvedBackend),
    Dns(DnsBackends),
}

/// A service's `backends` list, sorted.
pub(super) struct Listed {
    pub backends: Vec<BackendConfig>,
    pub unresolved: Vec<UnresolvedBackend>,
    pub dns: Vec<DnsBackends>,
}

impl Loader<'_> {
    /// `{ dns: NAME, port: P }` or `{ srv: NAME }`, with `refresh` and `resolver`.
    fn dns_entry(
        &mut self,
        b: FileBackend,
        item: &str,
        weight: u32,
        state: BackendState,
    ) -> Option<DnsBackends> {
        let mut ok = true;
        if b.address.is_some() {
            self.error(
                &join_key(item, "address"),
                "a backend is an `address`, a `dns` name or an `srv` name, not several",
            );
            ok = false;
        }
        let (key, name, port) = match (b.dns, b.srv) {
            (Some(_), Some(_)) => {
                self.error(
                    item,
                    "`dns` and `srv` are two entries: write each on its own",
                );
                return None;
            }
            (Some(name), None) => {
                let port = self.required(&join_key(item, "port"), b.port);
                if port == Some(0) {
                    self.error(&join_key(item, "port"), "port 0 is not a backend port");
                    ok = false;
                }
                (join_key(item, "dns"), name, Some(port?))
            }
            (None, Some(name)) => {
                if b.port.is_some() {
                    self.error(
                        &join_key(item, "port"),
                        "an SRV record gives each backend its port: leave `port` out",
                    );
                    ok = false;
                }
                (join_key(item, "srv"), name, None)
            }
            (None, None) => unreachable!("called for dns or srv entries"),
        };
        let name = name.trim().trim_end_matches('.').to_string();
        if name.is_empty()
            || name.len() > 253
            || !name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            })
        {
            self.error(&key, format!("`{name}` is not a DNS name"));
            ok = false;
        }
        let refresh = self.duration(&join_key(item, "refresh"), b.refresh, DEFAULT_DNS_REFRESH);
        if refresh.is_some_and(|r| r < Duration::from_secs(1)) {
            self.error(&join_key(item, "refresh"), "must be at least 1s");
            ok = false;
        }
        let resolver = match b.resolver.as_deref().map(str::trim) {
            None => Some(None),
            Some(r) => match r.parse::<SocketAddr>() {
                Ok(a) if a.port() != 0 => Some(Some(a)),
                _ => {
                    self.error(
                        &join_key(item, "resolver"),
                        format!("`{r}` is not the IP:port of a DNS server (e.g. 127.0.0.1:53)"),
                    );
                    None
                }
            },
        };
        let line = self.lines.line_of(&key);
        let (refresh, resolver) = (refresh?, resolver?);
        ok.then_some(DnsBackends {
            name,
            port,
            refresh,
            resolver,
            weight,
            state,
            key,
            line,
        })
    }
}

/// Look `host:port` up: the first address, or why there is none (the one wording for the
/// loader and for the retries of a running server).
pub fn lookup(address: &str, resolver: Resolver) -> Result<SocketAddr, String> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    match resolver(address) {
        Ok(addrs) => addrs
            .first()
            .copied()
            .ok_or_else(|| format!("`{host}` resolves to no address")),
        Err(e) => Err(format!("cannot resolve `{host}`: {e}")),
    }
}

impl ServiceConfig {
    /// This service with its unresolved backends looked up again: `None` when none resolves
    /// yet. Those that resolve join `backends`, the others keep their newest reason. A host that
    /// now resolves to an address another backend already has stays aside (a duplicate would
    /// be refused in the file too).
    pub fn retry_unresolved(&self, resolver: Resolver) -> Option<ServiceConfig> {
        let mut next = self.clone();
        next.unresolved.clear();
        let mut changed = false;
        for u in &self.unresolved {
            match lookup(&u.address, resolver) {
                Ok(addr) if !next.backends.iter().any(|b| b.addr == addr) => {
                    next.backends.push(u.resolved(addr));
                    changed = true;
                }
                Ok(addr) => next.unresolved.push(UnresolvedBackend {
                    reason: format!("resolves to {addr}, which another backend already has"),
                    ..u.clone()
                }),
                Err(reason) => next.unresolved.push(UnresolvedBackend {
                    reason,
                    ..u.clone()
                }),
            }
        }
        changed.then_some(next)
    }

    /// A backend that ran with an address and whose host fails to resolve now (a DNS blip
    /// during a reload) keeps the address it had: its sessions do not move because a lookup
    /// failed. `running` is the service as it runs.
    pub fn keep_resolved(&mut self, running: &ServiceConfig) {
        let unresolved = std::mem::take(&mut self.unresolved);
        for u in unresolved {
            match running.backends.iter().find(|b| b.address == u.address) {
                Some(b) if !self.backends.iter().any(|n| n.addr == b.addr) => {
                    self.backends.push(u.resolved(b.addr));
                }
                _ => self.unresolved.push(u),
            }
        }
    }
}

impl ServiceConfig {
    /// This service with what `source`'s lookup `found` in place of what it found before:
    /// `None` when that is the same set. An address or identity another backend of the service
    /// already has is not added twice (the file's own entries come first). A backend whose
    /// identity stays (an SRV target) and whose address changed is the same backend at a new
    /// address: its keys stay.
    pub fn with_found(&self, source: &DnsBackends, found: &[Found]) -> Option<ServiceConfig> {
        let mark = source.describe();
        let before: BTreeSet<(String, SocketAddr, u32)> = self
            .backends
            .iter()
            .filter(|b| b.dns.as_deref() == Some(mark.as_str()))
            .map(|b| (b.address.clone(), b.addr, b.weight))
            .collect();
        let mut next = self.clone();
        next.backends
            .retain(|b| b.dns.as_deref() != Some(mark.as_str()));
        let mut added = BTreeSet::new();
        for f in found.iter().collect::<BTreeSet<_>>() {
            let address = f.address();
            let taken = next
                .backends
                .iter()
                .any(|b| b.addr == f.addr || b.identity() == address);
            if taken || !added.insert((address.clone(), f.addr, f.weight)) {
                continue;
            }
            next.backends.push(BackendConfig {
                address,
                addr: f.addr,
                weight: f.weight,
                state: source.state,
                dns: Some(mark.clone()),
                id: None,
            });
        }
        (added != before).then_some(next)
    }

    /// After a reload, each DNS entry that was running before (same name, port and resolver)
    /// starts with what it had found, until its next lookup.
    pub fn keep_discovered(&mut self, running: &ServiceConfig) {
        for source in &self.dns {
            let same = running
                .dns
                .iter()
                .any(|r| r.describe() == source.describe() && r.resolver == source.resolver);
            if !same {
                continue;
            }
            let mark = source.describe();
            for b in &running.backends {
                if b.dns.as_deref() == Some(mark.as_str())
                    && !self
                        .backends
                        .iter()
                        .any(|n| n.addr == b.addr || n.identity() == b.identity())
                {
                    self.backends.push(BackendConfig {
                        weight: if source.port.is_some() {
                            source.weight
                        } else {
                            b.weight
                        },
                        state: source.state,
                        ..b.clone()
                    });
                }
            }
        }
    }
}
