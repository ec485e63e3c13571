//! Connection guard: the two limits Pingora's HTTP service has no setting for.
//!
//! - `limits.max_connections`: a connection beyond it gets `503` and is closed at once.
//! - `timeouts.client_header`: a request header must be complete within this time, counted
//!   from the connection's start (first request) or from the request's first byte (later
//!   requests on a keep-alive connection). Pingora's read timeout restarts with every read,
//!   so a client trickling a header one byte a second (slowloris) would hold a connection
//!   for days; here it gets `408` and is closed.
//! - `timeouts.keepalive`: the wait for a next request on a keep-alive connection. Pingora
//!   would arm a new timer for every request it reads; here one timer per connection is
//!   reset for each wait, and only when the read actually waits (the proxy tells Pingora to
//!   keep connections with no timeout of its own).
//!
//! [`Guard`] wraps every accepted stream in a [`GuardedStream`] that runs the bytes read
//! through [`Framing`] (where each request's head and body end, strictly) before Pingora sees
//! them: a request it refuses gets `400` and is never parsed by Pingora. When it follows
//! pipelined requests that are fine, those are handed on and answered first; the refusal
//! comes when Pingora reads the refused one ([`Rearm`] sits between Pingora's keep-alive loop
//! and the proxy and tells the stream each time Pingora starts reading a request). A fault in
//! the body of a request already handed on fails Pingora's body read instead.
//!
//! It also keeps a stop or hot upgrade from losing requests: Pingora's cleanup, when the
//! listener closes, drops every connection still waiting for a request header. That is meant
//! for idle keep-alive connections, but it also drops connections accepted in the last moments
//! before the listener closed whose first request is still on its way, and requests whose
//! header has only partly arrived; their clients would see the connection closed without an
//! answer. [`Guard`] lets those headers arrive before it hands on to Pingora's cleanup.

use crate::policy::framing::{Framing, Refused};
use crate::policy::refusal::Refusal;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Shutdown, Stream};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Connection and header-time limits of one service, read at each new connection.
pub trait GuardLimits: Send + Sync {
    fn max_connections(&self) -> usize;
    fn header_timeout(&self) -> Duration;
    /// `timeouts.keepalive`: how long a keep-alive connection may wait for its next request
    /// (read at each wait, so a reload applies to open connections).
    fn keepalive_timeout(&self) -> Duration;
    /// `limits.max_body`, for chunked bodies.
    fn max_body(&self) -> u64;
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
    /// Set once the listener has closed and Pingora's cleanup has dropped the idle
    /// connections: from then on every open connection is one with a request in flight.
    cleaned_up: Arc<AtomicBool>,
}

