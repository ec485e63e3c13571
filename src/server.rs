//! Process assembly: turns a validated [`Config`] into one Pingora `Server` hosting one proxy
//! service (own listener, own worker threads, own upstream pool) and one health-check
//! background service per configured WPS service.

use crate::config::{Config, ServerSettings};
use crate::pool::{HealthService, Pool};
use crate::proxy::WpsProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use std::sync::Arc;

/// How this process was asked to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Fork into the background (pid file from `server.pid_file`).
    pub daemon: bool,
    /// Take over the listeners of a running instance through `server.upgrade_sock`.
    pub upgrade: bool,
}

/// Pingora's settings from ours. Both the old and the new process of an upgrade build this
/// from their config file, so they agree on the upgrade socket (pingap's `main.rs` explains
/// the silent failure when they do not).
pub fn server_conf(settings: &ServerSettings, daemon: bool) -> ServerConf {
    ServerConf {
        threads: settings.threads,
        daemon,
        pid_file: settings.pid_file.display().to_string(),
        upgrade_sock: settings.upgrade_sock.display().to_string(),
        error_log: settings.error_log.as_ref().map(|p| p.display().to_string()),
        grace_period_seconds: Some(settings.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(settings.graceful_shutdown_timeout_seconds),
        work_stealing: settings.work_stealing,
        upstream_keepalive_pool_size: settings.upstream_keepalive_pool_size,
        ..ServerConf::default()
    }
}

/// Build the server with every service added, ready to `run_forever`.
pub fn build(config: &Config, options: RunOptions) -> Server {
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server =
        Server::new_with_opt_and_conf(opt, server_conf(&config.server, options.daemon));
    // With `-u`, this receives the listening sockets from the running instance.
    server.bootstrap();

    for service in &config.services {
        let pool = Arc::new(Pool::new(service));
        let mut proxy = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            WpsProxy::new(Arc::clone(&pool)),
            &format!("proxy {}", service.name),
        );
        proxy.add_tcp(&service.listen.to_string());
        server.add_service(proxy);
        if service.health_check.is_some() {
            server.add_service(background_service(
                &format!("health {}", service.name),
                HealthService { pool },
            ));
        }
        log::info!(
            "service {} listening on {} with {} backends",
            service.name,
            service.listen,
            service.backends.len()
        );
    }
    server
}
