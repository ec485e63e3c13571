//! Command line: `roost [-c FILE] [-t | -d | -u]`, `roost route -c FILE SERVICE KEY`,
//! `roost upgrade -c FILE`, `roost reload -c FILE`, `roost backend drain|ready|maint -c FILE
//! SERVICE ADDR` and `roost import-nginx PATH [-o FILE]`.
//! Parses arguments, sets up logging, and dispatches; the work happens elsewhere.

use crate::config::{BackendState, Config};
use crate::ops::server::{self, RunOptions};
use crate::ops::state_file;
use crate::policy::route::{self, Unroutable};
use crate::service::pool::Pool;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "roost",
    version,
    about = "Sticky, health-checked HTTP load balancer for OGC WPS services"
)]
pub struct Cli {
    /// Configuration file
    #[arg(
        short = 'c',
        long = "conf",
        global = true,
        default_value = "conf/roost.yaml"
    )]
    pub conf: PathBuf,
    /// Validate the configuration, print every error, and exit (0 when valid)
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Run in the background (pid file from server.pid_file)
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Take over the listeners of the running instance (then send it SIGQUIT)
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the backend (host:port) KEY maps to for SERVICE with every backend healthy
    Route {
        /// Service name from the configuration
        service: String,
        /// Affinity key (the machineid header's value)
        key: String,
    },
    /// Hot-swap the running daemon (found through server.pid_file) for this binary with this
    /// config: starts `roost -u -d`, sends SIGQUIT to the old process, waits until it is gone.
    /// Says which listen addresses change, and refuses one that would close a listener
    Upgrade {
        /// Go ahead even though the new config drops a listen address the running process
        /// serves (its clients lose the service)
        #[arg(long = "allow-closing-listeners")]
        allow_closing_listeners: bool,
    },
    /// Validate the config, then tell the running daemon (server.pid_file) to re-read it
    /// (SIGHUP): backends, weights, health checks and when_down change without a restart
    Reload,
    /// Set a backend's operator state in the running process (through the admin listener
    /// and admin.token of this config): drain (no new sessions; its sessions and jobs stay),
    /// ready, maint (nothing reaches it; its sessions move)
    Backend {
        action: Action,
        /// Service name from the configuration
        service: String,
        /// The backend as written in the config (or the IP:port it resolved to)
        backend: String,
    },
    /// Translate an NGINX config (nginx.conf and what it includes) into a Roost config; exits
    /// non-zero, writing nothing, when a directive that changes routing has no exact equivalent
    #[command(name = "import-nginx")]
    ImportNginx {
        /// The NGINX main config file (its includes are followed)
        path: PathBuf,
        /// Where to write the Roost config (default: stdout)
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Write the config even when some directives could only be approximated
        #[arg(long = "allow-approximate")]
        allow_approximate: bool,
    },
}

/// What `roost backend` sets.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Action {
    Drain,
    Ready,
    Maint,
}

impl From<Action> for BackendState {
    fn from(a: Action) -> Self {
        match a {
            Action::Drain => BackendState::Drain,
            Action::Ready => BackendState::Ready,
            Action::Maint => BackendState::Maint,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::ops::logging::init();
    if let Some(Command::ImportNginx {
        path,
        output,
        allow_approximate,
    }) = &cli.command
    {
        // Reads an NGINX file, not a Roost config.
        return crate::ops::import_nginx::run(path, output.as_deref(), *allow_approximate);
    }

    let mut config = match Config::load(&cli.conf) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "roost: {}: {} error{}; nothing was started",
                cli.conf.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            return ExitCode::FAILURE;
        }
    };

