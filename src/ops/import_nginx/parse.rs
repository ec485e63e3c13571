//! A small reader for nginx.conf syntax: directives (`name arg ...;`), blocks (`name arg { ... }`),
//! `#` comments, single- and double-quoted arguments, `${VAR}` inside an argument (nginx and
//! envsubst templates both write it), and `include` followed, globs too
//! (`include conf.d/*.conf;`). A relative include is resolved as NGINX resolves it: against
//! the directory of the main file (NGINX's configuration prefix), also inside included files.

use std::fmt;
use std::path::{Path, PathBuf};

/// One directive with its arguments and, for a block, its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    /// Where it was written (for comments and messages).
    pub file: PathBuf,
    pub line: usize,
}

impl Directive {
    /// `file:line` with the file as given.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// The directive as NGINX would print it: `name arg ...`.
    pub fn text(&self) -> String {
        std::iter::once(self.name.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// How deep `include`s may nest (a file including itself is an error, not a hang).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Read `path` and every file it includes.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, ParseError> {
    let prefix = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    parse_at(path, &prefix, 0)
}

fn parse_at(path: &Path, prefix: &Path, depth: usize) -> Result<Vec<Directive>, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|e| ParseError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    expand_includes(parse_str(&text, path)?, prefix, depth)
}

/// Parse configuration text that names no other file (`include` is kept as a directive).
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Directive>, ParseError> {
    let tokens = tokenize(text, file)?;
    let mut pos = 0;
    block(&tokens, &mut pos, file, false)
}

fn expand_includes(
    list: Vec<Directive>,
    prefix: &Path,
    depth: usize,
) -> Result<Vec<Directive>, ParseError> {
    let mut out = Vec::with_capacity(list.len());
    for mut d in list {
        if d.name == "include" && d.block.is_none() {
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(error(
                    &d,
                    "includes nest too deeply (does a file include itself?)",
                ));
            }
            let [pattern] = d.args.as_slice() else {
                return Err(error(&d, "include takes one file name or pattern"));
            };
            let files = glob(&prefix.join(pattern)).map_err(|m| error(&d, &m))?;
            for file in files {
                out.extend(parse_at(&file, prefix, depth + 1)?);
            }
            continue;
        }
        if let Some(children) = d.block.take() {
            d.block = Some(expand_includes(children, prefix, depth)?);
        }
        out.push(d);
    }
    Ok(out)
}

fn error(d: &Directive, message: &str) -> ParseError {
    ParseError {
        file: d.file.clone(),
        line: d.line,
        message: message.to_string(),
    }
}

/// The files `pattern` names: itself when it has no `*`/`?`, else the matches of its last
/// component in its directory, sorted (NGINX sorts glob results too). A pattern matching
/// nothing is fine, as in NGINX; a plain name that does not exist is an error.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if pattern.is_file() {
            Ok(vec![pattern.to_path_buf()])
        } else {
            Err(format!("include: no such file {}", pattern.display()))
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err("include: wildcards are supported in the file name only".into());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| wildcard(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Shell-style match of `*` and `?`; a leading `.` is matched only by a literal `.`.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern, name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

fn tokenize(text: &str, file: &Path) -> Result<Vec<(Token, usize)>, ParseError> {
    let err = |line, message: &str| ParseError {
        file: file.to_path_buf(),
        line,
        message: message.to_string(),
    };
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ';' => {
                tokens.push((Token::Semicolon, line));
                i += 1;
            }
            '{' => {
                tokens.push((Token::Open, line));
                i += 1;
            }
            '}' => {
                tokens.push((Token::Close, line));
                i += 1;
            }
            '"' | '\'' => {
                let start = line;
                let mut word = String::new();
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(err(start, "unterminated quoted string"));
                    };
                    i += 1;
                    match d {
                        '\\' if i < chars.len() => {
                            let e = chars[i];
                            i += 1;
                            match e {
                                '"' | '\'' | '\\' => word.push(e),
                                'n' => word.push('\n'),
                                't' => word.push('\t'),
                                'r' => word.push('\r'),
                                other => {
                                    word.push('\\');
                                    word.push(other);
                                }
                            }
                        }
                        d if d == c => break,
                        '\n' => {
                            line += 1;
                            word.push('\n');
                        }
                        d => word.push(d),
                    }
                }
                tokens.push((Token::Word(word), start));
            }
            _ => {
                let mut word = String::new();
                while i < chars.len() {
                    let d = chars[i];
                    if d.is_whitespace() || d == ';' || d == '}' {
                        break;
                    }
                    if d == '{' {
                        // `${NAME}` is part of the argument; a bare `{` opens a block.
                        if !word.ends_with('$') {
                            break;
                        }
                        while i < chars.len() && chars[i] != '}' {
                            if chars[i] == '\n' {
                                return Err(err(line, "unterminated ${...} in an argument"));
                            }
                            word.push(chars[i]);
                            i += 1;
                        }
                        if i == chars.len() {
                            return Err(err(line, "unterminated ${...} in an argument"));
                        }
                    }
                    word.push(chars[i]);
                    i += 1;
                }
                tokens.push((Token::Word(word), line));
            }
        }
    }
    Ok(tokens)
}

