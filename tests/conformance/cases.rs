//! The conformance cases: raw bytes a client sends, and what must come of them (RFC 9110,
//! RFC 9112). Written for Roost from the RFCs and the classes of issue 14; each names the
//! section it follows.

/// A request as the backend must receive it: method, target, decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub method: &'static str,
    pub target: &'static str,
    pub body: &'static [u8],
}

#[derive(Debug, Clone)]
pub enum Expect {
    /// Answered with a 4xx/5xx status; the backend receives nothing.
    Refuse,
    /// The backend receives exactly these requests; each gets its 200, in order.
    Forward(Vec<Msg>),
    /// The RFC lets a proxy do either (e.g. obs-fold: reject, or replace it with SP).
    Either(Vec<Msg>),
    /// These are forwarded and answered in order, then the next request is refused.
    ForwardThenRefuse(Vec<Msg>),
    /// Refused once the fault arrives, after the head went on: the backend may have seen the
    /// request cut short (bodies are streamed), never a complete one.
    RefuseLate,
}

pub struct Case {
    pub name: &'static str,
    pub class: &'static str,
    pub input: Vec<u8>,
    /// Sent a moment after `input`, when the proxy has surely acted on it.
    pub later: Vec<u8>,
    pub expect: Expect,
}

impl Case {
    /// The methods of the requests answered, in order (a HEAD answer has no body).
    pub fn methods(&self) -> Vec<&'static str> {
        match &self.expect {
            Expect::Refuse | Expect::RefuseLate => vec!["GET"],
            Expect::Forward(m) | Expect::Either(m) => m.iter().map(|m| m.method).collect(),
            Expect::ForwardThenRefuse(m) => m.iter().map(|m| m.method).chain(["GET"]).collect(),
        }
    }
}

fn msg(method: &'static str, target: &'static str, body: &'static [u8]) -> Msg {
    Msg {
        method,
        target,
        body,
    }
}

fn case(name: &'static str, class: &'static str, input: &[u8], expect: Expect) -> Case {
    Case {
        name,
        class,
        input: input.to_vec(),
        later: Vec::new(),
        expect,
    }
}

/// A case whose `later` bytes follow after a pause.
fn split(name: &'static str, class: &'static str, input: &[u8], later: &[u8]) -> Case {
    Case {
        later: later.to_vec(),
        ..case(name, class, input, Expect::RefuseLate)
    }
}

