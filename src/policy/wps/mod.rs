//! WPS job affinity for requests without the affinity key (`services[].wps_affinity`).
//!
//! A WPS job leaves its status document and outputs on the backend that ran it, at URLs built
//! from the job's UUID: PyWPS writes `<outputurl>/<uuid>.xml` and `<outputurl>/<uuid>/<file>`.
//! Clients that fetch those without the `machineid` header (birdy downloads outputs with a plain
//! GET) would be spread by `hash.missing` and mostly get a 404. So Roost watches the responses
//! it forwards: an Execute response or status document names its job in `statusLocation="..."`
//! (asynchronous jobs) or, when that is empty (synchronous jobs), in the `href` of its first
//! output reference (WPS 2.0: in `<wps:JobID>`). Roost remembers *job UUID → backend that sent
//! the document*, and a keyless request whose URL carries a remembered UUID goes to that backend.
//!
//! The same documents say whether the job still runs (`<wps:Status>`). A running job pins the
//! affinity key of the request that started or polled it in the sticky table (it neither
//! expires nor is evicted until the job ends), and the table counts running jobs per backend.
//!
//! Everything here is pure: [`job_ids`] finds UUIDs in a URL, [`worth_scanning`] says which
//! responses to look at, [`JobScanner`] finds the job and its state in a body fed chunk by
//! chunk (bounded memory, a match split across chunks is still found), [`JobTable`] is the
//! bounded table. `proxy` does the I/O around them.

mod scan;
mod table;

pub use scan::{JobScanner, Sighting};
pub use table::{JobTable, SavedJob};

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderMap;
use std::time::Duration;

/// A job's UUID, as a number (the text is matched case-insensitively).
pub type JobId = u128;

/// What a status document says about its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Accepted, started, paused (WPS 1.0.0); accepted, running (WPS 2.0).
    Running,
    /// Succeeded or failed (WPS 1.0.0); succeeded, failed, dismissed (WPS 2.0).
    Ended,
}

/// Jobs remembered per service; the oldest is forgotten first. About 150 bytes each, plus the
/// affinity key of a job that has one. Running jobs pin their keys, so this also bounds pins.
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

/// A job id in the 8-4-4-4-12 form (lower case), for logs.
pub fn format_uuid(id: JobId) -> String {
    let hex = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
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

/// Job ids the tests of this folder share.
#[cfg(test)]
mod testing {
    use super::{parse_uuid, JobId};

    pub const A: &str = "6f1c2a44-1f0e-11ef-9a57-2f5b0c3d9e11";
    pub const B: &str = "0A7D3C52-9B1E-4F6A-8C2D-5E4F3A2B1C0D";

    pub fn id(text: &str) -> JobId {
        parse_uuid(text.as_bytes()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{id, A, B};
    use super::*;
    use http::HeaderValue;

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
    fn uuids_format_as_they_parse() {
        assert_eq!(format_uuid(id(A)), A);
        assert_eq!(format_uuid(id(B)), B.to_lowercase());
        assert_eq!(format_uuid(1), "00000000-0000-0000-0000-000000000001");
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
}
