//! Configuration loading: YAML text → environment expansion → serde file structs → validated
//! typed model. Owns every rule about what a valid file is; knows nothing about proxying.
//!
//! The loader collects *all* problems it can find, each with file, line and key path, instead
//! of stopping at the first. serde stops at the first error inside one struct, so each section
//! and each service is deserialized on its own; semantic checks (addresses, duplicates, ranges)
//! run on everything that did deserialize.

pub mod advice;
mod backends;
mod env;
mod error;
mod file;
mod lines;
mod loader;
mod model;
mod sections;
mod service;

pub use backends::lookup;
pub use env::{expand, EnvError};
pub use error::{ConfigError, ConfigErrors};
pub use loader::parse_size;
pub use model::*;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// Resolves `host:port` backend names. Injected so that tests need no DNS.
pub type Resolver<'a> = &'a dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>;

/// The system resolver (blocking; used only at load and reload time).
pub fn system_resolver(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    address.to_socket_addrs().map(Iterator::collect)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Read and validate the file at `path` with the process environment and system DNS.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: source.clone(),
                line: None,
                key: None,
                message: format!("cannot read configuration: {e}"),
            }])
        })?;
        Self::from_yaml_with(&text, &source, &process_env, &system_resolver)
    }

    /// Validate YAML `text` with the process environment; `source` names it in messages.
    pub fn from_yaml(text: &str, source: &str) -> Result<Config, ConfigErrors> {
        Self::from_yaml_with(text, source, &process_env, &system_resolver)
    }

    /// Validate YAML `text` with an explicit environment and resolver.
    pub fn from_yaml_with(
        text: &str,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
        resolver: Resolver,
    ) -> Result<Config, ConfigErrors> {
        loader::Loader::run(text, source, env, resolver)
    }
}

#[cfg(test)]
mod tests;
