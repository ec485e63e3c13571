//! The access log: one line per request, text or JSON, written by a background thread so
//! that a slow disk never holds up a request. The request path only fills an [`Entry`] and
//! hands it over a bounded channel; when the writer falls behind, lines are dropped and
//! counted (`roost_access_log_dropped_total`) instead of blocking the proxy. While requests
//! come in, the writer drains the channel on a short tick rather than being woken per line,
//! and a stopping process waits for it to write the last lines.

use crate::config::{AccessLogFormat, AccessLogSettings, LogTarget};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounter;
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{channel, Receiver, Sender};

/// Lines buffered between the proxy and the writer: about two seconds of a busy proxy, for a
/// disk that stalls. Tokio's channel allocates its slots in small blocks as the queue fills and
/// reuses them, so an idle or keeping-up log costs kilobytes; std's `sync_channel` allocated
/// all 64 Ki slots up front (+14 MB RSS).
const QUEUE: usize = 64 * 1024;
/// Paths longer than this are cut in the log (the request itself is not affected).
const MAX_PATH: usize = 2048;
/// While lines keep coming, the writer looks for new ones this often. Woken for each line
/// instead, it cost the proxy a system call and a context switch per request (about a fifth
/// of a request's CPU time in the benchmark).
const TICK: Duration = Duration::from_millis(20);
/// After this many empty ticks (one second) the writer sleeps until the next line, so an
/// idle proxy stays idle.
const IDLE_TICKS: u32 = 50;

/// One finished request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub time: SystemTime,
    pub service: Arc<str>,
    pub client: Option<IpAddr>,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The affinity key when it was valid (bounded, printable by then).
    pub key: Option<String>,
    pub backend: Option<SocketAddr>,
    pub duration: Duration,
    /// Response body bytes sent to the client.
    pub bytes: usize,
    /// The key was sent away from the backend the sticky table recorded for it: why
    /// (`owner_down`, `removed`, `drained`).
    pub moved: Option<&'static str>,
}

/// The proxies' end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AccessLog {
    sender: Sender<Entry>,
    dropped: IntCounter,
    progress: Arc<Progress>,
}

/// Lines queued and lines written out, so that a stopping process knows when the log is
/// complete on disk (see [`AccessLog::written`]).
#[derive(Debug, Default)]
pub struct Progress {
    queued: AtomicU64,
    /// Lines written and flushed (or given up on), counted by the writer at each flush.
    done: AtomicU64,
}

impl Progress {
    /// `n` lines queued, none written yet (tests of what waits for the log).
    #[cfg(test)]
    pub(crate) fn queued(n: u64) -> Self {
        Self {
            queued: AtomicU64::new(n),
            done: AtomicU64::new(0),
        }
    }

    /// Whether every line queued so far has been written and flushed.
    pub fn complete(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.queued.load(Ordering::Acquire)
    }
}

impl AccessLog {
    pub fn log(&self, entry: Entry) {
        // Counted before it is queued: the writer can never have done more than was queued.
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        if self.sender.try_send(entry).is_err() {
            self.progress.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
        }
    }

    /// The log's progress, for the stop: it holds no sender, so the writer still ends when the
    /// proxies do.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }
}

/// Create the log and the background service that writes it. The thread is started by the
/// service (after a daemon has forked), not here.
/// `dropped` counts lines lost to a full queue or a failed write.
pub fn new(settings: &AccessLogSettings, dropped: IntCounter) -> (AccessLog, AccessLogWriter) {
    with_queue(settings, dropped, QUEUE)
}

fn with_queue(
    settings: &AccessLogSettings,
    dropped: IntCounter,
    queue: usize,
) -> (AccessLog, AccessLogWriter) {
    let (sender, receiver) = channel(queue);
    let progress = Arc::new(Progress::default());
    (
        AccessLog {
            sender,
            dropped: dropped.clone(),
            progress: Arc::clone(&progress),
        },
        AccessLogWriter {
            settings: settings.clone(),
            receiver: Mutex::new(Some(receiver)),
            dropped,
            progress,
        },
    )
}

pub struct AccessLogWriter {
    settings: AccessLogSettings,
    receiver: Mutex<Option<Receiver<Entry>>>,
    dropped: IntCounter,
    progress: Arc<Progress>,
}

