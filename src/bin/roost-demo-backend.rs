//! A small HTTP/1.1 server that answers with its own name: the stand-in WPS backend for
//! `make run` and for the integration tests. Thread per connection, keep-alive, bodies by
//! Content-Length or chunked. Not part of the proxy.
//!
//! Routes:
//! - `GET /health` → `ok`
//! - `GET /echo` → the request line and headers as received
//! - `GET /slow?ms=N` → the name, after N milliseconds
//! - `GET /bytes?n=N` → N bytes of payload
//! - `GET /status/N` → the name, with status N (200..=599; e.g. the 503 of an overloaded server)
//! - `GET /job/<uuid>?split=N` → a WPS Execute response (XML) whose `statusLocation` names job
//!   `<uuid>`, sent chunked in pieces of N bytes (default 7), for `wps_affinity`; the job is
//!   accepted (`ProcessAccepted`) and runs until it is finished
//! - `GET /outputs/<uuid>.xml` → that job's WPS 1.0.0 status document: `ProcessStarted` while
//!   it runs, `ProcessSucceeded` once finished (a job this backend never accepted: the name)
//! - `GET /wps?request=GetStatus&jobid=<uuid>` → the same as a WPS 2.0 `StatusInfo`
//!   (`Running`, `Succeeded`)
//! - `GET /finish/<uuid>` → the job succeeds; answers `<name> finished <uuid>`
//! - any request with a body → `<name> received <N> bytes`
//! - anything else → `<name>`
//!
//! Every answer carries `X-Backend: <name>`.
//!
//! Usage: `roost-demo-backend --name NAME --listen 127.0.0.1:0`; prints `listening on ADDR`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The jobs this backend accepted: uuid → finished.
type Jobs = Arc<Mutex<HashMap<String, bool>>>;

fn main() {
    let mut name = String::from("backend");
    let mut listen = String::from("127.0.0.1:0");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = args.next().expect("--name needs a value"),
            "--listen" => listen = args.next().expect("--listen needs a value"),
            other => {
                eprintln!("usage: roost-demo-backend --name NAME --listen ADDR (got {other})");
                std::process::exit(2);
            }
        }
    }
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("roost-demo-backend: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", listener.local_addr().expect("bound"));
    io::stdout().flush().expect("stdout");
    let jobs = Jobs::default();
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        let jobs = Arc::clone(&jobs);
        std::thread::spawn(move || {
            let _ = serve(stream, &name, &jobs);
        });
    }
}

struct Request {
    method: String,
    target: String,
    head: String,
    body_len: usize,
    close: bool,
}

fn serve(stream: TcpStream, name: &str, jobs: &Jobs) -> io::Result<()> {
    // A head and a body are two writes: without this, Nagle holds the body until the client
    // ACKs the head, and its delayed ACK makes every request on a reused connection ~40 ms.
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(req) = read_request(&mut reader)? {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let text_param = |k: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v)
        };
        let param = |k: &str| text_param(k).and_then(|v| v.parse::<u64>().ok());
        if let Some(job) = path.strip_prefix("/job/") {
            jobs.lock().unwrap().insert(job.to_string(), false);
            let split = param("split").unwrap_or(7).max(1) as usize;
            execute_response(&mut writer, name, job, split)?;
            if req.close {
                break;
            }
            continue;
        }
        // A known job's status document, WPS 1.0.0 or 2.0.
        let status_of = |job: &str| jobs.lock().unwrap().get(job).copied();
        let status_doc = match (path.strip_prefix("/outputs/"), text_param("jobid")) {
            (Some(file), _) => file
                .strip_suffix(".xml")
                .and_then(|job| Some(status_document(name, job, status_of(job)?))),
            (None, Some(job)) if path == "/wps" => {
                status_of(job).map(|finished| status_info(job, finished))
            }
            _ => None,
        };
        if let Some(doc) = status_doc {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nX-Backend: {name}\r\n{}\r\n",
                doc.len(),
                if req.close { "Connection: close\r\n" } else { "" }
            );
            writer.write_all(head.as_bytes())?;
            writer.write_all(doc.as_bytes())?;
            writer.flush()?;
            if req.close {
                break;
            }
            continue;
        }
        let status = path
            .strip_prefix("/status/")
            .and_then(|n| n.parse::<u16>().ok())
            .filter(|n| (200..=599).contains(n))
            .unwrap_or(200);
        let body: Vec<u8> = match path {
            _ if path.starts_with("/finish/") => {
                let job = &path["/finish/".len()..];
                jobs.lock().unwrap().insert(job.to_string(), true);
                format!("{name} finished {job}\n").into_bytes()
            }
            "/health" => b"ok\n".to_vec(),
            "/echo" => req.head.clone().into_bytes(),
            "/slow" => {
                std::thread::sleep(Duration::from_millis(param("ms").unwrap_or(1000)));
                format!("{name}\n").into_bytes()
            }
            "/bytes" => vec![b'x'; param("n").unwrap_or(0) as usize],
            _ if req.body_len > 0 || req.method == "POST" => {
                format!("{name} received {} bytes\n", req.body_len).into_bytes()
            }
            _ => format!("{name}\n").into_bytes(),
        };
        let head = format!(
            "HTTP/1.1 {status} Status {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n{}\r\n",
            body.len(),
            if req.close { "Connection: close\r\n" } else { "" }
        );
        writer.write_all(head.as_bytes())?;
        if req.method != "HEAD" {
            for chunk in body.chunks(64 * 1024) {
                writer.write_all(chunk)?;
            }
        }
        writer.flush()?;
        if req.close {
            break;
        }
    }
    Ok(())
}

