//! Every metric Roost exports, by name, in one place (`doc/observability.md` lists them with
//! example queries). One registry per server, served as Prometheus text by the admin listener.
//!
//! Labels are service names and backend addresses from the config, and small fixed sets
//! (status class, health state): never the machineid or anything else a client chooses, so
//! the number of series is bounded by the config.

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const REQUESTS: &str = "roost_requests_total";
pub const REQUEST_DURATION: &str = "roost_request_duration_seconds";
pub const REQUESTS_WITHOUT_KEY: &str = "roost_requests_without_key_total";
pub const CONNECT_FAILURES: &str = "roost_upstream_connect_failures_total";
pub const RETRIES: &str = "roost_upstream_retries_total";
pub const BACKEND_UP: &str = "roost_backend_up";
pub const HEALTH_TRANSITIONS: &str = "roost_health_transitions_total";
pub const RELOADS: &str = "roost_config_reloads_total";
pub const ACCESS_LOG_DROPPED: &str = "roost_access_log_dropped_total";
pub const CONNECTIONS_REFUSED: &str = "roost_connections_refused_total";
pub const WPS_AFFINITY: &str = "roost_wps_affinity_total";
pub const AFFINITY_MOVES: &str = "roost_affinity_moves_total";
pub const AFFINITY_KEYS: &str = "roost_affinity_keys";
pub const BACKENDS_UNRESOLVED: &str = "roost_backends_unresolved";
pub const DNS_LOOKUPS: &str = "roost_dns_lookups_total";
pub const WPS_JOB_MOVES: &str = "roost_wps_job_moves_total";
pub const WPS_RUNNING_JOBS: &str = "roost_wps_running_jobs";
pub const PROBES_EXCUSED: &str = "roost_health_probes_excused_total";
pub const BACKEND_STATE: &str = "roost_backend_state";
pub const BACKEND_STATE_CHANGES: &str = "roost_backend_state_changes_total";
pub const OUTLIER_EJECTIONS: &str = "roost_outlier_ejections_total";
pub const PANIC_MODE: &str = "roost_panic_mode";
pub const PANIC_SECONDS: &str = "roost_panic_seconds_total";
pub const SHARED_STATE_UP: &str = "roost_shared_state_up";
pub const SHARED_STATE_ERRORS: &str = "roost_shared_state_errors_total";
pub const SHARED_STATE_ENTRIES: &str = "roost_shared_state_entries_total";

/// The label value for "no backend" (requests Roost answered itself).
pub const NO_BACKEND: &str = "none";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Metrics {
    registry: Registry,
    /// service, backend (or `none`), class (`2xx`..`5xx`).
    pub requests: IntCounterVec,
    /// service.
    pub duration: HistogramVec,
    /// service.
    pub without_key: IntCounterVec,
    /// service, backend.
    pub connect_failures: IntCounterVec,
    /// service.
    pub retries: IntCounterVec,
    /// service, backend; set from the pools' health at each scrape (a backend whose host
    /// does not resolve is 0, labelled with its name as written).
    pub backend_up: IntGaugeVec,
    /// service: backends left out because their host does not resolve.
    pub backends_unresolved: IntGaugeVec,
    /// service, name (`dns NAME:PORT` | `srv NAME`), result (`changed` | `same` | `failed`):
    /// lookups of the DNS backend entries.
    pub dns_lookups: IntCounterVec,
    /// service, backend, to (`up` | `down`).
    pub health_transitions: IntCounterVec,
    /// result (`applied` | `invalid` | `failed`).
    pub reloads: IntCounterVec,
    pub access_log_dropped: IntCounter,
    /// service, reason (`too_many_connections` | `header_timeout` | `bad_header` |
    /// `bad_framing`): connections closed by the guard (before a request reached the proxy,
    /// or for a body's framing).
    pub connections_refused: IntCounterVec,
    /// service, event (`learned` | `routed` | `unavailable`): `wps_affinity` at work.
    pub wps_affinity: IntCounterVec,
    /// service, reason (`owner_down` | `removed` | `drained`): keys that left their recorded
    /// backend.
    pub affinity_moves: IntCounterVec,
    /// service; set from the sticky tables at each scrape.
    pub affinity_keys: IntGaugeVec,
    /// service, reason (`owner_down` | `removed` | `drained`): running WPS jobs whose key moved.
    pub wps_job_moves: IntCounterVec,
    /// service, backend; set from the job tables at each scrape.
    pub wps_running_jobs: IntGaugeVec,
    /// service, backend: probes that timed out while the backend answered real requests.
    pub probes_excused: IntCounterVec,
    /// service, backend, state (`ready` | `drain` | `maint`): 1 for the backend's operator
    /// state; set at each scrape.
    pub backend_state: IntGaugeVec,
    /// service, to (`ready` | `drain` | `maint`): operator state changes through the API.
    pub backend_state_changes: IntCounterVec,
    /// service, backend: backends taken out by a streak of failed real requests.
    pub outlier_ejections: IntCounterVec,
    /// service: 1 while the service is in panic mode (routing ignores health).
    pub panic_mode: IntGaugeVec,
    /// service: time spent in panic mode.
    pub panic_seconds: CounterVec,
    /// 1 while Redis (`state.redis`) answers, 0 while it does not (only with `state.redis`).
    pub shared_state_up: IntGaugeVec,
    /// op (`write` | `read` | `subscribe` | `ping`): failed Redis operations.
    pub shared_state_errors: IntCounterVec,
    /// service, event (`sent` | `received` | `conflict`): sticky entries written to Redis,
    /// applied from other instances, and conflicts settled by the conflict rule.
    pub shared_state_entries: IntCounterVec,
}