#[async_trait]
impl BackgroundService for AccessLogWriter {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let out: Box<dyn Write + Send> = match &self.settings.target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::Stderr => Box::new(std::io::stderr()),
            LogTarget::File(path) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => Box::new(f),
                Err(e) => {
                    log::error!(
                        "access log: cannot open {}: {e}; no access log",
                        path.display()
                    );
                    // Nothing will be written: a stop need not wait for it.
                    self.progress.done.store(u64::MAX, Ordering::Release);
                    return;
                }
            },
        };
        let format = self.settings.format;
        let dropped = self.dropped.clone();
        let progress = Arc::clone(&self.progress);
        // A blocking task, because writing blocks. Pingora shuts this service's runtime down
        // with `graceful_shutdown_timeout_seconds` and tokio waits that long for blocking
        // tasks: the writer returns once the proxies, and with them every sender, are gone,
        // so the last requests' lines are written before the process exits.
        let writer = tokio::task::spawn_blocking(move || {
            write_all(receiver, BufWriter::new(out), format, &dropped, &progress)
        });
        if let Err(e) = writer.await {
            log::error!("access log: its writer stopped: {e}");
        }
    }
}

/// Write lines until every sender is gone, flushing whenever the queue is empty: batches under
/// load, no line left sitting in the buffer when it is quiet. Blocks (a thread of its own).
fn write_all(
    mut receiver: Receiver<Entry>,
    mut out: impl Write,
    format: AccessLogFormat,
    dropped: &IntCounter,
    progress: &Progress,
) {
    let mut line = String::with_capacity(256);
    let mut idle_ticks = IDLE_TICKS;
    let mut taken = 0u64;
    loop {
        let entry = match receiver.try_recv() {
            Ok(entry) => entry,
            Err(TryRecvError::Empty) => {
                let _ = out.flush();
                progress.done.store(taken, Ordering::Release);
                if idle_ticks < IDLE_TICKS {
                    idle_ticks += 1;
                    std::thread::sleep(TICK);
                    continue;
                }
                // Quiet: wait to be woken by the next line (or by the last sender going).
                match receiver.blocking_recv() {
                    Some(entry) => entry,
                    None => return,
                }
            }
            Err(TryRecvError::Disconnected) => {
                let _ = out.flush();
                progress.done.store(taken, Ordering::Release);
                return;
            }
        };
        idle_ticks = 0;
        taken += 1;
        line.clear();
        match format {
            AccessLogFormat::Text => text_line(&entry, &mut line),
            AccessLogFormat::Json => json_line(&entry, &mut line),
        }
        if out.write_all(line.as_bytes()).is_err() {
            dropped.inc();
        }
    }
}

/// `2026-11-25T09:50:06.123Z flyingpigeon 10.1.2.3 "GET /wps?..." 200 key=abc
/// backend=10.0.0.11:8093 12.345ms 1234B`; `-` for what is absent; ` moved=REASON` at the
/// end of a request whose key left its recorded backend.
pub fn text_line(e: &Entry, out: &mut String) {
    let time = humantime::format_rfc3339_millis(e.time);
    let _ = write!(out, "{time} {} ", e.service);
    match e.client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push('-'),
    }
    let _ = write!(out, " \"{} ", e.method);
    push_escaped(out, &e.path);
    let _ = write!(out, "\" {} key=", e.status);
    out.push_str(e.key.as_deref().unwrap_or("-"));
    out.push_str(" backend=");
    match e.backend {
        Some(b) => {
            let _ = write!(out, "{b}");
        }
        None => out.push('-'),
    }
    let _ = write!(
        out,
        " {:.3}ms {}B",
        e.duration.as_secs_f64() * 1000.0,
        e.bytes
    );
    if let Some(why) = e.moved {
        let _ = write!(out, " moved={why}");
    }
    out.push('\n');
}

pub fn json_line(e: &Entry, out: &mut String) {
    let mut path = String::new();
    push_escaped(&mut path, &e.path);
    let value = serde_json::json!({
        "time": humantime::format_rfc3339_millis(e.time).to_string(),
        "service": &*e.service,
        "client": e.client.map(|ip| ip.to_string()),
        "method": e.method,
        "path": path,
        "status": e.status,
        "machineid": e.key,
        "backend": e.backend.map(|b| b.to_string()),
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "bytes": e.bytes,
        "moved": e.moved,
    });
    out.push_str(&value.to_string());
    out.push('\n');
}

