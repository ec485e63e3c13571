//! Finding the WPS job a response is about, and the state it reports, in its body as it
//! streams past (bounded memory; a match split across chunks is still found).
//!
//! Two finders look at every chunk, each with its own small carry:
//! - the job's id: `statusLocation="..."` on a WPS 1.0.0 `ExecuteResponse` (asynchronous), the
//!   first output reference after `ProcessOutputs` when that is empty (synchronous), or the
//!   text of `<wps:JobID>` in a WPS 2.0 `StatusInfo` or `Result`;
//! - the job's state: the element inside WPS 1.0.0 `<wps:Status>` (`ProcessAccepted`,
//!   `ProcessStarted`, `ProcessPaused`: running; `ProcessSucceeded`, `ProcessFailed`: ended),
//!   or the text of WPS 2.0 `<wps:Status>` (`Accepted`, `Running`: running; `Succeeded`,
//!   `Failed`, `Dismissed`: ended). Any namespace prefix, or none.

use super::{job_ids, JobId, JobState, MAX_URL, SCAN_LIMIT};

/// What a response said about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    pub id: JobId,
    /// `None` when the document names the job without a status (a synchronous response's
    /// outputs, a WPS 2.0 `Result`): its state is not changed.
    pub state: Option<JobState>,
}

/// What the id finder looks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `statusLocation="..."` on the root element (WPS 1.0.0) or `JobID>` (WPS 2.0).
    StatusLocation,
    /// The start of the outputs, for a synchronous response (empty `statusLocation`).
    Outputs,
    /// An output reference, `href="..."` / `xlink:href="..."`.
    Href,
    /// Found, or gave up.
    Done,
}

const STATUS_LOCATION: &[u8] = b"statusLocation=";
const JOB_ID: &[u8] = b"JobID>";

impl Phase {
    fn markers(self) -> &'static [&'static [u8]] {
        match self {
            Phase::StatusLocation => &[STATUS_LOCATION, JOB_ID],
            Phase::Outputs => &[b"ProcessOutputs"],
            Phase::Href => &[b"href="],
            Phase::Done => &[],
        }
    }
}

