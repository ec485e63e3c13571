//! `roost backend drain|ready|maint -c FILE SERVICE ADDR`: set a backend's operator state in
//! the running process, through its admin listener (`POST /backends/ACTION`, with
//! `admin.token` from the same config).

use crate::config::{BackendState, Config};
use crate::ops::admin_client::{self, reachable};
use std::process::ExitCode;

pub fn run(config: &Config, action: BackendState, service: &str, backend: &str) -> ExitCode {
    let Some(admin) = &config.admin else {
        eprintln!(
            "roost: {}: no admin listener (admin.listen) to send the operator action to",
            config.source
        );
        return ExitCode::FAILURE;
    };
    if config.service(service).is_none() {
        eprintln!("roost: no service named '{service}' in {}", config.source);
        return ExitCode::from(2);
    }
    let target = format!(
        "/backends/{}?service={}&backend={}",
        action.as_str(),
        encode(service),
        encode(backend)
    );
    let addr = reachable(admin.listen);
    match admin_client::request(addr, "POST", &target, admin.token.as_deref()) {
        Ok((200, body)) => {
            let previous = body["previous"].as_str().unwrap_or("?");
            let name = body["backend"].as_str().unwrap_or(backend);
            println!(
                "roost: service {service}: backend {name}: {previous} -> {}",
                action.as_str()
            );
            if action == BackendState::Drain {
                println!(
                    "roost: it keeps its sessions; GET /status shows \"drained\": true once it is safe to stop"
                );
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let why = body["error"].as_str().unwrap_or("(no error message)");
            eprintln!("roost: {addr} answered {status}: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("roost: cannot reach the admin listener at {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