/// Copy a client-controlled string into a log line: bounded, with quotes, backslashes and
/// anything unprintable escaped so a line is always one line.
fn push_escaped(out: &mut String, s: &str) {
    for (i, c) in s.chars().enumerate() {
        if i >= MAX_PATH {
            out.push_str("...");
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_064_206_123),
            service: "fp".into(),
            client: Some("10.1.2.3".parse().unwrap()),
            method: "GET".into(),
            path: "/wps?service=WPS&request=GetCapabilities".into(),
            status: 200,
            key: Some("abc".into()),
            backend: Some("10.0.0.11:8093".parse().unwrap()),
            duration: Duration::from_micros(12_345),
            bytes: 1234,
            moved: None,
        }
    }

    #[test]
    fn a_moved_request_is_marked() {
        let mut e = entry();
        e.moved = Some("owner_down");
        let mut line = String::new();
        text_line(&e, &mut line);
        assert!(line.ends_with(" 1234B moved=owner_down\n"), "{line}");
        line.clear();
        json_line(&e, &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["moved"], "owner_down");
    }

    #[test]
    fn text_format() {
        let mut line = String::new();
        text_line(&entry(), &mut line);
        assert_eq!(
            line,
            "2025-11-25T09:50:06.123Z fp 10.1.2.3 \"GET /wps?service=WPS&request=GetCapabilities\" 200 key=abc backend=10.0.0.11:8093 12.345ms 1234B\n"
        );
    }

    #[test]
    fn text_format_of_a_refusal() {
        let mut e = entry();
        e.key = None;
        e.backend = None;
        e.client = None;
        e.status = 400;
        let mut line = String::new();
        text_line(&e, &mut line);
        assert!(line.contains(" - \"GET "), "{line}");
        assert!(line.contains("400 key=- backend=- "), "{line}");
    }

    #[test]
    fn json_format() {
        let mut line = String::new();
        json_line(&entry(), &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["service"], "fp");
        assert_eq!(v["machineid"], "abc");
        assert_eq!(v["backend"], "10.0.0.11:8093");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["bytes"], 1234);
        assert!(line.ends_with("}\n"));
    }

    #[test]
    fn hostile_paths_stay_on_one_bounded_line() {
        let mut e = entry();
        e.path = format!("/a\"b\\c\nd\re\u{0}{}", "x".repeat(10_000));
        let mut line = String::new();
        text_line(&e, &mut line);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains("/a\\\"b\\\\c\\u{a}d\\u{d}e\\u{0}x"), "{line}");
        assert!(line.len() < MAX_PATH + 300);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let settings = AccessLogSettings {
            format: AccessLogFormat::Text,
            target: LogTarget::Stderr,
        };
        let dropped = IntCounter::new("d", "d").unwrap();
        // No writer thread runs: the queue fills and stays full.
        let (log, _writer) = with_queue(&settings, dropped.clone(), 2);
        for _ in 0..5 {
            log.log(entry());
        }
        assert_eq!(dropped.get(), 3);
    }

    #[test]
    fn writer_writes_every_line_and_stops_when_the_log_is_dropped() {
        let (tx, rx) = channel(16);
        for _ in 0..3 {
            tx.try_send(entry()).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        let dropped = IntCounter::new("d", "d").unwrap();
        write_all(
            rx,
            &mut out,
            AccessLogFormat::Text,
            &dropped,
            &Progress::default(),
        );
        assert_eq!(dropped.get(), 0);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 3);
    }

    #[test]
    fn progress_is_complete_once_every_queued_line_is_flushed() {
        let (sender, rx) = channel(16);
        let dropped = IntCounter::new("d", "d").unwrap();
        let progress = Arc::new(Progress::default());
        let log = AccessLog {
            sender,
            dropped: dropped.clone(),
            progress: Arc::clone(&progress),
        };
        assert!(progress.complete(), "nothing queued yet");
        log.log(entry());
        log.log(entry());
        assert!(!progress.complete(), "two lines queued, none written");
        drop(log);
        let mut out = Vec::new();
        write_all(rx, &mut out, AccessLogFormat::Text, &dropped, &progress);
        assert!(progress.complete());
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    }
}
