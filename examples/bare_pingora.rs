//! The smallest Pingora proxy that does Roost's job: Ketama consistent hashing on the
//! `machineid` header over a fixed backend list, nothing else (no health checks, screening,
//! limits, metrics or logging). `bench/run.py` runs it beside Roost so that every benchmark
//! shows how much of Roost's cost per request is the framework's and how much is Roost's own.
//!
//!     bare_pingora [--no-header-case] LISTEN BACKEND [BACKEND ...]
//!
//! `--no-header-case`: read requests and responses without the map that keeps their header
//! names' case (Pingora patch 0002; what Roost's `server.preserve_header_case: false` does), to
//! measure what it saves. Without it, Pingora's default: the case is kept.
//!
//! Not a product: it has no configuration, no error handling beyond Pingora's defaults, and
//! runs one worker thread like the other proxies in the benchmark.

use async_trait::async_trait;
use pingora::lb::{selection::consistent::KetamaHashing, LoadBalancer};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    lb: Arc<LoadBalancer<KetamaHashing>>,
    no_header_case: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let key = session
            .req_header()
            .headers
            .get("machineid")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let backend = self
            .lb
            .select(key, 256)
            .ok_or_else(|| Error::new(ErrorType::ConnectNoRoute))?;
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.h1_no_header_case = self.no_header_case;
        Ok(Box::new(peer))
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let no_header_case = args.first().is_some_and(|a| a == "--no-header-case");
    if no_header_case {
        args.remove(0);
    }
    if args.len() < 2 {
        eprintln!("usage: bare_pingora [--no-header-case] LISTEN BACKEND [BACKEND ...]");
        std::process::exit(2);
    }
    let lb = LoadBalancer::try_from_iter(&args[1..]).expect("backend addresses");
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let bare = Bare {
        lb: Arc::new(lb),
        no_header_case,
    };
    let mut service = http_proxy_service(&server.configuration, bare);
    if no_header_case {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h1_no_header_case = true;
        service
            .app_logic_mut()
            .expect("a new service has its app")
            .server_options = Some(options);
    }
    service.add_tcp(&args[0]);
    server.add_service(service);
    server.run_forever();
}
