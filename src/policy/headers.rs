//! Request headers Roost adds on the way to a backend: `X-Forwarded-For/-Proto/-Host`, and a
//! `Host` for HTTP/1.0 clients that sent none. Pure: works on a `RequestHeader`.

use pingora::http::RequestHeader;
use std::net::IpAddr;

/// What the proxy knows about the client connection.
pub struct Forwarding<'a> {
    /// The client's address; `None` for a Unix-socket client.
    pub client_ip: Option<IpAddr>,
    /// Keep `X-Forwarded-Proto/-Host` the client sent (behind a trusted proxy) instead of
    /// replacing them with what this hop saw.
    pub trust_incoming: bool,
    /// `Host` to send when the request has none.
    pub fallback_host: &'a str,
}

pub fn apply(req: &mut RequestHeader, fwd: &Forwarding) {
    // X-Forwarded-For: append this client to whatever chain arrived, as one header line.
    if let Some(ip) = fwd.client_ip {
        let mut chain = String::with_capacity(IPV4_TEXT);
        for value in req.headers.get_all("x-forwarded-for") {
            if let Ok(v) = value.to_str() {
                let v = v.trim();
                if !v.is_empty() {
                    chain.push_str(v);
                    chain.push_str(", ");
                }
            }
        }
        push_ip(&mut chain, ip);
        req.insert_header("X-Forwarded-For", chain)
            .expect("IP text is a valid header value");
    }

    let host = req.headers.get(http::header::HOST).cloned();
    if fwd.trust_incoming {
        if !req.headers.contains_key("x-forwarded-proto") {
            req.insert_header("X-Forwarded-Proto", "http")
                .expect("static header");
        }
        if let (false, Some(host)) = (req.headers.contains_key("x-forwarded-host"), &host) {
            req.insert_header("X-Forwarded-Host", host.clone())
                .expect("copied header value");
        }
    } else {
        // Roost listens on plain HTTP: that is the scheme this hop saw.
        req.insert_header("X-Forwarded-Proto", "http")
            .expect("static header");
        match &host {
            Some(host) => req
                .insert_header("X-Forwarded-Host", host.clone())
                .expect("copied header value"),
            None => {
                req.remove_header("x-forwarded-host");
            }
        }
    }

    if host.is_none() {
        req.insert_header(http::header::HOST, fwd.fallback_host)
            .expect("configured address is a valid header value");
    }
}

/// The longest IPv4 address text (`255.255.255.255`).
const IPV4_TEXT: usize = 15;

/// `ip` as text, appended. IPv4 digit by digit: `Display` goes through the formatting
/// machinery, ~1,300 instructions of a request that costs ~80,000 in all.
fn push_ip(out: &mut String, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        out.push_str(&ip.to_string());
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/wps", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    const CLIENT: Forwarding = Forwarding {
        client_ip: Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7))),
        trust_incoming: false,
        fallback_host: "10.0.0.11:8093",
    };

    #[test]
    fn adds_forwarded_headers() {
        let mut r = req(&[("Host", "pavics.example:8093")]);
        apply(&mut r, &CLIENT);
        assert_eq!(get(&r, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(get(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["pavics.example:8093"]);
        assert_eq!(get(&r, "host"), ["pavics.example:8093"]);
    }

    #[test]
    fn appends_to_an_existing_chain() {
        let mut r = req(&[
            ("Host", "h"),
            ("X-Forwarded-For", "203.0.113.1"),
            ("X-Forwarded-For", "198.51.100.2, 198.51.100.3"),
        ]);
        apply(&mut r, &CLIENT);
        assert_eq!(
            get(&r, "x-forwarded-for"),
            ["203.0.113.1, 198.51.100.2, 198.51.100.3, 192.0.2.7"]
        );
    }

    #[test]
    fn replaces_or_keeps_proto_and_host_by_trust() {
        let incoming = [
            ("Host", "inner"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "outer.example"),
        ];
        let mut r = req(&incoming);
        apply(&mut r, &CLIENT);
        assert_eq!(get(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["inner"]);

        let mut r = req(&incoming);
        apply(
            &mut r,
            &Forwarding {
                trust_incoming: true,
                ..CLIENT
            },
        );
        assert_eq!(get(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["outer.example"]);
    }

    #[test]
    fn ip_text_is_what_display_writes() {
        let mut addrs: Vec<IpAddr> = [0u8, 1, 9, 10, 99, 100, 199, 200, 255]
            .iter()
            .flat_map(|&a| [[a, 0, 7, 255], [127, a, 10, 1], [a, a, a, a]])
            .map(|o| IpAddr::V4(o.into()))
            .collect();
        addrs.push("2001:db8::7".parse().unwrap());
        addrs.push("::ffff:192.0.2.7".parse().unwrap());
        for ip in addrs {
            let mut text = String::from("x");
            push_ip(&mut text, ip);
            assert_eq!(text, format!("x{ip}"));
        }
    }

    #[test]
    fn adds_host_when_missing() {
        let mut r = req(&[("X-Forwarded-Host", "spoofed")]);
        apply(&mut r, &CLIENT);
        assert_eq!(get(&r, "host"), ["10.0.0.11:8093"]);
        assert!(get(&r, "x-forwarded-host").is_empty());
    }
}
