//! Connection guard: the two limits Pingora's HTTP service has no setting for.
//!
//! - `limits.max_connections`: a connection beyond it gets `503` and is closed at once.
//! - `timeouts.client_header`: a request header must be complete within this time, counted
//!   from the connection's start (first request) or from the request's first byte (later
//!   requests on a keep-alive connection). Pingora's read timeout restarts with every read,
//!   so a client trickling a header one byte a second (slowloris) would hold a connection
//!   for days; here it gets `408` and is closed.
//!
//! [`Guard`] wraps every accepted stream in a [`GuardedStream`] that watches the bytes read
//! for the end of the header (`\r\n\r\n`); [`Rearm`] sits between Pingora's keep-alive loop
//! and the proxy and re-arms the clock before each further request on the connection.
//!
//! It also keeps a stop or hot upgrade from losing requests: Pingora's cleanup, when the
//! listener closes, drops every connection still waiting for a request header. That is meant
//! for idle keep-alive connections, but it also drops connections accepted in the last moments
//! before the listener closed whose first request is still on its way, and requests whose
//! header has only partly arrived; their clients would see the connection closed without an
//! answer. [`Guard`] lets those headers arrive before it hands on to Pingora's cleanup.

use crate::policy::head_scan::{HeadScan, HeadScanner};
use crate::policy::refusal::Refusal;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora::server::ShutdownWatch;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Connection and header-time limits of one service, read at each new connection.
pub trait GuardLimits: Send + Sync {
    fn max_connections(&self) -> usize;
    fn header_timeout(&self) -> Duration;
    /// A connection was closed for `reason` (for the metrics and the debug log).
    fn refused(&self, reason: &'static str);
}

/// After the listener closed: time for the tasks of the connections it accepted last to start
/// (and be counted) before the count of headers in progress is read.
const SETTLE: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(10);

/// The `ServerApp` of a proxy service: limits connections and wraps their streams.
pub struct Guard<A> {
    inner: Arc<Rearm<A>>,
    limits: Arc<dyn GuardLimits>,
    open: Arc<AtomicUsize>,
    /// Connections in the middle of a request header: from their start until the first
    /// header is read, and from the first byte of each later one until it is complete.
    reading_header: Arc<AtomicUsize>,
}

impl<A> Guard<A> {
    pub fn new(app: A, limits: Arc<dyn GuardLimits>) -> Self {
        Self {
            inner: Arc::new(Rearm(Arc::new(app))),
            limits,
            open: Arc::new(AtomicUsize::new(0)),
            reading_header: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guard<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (open, count) = Counted::new(&self.open);
        if count > self.limits.max_connections() {
            self.limits.refused("too_many_connections");
            // Best effort: the client learns why; nothing is read from it.
            let _ = stream
                .write_all(&Refusal::too_many_connections().to_http1())
                .await;
            let _ = stream.flush().await;
            Shutdown::shutdown(&mut *stream).await;
            return None;
        }
        let guarded = GuardedStream::new(
            stream,
            Arc::clone(&self.limits),
            open,
            Arc::clone(&self.reading_header),
        );
        // The blanket `ServerApp` impl runs Pingora's HTTP/1 keep-alive loop over `Rearm`.
        self.inner.process_new(Box::new(guarded), shutdown).await
    }

    /// Runs once the listener has closed (stop or hot upgrade). Pingora's cleanup drops every
    /// connection waiting for a request header; first let the headers in progress arrive
    /// (a client that never completes one is waited for at most the header timeout, and the
    /// grace period bounds it all).
    async fn cleanup(&self) {
        let deadline = Instant::now() + self.limits.header_timeout();
        tokio::time::sleep(SETTLE).await;
        let waited_for = self.reading_header.load(Ordering::Relaxed);
        while self.reading_header.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if waited_for > 0 {
            log::debug!("listener closed: waited for {waited_for} request header(s) in progress");
        }
        self.inner.0.http_cleanup().await;
    }
}

/// Holds one unit of a shared count for as long as it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    /// Counts one more; returns the holder and the count including it.
    fn new(counter: &Arc<AtomicUsize>) -> (Self, usize) {
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        (Self(Arc::clone(counter)), count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Re-arms the header clock of the connection before each request after the first.
pub struct Rearm<A>(Arc<A>);

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Rearm<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if let Some(guarded) = session
            .stream()
            .and_then(|s| s.as_any().downcast_ref::<GuardedStream>())
        {
            guarded.next_request();
        }
        self.0.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.0.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.0.server_options()
    }

    async fn http_cleanup(&self) {
        self.0.http_cleanup().await
    }
}

/// Header clock states.
const RUNNING: u8 = 0; // counting since the connection started
const WAITING: u8 = 1; // a later request: starts counting at its first byte
const DONE: u8 = 2; // the header is complete: no limit (the body has its own timeout)

/// A client stream that enforces the header deadline on reads.
pub struct GuardedStream {
    inner: Stream,
    limits: Arc<dyn GuardLimits>,
    timeout: Duration,
    state: AtomicU8,
    /// When the header being read must be complete.
    deadline: Instant,
    /// Armed only while a read of an unfinished header waits for more bytes: most headers
    /// arrive in one read and never need a timer (a timer per request cost ~1 µs).
    timer: Option<Pin<Box<Sleep>>>,
    /// Watches the header bytes for its end and for what must be refused.
    scanner: HeadScanner,
    _open: Counted,
    /// Counts this connection among those reading a header while it does: `in_header` is
    /// `Some` exactly while `state` is `RUNNING`.
    reading_header: Arc<AtomicUsize>,
    in_header: Option<Counted>,
}

impl GuardedStream {
    fn new(
        inner: Stream,
        limits: Arc<dyn GuardLimits>,
        open: Counted,
        reading_header: Arc<AtomicUsize>,
    ) -> Self {
        let timeout = limits.header_timeout();
        Self {
            inner,
            limits,
            timeout,
            state: AtomicU8::new(RUNNING),
            deadline: Instant::now() + timeout,
            timer: None,
            scanner: HeadScanner::default(),
            _open: open,
            in_header: Some(Counted::new(&reading_header).0),
            reading_header,
        }
    }

