//! Strict HTTP/1.1 message splitting for the conformance suite: requests as a backend
//! receives them (to answer and record each one) and responses as a client receives them
//! (every answer must be framed exactly, with no byte left over).

/// One request as a backend received it: request line parts and the decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn wants_close(&self) -> bool {
        let connection = self
            .header("connection")
            .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
            .unwrap_or_default();
        connection.contains("close") || (self.version == 0 && !connection.contains("keep-alive"))
    }
}

/// Why bytes are not (yet) a complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// More bytes are needed.
    Partial,
    /// Not HTTP/1.1 as RFC 9112 writes it.
    Invalid(String),
}

fn invalid<T>(why: impl Into<String>) -> Result<T, Split> {
    Err(Split::Invalid(why.into()))
}

/// The body framing a head announces (RFC 9112 §6.3), strictly: one `Content-Length` of digits
/// or `Transfer-Encoding: chunked` alone, never both.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Option<usize>, Split> {
    let lengths: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    let codings: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| h.value)
        .collect();
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(Some(0)),
        ([], [te]) if te.eq_ignore_ascii_case(b"chunked") => Ok(None),
        ([], _) => invalid("Transfer-Encoding other than a single `chunked`"),
        ([cl], []) => match std::str::from_utf8(cl) {
            Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse()
                .map(Some)
                .or_else(|_| invalid("Content-Length overflows")),
            _ => invalid(format!("Content-Length {:?}", String::from_utf8_lossy(cl))),
        },
        (_, []) => invalid("more than one Content-Length"),
        _ => invalid("both Content-Length and Transfer-Encoding"),
    }
}

/// A chunked body at the start of `bytes` (RFC 9112 §7.1), strictly: hex sizes, extensions
/// without CR/LF, CRLF everywhere, trailer fields. Returns (decoded body, bytes used).
pub fn chunked(bytes: &[u8]) -> Result<(Vec<u8>, usize), Split> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = find_crlf(&bytes[at..])?;
        let line = &bytes[at..at + line_end];
        let size_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // chunk-size [ BWS ";" ext ]: whitespace only before an extension.
        let rest = &line[size_len..];
        let ext_at = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let ext_ok = match rest.get(ext_at) {
            None => ext_at == 0,
            Some(b';') => true,
            Some(_) => false,
        };
        if size_len == 0
            || size_len > 16
            || !ext_ok
            || rest.iter().any(|&b| b == b'\r' || b == b'\n')
        {
            return invalid(format!(
                "chunk size line {:?}",
                line.escape_ascii().to_string()
            ));
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..size_len]).unwrap(), 16)
            .expect("hex digits");
        at += line_end + 2;
        if size == 0 {
            // Trailer section: header lines until an empty one.
            loop {
                let end = find_crlf(&bytes[at..])?;
                let line = &bytes[at..at + end];
                at += end + 2;
                if line.is_empty() {
                    return Ok((body, at));
                }
                if !line.contains(&b':') || line.iter().any(|&b| b == b'\r' || b == b'\n') {
                    return invalid("bad trailer line");
                }
            }
        }
        if ((bytes.len() - at) as u64) < size.saturating_add(2) {
            return Err(Split::Partial);
        }
        let size = size as usize;
        body.extend_from_slice(&bytes[at..at + size]);
        at += size;
        if &bytes[at..at + 2] != b"\r\n" {
            return invalid("chunk data not followed by CRLF");
        }
        at += 2;
    }
}

/// Where the next CRLF starts; a bare LF or CR before it is invalid.
fn find_crlf(bytes: &[u8]) -> Result<usize, Split> {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => return invalid("bare LF"),
            b'\r' => {
                return match bytes.get(i + 1) {
                    Some(b'\n') => Ok(i),
                    Some(_) => invalid("bare CR"),
                    None => Err(Split::Partial),
                }
            }
            _ => {}
        }
    }
    Err(Split::Partial)
}

/// Rejects what httparse tolerates by default but RFC 9112 does not let a recipient forward:
/// bare LF line ends in a head (every `\n` must follow `\r`).
fn strict_line_ends(head: &[u8]) -> Result<(), Split> {
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return invalid("bare LF in the head");
        }
        if b == b'\r' && head.get(i + 1).is_some_and(|&n| n != b'\n') {
            return invalid("bare CR in the head");
        }
    }
    Ok(())
}

/// The first complete request in `bytes` and how many bytes it used.
/// Room for every header line `bytes` could hold: the reference has no header limit of its
/// own (Roost's is `limits.max_headers`, checked elsewhere), so that it never calls a head
/// invalid just for its number of headers.
fn header_room(bytes: &[u8]) -> Vec<httparse::Header<'static>> {
    vec![httparse::EMPTY_HEADER; bytes.iter().filter(|&&b| b == b'\n').count() + 1]
}

