// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The keep-alive pool of a [`TransportConnector`](super::TransportConnector): its idle
//! connections by peer, without a task per connection.
//!
//! Releasing a connection pushes it on its peer's stack (one short lock, no task, no channel);
//! reusing pops the most recent one, which the connector then checks. What a task per idle
//! connection used to do is done by one sweeper task per pool: every period it closes the idle
//! connections whose idle timeout has passed and those the server closed or sent data on. It is
//! started by the first release into an empty pool and ends when the pool is empty again (or
//! when the pool is dropped: it holds only a weak reference).

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use log::debug;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The longest time between two sweeps: a connection the server closed while idle is closed on
/// this side (instead of sitting in `CLOSE_WAIT`) at most this long after the server's FIN
/// arrives, and an expired one at most this long after its idle timeout.
pub(crate) const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// The shortest time between two sweeps, whatever the idle timeouts.
const MIN_SWEEP_PERIOD: Duration = Duration::from_millis(10);

struct IdleStream {
    stream: Stream,
    since: Instant,
    /// The release's rank: the lowest is the longest idle (instants can be equal).
    order: u64,
    /// `None`: no idle timeout, kept until reused, evicted, or closed by the server.
    expires: Option<Instant>,
}

impl IdleStream {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

#[derive(Default)]
struct Idle {
    /// Per key (`Peer::reuse_hash`), the oldest first. A key with no connection has no entry.
    peers: HashMap<u64, VecDeque<IdleStream>>,
    /// The number of connections in `peers`.
    len: usize,
    /// The `order` of the next release.
    next_order: u64,
    /// The shortest idle timeout a connection was released with, which sets the sweep period.
    shortest_timeout: Option<Duration>,
    /// Whether a sweeper task is running for this pool.
    sweeping: bool,
}

impl Idle {
    /// Takes out the connection idle the longest, over all peers (the LRU eviction). A scan of
    /// the peers' oldest connections, done only when the pool is full.
    fn pop_oldest(&mut self) -> Option<IdleStream> {
        let key = self
            .peers
            .iter()
            .filter_map(|(key, stack)| stack.front().map(|idle| (*key, idle.order)))
            .min_by_key(|(_, order)| *order)?
            .0;
        self.pop_from(key, VecDeque::pop_front)
    }

    fn pop_from(
        &mut self,
        key: u64,
        pop: fn(&mut VecDeque<IdleStream>) -> Option<IdleStream>,
    ) -> Option<IdleStream> {
        let stack = self.peers.get_mut(&key)?;
        let idle = pop(stack);
        if stack.is_empty() {
            self.peers.remove(&key);
        }
        if idle.is_some() {
            self.len -= 1;
        }
        idle
    }

    fn sweep_period(&self) -> Duration {
        self.shortest_timeout.map_or(MAX_SWEEP_PERIOD, |t| {
            t.clamp(MIN_SWEEP_PERIOD, MAX_SWEEP_PERIOD)
        })
    }
}

/// The idle connections of one connector; see the module documentation.
pub(crate) struct IdlePool {
    idle: Mutex<Idle>,
    /// The most connections kept, over all peers; releasing one more evicts the one idle the
    /// longest.
    size: usize,
    /// Called with the idle time of a connection evicted to make room for another.
    evicted_callback: Option<PoolCallback>,
    /// The connector's count of idle connections found with data from the server.
    unexpected_data: Arc<AtomicU64>,
}

impl IdlePool {
    pub(crate) fn new(
        size: usize,
        evicted_callback: Option<PoolCallback>,
        unexpected_data: Arc<AtomicU64>,
    ) -> Self {
        IdlePool {
            idle: Mutex::new(Idle::default()),
            size,
            evicted_callback,
            unexpected_data,
        }
    }

    /// Keeps `stream` for reuse under `key`, evicting the longest idle connection if the pool is
    /// full. `idle_timeout` of zero, or a pool of size zero, closes it instead.
    ///
    /// Returns the sweep period when the caller has to start the sweeper
    /// ([`start_sweeper`]): the pool had none running.
    pub(crate) fn put(
        &self,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
    ) -> Option<Duration> {
        if self.size == 0 || idle_timeout == Some(Duration::ZERO) {
            return None;
        }
        let since = Instant::now();
        let expires = idle_timeout.and_then(|t| since.checked_add(t));
        let mut idle = self.idle.lock();
        let evicted = if idle.len >= self.size {
            idle.pop_oldest()
        } else {
            None
        };
        let order = idle.next_order;
        idle.next_order += 1;
        idle.peers.entry(key).or_default().push_back(IdleStream {
            stream,
            since,
            order,
            expires,
        });
        idle.len += 1;
        if let Some(t) = idle_timeout {
            idle.shortest_timeout = Some(idle.shortest_timeout.map_or(t, |s| s.min(t)));
        }
        let start_sweeper = !idle.sweeping;
        idle.sweeping = true;
        let period = idle.sweep_period();
        drop(idle);

        if let Some(evicted) = evicted {
            debug!("evicting the longest idle connection from the keep-alive pool");
            if let Some(callback) = &self.evicted_callback {
                callback(evicted.since.elapsed());
            }
            // dropping it closes it, outside the lock
        }
        start_sweeper.then_some(period)
    }