    /// Called before each request; the first one is already counting.
    fn next_request(&self) {
        let _ = self
            .state
            .compare_exchange(DONE, WAITING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Answers `408` and fails the read: the header did not arrive in time.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.limits.refused("header_timeout");
        // Best effort, like NGINX's 408: the socket's send buffer is empty here.
        let _ = Pin::new(&mut self.inner).poll_write(cx, &Refusal::header_timeout().to_http1());
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request header not complete within timeouts.client_header",
        )))
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let state = this.state.load(Ordering::Relaxed);
        if let (RUNNING, Some(timer)) = (state, this.timer.as_mut()) {
            if timer.as_mut().poll(cx).is_ready() {
                return this.timed_out(cx);
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before && state != DONE => {
                if state == WAITING {
                    // A later request starts counting at its first byte.
                    this.state.store(RUNNING, Ordering::Relaxed);
                    this.deadline = Instant::now() + this.timeout;
                    this.timer = None;
                    this.scanner = HeadScanner::default();
                    this.in_header = Some(Counted::new(&this.reading_header).0);
                }
                match this.scanner.feed(&buf.filled()[before..]) {
                    HeadScan::More => {}
                    HeadScan::Complete(_) => {
                        this.state.store(DONE, Ordering::Relaxed);
                        this.timer = None;
                        this.in_header = None;
                    }
                    HeadScan::Reject(reason) => {
                        // The bytes are not handed on: Pingora never parses this request.
                        buf.set_filled(before);
                        this.limits.refused("bad_header");
                        log::debug!("refused a request header: {reason}");
                        let _ = Pin::new(&mut this.inner)
                            .poll_write(cx, &Refusal::malformed_header().to_http1());
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            reason,
                        )));
                    }
                }
            }
            Poll::Pending if state == RUNNING => {
                // An unfinished header waits for bytes: wake up at the deadline.
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return this.timed_out(cx);
                }
            }
            _ => {}
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("state", &self.state)
            .finish()
    }
}