/// A value (attribute or element text) that starts at some offset of the buffer.
enum Value {
    /// The value is the byte range `start..end`.
    Complete(usize, usize),
    /// The value goes on in the next chunk.
    Incomplete,
    /// Not a value of the expected form, or longer than allowed.
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

/// Longest element text looked at (a UUID or a status word, with blanks around it).
const MAX_TEXT: usize = 128;

/// The text of an element from `at` (just past its start tag) up to the next `<`.
fn element_text(buf: &[u8], at: usize) -> Value {
    let limit = buf.len().min(at + MAX_TEXT + 1);
    match buf[at..limit].iter().position(|&c| c == b'<') {
        Some(len) => Value::Complete(at, at + len),
        None if buf.len() - at > MAX_TEXT => Value::Invalid,
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

/// The earliest of `needles` in `haystack` from `from`: (position, needle).
fn find_first(
    haystack: &[u8],
    needles: &[&'static [u8]],
    from: usize,
) -> Option<(usize, &'static [u8])> {
    needles
        .iter()
        .filter_map(|n| find(haystack, n, from).map(|at| (at, *n)))
        .min_by_key(|(at, _)| *at)
}

/// Finds the job's id (see the module doc).
#[derive(Debug)]
struct IdFinder {
    phase: Phase,
    /// The unprocessed tail of the previous chunk (a marker or value cut by the chunk end).
    carry: Vec<u8>,
}

impl IdFinder {
    fn feed(&mut self, chunk: &[u8]) -> Option<JobId> {
        with_carry(&mut self.carry, chunk, |carry, buf| {
            let found = scan_id(&mut self.phase, carry, buf);
            if found.is_some() {
                self.phase = Phase::Done;
                carry.clear();
            }
            found
        })
    }
}

/// Run `scan` over the carried bytes followed by `chunk`; `scan` leaves in the carry what
/// the next chunk needs.
fn with_carry<T>(
    carry: &mut Vec<u8>,
    chunk: &[u8],
    scan: impl FnOnce(&mut Vec<u8>, &[u8]) -> T,
) -> T {
    if carry.is_empty() {
        scan(carry, chunk)
    } else {
        let mut buf = std::mem::take(carry);
        buf.extend_from_slice(chunk);
        scan(carry, &buf)
    }
}

fn scan_id(phase: &mut Phase, carry: &mut Vec<u8>, buf: &[u8]) -> Option<JobId> {
    let mut pos = 0;
    loop {
        let markers = phase.markers();
        let Some((at, marker)) = find_first(buf, markers, pos) else {
            // Keep just enough to find a marker cut by the chunk end.
            let longest = markers.iter().map(|m| m.len()).max().unwrap_or(1);
            let keep = (longest - 1).min(buf.len() - pos);
            *carry = buf[buf.len() - keep..].to_vec();
            return None;
        };
        let after = at + marker.len();
        if *phase == Phase::Outputs {
            *phase = Phase::Href;
            pos = after;
            continue;
        }
        let value = if marker == JOB_ID {
            element_text(buf, after)
        } else {
            quoted_value(buf, after)
        };
        match value {
            Value::Incomplete => {
                *carry = buf[at..].to_vec();
                return None;
            }
            Value::Invalid => pos = after,
            Value::Complete(start, end) => {
                if let Some(id) = job_ids(&buf[start..end]).next() {
                    return Some(id);
                }
                // An empty statusLocation: a synchronous response, whose outputs name it.
                if *phase == Phase::StatusLocation && marker == STATUS_LOCATION {
                    *phase = Phase::Outputs;
                }
                pos = end;
            }
        }
    }
}

/// Longest `<wps:Status ...>` start tag looked at (WPS 1.0.0 gives it a `creationTime`).
const MAX_STATUS_TAG: usize = 256;
const STATUS: &[u8] = b"Status";

/// The state a status word or element name stands for.
fn state_of(name: &[u8]) -> Option<JobState> {
    match name {
        b"ProcessAccepted" | b"ProcessStarted" | b"ProcessPaused" | b"Accepted" | b"Running" => {
            Some(JobState::Running)
        }
        b"ProcessSucceeded" | b"ProcessFailed" | b"Succeeded" | b"Failed" | b"Dismissed" => {
            Some(JobState::Ended)
        }
        _ => None,
    }
}

/// What follows a `Status` found at `at`.
enum StatusAt {
    State(JobState),
    /// Not a status element, or one whose content says nothing known: look further.
    Skip,
    /// Cut by the chunk end.
    Incomplete,
}

/// Read the status element whose name starts at `at` (`buf[at - 1]` is `<` or `:`).
fn status_at(buf: &[u8], at: usize) -> StatusAt {
    let name_end = at + STATUS.len();
    let Some(&next) = buf.get(name_end) else {
        return StatusAt::Incomplete;
    };
    if next != b'>' && !next.is_ascii_whitespace() {
        return StatusAt::Skip; // `StatusInfo`, `StatusLocation`, ...
    }
    // The end of the start tag.
    let limit = buf.len().min(name_end + MAX_STATUS_TAG);
    let Some(close) = buf[name_end..limit].iter().position(|&c| c == b'>') else {
        return if buf.len() - name_end >= MAX_STATUS_TAG {
            StatusAt::Skip
        } else {
            StatusAt::Incomplete
        };
    };
    let mut i = name_end + close + 1;
    if buf[i - 2] == b'/' {
        return StatusAt::Skip; // `<wps:Status/>`: empty
    }
    while buf.get(i).is_some_and(|c| c.is_ascii_whitespace()) && i - name_end < MAX_STATUS_TAG {
        i += 1;
    }
    let Some(&first) = buf.get(i) else {
        return StatusAt::Incomplete;
    };
    // WPS 1.0.0: a child element, whose local name is the state; WPS 2.0: a word.
    let start = if first == b'<' { i + 1 } else { i };
    let limit = buf.len().min(start + MAX_TEXT);
    let Some(len) = buf[start..limit]
        .iter()
        .position(|&c| c == b'<' || c == b'>' || c == b'/' || c.is_ascii_whitespace())
    else {
        return if buf.len() - start >= MAX_TEXT {
            StatusAt::Skip
        } else {
            StatusAt::Incomplete
        };
    };
    let name = &buf[start..start + len];
    let local = match name.iter().rposition(|&c| c == b':') {
        Some(colon) if first == b'<' => &name[colon + 1..],
        _ => name,
    };
    state_of(local).map_or(StatusAt::Skip, StatusAt::State)
}

/// Finds the state a status document reports (see the module doc).
#[derive(Debug, Default)]
struct StateFinder {
    done: bool,
    carry: Vec<u8>,
}

impl StateFinder {
    fn feed(&mut self, chunk: &[u8]) -> Option<JobState> {
        let found = with_carry(&mut self.carry, chunk, scan_state);
        if found.is_some() {
            self.done = true;
            self.carry = Vec::new();
        }
        found
    }
}

fn scan_state(carry: &mut Vec<u8>, buf: &[u8]) -> Option<JobState> {
    let mut pos = 0;
    while let Some(at) = find(buf, STATUS, pos) {
        pos = at + 1;
        // The element's own name: after `<` or a prefix's `:`. At 0 the byte before it is
        // unknown (the carry always keeps it), so that is not a name.
        if at == 0 || !matches!(buf[at - 1], b'<' | b':') {
            continue;
        }
        match status_at(buf, at) {
            StatusAt::State(state) => return Some(state),
            StatusAt::Skip => {}
            StatusAt::Incomplete => {
                *carry = buf[at - 1..].to_vec();
                return None;
            }
        }
    }
    // Keep the byte before a `Status` cut by the chunk end, too.
    let keep = STATUS.len().min(buf.len());
    *carry = buf[buf.len() - keep..].to_vec();
    None
}

/// Finds the job a WPS document belongs to and the state it reports while its body streams
/// past, chunk by chunk.
///
/// Memory is bounded: between chunks each finder keeps at most one partial value (≤
/// [`MAX_URL`] plus the attribute name, or a status tag of ≤ 384 bytes) or the last few bytes
/// of a marker. It stops once it has both, or after [`SCAN_LIMIT`] bytes.
#[derive(Debug)]
pub struct JobScanner {
    id: IdFinder,
    state: StateFinder,
    found: Option<JobId>,
    found_state: Option<JobState>,
    done: bool,
    scanned: usize,
}

impl Default for JobScanner {
    fn default() -> Self {
        Self {
            id: IdFinder {
                phase: Phase::StatusLocation,
                carry: Vec::new(),
            },
            state: StateFinder::default(),
            found: None,
            found_state: None,
            done: false,
            scanned: 0,
        }
    }
}

impl JobScanner {
    /// Whether scanning is over (the job and its state were reported, or the document was
    /// not worth going on).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Look at the next chunk of the body. Returns the sighting once both the job and its
    /// state are known (or the scan limit is reached with the job known); at most once.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Sighting> {
        if self.done {
            return None;
        }
        self.scanned += chunk.len();
        if self.found.is_none() {
            self.found = self.id.feed(chunk);
        }
        if !self.state.done {
            self.found_state = self.state.feed(chunk);
        }
        if self.scanned >= SCAN_LIMIT || (self.found.is_some() && self.found_state.is_some()) {
            return self.finish();
        }
        None
    }

    /// The body ended: the job, if one was found and not reported yet, with the state seen
    /// (`None` when the document had none).
    pub fn finish(&mut self) -> Option<Sighting> {
        if self.done {
            return None;
        }
        self.done = true;
        self.id.carry = Vec::new();
        self.state.carry = Vec::new();
        self.found.map(|id| Sighting {
            id,
            state: self.found_state,
        })
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
