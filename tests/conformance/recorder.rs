//! The recording backend of the conformance suite: keeps the exact bytes of every connection
//! and answers each complete request with `200` and `seen METHOD TARGET`.

use super::http1;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each connection's bytes, in the order they were accepted.
type Connections = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A backend that records the exact bytes of every connection and answers each complete
/// request with `200` and `seen METHOD TARGET`.
pub struct Recorder {
    pub addr: SocketAddr,
    conns: Connections,
    taken: Mutex<Vec<usize>>,
    received: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().unwrap();
        let conns = Connections::default();
        let received = Arc::new(AtomicUsize::new(0));
        let (list, count) = (conns.clone(), received.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let record = Arc::new(Mutex::new(Vec::new()));
                list.lock().unwrap().push(record.clone());
                let count = count.clone();
                std::thread::spawn(move || serve(conn, &record, &count));
            }
        });
        Recorder {
            addr,
            conns,
            taken: Mutex::new(Vec::new()),
            received,
        }
    }

    /// Waits until no byte has arrived for a while (the proxy may still be sending what a
    /// case made it forward), then takes each connection's bytes since the last call.
    pub fn take(&self) -> Vec<Vec<u8>> {
        let mut last = self.received.load(Ordering::SeqCst);
        let mut quiet_since = Instant::now();
        let start = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(250)
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(25));
            let now = self.received.load(Ordering::SeqCst);
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        let conns = self.conns.lock().unwrap();
        let mut taken = self.taken.lock().unwrap();
        taken.resize(conns.len(), 0);
        let mut out = Vec::new();
        for (conn, from) in conns.iter().zip(taken.iter_mut()) {
            let bytes = conn.lock().unwrap();
            if bytes.len() > *from {
                out.push(bytes[*from..].to_vec());
                *from = bytes.len();
            }
        }
        out
    }
}

fn serve(mut conn: TcpStream, record: &Mutex<Vec<u8>>, count: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut at = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        record.lock().unwrap().extend_from_slice(&chunk[..n]);
        count.fetch_add(n, Ordering::SeqCst);
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match http1::request(&buf[at..]) {
                Ok((req, used)) => {
                    at += used;
                    let body = format!("seen {} {}\n", req.method, req.target);
                    let close = req.wants_close();
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{}\r\n",
                        body.len(),
                        if close { "Connection: close\r\n" } else { "" }
                    );
                    if req.method != "HEAD" {
                        answer.push_str(&body);
                    }
                    if conn.write_all(answer.as_bytes()).is_err() || close {
                        // Keep recording what else arrives: a proxy must not send more.
                        let _ = conn.shutdown(Shutdown::Write);
                    }
                }
                Err(http1::Split::Partial) => break,
                // Unparseable: recorded; not answered (the proxy sees a hanging backend).
                Err(http1::Split::Invalid(_)) => break,
            }
        }
    }
}
