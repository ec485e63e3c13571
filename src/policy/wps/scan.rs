//! Finding the WPS job a response is about, in its body as it streams past (bounded memory; a
//! match split across chunks is still found).

use super::{job_ids, JobId, MAX_URL, SCAN_LIMIT};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::wps::testing::{id, A, B};

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
}