pub fn request(bytes: &[u8]) -> Result<(Request, usize), Split> {
    let mut headers = header_room(bytes);
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Split::Partial),
        Err(e) => return invalid(format!("request head: {e}")),
    };
    strict_line_ends(&bytes[..head_len])?;
    let body_len = framing(req.headers)?;
    let (body, used) = match body_len {
        Some(n) if bytes.len() < head_len + n => return Err(Split::Partial),
        Some(n) => (bytes[head_len..head_len + n].to_vec(), head_len + n),
        None => {
            let (body, n) = chunked(&bytes[head_len..])?;
            (body, head_len + n)
        }
    };
    let request = Request {
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        version: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
        body,
    };
    Ok((request, used))
}

/// Every request in `bytes`, and what is left after the last complete one (with the reason
/// it is not a request).
pub fn requests(bytes: &[u8]) -> (Vec<Request>, Option<String>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match request(&bytes[at..]) {
            Ok((r, n)) => {
                out.push(r);
                at += n;
            }
            Err(Split::Partial) => {
                return (
                    out,
                    Some(format!(
                        "{} bytes of an incomplete request",
                        bytes.len() - at
                    )),
                )
            }
            Err(Split::Invalid(why)) => return (out, Some(why)),
        }
    }
    (out, None)
}

/// One answer as a client received it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses the answers to requests whose methods are `methods` (a HEAD answer has no body),
/// strictly: every answer must announce its length (Content-Length or chunked) and the
/// bytes must end exactly after the last one. `Err` says what is wrong, after the answers
/// that parsed.
pub fn answers(bytes: &[u8], methods: &[&str]) -> (Vec<Answer>, Result<(), String>) {
    let mut out = Vec::new();
    let mut at = 0;
    let mut index = 0;
    while at < bytes.len() {
        let mut headers = header_room(&bytes[at..]);
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&bytes[at..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return (
                    out,
                    Err(format!("truncated answer head after {} answers", index)),
                )
            }
            Err(e) => {
                let start = String::from_utf8_lossy(&bytes[at..bytes.len().min(at + 40)]);
                return (out, Err(format!("answer {index}: {e} at {start:?}")));
            }
        };
        if let Err(Split::Invalid(why)) = strict_line_ends(&bytes[at..at + head_len]) {
            return (out, Err(format!("answer {index}: {why}")));
        }
        let status = resp.code.unwrap_or(0);
        let reason_ok = resp.reason.is_some();
        let head: Vec<(String, Vec<u8>)> = resp
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        let framing = framing(resp.headers);
        at += head_len;
        if !reason_ok || resp.version != Some(1) {
            return (
                out,
                Err(format!("answer {index}: not an HTTP/1.1 status line")),
            );
        }
        if (100..200).contains(&status) {
            continue; // interim: the final answer follows
        }
        let no_body = status == 204 || status == 304 || methods.get(index) == Some(&"HEAD");
        let body = if no_body {
            Vec::new()
        } else {
            match framing {
                Err(Split::Invalid(why)) => return (out, Err(format!("answer {index}: {why}"))),
                Err(Split::Partial) => unreachable!("framing never asks for more"),
                Ok(Some(0))
                    if !head
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("content-length")) =>
                {
                    return (
                        out,
                        Err(format!(
                            "answer {index} ({status}): no Content-Length or chunked"
                        )),
                    )
                }
                Ok(Some(n)) => {
                    if bytes.len() < at + n {
                        return (
                            out,
                            Err(format!(
                                "answer {index} ({status}): body of {} bytes, Content-Length {n}",
                                bytes.len() - at
                            )),
                        );
                    }
                    at += n;
                    bytes[at - n..at].to_vec()
                }
                Ok(None) => match chunked(&bytes[at..]) {
                    Ok((body, n)) => {
                        at += n;
                        body
                    }
                    Err(Split::Partial) => {
                        return (out, Err(format!("answer {index}: truncated chunked body")))
                    }
                    Err(Split::Invalid(why)) => {
                        return (out, Err(format!("answer {index}: {why}")))
                    }
                },
            }
        };
        out.push(Answer { status, body });
        index += 1;
    }
    (out, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_requests_and_answers() {
        let two = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let (reqs, rest) = requests(two);
        assert_eq!(rest, None);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].body, b"hello");
        assert_eq!(reqs[1].target, "/b");
        for bad in [
            &b"\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\r\n\r\n0\r\n\r\n",
            b"0_2e\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"1\r0\r\n",
        ] {
            assert!(matches!(chunked(bad), Err(Split::Invalid(_))), "{bad:?}");
        }
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n";
        let (a, r) = answers(ok, &["GET", "GET"]);
        assert_eq!((a.len(), r), (2, Ok(())));
        let long = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nabcdefg";
        assert!(answers(long, &["GET"]).1.is_err());
        let short = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nabc";
        assert!(answers(short, &["GET"]).1.is_err());
    }
}
