//! The per-request selection path in isolation: taking the service state snapshot, reading
//! the affinity key from the headers, screening the request, and routing it with the route
//! resolver (the Ketama ring). `cargo bench --bench select` prints nanoseconds per request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, Version};
use roost::config::Config;
use roost::policy::key;
use roost::policy::route::{self, Ask};
use roost::policy::screen;
use roost::service::pool::Pool;
use roost::telemetry::metrics::Metrics;
use std::sync::Arc;

fn pool(backends: usize) -> Pool {
    let list: Vec<String> = (0..backends)
        .map(|i| format!("10.0.0.{}:8093", i + 1))
        .collect();
    let yaml = format!(
        "services:\n  - name: fp\n    listen: 127.0.0.1:8093\n    backends: [{}]\n",
        list.join(", ")
    );
    let config = Config::from_yaml(&yaml, "bench.yaml").expect("valid config");
    Pool::new(&config.services[0], Arc::new(Metrics::new())).expect("pool builds")
}

/// What the proxy does to route a request: one snapshot, then the resolver.
fn route(pool: &Pool, headers: &HeaderMap) -> Option<usize> {
    let state = pool.state();
    let policy = &state.settings.route;
    let ask = Ask {
        key: key::extract(headers, &policy.header),
        client_ip: None,
        exclude: None,
        job: || None,
    };
    route::resolve(policy, ask, &*state).ok().map(|r| r.backend)
}

fn requests() -> Vec<HeaderMap> {
    (0..1000)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("wps.example.org"));
            h.insert("user-agent", HeaderValue::from_static("OWSLib/0.31"));
            h.insert(
                "machineid",
                HeaderValue::from_str(&format!("machine-{i:04}-6f1c2a44")).unwrap(),
            );
            h
        })
        .collect()
}

fn selection(c: &mut Criterion) {
    let requests = requests();
    let limits = roost::config::Limits::default();
    for backends in [3, 12] {
        let pool = pool(backends);
        let mut i = 0;
        c.bench_function(
            &format!("snapshot + key + screen + ring ({backends} backends)"),
            |b| {
                b.iter(|| {
                    let h = &requests[i % requests.len()];
                    i += 1;
                    let ok = screen::screen(&Method::GET, Version::HTTP_11, 40, h, &limits);
                    black_box(ok.is_ok());
                    black_box(route(&pool, h).expect("every request carries a key"))
                })
            },
        );
    }
    let pool = pool(3);
    let keyless = HeaderMap::new();
    c.bench_function("snapshot + round robin (no key, 3 backends)", |b| {
        b.iter(|| black_box(route(&pool, &keyless)))
    });
}

/// The `X-Forwarded-*` headers added to every request on its way to a backend. The clone of
/// the parsed request is measured on its own so that it can be subtracted.
fn forwarding(c: &mut Criterion) {
    let mut template = pingora::http::RequestHeader::build("GET", b"/wps?service=WPS", None)
        .expect("request line");
    for (name, value) in [
        ("Host", "wps.example.org"),
        ("User-Agent", "OWSLib/0.35"),
        ("machineid", "machine-0001-6f1c2a44"),
    ] {
        template.append_header(name, value).expect("header");
    }
    let fwd = roost::policy::headers::Forwarding {
        client_ip: Some("192.0.2.7".parse().unwrap()),
        trust_incoming: false,
        fallback_host: "",
    };
    c.bench_function("clone a parsed request", |b| {
        b.iter(|| black_box(template.clone()))
    });
    c.bench_function("clone + X-Forwarded-* headers", |b| {
        b.iter(|| {
            let mut req = template.clone();
            roost::policy::headers::apply(&mut req, &fwd);
            black_box(req)
        })
    });
}

/// The sticky table with and without sharing (`state.redis`): a key already recorded (the
/// common request) must cost the same, with no Redis round trip; a new key adds one map
/// insert (the change the background service writes behind).
fn sticky_sharing(c: &mut Criterion) {
    use roost::policy::sticky::{Identity, StickyTable};
    use std::time::{Duration, Instant};
    let backend: Identity = "10.0.0.1:8093".into();
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    for shared in [false, true] {
        let table = StickyTable::new(Duration::from_secs(3600), 1_000_000);
        if shared {
            table.share();
        }
        let t0 = Instant::now();
        for k in &keys {
            table.record(k, &backend, t0);
        }
        table.take_changes(t0);
        let label = if shared { "shared" } else { "local" };
        let mut i = 0;
        c.bench_function(
            &format!("sticky lookup + record, key known ({label})"),
            |b| {
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    let k = &keys[i];
                    black_box(table.backend_of(k, t0));
                    black_box(table.record(k, &backend, t0))
                })
            },
        );
        let mut n = 0u64;
        c.bench_function(&format!("sticky record, new key ({label})"), |b| {
            b.iter(|| {
                n += 1;
                let k = n.to_be_bytes();
                black_box(table.record(&k, &backend, t0));
                if n % 4096 == 0 {
                    // The background flush empties the change set.
                    table.take_changes(t0);
                }
            })
        });
    }
}

criterion_group!(benches, selection, forwarding, sticky_sharing);
criterion_main!(benches);
