//! The admin listener's answers, through [`Admin::handle`] with real pools: routes, status,
//! history, methods, paths, tokens and the operator actions.

use super::*;
use crate::config::Config;

fn admin(token: Option<&str>) -> Admin {
    let config = Config::from_yaml(
        "services:\n  - name: fp\n    listen: 127.0.0.1:8093\n    backends: [127.0.0.11:8093, 127.0.0.12:8093, 127.0.0.13:8093]\n",
        "t.yaml",
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let services = config
        .services
        .iter()
        .map(|s| AdminService {
            pool: Arc::new(Pool::new(s, Arc::clone(&metrics)).unwrap()),
            listen: s.listen,
        })
        .collect();
    Admin::new(services, token.map(str::to_string), metrics)
}

fn get(a: &Admin, path: &str, query: Option<&str>) -> Reply {
    a.handle(&Method::GET, path, query, None)
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn route_agrees_with_the_nginx_pins() {
    let a = admin(None);
    // machine-0 → .12, abc → .11 (see `service/state/state_tests.rs`).
    for (key, want) in [("machine-0", "127.0.0.12:8093"), ("abc", "127.0.0.11:8093")] {
        let r = get(&a, "/route", Some(&format!("service=fp&key={key}")));
        assert_eq!(r.status, 200);
        let v = json_of(&r);
        assert_eq!(v["backend"], want, "{key}");
        assert_eq!(v["role"], "owner");
        assert_eq!(v["decision"], "forward");
    }
}

#[test]
fn route_errors() {
    let a = admin(None);
    assert_eq!(get(&a, "/route", None).status, 400);
    assert_eq!(get(&a, "/route", Some("service=fp")).status, 400);
    assert_eq!(get(&a, "/route", Some("service=nope&key=a")).status, 404);
    assert_eq!(get(&a, "/route", Some("service=fp&key=")).status, 400);
    let long = "k".repeat(300);
    assert_eq!(
        get(&a, "/route", Some(&format!("service=fp&key={long}"))).status,
        400
    );
    // Percent-encoded keys are decoded.
    let r = get(&a, "/route", Some("service=fp&key=a%20b"));
    assert_eq!(json_of(&r)["key"], "a b");
}

#[test]
fn status_lists_every_backend() {
    let v = json_of(&get(&admin(None), "/status", None));
    let backends = v["services"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3);
    assert_eq!(backends[1]["addr"], "127.0.0.12:8093");
    assert_eq!(backends[1]["healthy"], true);
    assert_eq!(backends[1]["running_jobs"], 0);
    assert_eq!(backends[1]["keys"], 0);
    assert_eq!(backends[1]["ejected"], false);
    assert_eq!(v["services"][0]["panic"], false);
    assert_eq!(v["services"][0]["panic_threshold"], 0);
    assert_eq!(v["services"][0]["listen"], "127.0.0.1:8093");
    assert_eq!(v["services"][0]["when_down"], "failover");
    assert_eq!(v["services"][0]["missing"], "round_robin");
}

#[test]
fn methods_paths_and_tokens() {
    let a = admin(Some("s3cret-token-0123456789"));
    let post = a.handle(&Method::POST, "/status", None, None);
    assert_eq!(post.status, 405);
    assert_eq!(post.headers, [("Allow", "GET")]);
    let get_action = get(
        &a,
        "/backends/drain",
        Some("service=fp&backend=127.0.0.11:8093"),
    );
    assert_eq!(get_action.status, 405);
    assert_eq!(get_action.headers, [("Allow", "POST")]);
    assert_eq!(get(&a, "/nope", None).status, 404);
    assert_eq!(
        get(&a, "/", None).status,
        200,
        "the page itself holds no data"
    );
    assert_eq!(get(&a, "/status", None).status, 401);
    let healthz = get(&a, "/healthz", None);
    assert_eq!(healthz.status, 200, "no token needed");
    assert_eq!(json_of(&healthz)["status"], "serving");
    let stopping = Arc::new(AtomicBool::new(true));
    let a = a.with_draining(stopping);
    assert_eq!(get(&a, "/healthz", None).status, 503);
    let wrong = a.handle(&Method::GET, "/metrics", None, Some(b"Bearer nope"));
    assert_eq!(wrong.status, 401);
    let right = a.handle(
        &Method::GET,
        "/metrics",
        None,
        Some(b"Bearer s3cret-token-0123456789"),
    );
    assert_eq!(right.status, 200);
    assert!(String::from_utf8_lossy(&right.body).contains("roost_backend_up"));
}

#[test]
fn history_has_a_point_per_sample_and_the_running_interval() {
    let a = admin(None);
    let pool = &a.services[0].pool;
    // Before the first sample: no interval yet.
    let v = json_of(&get(&a, "/history", None));
    assert_eq!(v["interval_seconds"], 10);
    assert_eq!(v["services"][0]["backends"][0]["points"], json!([]));
    pool.sample_history();
    let state = pool.state();
    for _ in 0..50 {
        state.count(Some(1), 200, std::time::Duration::from_millis(3));
    }
    pool.sample_history();
    state.count(Some(1), 200, std::time::Duration::from_millis(3));
    let v = json_of(&get(&a, "/history", Some("service=fp")));
    let b = &v["services"][0]["backends"][1];
    assert_eq!(b["addr"], "127.0.0.12:8093");
    let points = b["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{points:?}");
    assert_eq!(points[0]["requests"], 50);
    assert_eq!(points[0]["partial"], false);
    let p99 = points[0]["p99_ms"].as_f64().unwrap();
    assert!(p99 > 2.0 && p99 <= 3.0, "{p99}");
    assert_eq!(points[1]["requests"], 1);
    assert_eq!(points[1]["partial"], true);
    let idle = &v["services"][0]["backends"][0]["points"][0];
    assert_eq!(idle["requests"], 0);
    assert_eq!(idle["p99_ms"], Value::Null);
    assert_eq!(get(&a, "/history", Some("service=nope")).status, 404);
}

fn post(a: &Admin, path: &str, query: &str, token: Option<&[u8]>) -> Reply {
    a.handle(&Method::POST, path, Some(query), token)
}

#[test]
fn operator_actions_need_a_token_and_name_what_is_wrong() {
    let q = "service=fp&backend=127.0.0.12:8093";
    let open = admin(None);
    let r = post(&open, "/backends/drain", q, None);
    assert_eq!(r.status, 403);
    assert!(json_of(&r)["error"]
        .as_str()
        .unwrap()
        .contains("admin.token"));

    let a = admin(Some("s3cret-token-0123456789"));
    let token: &[u8] = b"Bearer s3cret-token-0123456789";
    assert_eq!(post(&a, "/backends/drain", q, None).status, 401);
    assert_eq!(
        post(&a, "/backends/drain", q, Some(b"Bearer nope")).status,
        401
    );
    assert_eq!(post(&a, "/backends/nap", q, Some(token)).status, 404);
    assert_eq!(
        post(&a, "/backends/drain", "service=fp", Some(token)).status,
        400
    );
    assert_eq!(
        post(
            &a,
            "/backends/drain",
            "service=no&backend=1.2.3.4:1",
            Some(token)
        )
        .status,
        404
    );
    assert_eq!(
        post(
            &a,
            "/backends/drain",
            "service=fp&backend=127.0.0.99:1",
            Some(token)
        )
        .status,
        404
    );

    let r = post(&a, "/backends/drain", q, Some(token));
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)["previous"], "ready");
    assert_eq!(json_of(&r)["state"], "drain");
    let status = json_of(&a.handle(&Method::GET, "/status", None, Some(token)));
    let b = &status["services"][0]["backends"][1];
    assert_eq!(b["state"], "drain");
    assert_eq!(b["in_flight"], 0);
    // Just drained: the idle time (default 5 min) has not passed yet.
    assert_eq!(b["drained"], false);
    // `/route` follows: machine-0 (owned by .12) goes elsewhere now.
    let r = a.handle(
        &Method::GET,
        "/route",
        Some("service=fp&key=machine-0"),
        Some(token),
    );
    assert_ne!(json_of(&r)["backend"], "127.0.0.12:8093");
    let r = post(&a, "/backends/ready", q, Some(token));
    assert_eq!(json_of(&r)["previous"], "drain");
    // Both changes are in the service's recent events, newest first, with their reason.
    let status = json_of(&a.handle(&Method::GET, "/status", None, Some(token)));
    let events = status["services"][0]["events"].as_array().unwrap();
    let details: Vec<&str> = events
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        ["drain -> ready (operator)", "ready -> drain (operator)"]
    );
    assert_eq!(events[0]["kind"], "state");
    assert_eq!(events[0]["backend"], "127.0.0.12:8093");
    let metrics = a.handle(&Method::GET, "/metrics", None, Some(token));
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("roost_backend_state_changes_total{service=\"fp\",to=\"drain\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "roost_backend_state{backend=\"127.0.0.12:8093\",service=\"fp\",state=\"ready\"} 1"
        ),
        "{text}"
    );
}