    /// The most recently released connection under `key` whose idle timeout has not passed, if
    /// any; the expired ones found on the way are closed. The caller checks that it is still
    /// usable.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let idle = self.idle.lock().pop_from(key, VecDeque::pop_back)?;
            if !idle.expired(now) {
                return Some(idle.stream);
            }
            debug!("idle connection expired");
        }
    }

    /// One round of the sweeper: closes the connections whose idle timeout has passed, and those
    /// the server closed, broke or sent data on (the check a reuse makes, which reads nothing
    /// from a healthy idle connection).
    ///
    /// Returns the period until the next round, or `None` if the pool is empty: the sweeper
    /// ends, and the next release starts another.
    fn sweep(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut closed = Vec::new();
        let next = {
            let mut guard = self.idle.lock();
            let idle = &mut *guard;
            idle.peers.retain(|_, stack| {
                for mut conn in std::mem::take(stack) {
                    if !conn.expired(now)
                        && test_reusable_stream(&mut conn.stream, &self.unexpected_data)
                    {
                        stack.push_back(conn);
                    } else {
                        closed.push(conn);
                    }
                }
                !stack.is_empty()
            });
            idle.len -= closed.len();
            if idle.len == 0 {
                idle.sweeping = false;
                None
            } else {
                Some(idle.sweep_period())
            }
        };
        drop(closed); // closes them, after the lock is released
        next
    }

    /// The number of idle connections.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().len
    }
}

/// Starts the sweeper of `pool` on the current runtime, first round after `period`.
///
/// It holds a weak reference, so it ends with the pool's connector. If its runtime drops it
/// (shutting down), the pool is marked as having no sweeper, so the next release starts one.
pub(crate) fn start_sweeper(pool: &Arc<IdlePool>, period: Duration) {
    struct Running(Option<Weak<IdlePool>>);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(pool) = self.0.take().and_then(|p| p.upgrade()) {
                pool.idle.lock().sweeping = false;
            }
        }
    }

    let mut running = Running(Some(Arc::downgrade(pool)));
    pingora_runtime::current_handle().spawn(async move {
        let mut period = period;
        loop {
            pingora_timeout::sleep(period).await;
            let Some(pool) = running.0.as_ref().and_then(Weak::upgrade) else {
                return; // the connector is gone, and its idle connections with it
            };
            match pool.sweep() {
                Some(next) => period = next,
                None => {
                    // sweep() marked the pool as having no sweeper, under its lock
                    running.0.take();
                    return;
                }
            }
        }
    });
}