impl<A> Guard<A> {
    pub fn new(app: A, limits: Arc<dyn GuardLimits>) -> Self {
        Self {
            inner: Arc::new(Rearm(Arc::new(app))),
            limits,
            open: Arc::new(AtomicUsize::new(0)),
            reading_header: Arc::new(AtomicUsize::new(0)),
            cleaned_up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// What a stopping process asks of this listener (see [`Connections::finished`]).
    pub fn connections(&self) -> Connections {
        Connections {
            open: Arc::clone(&self.open),
            cleaned_up: Arc::clone(&self.cleaned_up),
        }
    }
}

/// The client connections of one listener, as a stopping process sees them.
#[derive(Debug, Clone)]
pub struct Connections {
    open: Arc<AtomicUsize>,
    cleaned_up: Arc<AtomicBool>,
}

impl Connections {
    /// The listener has closed, its idle connections are gone, and no connection is left:
    /// nothing of this service is in flight.
    pub fn finished(&self) -> bool {
        self.cleaned_up.load(Ordering::Acquire) && self.open.load(Ordering::Acquire) == 0
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
        self.cleaned_up.store(true, Ordering::Release);
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

/// Tells the connection's stream that Pingora starts reading another request (see
/// [`GuardedStream::next_request`]).
pub struct Rearm<A>(Arc<A>);

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Rearm<A> {
    /// Written out instead of `async fn`: the work is done before the request's future is made,
    /// and the inner app's (boxed) future is returned as it is. An `async fn` here would box
    /// a second future around the first and move the session into it: one allocation and two
    /// moves of the session per request for nothing.
    fn process_new_http<'a, 'b, 'f>(
        self: &'a Arc<Self>,
        session: ServerSession,
        shutdown: &'b ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        if let Some(guarded) = session
            .stream()
            .and_then(|s| s.as_any().downcast_ref::<GuardedStream>())
        {
            guarded.next_request();
        }
        self.0.process_new_http(session, shutdown)
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

/// A client stream that enforces the header deadline on reads and hands Pingora only
/// requests whose framing [`Framing`] accepts.
pub struct GuardedStream {
    inner: Stream,
    limits: Arc<dyn GuardLimits>,
    timeout: Duration,
    /// When the header being read must be complete.
    deadline: Instant,
    /// Armed only while a read of an unfinished header waits for more bytes: most headers
    /// arrive in one read and never need a timer (a timer per request cost ~1 µs).
    timer: Option<Pin<Box<Sleep>>>,
    /// Follows every request on the connection (pipelined ones too) and says what to refuse.
    framing: Framing,
    /// Requests Pingora has started to read on this connection.
    sessions: AtomicUsize,
    /// Whether anything was written since Pingora started reading the current request (its
    /// answer has begun).
    answered: AtomicBool,
    /// A refused request that follows requests still being answered: refused when Pingora
    /// comes to read it, so the earlier ones get their answers first, in order.
    pending: Option<Refused>,
    _open: Counted,
    /// Counts this connection among those reading a header while it does: `Some` from the
    /// connection's start until its first header is complete, and from the first byte of
    /// each later header until it is complete (the header clock runs exactly then).
    reading_header: Arc<AtomicUsize>,
    in_header: Option<Counted>,
    /// The keep-alive timer, kept for the connection's life and reset for each wait between
    /// requests; `idle_armed` says whether it is set for the current wait.
    idle: Option<Pin<Box<Sleep>>>,
    idle_armed: bool,
}

impl GuardedStream {
    fn new(
        inner: Stream,
        limits: Arc<dyn GuardLimits>,
        open: Counted,
        reading_header: Arc<AtomicUsize>,
    ) -> Self {
        let timeout = limits.header_timeout();
        let framing = Framing::new(limits.max_body());
        Self {
            inner,
            limits,
            timeout,
            deadline: Instant::now() + timeout,
            timer: None,
            framing,
            sessions: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            pending: None,
            _open: open,
            in_header: Some(Counted::new(&reading_header).0),
            reading_header,
            idle: None,
            idle_armed: false,
        }
    }

    /// Called before Pingora reads each request, the first included. Once it has started
    /// reading more requests than were handed on whole, every earlier one is answered.
    fn next_request(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.answered.store(false, Ordering::Relaxed);
    }

    /// Whether Pingora is reading the request after the last one handed on whole.
    fn reading_next(&self) -> bool {
        self.sessions.load(Ordering::Relaxed) as u64 > self.framing.completed()
    }

    /// Whether Pingora waits for a request of which no byte has arrived: the keep-alive wait.
    /// Not while a body is read (its pauses are `timeouts.client_body`'s) nor while a request
    /// is answered (Pingora then reads only to notice a client that goes away).
    fn between_requests(&self) -> bool {
        self.in_header.is_none() && self.framing.between_requests() && self.reading_next()
    }

    /// Polls the keep-alive timer, first setting it for this wait if it is not yet; `true`
    /// once the connection waited `timeouts.keepalive` for its next request.
    fn keepalive_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.idle_armed {
            let deadline = Instant::now() + self.limits.keepalive_timeout();
            match self.idle.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.idle_armed = true;
        }
        self.idle
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }

    /// Answers `400` (or `413`) and fails the read.
    fn refuse(&mut self, cx: &mut Context<'_>, refused: Refused) -> Poll<io::Result<()>> {
        self.limits.refused(if refused.in_body {
            "bad_framing"
        } else {
            "bad_header"
        });
        log::debug!("refused a request: {}", refused.reason);
        let answer = Refusal::new(refused.status, refused.reason).to_http1();
        let _ = Pin::new(&mut self.inner).poll_write(cx, &answer);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            refused.reason,
        )))
    }

    /// The header clock runs while a header is on its way: from the connection's start for
    /// the first, from its first byte for a later one.
    fn follow_clock(&mut self) {
        match (self.framing.in_head(), self.in_header.is_some()) {
            (true, false) => {
                self.deadline = Instant::now() + self.timeout;
                self.timer = None;
                self.in_header = Some(Counted::new(&self.reading_header).0);
            }
            (false, true) => {
                self.timer = None;
                self.in_header = None;
            }
            _ => {}
        }
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
        if let Some(refused) = this.pending {
            if this.reading_next() {
                return this.refuse(cx, refused);
            }
            // An earlier request's idle read while it is answered: nothing more for it.
            return Poll::Pending;
        }
        if let (Some(_), Some(timer)) = (&this.in_header, this.timer.as_mut()) {
            if timer.as_mut().poll(cx).is_ready() {
                return this.timed_out(cx);
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.idle_armed = false;
                if let Err(refused) = this.framing.feed(&buf.filled()[before..]) {
                    match refused.start {
                        // Its head went on already: fail the body read, which ends the request
                        // (the backend sees it cut short) and closes the connection; the
                        // client is told why unless its answer has begun.
                        None => {
                            buf.set_filled(before);
                            if !this.answered.load(Ordering::Relaxed) {
                                return this.refuse(cx, refused);
                            }
                            this.limits.refused("bad_framing");
                            log::debug!("refused a request body: {}", refused.reason);
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                refused.reason,
                            )));
                        }
                        // Hand on the requests before it; refuse it when Pingora reads it.
                        Some(start) if start > 0 => {
                            buf.set_filled(before + start);
                            this.pending = Some(refused);
                            this.in_header = None;
                            this.timer = None;
                            return result;
                        }
                        Some(_) => {
                            buf.set_filled(before);
                            if this.reading_next() {
                                return this.refuse(cx, refused);
                            }
                            this.pending = Some(refused);
                            this.in_header = None;
                            this.timer = None;
                            return Poll::Pending;
                        }
                    }
                }
                this.follow_clock();
            }
            Poll::Pending if this.in_header.is_some() => {
                // An unfinished header waits for bytes: wake up at the deadline.
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return this.timed_out(cx);
                }
            }
            // Waited `timeouts.keepalive` for a next request: end of stream, on which Pingora
            // closes the connection quietly (as on its own keep-alive timeout).
            Poll::Pending if this.between_requests() && this.keepalive_expired(cx) => {
                return Poll::Ready(Ok(()));
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
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.answered.store(true, Ordering::Relaxed);
        }
        result
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
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.answered.store(true, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[path = "guard_stream.rs"]
mod stream_traits;
