//! HTTP/1.1 conformance at the edge, side by side: every case of tests/conformance/cases.rs
//! (raw bytes in; refused, or exactly these requests at the backend) is sent to Roost, NGINX
//! and HAProxy, each a reverse proxy in front of its own recording backend on loopback, in
//! the same run. Prints a table (also written to target/tmp/conformance.md) and fails when
//! Roost misses a case's expectation (refusing what must be forwarded, forwarding anything
//! that must be refused, answering out of order or dropping a pipelined request), or when any
//! answer Roost sends does not parse as strict HTTP/1.1 with its exact length and no byte
//! left over. Needs `nginx` and `haproxy` on PATH (`make deps`).

#[path = "conformance/cases.rs"]
mod cases;
mod common;
#[path = "conformance/http1.rs"]
mod http1;
#[path = "conformance/recorder.rs"]
mod recorder;

use cases::{Case, Expect, Msg};
use common::*;
use http1::{Answer, Request};
use recorder::Recorder;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One proxy under test and its backend.
struct Proxy {
    name: &'static str,
    addr: SocketAddr,
    backend: Recorder,
}

fn binary(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{name} is not installed; run `make deps`");
}

fn spawn(cmd: &mut Command, addr: SocketAddr, what: &str) -> Proc {
    let mut proc = Proc {
        child: cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}")),
    };
    wait_until(Duration::from_secs(15), what, || {
        assert!(proc.is_running(), "{what} exited");
        TcpStream::connect(addr).is_ok()
    });
    proc
}

/// NGINX as an equivalent reverse proxy: Host passed on, HTTP/1.1 and keep-alive upstream,
/// the same body limit and header timeout as Roost's.
fn nginx(dir: &std::path::Path, backend: SocketAddr) -> (SocketAddr, Proc) {
    let addr = listen_addr();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
           fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
           client_max_body_size 1024;\n  client_header_timeout 2s;\n  client_body_timeout 5s;\n\
           upstream b {{ server {backend}; keepalive 4; }}\n\
           server {{ listen {addr};\n    location / {{ proxy_pass http://b; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $http_host; }} }}\n}}\n",
        d = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let proc = spawn(
        Command::new(binary("nginx"))
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir),
        addr,
        "nginx",
    );
    (addr, proc)
}

/// HAProxy as an equivalent reverse proxy (its defaults otherwise).
fn haproxy(dir: &std::path::Path, backend: SocketAddr) -> (SocketAddr, Proc) {
    let addr = listen_addr();
    let conf = format!(
        "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n\
         timeout server 10s\n  timeout http-request 2s\nfrontend f\n  bind {addr}\n  default_backend b\n\
         backend b\n  server s1 {backend}\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let proc = spawn(
        Command::new(binary("haproxy"))
            .arg("-f")
            .arg(&path)
            .arg("-db"),
        addr,
        "haproxy",
    );
    (addr, proc)
}

/// What came of one case through one proxy.
struct Outcome {
    answers: Vec<Answer>,
    /// Whether the answer bytes parse strictly, with nothing left over.
    framing: Result<(), String>,
    received: Vec<Request>,
    /// Bytes at the backend that are not a complete, valid request.
    junk: Vec<String>,
}

impl Outcome {
    fn refused(&self) -> bool {
        self.received.is_empty()
            && self.junk.is_empty()
            && !self.answers.is_empty()
            && self.answers.iter().all(|a| a.status >= 400)
    }

    /// The backend got exactly `msgs` (in any order across its connections: the order that
    /// counts is the answers'), and the client their answers in order; with `then_refused`,
    /// one more answer follows, a refusal.
    fn forwarded_then(&self, msgs: &[Msg], then_refused: bool) -> bool {
        let mut sent: Vec<(&str, &str, &[u8])> = self
            .received
            .iter()
            .map(|r| (r.method.as_str(), r.target.as_str(), r.body.as_slice()))
            .collect();
        let mut want: Vec<(&str, &str, &[u8])> =
            msgs.iter().map(|m| (m.method, m.target, m.body)).collect();
        sent.sort();
        want.sort();
        let count = msgs.len() + usize::from(then_refused);
        let refused_last = !then_refused || self.answers.last().is_some_and(|a| a.status >= 400);
        let answers_in_order = self.answers.len() == count
            && refused_last
            && self.answers.iter().zip(msgs).all(|(a, m)| {
                let body = if m.method == "HEAD" {
                    String::new()
                } else {
                    format!("seen {} {}\n", m.method, m.target)
                };
                a.status == 200 && a.body == body.as_bytes()
            });
        self.junk.is_empty() && sent == want && answers_in_order
    }

    fn forwarded(&self, msgs: &[Msg]) -> bool {
        self.forwarded_then(msgs, false)
    }

    fn meets(&self, expect: &Expect) -> bool {
        match expect {
            Expect::Refuse => self.refused(),
            Expect::Forward(m) => self.forwarded(m),
            Expect::Either(m) => self.refused() || self.forwarded(m),
            Expect::ForwardThenRefuse(m) => self.forwarded_then(m, true),
            Expect::RefuseLate => {
                self.received.is_empty()
                    && !self.answers.is_empty()
                    && self.answers.iter().all(|a| a.status >= 400)
            }
        }
    }

    /// One table cell.
    fn describe(&self, expect: &Expect) -> String {
        let statuses: Vec<String> = self.answers.iter().map(|a| a.status.to_string()).collect();
        let statuses = if statuses.is_empty() {
            "no answer".to_string()
        } else {
            statuses.join("+")
        };
        let mut cell = if self.received.is_empty() && self.junk.is_empty() {
            if self.answers.iter().all(|a| a.status >= 400) && !self.answers.is_empty() {
                format!("refused {statuses}")
            } else {
                statuses
            }
        } else {
            let what = if self.meets(expect) {
                match expect {
                    Expect::RefuseLate => "refused after the head went on".to_string(),
                    _ => "forwarded".to_string(),
                }
            } else {
                let sent: Vec<String> = self
                    .received
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} [{}]",
                            r.method,
                            r.target.escape_default(),
                            r.body.len()
                        )
                    })
                    .collect();
                let mut s = format!("forwarded-differently: {}", sent.join(", "));
                for j in &self.junk {
                    s.push_str(&format!(" +junk({j})"));
                }
                s
            };
            format!("{what} ({statuses})")
        };
        if let Err(e) = &self.framing {
            cell.push_str(&format!(" BAD ANSWER: {e}"));
        }
        cell
    }
}

