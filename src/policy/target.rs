//! Request targets (RFC 9112 §3.2), pure: which forms Roost accepts from a client, and the
//! origin-form it sends to a backend instead of an absolute-form target.
//!
//! Accepted: origin-form (`/path?query`), absolute-form (`http://authority/path`, routed to
//! the service's own backends like any other request) and `*` for OPTIONS. Everything else
//! (`!`, authority-form outside CONNECT, `*` for other methods) is refused, as are bytes
//! outside visible ASCII (raw UTF-8, controls, a second space before the target) and a
//! fragment, which a client never sends (RFC 9110 §7.1).

/// Checks a request target as received on the wire.
pub fn check(method: &[u8], target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("empty request target");
    }
    if target.iter().any(|b| !(0x21..=0x7e).contains(b)) {
        return Err("request target with a byte outside visible ASCII");
    }
    if target.contains(&b'#') {
        return Err("fragment in the request target");
    }
    match target {
        [b'/', ..] => Ok(()),
        b"*" if method == b"OPTIONS" => Ok(()),
        b"*" => Err("request target `*` is for OPTIONS only"),
        // Authority-form: the screen refuses CONNECT itself (405).
        _ if method == b"CONNECT" => Ok(()),
        _ if is_absolute(target) => Ok(()),
        _ => Err("request target is neither origin-form nor absolute-form"),
    }
}

/// `http://` or `https://` (any case), then a non-empty authority without userinfo
/// (RFC 9110 §4.2.4: a recipient treats userinfo as an error).
fn is_absolute(target: &[u8]) -> bool {
    let rest = [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        (target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme))
            .then(|| &target[scheme.len()..])
    });
    let Some(rest) = rest else { return false };
    let authority_len = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    !authority.is_empty() && !authority.contains(&b'@')
}

/// For an absolute-form target (as received, raw): the origin-form to send on (`/` when the
/// path is empty) and the authority, which replaces the Host header (RFC 9112 §3.2.2). `None`
/// for other forms.
pub fn origin_form(raw: &[u8]) -> Option<(String, String)> {
    if !is_absolute(raw) {
        return None;
    }
    let uri = http::Uri::try_from(raw).ok()?;
    let authority = uri.authority()?.as_str().to_string();
    let pq = uri.path_and_query().map_or("", |p| p.as_str());
    let path = if pq.starts_with('/') {
        pq.to_string()
    } else {
        format!("/{pq}")
    };
    Some((path, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_forms() {
        assert_eq!(
            check(b"GET", b"/wps?service=WPS&request=GetCapabilities"),
            Ok(())
        );
        assert_eq!(check(b"GET", b"/"), Ok(()));
        assert_eq!(check(b"POST", b"http://wps.example:8093/wps"), Ok(()));
        assert_eq!(check(b"GET", b"HTTPS://h?x=1"), Ok(()));
        assert_eq!(check(b"OPTIONS", b"*"), Ok(()));
    }

    #[test]
    fn refuses_the_rest() {
        for (method, target) in [
            (&b"GET"[..], &b"!"[..]),
            (b"GET", b"*"),
            (b"GET", b"h:80"),
            (b"GET", b"ftp://h/x"),
            (b"GET", b"http://"),
            (b"GET", b"http:///x"),
            (b"GET", b"http://user@h/x"),
            (b"GET", b"/caf\xc3\xa9"),
            (b"OPTIONS", b" /wps"),
            (b"GET", b"/a\x01b"),
            (b"GET", b"/a#frag"),
            (b"GET", b""),
        ] {
            assert!(
                check(method, target).is_err(),
                "{:?}",
                target.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let form = |t: &str| origin_form(t.as_bytes());
        assert_eq!(
            form("http://h:8093/wps?x=1"),
            Some(("/wps?x=1".to_string(), "h:8093".to_string()))
        );
        assert_eq!(form("HTTP://h"), Some(("/".to_string(), "h".to_string())));
        assert_eq!(form("http://h?x=1").unwrap().0, "/?x=1");
        assert_eq!(form("/wps"), None);
        assert_eq!(form("*"), None);
    }
}
