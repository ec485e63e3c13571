//! WPS job affinity for requests without the affinity key (`services[].wps_affinity`).
//!
//! A WPS job leaves its status document and outputs on the backend that ran it, at URLs built
//! from the job's UUID: PyWPS writes `<outputurl>/<uuid>.xml` and `<outputurl>/<uuid>/<file>`.
//! Clients that fetch those without the `machineid` header (birdy downloads outputs with a plain
//! GET) would be spread by `hash.missing` and mostly get a 404. So Roost watches the responses
//! it forwards: an Execute response or status document names its job in `statusLocation="..."`
//! (asynchronous jobs) or, when that is empty (synchronous jobs), in the `href` of its first
//! output reference. Roost remembers *job UUID → backend that sent the document*, and a keyless
//! request whose URL carries a remembered UUID goes to that backend.
//!
//! Everything here is pure: [`job_ids`] finds UUIDs in a URL, [`worth_scanning`] says which
//! responses to look at, [`JobScanner`] finds the job in a body fed chunk by chunk (bounded
//! memory, a match split across chunks is still found), [`JobTable`] is the bounded table.
//! `proxy` does the I/O around them.

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderMap;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A job's UUID, as a number (the text is matched case-insensitively).
pub type JobId = u128;

/// Jobs remembered per service; the oldest is forgotten first. About 100 bytes each.
pub const MAX_JOBS: usize = 100_000;
/// A job not seen for this long is forgotten (each status document that passes refreshes it).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Responses that announce a larger body are not scanned (they are downloads, not WPS
/// documents), and a body without a length is scanned up to this many bytes.
pub const SCAN_LIMIT: usize = 1024 * 1024;
/// Longest attribute value looked at; also bounds the bytes carried from one chunk to the next.
pub const MAX_URL: usize = 2048;
/// UUIDs looked up per request URL.
pub const MAX_IDS_PER_URL: usize = 4;

const UUID_LEN: usize = 36;

/// Parse exactly one UUID in the 8-4-4-4-12 hex form.
pub fn parse_uuid(text: &[u8]) -> Option<JobId> {
    if text.len() != UUID_LEN {
        return None;
    }
    let mut id: u128 = 0;
    for (i, &c) in text.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let digit = (c as char).to_digit(16)?;
        id = (id << 4) | u128::from(digit);
    }
    Some(id)
}

/// Every UUID-shaped token in `url` (a path, a path and query, or a whole URL), in order. A
/// token must not touch other hex digits or dashes, so a longer hex string does not count.
pub fn job_ids(url: &[u8]) -> impl Iterator<Item = JobId> + '_ {
    let is_part = |c: &u8| c.is_ascii_hexdigit() || *c == b'-';
    let mut start = 0;
    std::iter::from_fn(move || {
        while start + UUID_LEN <= url.len() {
            let i = start;
            start += 1;
            if i > 0 && is_part(&url[i - 1]) {
                continue;
            }
            if url.get(i + UUID_LEN).is_some_and(is_part) {
                continue;
            }
            if let Some(id) = parse_uuid(&url[i..i + UUID_LEN]) {
                start = i + UUID_LEN;
                return Some(id);
            }
        }
        None
    })
}

/// Whether a response may name a job: a successful, uncompressed XML document of a size a WPS
/// document has.
pub fn worth_scanning(status: u16, headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let xml = text(CONTENT_TYPE).is_some_and(|t| t.to_ascii_lowercase().contains("xml"));
    let plain = text(CONTENT_ENCODING).is_none_or(|e| e.eq_ignore_ascii_case("identity"));
    let small = text(CONTENT_LENGTH)
        .is_none_or(|l| l.trim().parse::<usize>().is_ok_and(|n| n <= SCAN_LIMIT));
    (200..300).contains(&status) && xml && plain && small
}

/// What the scanner looks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `statusLocation="..."` on the root element: the job's status document.
    StatusLocation,
    /// The start of the outputs, for a synchronous response (empty `statusLocation`).
    Outputs,
    /// An output reference, `href="..."` / `xlink:href="..."`.
    Href,
    /// Found, or gave up.
    Done,
}

impl Phase {
    fn marker(self) -> &'static [u8] {
        match self {
            Phase::StatusLocation => b"statusLocation=",
            Phase::Outputs => b"ProcessOutputs",
            Phase::Href => b"href=",
            Phase::Done => b"",
        }
    }
}

/// An attribute value that starts at some offset of the buffer.
enum Value {
    /// The value is the byte range `start..end`; the closing quote is at `end`.
    Complete(usize, usize),
    /// The value goes on in the next chunk.
    Incomplete,
    /// Not a quoted value, or longer than [`MAX_URL`].
    Invalid,
}

