//! Message framing on one client connection (pure): where each request's head and body end,
//! followed byte by byte as they arrive, strictly after RFC 9112 (§2.2 line ends, §3 request
//! line, §6.3 body length, §7.1 chunked coding). Pingora's parser is lenient where a proxy
//! must not be (an empty chunk-size line reads as 0, an extra CRLF before the last chunk is
//! skipped, a head is escaped instead of refused), and it decides before Roost sees a
//! request; the guard runs every byte read through a [`Framing`] first, so Roost forwards only
//! messages whose boundaries every HTTP/1.1 parser agrees on, pipelined ones included.
//!
//! Each head is also checked whole: it must parse with httparse's strict defaults (the parser
//! Pingora uses, without its escaping fallback), its target must be one of the forms
//! [`target::check`] accepts, and an HTTP/1.1 request needs exactly one Host (RFC 9112 §3.2).
//! What the screen refuses anyway (other transfer codings, conflicting lengths, CONNECT) and
//! a request asking for a protocol upgrade end the framing: the bytes after them are not
//! followed (Pingora closes the connection after a refusal; after `101` they are a tunnel).

use super::head_scan::{HeadScan, HeadScanner};
use super::target;

/// Pingora 0.9.1 limits (its `MAX_HEADER_SIZE`, `MAX_HEADERS`): a larger head is refused.
const MAX_HEAD: usize = 1_048_575;
const MAX_HEADERS: usize = 256;
/// A connection keeps a head buffer up to this size for its next request; a larger one is
/// freed.
const KEEP_HEAD_CAPACITY: usize = 16 * 1024;

/// Why a request is refused, and where it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// 400, or 413 for a chunked body over `limits.max_body`.
    pub status: u16,
    pub reason: &'static str,
    /// Where the refused request starts in the bytes fed last; `None` when it started in an
    /// earlier feed (its head went on already: the refusal is in its body).
    pub start: Option<usize>,
    /// Whether the fault is in the body (chunked framing) rather than the head.
    pub in_body: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size.
    Size {
        digits: u8,
        size: u64,
    },
    /// Whitespace after the size: only a `;` extension may follow.
    SizeSpace {
        size: u64,
    },
    /// A chunk extension, up to CR.
    Ext {
        size: u64,
    },
    /// CR of the size line seen: LF must follow.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Start of a trailer line (or of the empty line that ends the message).
    TrailerStart,
    Trailer {
        colon: bool,
    },
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Length(u64),
    Chunked(Chunk),
    /// No longer followed (see the module docs).
    Opaque,
}

/// Follows the requests on one connection. Holds the head being read (as Pingora does);
/// bodies are counted, not kept.
#[derive(Debug)]
pub struct Framing {
    phase: Phase,
    scanner: HeadScanner,
    head: Vec<u8>,
    completed: u64,
    /// Chunk data announced so far in the current chunked body, against `max_body` (a
    /// Content-Length over it is the screen's to refuse).
    body: u64,
    max_body: u64,
}

impl Default for Framing {
    fn default() -> Self {
        Self::new(u64::MAX)
    }
}

impl Framing {
    /// A connection whose chunked bodies may carry at most `max_body` bytes.
    pub fn new(max_body: u64) -> Self {
        Self {
            phase: Phase::Head,
            scanner: HeadScanner::default(),
            head: Vec::new(),
            completed: 0,
            body: 0,
            max_body,
        }
    }

    /// Requests complete so far, head and body.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Whether the requests are still followed (see the module docs for when they are not).
    pub fn following(&self) -> bool {
        self.phase != Phase::Opaque
    }

    /// Whether the requests so far are complete and no byte of a next one has arrived.
    pub fn between_requests(&self) -> bool {
        self.phase == Phase::Head && self.head.is_empty()
    }

    /// Whether a request head has started and not ended.
    pub fn in_head(&self) -> bool {
        self.phase == Phase::Head && !self.head.is_empty()
    }

    /// Follow the next bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        let mut start = (self.phase == Phase::Head && self.head.is_empty()).then_some(0);
        let mut i = 0;
        while i < bytes.len() {
            match self.phase {
                Phase::Opaque => return Ok(()),
                Phase::Head => {
                    if self.head.is_empty() {
                        start = Some(i);
                    }
                    let refuse = |reason| Refused {
                        status: 400,
                        reason,
                        start,
                        in_body: false,
                    };
                    let (used, done) = match self.scanner.feed(&bytes[i..]) {
                        HeadScan::More => (bytes.len() - i, false),
                        HeadScan::Complete(n) => (n, true),
                        HeadScan::Reject(reason) => return Err(refuse(reason)),
                    };
                    if self.head.len() + used > MAX_HEAD {
                        return Err(refuse("request header too large"));
                    }
                    self.head.extend_from_slice(&bytes[i..i + used]);
                    i += used;
                    if done {
                        self.phase = head_framing(&self.head).map_err(refuse)?;
                        self.body = 0;
                        if self.head.capacity() > KEEP_HEAD_CAPACITY {
                            self.head = Vec::new();
                        } else {
                            self.head.clear();
                        }
                        self.scanner = HeadScanner::default();
                        if self.phase == Phase::Head {
                            self.completed += 1;
                        }
                    }
                }
                Phase::Length(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.phase = if take == left {
                        self.completed += 1;
                        Phase::Head
                    } else {
                        Phase::Length(left - take)
                    };
                }
                Phase::Chunked(Chunk::Data { left }) => {
                    // Chunk data is opaque: skip it whole.
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.phase = Phase::Chunked(if take == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data { left: left - take }
                    });
                }
                Phase::Chunked(state) => {
                    let refuse = |status, reason| Refused {
                        status,
                        reason,
                        start,
                        in_body: true,
                    };
                    let next = chunk_step(state, bytes[i]).map_err(|r| refuse(400, r))?;
                    if let Some(Chunk::Data { left }) = next {
                        self.body = self.body.saturating_add(left);
                        if self.body > self.max_body {
                            return Err(refuse(413, "request body exceeds limits.max_body"));
                        }
                    }
                    i += 1;
                    self.phase = match next {
                        Some(state) => Phase::Chunked(state),
                        None => {
                            self.completed += 1;
                            Phase::Head
                        }
                    };
                }
            }
        }
        Ok(())
    }
}