/// Directives up to the matching `}` (`nested`) or the end of the tokens.
fn block(
    tokens: &[(Token, usize)],
    pos: &mut usize,
    file: &Path,
    nested: bool,
) -> Result<Vec<Directive>, ParseError> {
    let err = |line, message: String| ParseError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    loop {
        let Some((token, line)) = tokens.get(*pos) else {
            return if nested {
                Err(err(
                    tokens.last().map_or(1, |t| t.1),
                    "unexpected end of file, expecting \"}\"".into(),
                ))
            } else {
                Ok(out)
            };
        };
        *pos += 1;
        let name = match token {
            Token::Close if nested => return Ok(out),
            Token::Close => return Err(err(*line, "unexpected \"}\"".into())),
            Token::Semicolon | Token::Open => {
                return Err(err(*line, "expected a directive name".into()))
            }
            Token::Word(w) => w.clone(),
        };
        let mut args = Vec::new();
        loop {
            match tokens.get(*pos) {
                Some((Token::Word(w), _)) => {
                    args.push(w.clone());
                    *pos += 1;
                }
                Some((Token::Semicolon, _)) => {
                    *pos += 1;
                    out.push(Directive {
                        name,
                        args,
                        block: None,
                        file: file.to_path_buf(),
                        line: *line,
                    });
                    break;
                }
                Some((Token::Open, _)) => {
                    *pos += 1;
                    let children = block(tokens, pos, file, true)?;
                    out.push(Directive {
                        name,
                        args,
                        block: Some(children),
                        file: file.to_path_buf(),
                        line: *line,
                    });
                    break;
                }
                Some((Token::Close, l)) => {
                    return Err(err(
                        *l,
                        format!("directive \"{name}\" is not terminated by \";\""),
                    ))
                }
                None => {
                    return Err(err(
                        *line,
                        format!("directive \"{name}\" is not terminated by \";\""),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Directive> {
        parse_str(text, Path::new("t.conf")).unwrap()
    }

    #[test]
    fn directives_blocks_comments_quotes_and_placeholders() {
        let d = parse(
            "# a comment\nupstream fp { hash $http_machineid; # trailing\n  server ${FP_HOST}:8093 weight=2;\n}\n\
             server {\n  listen ${FP_PORT};\n  proxy_set_header 'X-A' \"a b;c\";\n}\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "upstream");
        assert_eq!(d[0].args, ["fp"]);
        let up = d[0].children();
        assert_eq!(up[0].text(), "hash $http_machineid");
        assert_eq!(up[1].args, ["${FP_HOST}:8093", "weight=2"]);
        assert_eq!(up[1].line, 3);
        let server = d[1].children();
        assert_eq!(server[0].args, ["${FP_PORT}"]);
        assert_eq!(server[1].args, ["X-A", "a b;c"]);
        assert_eq!(server[1].line, 7);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = parse_str("http {\n  upstream x {\n", Path::new("t.conf")).unwrap_err();
        assert!(e.message.contains("expecting \"}\""), "{e}");
        let e = parse_str("a b\n}", Path::new("t.conf")).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.to_string().starts_with("t.conf:2: directive \"a\""),
            "{e}"
        );
        let e = parse_str("a \"b;\n", Path::new("t.conf")).unwrap_err();
        assert!(e.message.contains("unterminated"), "{e}");
        assert!(parse_str("}", Path::new("t.conf")).is_err());
        assert!(parse_str("a ${X;\n", Path::new("t.conf")).is_err());
    }

    #[test]
    fn includes_are_followed_relative_to_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("nginx.conf"),
            "http {\n  include conf.d/*.conf;\n}\n",
        )
        .unwrap();
        // Included from conf.d/, named relative to the main file's directory.
        std::fs::write(
            dir.path().join("conf.d/b.conf"),
            "upstream b { server b:1; }\ninclude extra/one.inc;\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/a.conf"),
            "upstream a { server a:1; }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/a.conf.bak"), "broken {").unwrap();
        std::fs::write(dir.path().join("conf.d/.hidden.conf"), "broken {").unwrap();
        std::fs::create_dir(dir.path().join("extra")).unwrap();
        std::fs::write(dir.path().join("extra/one.inc"), "client_max_body_size 1m;").unwrap();
        let d = parse_file(&dir.path().join("nginx.conf")).unwrap();
        let http = d[0].children();
        let names: Vec<String> = http.iter().map(|d| d.text()).collect();
        assert_eq!(
            names,
            ["upstream a", "upstream b", "client_max_body_size 1m"]
        );
        assert!(http[0].file.ends_with("conf.d/a.conf"));
        assert_eq!(http[0].line, 1);

        std::fs::write(dir.path().join("loop.conf"), "include loop.conf;").unwrap();
        let e = parse_file(&dir.path().join("loop.conf")).unwrap_err();
        assert!(e.message.contains("nest too deeply"), "{e}");
        std::fs::write(dir.path().join("missing.conf"), "include nope.conf;").unwrap();
        let e = parse_file(&dir.path().join("missing.conf")).unwrap_err();
        assert!(e.message.contains("no such file"), "{e}");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.conf", b"fp.conf"));
        assert!(!wildcard(b"*.conf", b"fp.conf.bak"));
        assert!(!wildcard(b"*.conf", b".fp.conf"));
        assert!(wildcard(b"f?.conf", b"fp.conf"));
        assert!(wildcard(b"*", b"x"));
    }
}