fn run_case(proxy: &Proxy, case: &Case) -> Outcome {
    let methods = case.methods();
    let mut bytes = Vec::new();
    if let Ok(mut conn) = TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(5)) {
        // A proxy may close before it has read everything: keep what it answered.
        let _ = conn.write_all(&case.input);
        if !case.later.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
            let _ = conn.write_all(&case.later);
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            // Wait long for the answers a case expects, briefly for anything beyond them.
            let complete = http1::answers(&bytes, &methods).0.len() >= methods.len();
            let wait = if complete { 1 } else { 6 };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(wait)));
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break, // timeout or reset
            }
        }
    }
    let (answers, framing) = http1::answers(&bytes, &methods);
    let mut received = Vec::new();
    let mut junk = Vec::new();
    for conn in proxy.backend.take() {
        let (reqs, rest) = http1::requests(&conn);
        received.extend(reqs);
        junk.extend(rest);
    }
    Outcome {
        answers,
        framing,
        received,
        junk,
    }
}

fn expectation(expect: &Expect) -> String {
    let list = |m: &[Msg]| {
        m.iter()
            .map(|m| format!("{} {}", m.method, m.target))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match expect {
        Expect::Refuse => "refuse".to_string(),
        Expect::Forward(m) => format!("forward {}", list(m)),
        Expect::Either(m) => format!("refuse or forward {}", list(m)),
        Expect::ForwardThenRefuse(m) => format!("forward {}, refuse the next", list(m)),
        Expect::RefuseLate => "refuse (after the head)".to_string(),
    }
}

#[test]
fn roost_is_at_least_as_strict_as_nginx_and_haproxy() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases::all();

    let roost_backend = Recorder::start();
    let roost_addr = listen_addr();
    let roost = Roost::start(
        &config_yaml(&service_yaml(
            "conformance",
            roost_addr,
            &[roost_backend.addr],
            "    limits: { max_body: 1024 }\n    timeouts: { client_header: 2s }\n",
        )),
        &[roost_addr],
    );
    let nginx_backend = Recorder::start();
    let (nginx_addr, nginx) = nginx(dir.path(), nginx_backend.addr);
    let haproxy_backend = Recorder::start();
    let (haproxy_addr, haproxy) = haproxy(dir.path(), haproxy_backend.addr);
    let proxies = [
        Proxy {
            name: "Roost",
            addr: roost_addr,
            backend: roost_backend,
        },
        Proxy {
            name: "NGINX",
            addr: nginx_addr,
            backend: nginx_backend,
        },
        Proxy {
            name: "HAProxy",
            addr: haproxy_addr,
            backend: haproxy_backend,
        },
    ];

    // The proxies run side by side; each one's cases in turn (its backend's bytes are the case's).
    let results: Vec<Vec<Outcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = proxies
            .iter()
            .map(|p| s.spawn(|| cases.iter().map(|c| run_case(p, c)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("case runner"))
            .collect()
    });
    drop((nginx, haproxy));

    let mut table = String::from(
        "| case | class | expected | Roost | NGINX | HAProxy |\n|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    let mut tally = [0usize; 3];
    for (i, case) in cases.iter().enumerate() {
        let mut row = format!(
            "| {} | {} | {} |",
            case.name,
            case.class,
            expectation(&case.expect)
        );
        for (p, proxy) in proxies.iter().enumerate() {
            let outcome = &results[p][i];
            let ok = outcome.meets(&case.expect);
            if ok {
                tally[p] += 1;
            }
            row.push_str(&format!(
                " {} {} |",
                if ok { "✓" } else { "✗" },
                outcome.describe(&case.expect)
            ));
            if proxy.name == "Roost" {
                if !ok {
                    failures.push(format!(
                        "{}: expected {}, got {}",
                        case.name,
                        expectation(&case.expect),
                        outcome.describe(&case.expect)
                    ));
                } else if let Err(e) = &outcome.framing {
                    failures.push(format!("{}: answer not strict HTTP/1.1: {e}", case.name));
                }
            }
        }
        table.push_str(&row);
        table.push('\n');
    }
    table.push_str(&format!(
        "\nmeeting the expectation: Roost {}/{n}, NGINX {}/{n}, HAProxy {}/{n}\n",
        tally[0],
        tally[1],
        tally[2],
        n = cases.len()
    ));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance.md");
    let _ = std::fs::write(&out, &table);
    eprintln!("{table}\n(written to {})", out.display());
    assert!(
        failures.is_empty(),
        "Roost fails {} case(s):\n{}\n\nlog:\n{}",
        failures.len(),
        failures.join("\n"),
        roost
            .log_text()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
