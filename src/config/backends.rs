//! Validation of a service's `backends` list: addresses (resolved at load), weights and
//! duplicates. A host that does not resolve is not an error here: the backend is kept aside as
//! [`UnresolvedBackend`] (the server starts without it and retries it; `roost -t` refuses it),
//! because a stopped WPS container must not stop the proxy of the others.

use super::lines::{join_index, join_key};
use super::loader::Loader;
use super::*;
use file::FileBackend;
use std::collections::HashMap;
use std::net::SocketAddr;

impl Loader<'_> {
    pub(super) fn backends(
        &mut self,
        list: Option<Vec<FileBackend>>,
        path: &str,
        resolver: Resolver,
    ) -> Option<(Vec<BackendConfig>, Vec<UnresolvedBackend>)> {
        let Some(list) = list.filter(|l| !l.is_empty()) else {
            self.error(path, "at least one backend is required");
            return None;
        };
        let mut out = Vec::with_capacity(list.len());
        let mut unresolved = Vec::new();
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ok = true;
        for (i, b) in list.into_iter().enumerate() {
            let item = join_index(path, i);
            let backend = match self.backend(b, &item, resolver) {
                None => {
                    ok = false;
                    continue;
                }
                Some(Entry::Unresolved(u)) => {
                    if let Some(first) = names.insert(u.address.clone(), i) {
                        self.error(
                            &item,
                            format!(
                                "backend {} is listed twice (also {path}[{first}])",
                                u.address
                            ),
                        );
                        ok = false;
                    }
                    unresolved.push(u);
                    continue;
                }
                Some(Entry::Resolved(backend)) => backend,
            };
            names.insert(backend.address.clone(), i);
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
        ok.then_some((out, unresolved))
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
        let address = self.required(&address_key, b.address)?.trim().to_string();
        let lookup = self.resolve(&address_key, &address, resolver)?;
        if weight == 0 {
            return None;
        }
        let state = state?;
        Some(match lookup {
            Ok(addr) => Entry::Resolved(BackendConfig {
                address,
                addr,
                weight,
                state,
            }),
            Err(reason) => Entry::Unresolved(UnresolvedBackend {
                address,
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

/// One backend of the list: resolved, or kept aside until its host resolves.
pub(super) enum Entry {
    Resolved(BackendConfig),
    Unresolved(UnresolvedBackend),
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
