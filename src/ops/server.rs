//! Process assembly: turns a validated [`Config`] into one Pingora `Server` hosting one proxy
//! service (own listener, own worker threads, own upstream pool) and one health-check
//! background service per configured WPS service, plus the SIGHUP reloader and the watch that
//! drains the process and ends it once nothing is in flight (`stop.rs`).

use crate::config::{Config, ServerSettings};
use crate::ops::admin::{Admin, AdminService};
use crate::ops::reload::ReloadService;
use crate::ops::shared_state::{SharedState, SharedStateTask};
use crate::ops::state_file::{Handover, KeeperTask, StateKeeper};
use crate::ops::stop::{Outstanding, StopWatch};
use crate::service::guard::{Guard, GuardLimits};
use crate::service::pool::{HealthService, HistoryService, Pool};
use crate::service::proxy::WpsProxy;
use crate::telemetry::access_log;
use crate::telemetry::metrics::Metrics;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Pingora's read buffer under each client connection, in bytes: none. Pingora reads a
/// request head into its own buffer (4 KiB, grown as needed; WPS requests are a few hundred
/// bytes) and a body in 64 KiB reads of its own, so a buffer below them only copies bytes
/// once more; and its default of 64 KiB, held by every open connection, made up ~2/3 of an
/// idle keep-alive connection's memory (doc/performance.md).
const CLIENT_READ_BUFFER: usize = 0;

/// Pingora's HTTP server options for every client connection of a proxy service.
///
/// `server.preserve_header_case: false` (the default): client requests are read without the
/// map that remembers their header names' case (Pingora patch 0002, doc/pingora-patches.md);
/// the upstream side is [`WpsProxy`]'s peers.
fn http_server_options(settings: &ServerSettings) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h1_no_header_case = !settings.preserve_header_case;
    options
}

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

/// Every service's pool for `config`, built whole. `roost -t` builds them too, so a config it
/// accepts is one this process can run.
pub fn build_pools(config: &Config, metrics: &Arc<Metrics>) -> Result<Vec<Arc<Pool>>, String> {
    config
        .services
        .iter()
        .map(|service| {
            Pool::new(service, Arc::clone(metrics))
                .map(Arc::new)
                .map_err(|e| format!("service {}: cannot be built: {e}", service.name))
        })
        .collect()
}

/// Build the server with every service added, ready to `run_forever`. `path` is the config
/// file, re-read on SIGHUP. Nothing is bound or signalled when this fails.
pub fn build(config: &Config, path: PathBuf, options: RunOptions) -> Result<Server, String> {
    let metrics = Arc::new(Metrics::new());
    let pools = build_pools(config, &metrics)?;
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server =
        Server::new_with_opt_and_conf(opt, server_conf(&config.server, options.daemon));
    // Taken before the old process is told to hand over (below, once `bootstrap` opens the
    // upgrade socket), so that its hand-over file is recognised as the newer one.
    let handover = match (&config.server.state_dir, options.upgrade) {
        (Some(dir), true) => Some(Handover::before(dir)),
        _ => None,
    };
    // With `-u`, this receives the listening sockets from the running instance.
    server.bootstrap();

    let draining = Arc::new(AtomicBool::new(false));
    let mut outstanding = Outstanding::default();
    let access_log = config.access_log.as_ref().map(|settings| {
        let (log, writer) = access_log::new(settings, metrics.access_log_dropped.clone());
        server.add_service(background_service("access log", writer));
        log
    });
    for (service, pool) in config.services.iter().zip(&pools) {
        let mut app = pingora::proxy::HttpProxy::new(
            WpsProxy::new(
                Arc::clone(pool),
                Arc::clone(&draining),
                access_log.clone(),
                config.server.preserve_header_case,
            ),
            Arc::clone(&server.configuration),
        );
        app.server_options = Some(http_server_options(&config.server));
        app.handle_init_modules();
        let guard = Guard::new(app, Arc::clone(pool) as Arc<dyn GuardLimits>);
        outstanding.connections.push(guard.connections());
        let mut proxy =
            pingora::services::listening::Service::new(format!("proxy {}", service.name), guard);
        proxy.add_listener(
            ListenerConfig::tcp(service.listen.to_string())
                .l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER)),
        );
        server.add_service(proxy);
        // Always running: a reload may add a health check to a service that had none.
        server.add_service(background_service(
            &format!("health {}", service.name),
            HealthService {
                pool: Arc::clone(pool),
            },
        ));
        log::info!(
            "service {} listening on {} with {} backends",
            service.name,
            service.listen,
            service.backends.len()
        );
    }
    if let Some(admin) = &config.admin {
        let services = config
            .services
            .iter()
            .zip(&pools)
            .map(|(s, pool)| AdminService {
                pool: Arc::clone(pool),
                listen: s.listen,
            })
            .collect();
        let mut service = pingora::services::listening::Service::new(
            "admin".to_string(),
            Admin::new(services, admin.token.clone(), Arc::clone(&metrics))
                .with_draining(Arc::clone(&draining)),
        );
        service.add_tcp(&admin.listen.to_string());
        server.add_service(service);
        // Only the admin listener reads the history: without one, nothing samples it.
        server.add_service(background_service(
            "history",
            HistoryService {
                pools: pools.clone(),
            },
        ));
        log::info!("admin listening on {}", admin.listen);
    }
    outstanding.access_log = access_log.as_ref().map(|log| log.progress());
    if let Some(dir) = &config.server.state_dir {
        let keeper = Arc::new(StateKeeper::start(
            dir,
            pools.clone(),
            server.watch_execution_phase(),
            handover,
        ));
        outstanding.state = Some(Arc::clone(&keeper));
        server.add_service(background_service("state", KeeperTask(keeper)));
    }
    // After the state file: the entries it brought back are written to Redis too.
    if let Some(settings) = &config.state {
        let shared = SharedState::new(settings, &pools, Arc::clone(&metrics))?;
        server.add_service(background_service(
            "shared state",
            SharedStateTask(Arc::new(shared)),
        ));
        log::info!(
            "sticky tables shared through Redis at {} (prefix {})",
            settings.redis,
            settings.prefix
        );
    }
    server.add_service(background_service(
        "reload",
        ReloadService::new(path, config.clone(), pools, metrics),
    ));
    server.add_service(background_service(
        "stop",
        StopWatch {
            phases: Mutex::new(Some(server.watch_execution_phase())),
            draining,
            outstanding: Arc::new(outstanding),
        },
    ));
    Ok(server)
}
