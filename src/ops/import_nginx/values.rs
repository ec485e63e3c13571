//! NGINX argument forms turned into Roost's: durations, sizes, listen and server addresses,
//! `$http_NAME` keys, and YAML scalars. `${VAR}` placeholders pass through untouched (Roost
//! expands them when it loads the file).

/// A YAML double-quoted scalar.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn has_placeholder(s: &str) -> bool {
    s.contains("${")
}

/// NGINX time (`60`, `60s`, `5m`, `1h`, `500ms`, `1m30s`) as a Roost duration; a bare number
/// is seconds in NGINX.
pub fn duration(arg: &str) -> Option<String> {
    if has_placeholder(arg) {
        return Some(arg.to_string());
    }
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("{arg}s"));
    }
    let ok = arg
        .split(|c: char| c.is_ascii_alphabetic())
        .filter(|p| !p.is_empty())
        .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && arg.starts_with(|c: char| c.is_ascii_digit())
        && humantime::parse_duration(arg).is_ok();
    ok.then(|| arg.to_string())
}

/// NGINX size (`1024`, `64k`, `10m`, `1g`; k/m/g are powers of 1024) in bytes, as Roost writes
/// sizes. `Err` with a reason when it cannot be carried over.
pub fn size(arg: &str) -> Result<String, &'static str> {
    if has_placeholder(arg) {
        return Ok(arg.to_string());
    }
    let (digits, unit) = match arg.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => arg.split_at(i),
        None => (arg, ""),
    };
    let n: u64 = digits.parse().map_err(|_| "not an NGINX size")?;
    let unit = match unit {
        "" => "",
        "k" | "K" => "KiB",
        "m" | "M" => "MiB",
        "g" | "G" => "GiB",
        _ => return Err("not an NGINX size"),
    };
    if n == 0 {
        return Err("0 means no limit in NGINX; Roost always has one");
    }
    Ok(format!("{n}{unit}"))
}

/// What `listen ARG` means for Roost's `IP:port` listener.
pub fn listen(arg: &str) -> Result<String, String> {
    if arg.starts_with("unix:") {
        return Err("a Unix socket listener has no Roost equivalent".into());
    }
    if has_placeholder(arg) && !arg.contains(':') {
        return Ok(format!("0.0.0.0:{arg}"));
    }
    if arg.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("0.0.0.0:{arg}"));
    }
    let (host, port) = match arg.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p),
        _ => (arg, "80"),
    };
    let host = match host {
        "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    let text = format!("{host}:{port}");
    if has_placeholder(&text) || text.parse::<std::net::SocketAddr>().is_ok() {
        Ok(text)
    } else {
        Err(format!(
            "`{arg}`: Roost listens on an IP address and port, not a host name"
        ))
    }
}

/// `server ADDR` as a Roost backend address (`host:port`; NGINX's default port is 80).
pub fn backend(arg: &str) -> Result<String, String> {
    if arg.starts_with("unix:") {
        return Err("a Unix socket backend has no Roost equivalent".into());
    }
    let has_port = match arg.rsplit_once(':') {
        Some((h, p)) => {
            (!h.starts_with('[') || h.ends_with(']')) && !p.is_empty() && !p.contains(']')
        }
        None => false,
    };
    Ok(if has_port {
        arg.to_string()
    } else {
        format!("{arg}:80")
    })
}

/// The header named by an NGINX `$http_NAME` variable (`_` stands for `-`), when `key` is
/// exactly one such variable.
pub fn header_of(key: &str) -> Option<String> {
    let name = key.strip_prefix("$http_").or_else(|| {
        key.strip_prefix("${http_")
            .and_then(|k| k.strip_suffix('}'))
    })?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| name.replace('_', "-").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("300").as_deref(), Some("300s"));
        assert_eq!(duration("60s").as_deref(), Some("60s"));
        assert_eq!(duration("5m").as_deref(), Some("5m"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("1m30s").as_deref(), Some("1m30s"));
        assert_eq!(duration("${T}").as_deref(), Some("${T}"));
        assert_eq!(duration("soon"), None);
        assert_eq!(duration(""), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(size("10m").unwrap(), "10MiB");
        assert_eq!(size("64K").unwrap(), "64KiB");
        assert_eq!(size("1g").unwrap(), "1GiB");
        assert_eq!(size("4096").unwrap(), "4096");
        assert_eq!(size("${MAX_BODY}").unwrap(), "${MAX_BODY}");
        assert!(size("0").unwrap_err().contains("no limit"));
        assert!(size("10x").is_err());
    }

    #[test]
    fn listens() {
        assert_eq!(listen("8093").unwrap(), "0.0.0.0:8093");
        assert_eq!(listen("*:8093").unwrap(), "0.0.0.0:8093");
        assert_eq!(listen("127.0.0.1:8093").unwrap(), "127.0.0.1:8093");
        assert_eq!(listen("[::]:8093").unwrap(), "[::]:8093");
        assert_eq!(listen("10.0.0.1").unwrap(), "10.0.0.1:80");
        assert_eq!(listen("${FP_PORT}").unwrap(), "0.0.0.0:${FP_PORT}");
        assert_eq!(listen("${IP}:${PORT}").unwrap(), "${IP}:${PORT}");
        assert!(listen("unix:/run/x.sock").is_err());
        assert!(listen("wps.example.org:80").is_err());
    }

    #[test]
    fn backends() {
        assert_eq!(backend("wps1:8093").unwrap(), "wps1:8093");
        assert_eq!(backend("10.0.0.1").unwrap(), "10.0.0.1:80");
        assert_eq!(backend("[::1]:8093").unwrap(), "[::1]:8093");
        assert_eq!(backend("[::1]").unwrap(), "[::1]:80");
        assert_eq!(backend("${FP_HOST}:8093").unwrap(), "${FP_HOST}:8093");
        assert!(backend("unix:/tmp/x").is_err());
    }

    #[test]
    fn header_variables() {
        assert_eq!(header_of("$http_machineid").as_deref(), Some("machineid"));
        assert_eq!(
            header_of("$http_X_Machine_Id").as_deref(),
            Some("x-machine-id")
        );
        assert_eq!(header_of("${http_machineid}").as_deref(), Some("machineid"));
        assert_eq!(header_of("$remote_addr"), None);
        assert_eq!(header_of("$http_machineid$remote_addr"), None);
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