impl Metrics {
    /// A fresh registry with every metric. The server makes one and hands it (in an `Arc`)
    /// to whoever counts; tests make their own.
    pub fn new() -> Self {
        let registry = Registry::new();
        // Every metric goes through here, so none can be created and forgotten.
        fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(&registry, c)
        };
        let requests = counter(
            REQUESTS,
            "Requests answered, by service, backend (none: answered by Roost) and status class.",
            &["service", "backend", "class"],
        );
        let without_key = counter(
            REQUESTS_WITHOUT_KEY,
            "Requests that carried no affinity key (handled by hash.missing).",
            &["service"],
        );
        let connect_failures = counter(
            CONNECT_FAILURES,
            "Connections to a backend that failed (refused, timed out, unreachable).",
            &["service", "backend"],
        );
        let retries = counter(
            RETRIES,
            "Requests re-sent to the next backend after a failed connection.",
            &["service"],
        );
        let health_transitions = counter(
            HEALTH_TRANSITIONS,
            "Backend health changes: by the active health checks, and `down` by outlier \
             detection on real traffic (see roost_outlier_ejections_total).",
            &["service", "backend", "to"],
        );
        let connections_refused = counter(
            CONNECTIONS_REFUSED,
            "Client connections closed before a request was parsed, by reason.",
            &["service", "reason"],
        );
        let wps_affinity = counter(
            WPS_AFFINITY,
            "wps_affinity: jobs learned from responses, keyless requests routed to their job's \
             backend, and keyless requests whose job's backend was down or gone (hash.missing).",
            &["service", "event"],
        );
        let affinity_moves = counter(
            AFFINITY_MOVES,
            "Keys sent away from the backend the sticky table recorded for them, by reason: \
             owner_down (it is down or refused the connection), removed (it left the config), \
             drained (an operator put it in maintenance).",
            &["service", "reason"],
        );
        let wps_job_moves = counter(
            WPS_JOB_MOVES,
            "Job moved machines: running WPS jobs whose key was sent to another backend than the \
             one running the job, by reason (as roost_affinity_moves_total); once per job and move.",
            &["service", "reason"],
        );
        let probes_excused = counter(
            PROBES_EXCUSED,
            "Health probes that timed out but did not count against the backend, because it \
             answered real requests within fall x interval (busy is not dead).",
            &["service", "backend"],
        );
        let backend_state_changes = counter(
            BACKEND_STATE_CHANGES,
            "Operator state changes of a backend through the admin API, by the state it went to.",
            &["service", "to"],
        );
        let outlier_ejections = counter(
            OUTLIER_EJECTIONS,
            "Backends taken out by `fall` failed real requests in a row (refused or reset \
             connections, 502/503/504 answers): outlier detection. Also counted in \
             roost_health_transitions_total{to=\"down\"}.",
            &["service", "backend"],
        );
        let panic_seconds = register(
            &registry,
            CounterVec::new(
                Opts::new(
                    PANIC_SECONDS,
                    "Seconds a service spent in panic mode (routing by table and ring, health \
                     ignored, because too few backends were usable).",
                ),
                &["service"],
            )
            .expect("valid metric"),
        );
        let dns_lookups = counter(
            DNS_LOOKUPS,
            "Lookups of DNS backend entries, by service, entry and result (changed, same, failed).",
            &["service", "name", "result"],
        );
        let shared_state_errors = counter(
            SHARED_STATE_ERRORS,
            "Failed Redis operations of the shared state (state.redis), by op: write, read, \
             subscribe, ping. Requests keep routing on the local tables meanwhile.",
            &["op"],
        );
        let shared_state_entries = counter(
            SHARED_STATE_ENTRIES,
            "Sticky entries of the shared state by event: sent (written to Redis), received \
             (another instance's, applied here), conflict (two instances had different \
             backends for a key; the one recorded first stays).",
            &["service", "event"],
        );
        let reloads = counter(
            RELOADS,
            "Config reloads (SIGHUP) by result: applied, invalid (the file did not load), failed.",
            &["result"],
        );
        let access_log_dropped = register(
            &registry,
            IntCounter::new(
                ACCESS_LOG_DROPPED,
                "Access log lines dropped because the writer could not keep up.",
            )
            .expect("valid metric"),
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_DURATION,
                "Time from the request's arrival to the end of its response, by service.",
            )
            // 1 ms .. ~65 s: WPS answers range from capabilities documents to long executes.
            .buckets(exponential_buckets(0.001, 2.0, 17).expect("valid buckets")),
            &["service"],
        )
        .expect("valid metric");
        let duration = register(&registry, duration);
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(&registry, g)
        };
        // A vector without labels: exported once set, i.e. only with `state.redis`.
        let shared_state_up = gauge(
            SHARED_STATE_UP,
            "1 while Redis (state.redis) answers, 0 while it does not.",
            &[],
        );
        let backend_up = gauge(
            BACKEND_UP,
            "1 when the backend is healthy, 0 when down.",
            &["service", "backend"],
        );
        let affinity_keys = gauge(
            AFFINITY_KEYS,
            "Keys in the sticky table, by service.",
            &["service"],
        );
        let backends_unresolved = gauge(
            BACKENDS_UNRESOLVED,
            "Backends left out because their host does not resolve (looked up again every 10 s), by service.",
            &["service"],
        );
        let backend_state = gauge(
            BACKEND_STATE,
            "1 for the operator state a backend is in (ready, drain, maint), by service and backend.",
            &["service", "backend", "state"],
        );
        let wps_running_jobs = gauge(
            WPS_RUNNING_JOBS,
            "WPS jobs running, by service and backend: the last status document said \
             accepted/started/paused (wps_affinity).",
            &["service", "backend"],
        );
        let panic_mode = gauge(
            PANIC_MODE,
            "1 while the service is in panic mode (usable backends at or below \
             panic_threshold: routing ignores health), else 0.",
            &["service"],
        );
        Self {
            registry,
            requests,
            duration,
            without_key,
            connect_failures,
            retries,
            backend_up,
            backends_unresolved,
            dns_lookups,
            health_transitions,
            reloads,
            access_log_dropped,
            connections_refused,
            wps_affinity,
            affinity_moves,
            affinity_keys,
            wps_job_moves,
            wps_running_jobs,
            probes_excused,
            backend_state,
            backend_state_changes,
            outlier_ejections,
            panic_mode,
            panic_seconds,
            shared_state_up,
            shared_state_errors,
            shared_state_entries,
        }
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding does not fail");
        out
    }
}

/// The `class` label values, in the order of [`class_index`].
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`CLASSES`] for a status; anything unknown (0: nothing sent) counts as `5xx`.
pub fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// `2xx`, `4xx`, ...: the status class label.
pub fn class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_family_with_help() {
        let metrics = Metrics::new();
        metrics
            .requests
            .with_label_values(&["fp", "10.0.0.1:8093", "2xx"])
            .inc();
        metrics.duration.with_label_values(&["fp"]).observe(0.002);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains("# HELP roost_requests_total"), "{text}");
        assert!(text.contains(
            "roost_requests_total{backend=\"10.0.0.1:8093\",class=\"2xx\",service=\"fp\"}"
        ));
        assert!(text.contains("roost_request_duration_seconds_bucket{service=\"fp\",le=\"0.002\"}"));
    }

    #[test]
    fn status_classes() {
        assert_eq!(class(200), "2xx");
        assert_eq!(class(304), "3xx");
        assert_eq!(class(431), "4xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(0), "5xx");
    }
}