/// Read the quoted value after `attr=` at `at` (just past the `=`): optional blanks, then
/// `"..."` or `'...'`.
fn quoted_value(buf: &[u8], at: usize) -> Value {
    let mut i = at;
    while buf.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    let Some(&quote) = buf.get(i) else {
        return if i - at > 16 {
            Value::Invalid
        } else {
            Value::Incomplete
        };
    };
    if quote != b'"' && quote != b'\'' {
        return Value::Invalid;
    }
    let start = i + 1;
    let limit = buf.len().min(start + MAX_URL + 1);
    match buf[start..limit].iter().position(|&c| c == quote) {
        Some(len) => Value::Complete(start, start + len),
        None if buf.len() - start > MAX_URL => Value::Invalid,
        None => Value::Incomplete,
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Finds the job a WPS document belongs to while its body streams past, chunk by chunk.
///
/// Memory is bounded: between chunks it keeps at most one partial attribute (≤ [`MAX_URL`]
/// plus the attribute name) or the last few bytes of a marker. It stops at the first job found
/// or after [`SCAN_LIMIT`] bytes.
#[derive(Debug)]
pub struct JobScanner {
    phase: Phase,
    /// The unprocessed tail of the previous chunk (a marker or value cut by the chunk end).
    carry: Vec<u8>,
    scanned: usize,
}

impl Default for JobScanner {
    fn default() -> Self {
        Self {
            phase: Phase::StatusLocation,
            carry: Vec::new(),
            scanned: 0,
        }
    }
}

impl JobScanner {
    /// Whether scanning is over (a job was found, or the document was not worth going on).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Look at the next chunk of the body; the job's id once it is found (only once).
    pub fn feed(&mut self, chunk: &[u8]) -> Option<JobId> {
        if self.is_done() {
            return None;
        }
        self.scanned += chunk.len();
        let found = if self.carry.is_empty() {
            self.scan(chunk)
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            self.scan(&buf)
        };
        if found.is_some() || self.scanned >= SCAN_LIMIT {
            self.phase = Phase::Done;
            self.carry = Vec::new();
        }
        found
    }

    fn scan(&mut self, buf: &[u8]) -> Option<JobId> {
        let mut pos = 0;
        loop {
            let marker = self.phase.marker();
            let Some(at) = find(buf, marker, pos) else {
                // Keep just enough to find a marker cut by the chunk end.
                let keep = (marker.len() - 1).min(buf.len() - pos);
                self.carry = buf[buf.len() - keep..].to_vec();
                return None;
            };
            let after = at + marker.len();
            if self.phase == Phase::Outputs {
                self.phase = Phase::Href;
                pos = after;
                continue;
            }
            match quoted_value(buf, after) {
                Value::Incomplete => {
                    self.carry = buf[at..].to_vec();
                    return None;
                }
                Value::Invalid => pos = after,
                Value::Complete(start, end) => {
                    if let Some(id) = job_ids(&buf[start..end]).next() {
                        return Some(id);
                    }
                    // An empty statusLocation: a synchronous response, whose outputs name it.
                    if self.phase == Phase::StatusLocation {
                        self.phase = Phase::Outputs;
                    }
                    pos = end;
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Job {
    backend: SocketAddr,
    seen: Instant,
    /// Position in `Inner::order`.
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<JobId, Job>,
    /// Jobs by when they were last seen, oldest first.
    order: BTreeMap<u64, JobId>,
    next_seq: u64,
}

/// Job → the backend that has its files. Bounded in entries and age; shared by a service's
/// requests (a short mutex: one map operation per learned or looked-up job).
#[derive(Debug)]
pub struct JobTable {
    capacity: usize,
    max_age: Duration,
    inner: Mutex<Inner>,
}

impl Default for JobTable {
    fn default() -> Self {
        Self::new(MAX_JOBS, MAX_AGE)
    }
}

impl JobTable {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked (every change is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember that `backend` has job `id` (seen at `now`), forgetting the oldest jobs beyond
    /// the capacity and jobs older than the age limit.
    pub fn learn(&self, id: JobId, backend: SocketAddr, now: Instant) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let job = Job {
            backend,
            seen: now,
            seq,
        };
        if let Some(old) = inner.jobs.insert(id, job) {
            inner.order.remove(&old.seq);
        }
        inner.order.insert(seq, id);
        while let Some((&oldest_seq, &oldest)) = inner.order.first_key_value() {
            let expired = inner.jobs[&oldest].seen + self.max_age < now;
            if inner.jobs.len() <= self.capacity && !expired {
                break;
            }
            inner.order.remove(&oldest_seq);
            inner.jobs.remove(&oldest);
        }
    }

    /// The backend that has job `id`, unless unknown or older than the age limit.
    pub fn backend_of(&self, id: JobId, now: Instant) -> Option<SocketAddr> {
        let inner = self.lock();
        let job = inner.jobs.get(&id)?;
        (job.seen + self.max_age >= now).then_some(job.backend)
    }

    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const A: &str = "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e11";
    const B: &str = "0A7D3C52-9B1E-4F6A-8C2D-5E4F3A2B1C0D";

    fn id(text: &str) -> JobId {
        parse_uuid(text.as_bytes()).unwrap()
    }

    #[test]
    fn uuids_parse_in_either_case_and_nothing_else() {
        assert_eq!(id(A), 0x6f1c2a441f0e11ef9a572f5b0c3d9e11);
        assert_eq!(id(B), id(&B.to_lowercase()));
        for bad in [
            "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e1",   // short
            "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e111", // long
            "6f1c2a44x1f0e-11ef-9a57-2f5b0c3d9e11",  // separator
            "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e1g",  // not hex
            "6f1c2a441f0e11ef9a572f5b0c3d9e11----",  // dashes elsewhere
        ] {
            assert_eq!(parse_uuid(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn job_ids_in_pywps_urls() {
        let ids = |url: &str| job_ids(url.as_bytes()).collect::<Vec<_>>();
        assert_eq!(ids(&format!("/outputs/{A}.xml")), [id(A)]);
        assert_eq!(ids(&format!("/outputs/{A}/subset.txt")), [id(A)]);
        assert_eq!(
            ids(&format!("http://h:8093/wpsoutputs/{A}/out_{B}.nc")),
            [id(A), id(B)]
        );
        assert_eq!(
            ids(&format!("/wps?service=WPS&request=GetStatus&jobid={B}")),
            [id(B)]
        );
        assert_eq!(ids("/wps?service=WPS&request=GetCapabilities"), []);
        // Part of a longer hex run: not a UUID.
        assert_eq!(ids(&format!("/outputs/a{A}.xml")), []);
        assert_eq!(ids(&format!("/outputs/{A}-1.xml")), []);
        assert_eq!(ids(&A[1..]), []);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn only_small_plain_xml_successes_are_scanned() {
        let xml = headers(&[("content-type", "text/xml; charset=utf-8")]);
        assert!(worth_scanning(200, &xml));
        assert!(worth_scanning(
            200,
            &headers(&[
                ("content-type", "application/XML"),
                ("content-length", "900")
            ])
        ));
        assert!(!worth_scanning(404, &xml));
        assert!(!worth_scanning(
            200,
            &headers(&[("content-type", "text/plain")])
        ));
        assert!(!worth_scanning(200, &headers(&[])));
        assert!(!worth_scanning(
            200,
            &headers(&[("content-type", "text/xml"), ("content-encoding", "gzip")])
        ));
        assert!(!worth_scanning(
            200,
            &headers(&[("content-type", "text/xml"), ("content-length", "1048577")])
        ));
    }

    fn async_response(job: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<wps:ExecuteResponse xmlns:wps=\"http://www.opengis.net/wps/1.0.0\" \
             service=\"WPS\" version=\"1.0.0\" serviceInstance=\"http://127.0.0.1:8093/wps?request=GetCapabilities&amp;service=WPS\" \
             statusLocation=\"http://127.0.0.1:8093/outputs/{job}.xml\">\n  <wps:Status creationTime=\"2026-11-25T09:50:06Z\">\
             <wps:ProcessAccepted percentCompleted=\"0\">accepted</wps:ProcessAccepted></wps:Status>\n</wps:ExecuteResponse>\n"
        )
    }

    /// A synchronous response: empty statusLocation, an input reference to another job (with
    /// lineage), the outputs by reference.
    fn sync_response(job: &str, other: &str) -> String {
        format!(
            "<wps:ExecuteResponse statusLocation=\"\">\n<wps:Process><ows:Identifier>subset</ows:Identifier></wps:Process>\n\
             <wps:DataInputs><wps:Input><wps:Reference xlink:href=\"http://h/outputs/{other}/in.nc\"/></wps:Input></wps:DataInputs>\n\
             <wps:ProcessOutputs>\n<wps:Output><ows:Identifier>server</ows:Identifier><wps:Data><wps:LiteralData>fp-1</wps:LiteralData></wps:Data></wps:Output>\n\
             <wps:Output><ows:Identifier>output</ows:Identifier><wps:Reference href=\"http://h/outputs/{job}/subset.txt\" mimeType=\"text/plain\"/></wps:Output>\n\
             </wps:ProcessOutputs></wps:ExecuteResponse>"
        )
    }

    fn scan_in_chunks(doc: &str, size: usize) -> Vec<JobId> {
        let mut scanner = JobScanner::default();
        let found: Vec<JobId> = doc
            .as_bytes()
            .chunks(size)
            .filter_map(|c| scanner.feed(c))
            .collect();
        assert!(found.is_empty() || scanner.is_done());
        found
    }

    #[test]
    fn finds_the_status_location_however_the_body_is_cut() {
        let doc = async_response(A);
        for size in [1, 2, 3, 7, 15, 16, 17, 64, 100, doc.len()] {
            assert_eq!(scan_in_chunks(&doc, size), [id(A)], "chunks of {size}");
        }
        // Single quotes and blanks after `=` are XML too.
        let doc = format!("<r statusLocation= '/outputs/{A}.xml'/>");
        assert_eq!(scan_in_chunks(&doc, 5), [id(A)]);
    }

    #[test]
    fn a_synchronous_response_is_known_by_its_output_reference() {
        let doc = sync_response(A, B);
        for size in [1, 5, 13, 64, doc.len()] {
            assert_eq!(scan_in_chunks(&doc, size), [id(A)], "chunks of {size}");
        }
    }

    #[test]
    fn documents_without_a_job_yield_nothing() {
        let caps = "<wps:Capabilities><ows:Operation name=\"Execute\"><ows:Get xlink:href=\"http://h/wps?\"/></ows:Operation></wps:Capabilities>";
        assert_eq!(scan_in_chunks(caps, 7), []);
        // The output reference has no UUID.
        let doc = "<r statusLocation=\"\"><wps:ProcessOutputs><wps:Reference href=\"http://h/x.nc\"/></wps:ProcessOutputs></r>";
        assert_eq!(scan_in_chunks(doc, 3), []);
        // Not quoted, or an unterminated value longer than MAX_URL: skipped, memory bounded.
        let mut scanner = JobScanner::default();
        assert_eq!(scanner.feed(b"<r statusLocation=bare "), None);
        assert_eq!(scanner.feed(b"statusLocation=\""), None);
        for _ in 0..100 {
            assert_eq!(scanner.feed(&[b'a'; 100]), None);
            assert!(
                scanner.carry.len() <= MAX_URL + 32,
                "{}",
                scanner.carry.len()
            );
        }
    }

    #[test]
    fn scanning_stops_after_the_limit() {
        let mut scanner = JobScanner::default();
        let filler = vec![b' '; 64 * 1024];
        for _ in 0..SCAN_LIMIT / filler.len() {
            assert_eq!(scanner.feed(&filler), None);
        }
        assert!(scanner.is_done());
        assert_eq!(scanner.feed(async_response(A).as_bytes()), None);
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn table_remembers_and_relearns() {
        let table = JobTable::default();
        let t0 = Instant::now();
        assert_eq!(table.backend_of(id(A), t0), None);
        table.learn(id(A), addr(1), t0);
        table.learn(id(B), addr(2), t0);
        assert_eq!(table.backend_of(id(A), t0), Some(addr(1)));
        assert_eq!(table.backend_of(id(B), t0), Some(addr(2)));
        // A job seen again on another backend (its owner failed over) follows it.
        table.learn(id(A), addr(3), t0);
        assert_eq!(table.backend_of(id(A), t0), Some(addr(3)));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn table_forgets_the_oldest_beyond_capacity() {
        let table = JobTable::new(3, MAX_AGE);
        let t0 = Instant::now();
        for job in 1..=3u128 {
            table.learn(job, addr(job as u16), t0);
        }
        // Job 1 seen again: now job 2 is the oldest.
        table.learn(1, addr(1), t0);
        table.learn(4, addr(4), t0);
        assert_eq!(table.len(), 3);
        assert_eq!(table.backend_of(2, t0), None);
        for job in [1u128, 3, 4] {
            assert_eq!(table.backend_of(job, t0), Some(addr(job as u16)), "{job}");
        }
    }

    #[test]
    fn table_forgets_old_jobs() {
        let age = Duration::from_secs(60);
        let table = JobTable::new(100, age);
        let t0 = Instant::now();
        table.learn(1, addr(1), t0);
        table.learn(2, addr(2), t0 + Duration::from_secs(30));
        assert_eq!(table.backend_of(1, t0 + age), Some(addr(1)));
        assert_eq!(table.backend_of(1, t0 + age + Duration::from_secs(1)), None);
        // Learning later drops what expired and keeps the rest.
        table.learn(3, addr(3), t0 + Duration::from_secs(70));
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.backend_of(2, t0 + Duration::from_secs(70)),
            Some(addr(2))
        );
    }
}