/// The pool through [`TransportConnector`](super::TransportConnector)'s API, against TCP servers
/// on loopback.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::super::{ConnectorOptions, TransportConnector};
    use super::*;
    use crate::upstreams::peer::{BasicPeer, Peer};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;

    /// How long a test waits for a condition before it fails.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A TCP server on loopback handing each connection it accepts to the test, which holds it,
    /// closes it (as a server closing an idle connection) or reads it (to see the client close).
    async fn server() -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if accepted.send(conn).is_err() {
                    return;
                }
            }
        });
        (addr, conns)
    }

    /// A new connection to `peer` and the server's side of it.
    async fn connect(
        connector: &TransportConnector,
        peer: &BasicPeer,
        conns: &mut mpsc::UnboundedReceiver<TcpStream>,
    ) -> (Stream, TcpStream) {
        let stream = connector.new_stream(peer).await.unwrap();
        let served = conns.recv().await.unwrap();
        (stream, served)
    }

    fn local_port(stream: &Stream) -> u16 {
        let digest = stream.get_socket_digest().unwrap();
        digest.local_addr().unwrap().as_inet().unwrap().port()
    }

    /// Waits until the server's side `served` sees the connection closed by the client; how
    /// long that took.
    async fn closed_by_client(served: &mut TcpStream) -> Duration {
        let start = Instant::now();
        let read = tokio::time::timeout(PATIENCE, served.read(&mut [0u8; 1])).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the connection was not closed within {PATIENCE:?}: {read:?}"
        );
        start.elapsed()
    }

    /// The kernel's TCP state of this process's IPv4 socket from `local_port` to `remote`
    /// (`/proc/net/tcp`: 01 ESTABLISHED, 08 CLOSE_WAIT, 09 LAST_ACK), `None` once it is gone.
    fn tcp_state(local_port: u16, remote: SocketAddr) -> Option<u8> {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let port = |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap(), 16);
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (port(fields[1]) == Ok(local_port) && port(fields[2]) == Ok(remote.port()))
                .then(|| u8::from_str_radix(fields[3], 16).unwrap())
        })
    }

    const CLOSE_WAIT: u8 = 0x08;

    /// Waits until `condition` holds, checking every 10 ms; fails after [`PATIENCE`].
    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < PATIENCE,
                "{what}: not within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn test_reuse_returns_released_streams_most_recent_first() {
        let (addr, mut conns) = server().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr.to_string());
        let (a, _served_a) = connect(&connector, &peer, &mut conns).await;
        let (b, _served_b) = connect(&connector, &peer, &mut conns).await;
        let (port_a, port_b) = (local_port(&a), local_port(&b));
        let timeout = Some(Duration::from_secs(60));
        connector.release_stream(a, peer.reuse_hash(), timeout);
        connector.release_stream(b, peer.reuse_hash(), timeout);
        assert_eq!(connector.connection_pool.len(), 2);

        let (first, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(reused);
        assert_eq!(local_port(&first), port_b);
        let (second, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(reused);
        assert_eq!(local_port(&second), port_a);
        assert_eq!(connector.connection_pool.len(), 0);
        // none left: a new connection, which the server accepts
        let (_third, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(!reused);
        assert!(conns.recv().await.is_some());

        // another peer's key finds nothing
        connector.release_stream(first, peer.reuse_hash(), timeout);
        let other = BasicPeer::new("127.0.0.1:1");
        assert!(connector.reused_stream(&other).await.is_none());
        assert_eq!(connector.connection_pool.len(), 1);
    }

    #[tokio::test]
    async fn test_expired_stream_is_closed_by_the_sweeper() {
        let (addr, mut conns) = server().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr.to_string());
        let (stream, mut served) = connect(&connector, &peer, &mut conns).await;
        let idle_timeout = Duration::from_millis(200);
        connector.release_stream(stream, peer.reuse_hash(), Some(idle_timeout));

        // nothing reuses it: the sweeper closes it once the timeout has passed, within a period
        // (here the timeout itself) after, give or take a loaded machine's scheduling
        let after = closed_by_client(&mut served).await;
        assert!(after >= idle_timeout, "closed after {after:?}");
        assert!(
            after < idle_timeout * 2 + Duration::from_secs(1),
            "closed after {after:?}"
        );
        assert_eq!(connector.connection_pool.len(), 0);
        let (_stream, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(!reused);
    }

    #[tokio::test]
    async fn test_expired_stream_is_not_reused() {
        let (addr, mut conns) = server().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr.to_string());
        let (stream, mut served) = connect(&connector, &peer, &mut conns).await;
        // put without a sweeper: the check at reuse alone refuses it, and closes it
        let idle_timeout = Duration::from_millis(50);
        assert!(connector
            .connection_pool
            .put(peer.reuse_hash(), stream, Some(idle_timeout))
            .is_some());
        tokio::time::sleep(idle_timeout).await; // until it has expired
        assert!(connector.reused_stream(&peer).await.is_none());
        closed_by_client(&mut served).await;
        assert_eq!(connector.connection_pool.len(), 0);
    }

    #[tokio::test]
    async fn test_stream_the_server_closed_is_not_reused_and_is_closed() {
        let (addr, mut conns) = server().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr.to_string());
        let (stream, served) = connect(&connector, &peer, &mut conns).await;
        let port = local_port(&stream);
        // put without a sweeper, so that the reuse is what finds it closed
        assert!(connector
            .connection_pool
            .put(peer.reuse_hash(), stream, None)
            .is_some());
        drop(served);
        wait_until("the server's FIN", || {
            tcp_state(port, addr) == Some(CLOSE_WAIT)
        })
        .await;
        // the check at reuse knows what the runtime's I/O driver has seen: let it poll once
        // (a yielded task runs again after the driver was polled)
        tokio::task::yield_now().await;
        assert!(connector.reused_stream(&peer).await.is_none());
        assert_ne!(tcp_state(port, addr), Some(CLOSE_WAIT), "closed at reuse");
        assert_eq!(connector.connection_pool.len(), 0);
    }

    #[tokio::test]
    async fn test_stream_the_server_closed_is_closed_by_the_sweeper() {
        let (addr, mut conns) = server().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr.to_string());
        let (stream, served) = connect(&connector, &peer, &mut conns).await;
        let (kept, _served_kept) = connect(&connector, &peer, &mut conns).await;
        let port = local_port(&stream);
        // no idle timeout: only the server's close ends it
        connector.release_stream(kept, peer.reuse_hash(), None);
        connector.release_stream(stream, peer.reuse_hash(), None);
        drop(served);
        // not left in CLOSE_WAIT until a reuse: the sweeper closes it (its period is at most
        // MAX_SWEEP_PERIOD) and keeps the other one
        wait_until("our side closed", || {
            !matches!(tcp_state(port, addr), Some(1) | Some(CLOSE_WAIT))
        })
        .await;
        wait_until("the pool down to one", || {
            connector.connection_pool.len() == 1
        })
        .await;
        let (reused, was_reused) = connector.get_stream(&peer).await.unwrap();
        assert!(was_reused);
        assert_ne!(local_port(&reused), port);
    }

    #[tokio::test]
    async fn test_size_limit_evicts_the_longest_idle() {
        let (addr, mut conns) = server().await;
        let (other_addr, mut other_conns) = server().await;
        let evicted = Arc::new(AtomicUsize::new(0));
        let counted = evicted.clone();
        let mut options = ConnectorOptions::new(2);
        options.keepalive_pool_callback = Some(Arc::new(move |_idle: Duration| {
            counted.fetch_add(1, Ordering::Relaxed);
        }));
        let connector = TransportConnector::new(Some(options));
        let peer = BasicPeer::new(&addr.to_string());
        let other = BasicPeer::new(&other_addr.to_string());
        let (a, mut served_a) = connect(&connector, &peer, &mut conns).await;
        let (b, mut served_b) = connect(&connector, &other, &mut other_conns).await;
        let (c, _served_c) = connect(&connector, &peer, &mut conns).await;
        let port_c = local_port(&c);
        let timeout = Some(Duration::from_secs(60));

        connector.release_stream(a, peer.reuse_hash(), timeout);
        connector.release_stream(b, other.reuse_hash(), timeout);
        assert_eq!(evicted.load(Ordering::Relaxed), 0);
        // full: the longest idle (a) goes, over all peers, and is closed
        connector.release_stream(c, peer.reuse_hash(), timeout);
        assert_eq!(connector.connection_pool.len(), 2);
        assert_eq!(evicted.load(Ordering::Relaxed), 1);
        closed_by_client(&mut served_a).await;

        let (s, reused) = connector.get_stream(&peer).await.unwrap();
        assert!(reused);
        assert_eq!(local_port(&s), port_c);
        assert!(connector.reused_stream(&peer).await.is_none());
        // now the other peer's b is the longest idle, and goes
        let (d, _served_d) = connect(&connector, &peer, &mut conns).await;
        connector.release_stream(s, peer.reuse_hash(), timeout);
        connector.release_stream(d, peer.reuse_hash(), timeout);
        assert_eq!(evicted.load(Ordering::Relaxed), 2);
        closed_by_client(&mut served_b).await;
        assert!(connector.reused_stream(&other).await.is_none());
        assert_eq!(connector.connection_pool.len(), 2);
    }

    #[tokio::test]
    async fn test_sweeper_ends_with_an_empty_pool_and_restarts() {
        let (addr, mut conns) = server().await;
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr.to_string());
        for _ in 0..2 {
            let (stream, mut served) = connect(&connector, &peer, &mut conns).await;
            connector.release_stream(stream, peer.reuse_hash(), Some(Duration::from_millis(20)));
            closed_by_client(&mut served).await;
            // the round that emptied the pool ended the sweeper, under the pool's lock
            wait_until("no sweeper", || {
                !connector.connection_pool.idle.lock().sweeping
            })
            .await;
        }
    }

    #[tokio::test]
    async fn test_zero_size_or_timeout_keeps_nothing() {
        let (addr, mut conns) = server().await;
        let peer = BasicPeer::new(&addr.to_string());
        for (size, timeout) in [(0, None), (8, Some(Duration::ZERO))] {
            let connector = TransportConnector::new(Some(ConnectorOptions::new(size)));
            let (stream, mut served) = connect(&connector, &peer, &mut conns).await;
            connector.release_stream(stream, peer.reuse_hash(), timeout);
            assert_eq!(connector.connection_pool.len(), 0);
            closed_by_client(&mut served).await;
        }
    }
}
