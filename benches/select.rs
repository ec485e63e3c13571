//! The per-request selection path in isolation: reading the affinity key from the headers,
//! screening the request, and finding the backend on the Ketama ring. `cargo bench --bench
//! select` prints nanoseconds per request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use roost::config::Config;
use roost::policy::key::{self, Key};
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
    Pool::new(&config.services[0], Arc::new(Metrics::new()))
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
    let header = HeaderName::from_static("machineid");
    let requests = requests();
    let limits = roost::config::Limits::default();
    for backends in [3, 12] {
        let pool = pool(backends);
        let mut i = 0;
        c.bench_function(&format!("key + screen + ring ({backends} backends)"), |b| {
            b.iter(|| {
                let h = &requests[i % requests.len()];
                i += 1;
                let ok = screen::screen(&Method::GET, Version::HTTP_11, 40, h, &limits);
                black_box(ok.is_ok());
                match key::extract(h, &header) {
                    Key::Present(k) => black_box(pool.select_by_key(k, None)),
                    _ => unreachable!("every request carries a key"),
                }
            })
        });
    }
    let pool = pool(3);
    c.bench_function("round robin (no key, 3 backends)", |b| {
        b.iter(|| black_box(pool.select_round_robin(None)))
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

criterion_group!(benches, selection, forwarding);
criterion_main!(benches);
