//! `${VAR}` and `${VAR:-default}` expansion inside configuration scalars.
//!
//! Expansion runs on parsed scalar values, never on the raw text, so a variable's value cannot
//! change the document's structure (a `#` or `: ` in a value stays part of the value). `$$` is a
//! literal `$`. Pure: the caller passes the variable lookup.

use std::borrow::Cow;
use std::fmt;

/// Why a scalar could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Unset(String),
    /// `${` without its closing `}`.
    Unclosed,
    /// `${...}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName(String),
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::Unset(name) => write!(
                f,
                "environment variable {name} is not set (set it, or write ${{{name}:-default}})"
            ),
            EnvError::Unclosed => write!(f, "`${{` without a closing `}}`"),
            EnvError::BadName(name) => write!(
                f,
                "`${{{name}}}` is not a variable reference (names are letters, digits and _)"
            ),
        }
    }
}

/// Expand every reference in `input`. Returns the input unchanged (borrowed) when it has no `$`.
///
/// `${NAME:-default}` uses `default` when NAME is unset *or empty*, as in POSIX shells and
/// docker-compose; `${NAME}` with NAME set to the empty string expands to the empty string.
pub fn expand<'a>(
    input: &'a str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, EnvError> {
    if !input.contains('$') {
        return Ok(Cow::Borrowed(input));
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(EnvError::Unclosed)?;
            out.push_str(&reference(&body[..end], lookup)?);
            rest = &body[end + 1..];
        } else {
            // A lone `$` (e.g. in a regex or a price) is kept as written.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Resolve the inside of one `${...}`.
fn reference(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    if !is_var_name(name) {
        return Err(EnvError::BadName(inner.to_string()));
    }
    match (lookup(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(EnvError::Unset(name.to_string())),
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8093".into()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("a #b: c".into()),
            _ => None,
        }
    }

    fn ex(input: &str) -> Result<String, EnvError> {
        expand(input, &env).map(Cow::into_owned)
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(expand("no vars", &env), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn set_unset_and_defaults() {
        assert_eq!(ex("0.0.0.0:${PORT}").unwrap(), "0.0.0.0:8093");
        assert_eq!(ex("0.0.0.0:${PORT:-1}").unwrap(), "0.0.0.0:8093");
        assert_eq!(ex("${NOPE:-10.0.0.1}:80").unwrap(), "10.0.0.1:80");
        assert_eq!(ex("${NOPE:-}x").unwrap(), "x");
        assert_eq!(ex("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(ex("[${EMPTY}]").unwrap(), "[]");
        assert_eq!(ex("${PORT}${PORT}").unwrap(), "80938093");
    }

    #[test]
    fn values_are_not_reparsed() {
        assert_eq!(ex("${TRICKY}").unwrap(), "a #b: c");
        assert_eq!(ex("${NOPE:-${x}").unwrap(), "${x");
    }

    #[test]
    fn dollar_escapes() {
        assert_eq!(ex("cost $$5").unwrap(), "cost $5");
        assert_eq!(ex("$${PORT}").unwrap(), "${PORT}");
        assert_eq!(ex("a$b").unwrap(), "a$b");
        assert_eq!(ex("end$").unwrap(), "end$");
    }

    #[test]
    fn errors() {
        assert_eq!(ex("${NOPE}"), Err(EnvError::Unset("NOPE".into())));
        assert_eq!(ex("${PORT"), Err(EnvError::Unclosed));
        assert_eq!(ex("${}"), Err(EnvError::BadName(String::new())));
        assert_eq!(ex("${1X}"), Err(EnvError::BadName("1X".into())));
        assert_eq!(ex("${A-B}"), Err(EnvError::BadName("A-B".into())));
        assert!(EnvError::Unset("X".into())
            .to_string()
            .contains("X is not set"));
    }
}
