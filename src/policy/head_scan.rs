//! The raw request-header scan (pure): watches the bytes of a request header as they arrive
//! on the wire, before Pingora parses them, for where the header ends and for what Pingora's
//! parser tolerates but a proxy must not pass on. Used by the connection guard.

/// What the raw header bytes seen so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadScan {
    /// The header goes on.
    More,
    /// The header ended after this many bytes of the last chunk fed.
    Complete(usize),
    /// Refuse the request (400) for this reason.
    Reject(&'static str),
}

/// Watches a request header on the wire, byte by byte, for what Pingora's parser tolerates
/// but a proxy must not: bare LF line ends (another server may split lines differently) and
/// `Content-Length` together with `Transfer-Encoding` (Pingora drops the length and goes on;
/// we refuse, as the request was built to confuse someone). Keeps a few bytes of state, no
/// buffer.
#[derive(Debug, Default)]
pub struct HeadScanner {
    prev: u8,
    line_len: usize,
    in_name: bool,
    name: [u8; 20],
    name_len: usize,
    lines: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScanner {
    /// The verdict on `reads` fed in order, with the end of a complete head counted from the
    /// start of the whole input: the same whatever the split (the fuzz target and the tests
    /// check that).
    pub fn scan_reads(reads: &[&[u8]]) -> HeadScan {
        let mut s = HeadScanner::default();
        let mut offset = 0;
        for r in reads {
            match s.feed(r) {
                HeadScan::More => offset += r.len(),
                HeadScan::Complete(n) => return HeadScan::Complete(offset + n),
                other => return other,
            }
        }
        HeadScan::More
    }

    pub fn feed(&mut self, bytes: &[u8]) -> HeadScan {
        let mut i = 0;
        while i < bytes.len() {
            // Inside the request line or a header value, a byte other than CR and LF only
            // makes the line longer: skip a run of them at once instead of stepping the state
            // machine byte by byte (most of a header's bytes are in values).
            if self.line_len > 0 && (self.lines == 0 || !self.in_name) && self.prev != b'\r' {
                let run = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(bytes.len() - i);
                if run > 0 {
                    self.line_len += run;
                    self.prev = bytes[i + run - 1];
                    i += run;
                    continue;
                }
            }
            let b = bytes[i];
            if self.prev == b'\r' && b != b'\n' {
                return HeadScan::Reject("bare CR in the request header");
            }
            match b {
                b'\n' if self.prev != b'\r' => {
                    return HeadScan::Reject("bare LF in the request header")
                }
                b'\n' => {
                    if self.line_len == 0 && self.lines > 0 {
                        return HeadScan::Complete(i + 1);
                    }
                    if self.lines > 0 && !self.in_name {
                        match &self.name[..self.name_len] {
                            b"content-length" => self.content_length = true,
                            b"transfer-encoding" => self.transfer_encoding = true,
                            _ => {}
                        }
                        if self.content_length && self.transfer_encoding {
                            return HeadScan::Reject("both Content-Length and Transfer-Encoding");
                        }
                    }
                    // Leading empty lines before the request line are tolerated (RFC 9112).
                    if self.line_len > 0 || self.lines > 0 {
                        self.lines += 1;
                    }
                    self.line_len = 0;
                    self.in_name = true;
                    self.name_len = 0;
                }
                b'\r' => {}
                _ => {
                    if self.line_len == 0 {
                        self.in_name = true;
                    }
                    self.line_len += 1;
                    if self.in_name {
                        if b == b':' {
                            self.in_name = false;
                        } else if self.name_len < self.name.len() {
                            self.name[self.name_len] = b.to_ascii_lowercase();
                            self.name_len += 1;
                        } else {
                            // Longer than any name we look for: never matches.
                            self.name_len = self.name.len();
                            self.name[0] = 0;
                        }
                    }
                }
            }
            self.prev = b;
            i += 1;
        }
        HeadScan::More
    }
}

#[cfg(test)]
mod scanner_tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> HeadScan {
        let mut s = HeadScanner::default();
        for c in chunks {
            match s.feed(c) {
                HeadScan::More => {}
                other => return other,
            }
        }
        HeadScan::More
    }

    #[test]
    fn finds_the_end_across_chunks() {
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\nBODY"]),
            HeadScan::Complete(1)
        );
        let whole = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
        assert_eq!(scan(&[whole]), HeadScan::Complete(whole.len() - 4));
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]), HeadScan::More);
    }

    #[test]
    fn refuses_bare_line_ends_and_double_framing() {
        assert!(matches!(
            scan(&[b"GET / HTTP/1.1\nHost: x\n\n"]),
            HeadScan::Reject(_)
        ));
        assert!(matches!(
            scan(&[b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"]),
            HeadScan::Reject(_)
        ));
        assert!(matches!(
            scan(&[
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-",
                b"Encoding: chunked\r\n\r\n"
            ]),
            HeadScan::Reject("both Content-Length and Transfer-Encoding")
        ));
        assert!(matches!(
            scan(&[b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n"]),
            HeadScan::Reject(_)
        ));
        // A header merely containing the words is fine.
        let ok = b"GET / HTTP/1.1\r\nX-Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[ok]), HeadScan::Complete(ok.len()));
    }

    /// The runs skipped at once inside lines give the verdict of a byte-by-byte scan, also
    /// when a CR, LF or name starts right after a chunk boundary.
    #[test]
    fn the_verdict_does_not_depend_on_the_chunks() {
        let corpus: &[&[u8]] = &[
            b"GET /wps?service=WPS&request=GetCapabilities HTTP/1.1\r\nHost: x\r\nmachineid: abc\r\n\r\nNEXT",
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nX-A: content-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: long value\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: long value\nX: y\r\n\r\n",
            b"GET / HTTP/1.1 with a long request line\n\r\n",
        ];
        for whole in corpus {
            let verdict = scan(&[whole]);
            let bytes: Vec<&[u8]> = whole.chunks(1).collect();
            assert_eq!(
                HeadScanner::scan_reads(&bytes),
                verdict,
                "{:?}",
                String::from_utf8_lossy(whole)
            );
            for cut in 1..whole.len() {
                let (a, b) = whole.split_at(cut);
                assert_eq!(
                    HeadScanner::scan_reads(&[a, b]),
                    verdict,
                    "cut at {cut}: {:?}",
                    String::from_utf8_lossy(whole)
                );
            }
        }
    }
}
