//! The config loader on arbitrary text: it may refuse anything, but must never panic, every
//! error it reports names the file, and every config it accepts builds: each service's whole
//! state (pool, ring, health check) is built as the server would build it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost::config::Config;
use roost::ops::server::build_pools;

fn env(name: &str) -> Option<String> {
    (name == "PORT").then(|| "8093".to_string())
}

/// No DNS while fuzzing: `wps1` resolves, everything else does not.
fn resolver(address: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
    match address.rsplit_once(':') {
        Some(("wps1", port)) => Ok(format!("10.0.0.1:{port}")
            .parse()
            .map(|a| vec![a])
            .unwrap_or_default()),
        _ => Err(std::io::Error::other("no such host")),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml_with(text, "fuzz.yaml", &env, &resolver) {
        Ok(config) => {
            if let Err(e) = build_pools(&config, &Default::default()) {
                panic!("a config that loads must build: {e}");
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert_eq!(e.file, "fuzz.yaml");
            }
        }
    }
});
