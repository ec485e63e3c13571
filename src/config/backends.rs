//! Validation of a service's `backends` list: addresses (resolved once, at load), weights and
//! duplicates.

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

    pub(super) fn backend(
        &mut self,
        b: FileBackend,
        item: &str,
        resolver: Resolver,
    ) -> Option<BackendConfig> {
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
        let addr = self.resolve(&address_key, &address, resolver)?;
        (weight > 0).then_some(BackendConfig {
            address,
            addr,
            weight,
            state: state?,
        })
    }

    /// `IP:port` parses directly; `host:port` goes through the resolver, first address wins.
    pub(super) fn resolve(
        &mut self,
        key: &str,
        address: &str,
        resolver: Resolver,
    ) -> Option<SocketAddr> {
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
}