fn fwd(msgs: &[(&'static str, &'static str, &'static [u8])]) -> Expect {
    Expect::Forward(msgs.iter().map(|&(m, t, b)| msg(m, t, b)).collect())
}

fn either(msgs: &[(&'static str, &'static str, &'static [u8])]) -> Expect {
    Expect::Either(msgs.iter().map(|&(m, t, b)| msg(m, t, b)).collect())
}

/// A chunked POST to `/c` with `Connection: close` and this body as sent.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut v =
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    v.extend_from_slice(body);
    v
}

/// `GET target` with Host and `Connection: close`.
fn get(line: &str) -> Vec<u8> {
    format!("{line}\r\nHost: h\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A GET with one extra header line (as sent) after Host.
fn with_header(line: &[u8]) -> Vec<u8> {
    let mut v = b"GET /h HTTP/1.1\r\nHost: h\r\n".to_vec();
    v.extend_from_slice(line);
    v.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    v
}

pub fn all() -> Vec<Case> {
    use Expect::Refuse;
    let big_header = format!("X-Big: {}", "a".repeat(70_000));
    vec![
        // RFC 9112 §9.3.2: a server MUST answer pipelined requests in the order received.
        case(
            "pipeline-get-get",
            "pipelining",
            b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            fwd(&[("GET", "/p1", b""), ("GET", "/p2", b"")]),
        ),
        case(
            "pipeline-3-get",
            "pipelining",
            b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\n\r\nGET /p3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            fwd(&[("GET", "/p1", b""), ("GET", "/p2", b""), ("GET", "/p3", b"")]),
        ),
        case(
            "pipeline-post-get",
            "pipelining",
            b"POST /p1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /p2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            fwd(&[("POST", "/p1", b"hello"), ("GET", "/p2", b"")]),
        ),
        case(
            "pipeline-chunked-get",
            "pipelining",
            b"POST /p1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            fwd(&[("POST", "/p1", b"hello"), ("GET", "/p2", b"")]),
        ),
        case(
            "pipeline-head-get",
            "pipelining",
            b"HEAD /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            fwd(&[("HEAD", "/p1", b""), ("GET", "/p2", b"")]),
        ),
        // The refusal of a later request must not cost the earlier one its answer.
        case(
            "pipeline-get-then-bad",
            "pipelining",
            b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
            Expect::ForwardThenRefuse(vec![msg("GET", "/p1", b"")]),
        ),
        // RFC 9112 §9.6: nothing after a request with `Connection: close` is processed.
        case(
            "pipeline-close-then-get",
            "pipelining",
            b"GET /p1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\n\r\n",
            fwd(&[("GET", "/p1", b"")]),
        ),
        // A refused request closes the connection: what follows is never taken as a request.
        case(
            "pipeline-refused-then-get",
            "pipelining",
            b"GET ! HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            Refuse,
        ),
        case(
            "pipeline-413-then-get",
            "pipelining",
            b"POST /p1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            Refuse,
        ),
        // RFC 9112 §7.1: chunk-size = 1*HEXDIG, chunk = size [ext] CRLF data CRLF.
        case(
            "chunked-valid",
            "chunked",
            &chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            fwd(&[("POST", "/c", b"hello world")]),
        ),
        case(
            "chunked-extension",
            "chunked",
            &chunked(b"5;name=value\r\nhello\r\n0\r\n\r\n"),
            fwd(&[("POST", "/c", b"hello")]),
        ),
        case(
            "chunked-trailer",
            "chunked",
            &chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            fwd(&[("POST", "/c", b"hello")]),
        ),
        case(
            "chunked-uppercase-hex",
            "chunked",
            &chunked(b"A\r\n0123456789\r\n0\r\n\r\n"),
            fwd(&[("POST", "/c", b"0123456789")]),
        ),
        case("chunked-empty-size-line", "chunked", &chunked(b"\r\n5\r\nhello\r\n0\r\n\r\n"), Refuse),
        case(
            "chunked-extra-crlf-before-last",
            "chunked",
            &chunked(b"5\r\nhello\r\n\r\n0\r\n\r\n"),
            Refuse,
        ),
        case("chunked-bare-cr-in-ext", "chunked", &chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), Refuse),
        case("chunked-bare-lf-lines", "chunked", &chunked(b"5\nhello\n0\n\n"), Refuse),
        case("chunked-size-0_2e", "chunked", &chunked(b"0_2e\r\n\r\n"), Refuse),
        case("chunked-size--0x0", "chunked", &chunked(b"-0x0\r\n\r\n"), Refuse),
        case("chunked-size-0x5", "chunked", &chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), Refuse),
        case("chunked-size-Z", "chunked", &chunked(b"Z\r\n\r\n"), Refuse),
        case("chunked-size-leading-space", "chunked", &chunked(b" 5\r\nhello\r\n0\r\n\r\n"), Refuse),
        case("chunked-size-1-cr-0", "chunked", &chunked(b"1\r0\r\nx\r\n0\r\n\r\n"), Refuse),
        case(
            "chunked-size-overflow",
            "chunked",
            &chunked(b"10000000000000001\r\nx\r\n0\r\n\r\n"),
            Refuse,
        ),
        case(
            "chunked-data-longer-than-size",
            "chunked",
            &chunked(b"3\r\nhello\r\n0\r\n\r\n"),
            Refuse,
        ),
        // RFC 9112 §6.1, §6.3: a message with both, or with an unknown coding, is refused.
        case(
            "cl-and-te",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            Refuse,
        ),
        case(
            "te-and-cl",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n",
            Refuse,
        ),
        case(
            "cl-duplicate-same",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            either(&[("POST", "/f", b"hello")]),
        ),
        case(
            "cl-duplicate-differ",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!",
            Refuse,
        ),
        case(
            "cl-list",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello",
            either(&[("POST", "/f", b"hello")]),
        ),
        case(
            "cl-plus",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello",
            Refuse,
        ),
        case(
            "cl-hex",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\nConnection: close\r\n\r\nhello",
            Refuse,
        ),
        case(
            "te-gzip-chunked",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            Refuse,
        ),
        case(
            "te-xchunked",
            "framing",
            b"POST /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            Refuse,
        ),
        case(
            "te-in-http10",
            "framing",
            b"POST /f HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Refuse,
        ),
        // RFC 9112 §5: field syntax.
        case(
            "obs-fold",
            "head",
            &with_header(b"X-Fold: a\r\n b"),
            either(&[("GET", "/h", b"")]),
        ),
        case("space-before-colon", "head", &with_header(b"X-Sp : 1"), Refuse),
        case("header-without-colon", "head", &with_header(b"X-No-Colon"), Refuse),
        case("header-name-space", "head", &with_header(b"X Bad: 1"), Refuse),
        case("nul-in-value", "head", &with_header(b"X-Nul: a\0b"), Refuse),
        case("bare-cr-in-value", "head", &with_header(b"X-Cr: a\rb"), Refuse),
        case(
            "bare-lf-line-ends",
            "head",
            b"GET /h HTTP/1.1\nHost: h\nConnection: close\n\n",
            Refuse,
        ),
        case(
            "leading-empty-line",
            "head",
            b"\r\nGET /h HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            fwd(&[("GET", "/h", b"")]),
        ),
        case("header-too-large", "head", &with_header(big_header.as_bytes()), Refuse),
        // RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT), asterisk (OPTIONS).
        case("target-origin-form", "target", &get("GET /a/b?c=d HTTP/1.1"), fwd(&[("GET", "/a/b?c=d", b"")])),
        case(
            "target-absolute-form",
            "target",
            &get("GET http://h/abs?x=1 HTTP/1.1"),
            fwd(&[("GET", "/abs?x=1", b"")]),
        ),
        case("target-asterisk-options", "target", &get("OPTIONS * HTTP/1.1"), fwd(&[("OPTIONS", "*", b"")])),
        case("target-asterisk-get", "target", &get("GET * HTTP/1.1"), Refuse),
        case("target-bang", "target", &get("GET ! HTTP/1.1"), Refuse),
        case("target-authority-get", "target", &get("GET h:80 HTTP/1.1"), Refuse),
        case("target-raw-non-ascii", "target", &get("GET /caf\u{e9} HTTP/1.1"), Refuse),
        case("target-double-space", "target", &get("OPTIONS  /wps HTTP/1.1"), Refuse),
        case("target-fragment", "target", &get("GET /a#frag HTTP/1.1"), Refuse),
        case("target-control-byte", "target", b"GET /a\x01b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", Refuse),
        case("method-connect", "target", &get("CONNECT h:443 HTTP/1.1"), Refuse),
        case("method-lowercase", "target", &get("get /h HTTP/1.1"), Refuse),
        case("version-2.0", "target", &get("GET /h HTTP/2.0"), Refuse),
        case("version-0.9", "target", b"GET /h\r\n\r\n", Refuse),
        // RFC 9112 §3.2: HTTP/1.1 without Host (or with two) is a 400; HTTP/1.0 may omit it.
        case("http11-without-host", "host", b"GET /h HTTP/1.1\r\nConnection: close\r\n\r\n", Refuse),
        case(
            "http11-two-hosts",
            "host",
            b"GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            Refuse,
        ),
        case("http10-without-host", "host", b"GET /h HTTP/1.0\r\n\r\n", fwd(&[("GET", "/h", b"")])),
        // Roost's own limits: each refusal must be framed exactly.
        case(
            "body-over-limit",
            "limits",
            b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
            Refuse,
        ),
        case(
            "chunked-body-over-limit",
            "limits",
            &chunked(format!("1388\r\n{}\r\n0\r\n\r\n", "x".repeat(5000)).as_bytes()),
            Refuse,
        ),
        split(
            "chunked-bad-size-later",
            "chunked",
            &chunked(b"5\r\nhello\r\n"),
            b"Z\r\n\r\n",
        ),
        split(
            "chunked-over-limit-later",
            "limits",
            &chunked(format!("100\r\n{}\r\n", "x".repeat(256)).as_bytes()),
            format!("400\r\n{}\r\n0\r\n\r\n", "y".repeat(1024)).as_bytes(),
        ),
        case(
            "header-incomplete-timeout",
            "limits",
            b"GET /slow HTTP/1.1\r\nHost: h\r\n",
            Refuse,
        ),
    ]
}