/// An accepted asynchronous Execute response for `job`, as PyWPS writes it, in chunks of
/// `split` bytes with a pause between them, so a proxy receives the `statusLocation` in
/// pieces.
fn execute_response(writer: &mut TcpStream, name: &str, job: &str, split: usize) -> io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<wps:ExecuteResponse \
         xmlns:wps=\"http://www.opengis.net/wps/1.0.0\" service=\"WPS\" version=\"1.0.0\" \
         statusLocation=\"http://roost:8093/outputs/{job}.xml\">\n<wps:Status>\
         <wps:ProcessAccepted percentCompleted=\"0\">accepted by {name}</wps:ProcessAccepted>\
         </wps:Status>\n</wps:ExecuteResponse>\n"
    );
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nTransfer-Encoding: chunked\r\nX-Backend: {name}\r\n\r\n"
    );
    writer.write_all(head.as_bytes())?;
    for piece in body.as_bytes().chunks(split) {
        write!(writer, "{:x}\r\n", piece.len())?;
        writer.write_all(piece)?;
        writer.write_all(b"\r\n")?;
        writer.flush()?;
        std::thread::sleep(Duration::from_millis(2));
    }
    writer.write_all(b"0\r\n\r\n")?;
    writer.flush()
}

/// Job `job`'s WPS 1.0.0 status document, as PyWPS writes it at `statusLocation`.
fn status_document(name: &str, job: &str, finished: bool) -> String {
    let status = if finished {
        format!("<wps:ProcessSucceeded>finished by {name}</wps:ProcessSucceeded>")
    } else {
        format!(
            "<wps:ProcessStarted percentCompleted=\"50\">running on {name}</wps:ProcessStarted>"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<wps:ExecuteResponse \
         xmlns:wps=\"http://www.opengis.net/wps/1.0.0\" service=\"WPS\" version=\"1.0.0\" \
         statusLocation=\"http://roost:8093/outputs/{job}.xml\">\n<wps:Status creationTime=\"2026-11-25T09:50:06Z\">\
         {status}</wps:Status>\n</wps:ExecuteResponse>\n"
    )
}

/// Job `job`'s WPS 2.0 `StatusInfo`.
fn status_info(job: &str, finished: bool) -> String {
    let status = if finished { "Succeeded" } else { "Running" };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<wps:StatusInfo xmlns:wps=\"http://www.opengis.net/wps/2.0\">\n\
         <wps:JobID>{job}</wps:JobID>\n<wps:Status>{status}</wps:Status>\n</wps:StatusInfo>\n"
    )
}

/// Read one request; `None` at a clean end of the connection. The body is read and counted.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let version = parts.next().unwrap_or("HTTP/1.0").to_string();
    let mut head = line.clone();
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        head.push_str(&h);
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => content_length = v.parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" if v == "close" => close = true,
                "connection" if v == "keep-alive" => close = false,
                _ => {}
            }
        }
    }
    let body_len = if chunked {
        read_chunked(reader)?
    } else {
        io::copy(
            &mut reader.by_ref().take(content_length as u64),
            &mut io::sink(),
        )? as usize
    };
    Ok(Some(Request {
        method,
        target,
        head,
        body_len,
        close,
    }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_text = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(total);
                }
            }
        }
        total += io::copy(&mut reader.by_ref().take(size as u64), &mut io::sink())? as usize;
        let mut crlf = String::new();
        reader.read_line(&mut crlf)?;
    }
}