/// The body framing a complete head announces, after checking the head whole.
fn head_framing(head: &[u8]) -> Result<Phase, &'static str> {
    // Uninitialised: filling 256 empty headers first would cost more than parsing a typical
    // head (httparse writes each header it returns).
    let mut headers = [std::mem::MaybeUninit::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Err("malformed request head"),
    }
    let method = req.method.unwrap_or("").as_bytes();
    target::check(method, req.path.unwrap_or("").as_bytes())?;
    let headers: &[httparse::Header<'_>] = req.headers;
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    match named("host").count() {
        0 if req.version == Some(1) => return Err("HTTP/1.1 request without Host"),
        0 | 1 => {}
        _ => return Err("more than one Host header"),
    }
    if method == b"CONNECT" || named("upgrade").next().is_some() {
        return Ok(Phase::Opaque);
    }
    let codings: Vec<&[u8]> = named("transfer-encoding").map(|h| h.value).collect();
    if !codings.is_empty() {
        return Ok(match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => {
                Phase::Chunked(Chunk::Size { digits: 0, size: 0 })
            }
            _ => Phase::Opaque,
        });
    }
    let mut lengths = named("content-length").map(|h| h.value);
    let Some(first) = lengths.next() else {
        return Ok(Phase::Head);
    };
    let length = std::str::from_utf8(first)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok());
    Ok(match length {
        // More than one: the screen refuses it.
        _ if lengths.next().is_some() => Phase::Opaque,
        None => Phase::Opaque,
        Some(0) => Phase::Head,
        Some(n) => Phase::Length(n),
    })
}

/// One byte of a chunked body outside chunk data; `None` when the message ends with it.
fn chunk_step(state: Chunk, b: u8) -> Result<Option<Chunk>, &'static str> {
    let next = match (state, b) {
        (Chunk::Size { digits, size }, _) if b.is_ascii_hexdigit() => {
            if digits >= 16 {
                return Err("chunk size too large");
            }
            let digit = (b as char).to_digit(16).expect("hex digit") as u64;
            Chunk::Size {
                digits: digits + 1,
                size: size << 4 | digit,
            }
        }
        (Chunk::Size { digits: 0, .. }, _) => return Err("invalid chunk size"),
        (Chunk::Size { size, .. }, b'\r') => Chunk::SizeLf { size },
        (Chunk::Size { size, .. } | Chunk::SizeSpace { size }, b';') => Chunk::Ext { size },
        (Chunk::Size { size, .. } | Chunk::SizeSpace { size }, b' ' | b'\t') => {
            Chunk::SizeSpace { size }
        }
        (Chunk::Size { .. } | Chunk::SizeSpace { .. }, _) => return Err("invalid chunk size"),
        (Chunk::Ext { size }, b'\r') => Chunk::SizeLf { size },
        (Chunk::Ext { .. }, b'\n') => return Err("bare LF in a chunk size line"),
        (Chunk::Ext { .. }, _) if b.is_ascii_control() && b != b'\t' => {
            return Err("control byte in a chunk extension")
        }
        (Chunk::Ext { size }, _) => Chunk::Ext { size },
        (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::TrailerStart,
        (Chunk::SizeLf { size }, b'\n') => Chunk::Data { left: size },
        (Chunk::SizeLf { .. }, _) => return Err("bare CR in a chunk size line"),
        (Chunk::Data { .. }, _) => unreachable!("chunk data is skipped whole"),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataCr, _) => return Err("chunk data longer than its size"),
        (Chunk::DataLf, b'\n') => Chunk::Size { digits: 0, size: 0 },
        (Chunk::DataLf, _) => return Err("bare CR after chunk data"),
        (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
        (Chunk::TrailerStart, b' ' | b'\t' | b':') => return Err("malformed trailer"),
        (Chunk::Trailer { colon: true }, b'\r') => Chunk::TrailerLf,
        (Chunk::TrailerStart | Chunk::Trailer { .. }, _) if b.is_ascii_control() && b != b'\t' => {
            return Err("malformed trailer")
        }
        (Chunk::TrailerStart, _) => Chunk::Trailer { colon: false },
        (Chunk::Trailer { colon }, _) => Chunk::Trailer {
            colon: colon || b == b':',
        },
        (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
        (Chunk::TrailerLf, _) => return Err("bare CR in a trailer"),
        (Chunk::EndLf, b'\n') => return Ok(None),
        (Chunk::EndLf, _) => return Err("bare CR at the end of a chunked body"),
    };
    Ok(Some(next))
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