    // `-t` is strict: every host must resolve. Everything else runs without the backends
    // whose host does not resolve (yet): a stopped WPS container must not stop the proxy of
    // the others, nor an operator's `roost reload`.
    let mut unresolved = config.unresolved();
    // The DNS entries' first lookups, for what builds the services (the server, `-t`, `roost
    // route`); the commands that signal or ask a running process do not need them.
    if matches!(cli.command, None | Some(Command::Route { .. })) {
        unresolved.extend(crate::ops::discovery::initial(&mut config));
    }
    if cli.test && !unresolved.is_empty() {
        for e in &unresolved {
            eprintln!("{e}");
        }
        eprintln!(
            "roost: {}: {} backend lookup{} failed. `roost -t` resolves every host and DNS \
             entry; a starting or reloading Roost would run without {} (a host: down, looked up \
             again every {} s; a DNS entry: looked up again every `refresh`)",
            config.source,
            unresolved.len(),
            if unresolved.len() == 1 { "" } else { "s" },
            if unresolved.len() == 1 { "it" } else { "them" },
            crate::ops::reload::RESOLVE_RETRY.as_secs()
        );
        return ExitCode::FAILURE;
    }
    for e in &unresolved {
        log::warn!("{e}; left out for now, looked up again");
    }

    match &cli.command {
        Some(Command::Route { service, key }) => return route(&config, service, key),
        Some(Command::Upgrade {
            allow_closing_listeners,
        }) => {
            return crate::ops::upgrade::run(
                &config,
                &absolute(&cli.conf),
                *allow_closing_listeners,
            )
        }
        Some(Command::Reload) => return crate::ops::upgrade::reload(&config),
        Some(Command::Backend {
            action,
            service,
            backend,
        }) => return crate::ops::backend_cmd::run(&config, (*action).into(), service, backend),
        Some(Command::ImportNginx { .. }) | None => {}
    }
    if cli.test {
        // What `-t` accepts must run: build every service as the server would.
        if let Err(e) = server::build_pools(&config, &Default::default()) {
            eprintln!("roost: {}: {e}", config.source);
            return ExitCode::FAILURE;
        }
        for warning in crate::config::advice::warnings(&config) {
            eprintln!("roost: {}: warning: {warning}", config.source);
        }
        let backends: usize = config.services.iter().map(|s| s.backends.len()).sum();
        println!(
            "roost: {}: OK ({} services, {} backends)",
            config.source,
            config.services.len(),
            backends
        );
        return ExitCode::SUCCESS;
    }
    if cli.daemon {
        // A daemon's log goes to server.error_log; Pingora would only panic after forking.
        if let Some(log) = &config.server.error_log {
            if let Err(e) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)
            {
                eprintln!(
                    "roost: {}: server.error_log: cannot open {}: {e}; nothing was started",
                    config.source,
                    log.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let options = RunOptions {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
    };
    match server::build(&config, absolute(&cli.conf), options) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("roost: {}: {e}; nothing was started", config.source);
            ExitCode::FAILURE
        }
    }
}

/// A daemonized process runs in `/` and re-reads its config file on SIGHUP.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `roost route`: the proxy's route resolver, with every backend healthy and the sticky table
/// the running process saved (`server.state_dir`), if any.
fn route(config: &Config, service: &str, key: &str) -> ExitCode {
    let Some(service_config) = config.service(service) else {
        let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "roost: no service named '{service}' in {} (services: {})",
            config.source,
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let pool = match Pool::new(service_config, Default::default()) {
        Ok(pool) => Arc::new(pool),
        Err(e) => {
            eprintln!("roost: service {service}: cannot be built: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The keys the running process saved go where its sticky table says.
    if let Some(dir) = &config.server.state_dir {
        if let Err(e) = state_file::read_into(dir, std::slice::from_ref(&pool)) {
            eprintln!("roost: {}: {e}; answering by the ring", dir.display());
        }
    }
    let state = pool.state();
    let policy = &state.settings.route;
    match route::lookup(policy, key, &*state) {
        Ok(r) => {
            println!("{}", state.members()[r.backend].address);
            ExitCode::SUCCESS
        }
        Err(Unroutable::MissingKey) => {
            eprintln!(
                "roost: an empty key is not hashed; requests without a key follow hash.missing"
            );
            ExitCode::from(2)
        }
        Err(why) => {
            eprintln!("roost: {}", why.refusal(policy).message);
            ExitCode::from(2)
        }
    }
}
