//! Where each key of a YAML document sits: a map from key path (`services[0].listen`) to its
//! 1-based line. serde_yaml reports lines only for syntax errors; this index lets every later
//! error (unknown key, bad address, duplicate name) point at the line to edit.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Key path → line. Built once per load from the same text serde_yaml parsed.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Index `text`. A document yaml-rust2 cannot parse yields an empty index: lines are a
    /// convenience, and serde_yaml has already reported the syntax error itself.
    pub fn new(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        Self {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one (a key inside an alias, or a
    /// key the file does not contain, falls back to its parent's line).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = parent(path)?;
        }
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → None.
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

/// Joins a child key onto a path the way error messages print it.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a sequence index onto a path.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Builder {
    /// Path of the node this event starts, recording lines as a side effect. `None` for a
    /// mapping key (which is not a node with children of its own here).
    fn node_path(&mut self, event: &Event, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = join_index(path, *next);
                *next += 1;
                self.lines.entry(item.clone()).or_insert(mark.line());
                Some(item)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(key) => Some(join_key(path, &key)),
                None => {
                    // This event is a key. Only scalar keys can be named in a path.
                    let name = match event {
                        Event::Scalar(name, ..) => name.clone(),
                        _ => "?".to_string(),
                    };
                    let full = join_key(path, &name);
                    self.lines.entry(full).or_insert(mark.line());
                    *key = Some(name);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(event, Event::MappingStart(..));
                // A collection used as a mapping key gets a placeholder path.
                let path = self
                    .node_path(&event, mark)
                    .unwrap_or_else(|| "?".to_string());
                self.stack.push(if is_map {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.node_path(&event, mark);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
server:
  threads: 2
services:
  - name: a
    backends:
      - 10.0.0.1:80
      - { address: 10.0.0.2:80, weight: 2 }
  - name: b
    hash:
      header: machineid
";

    #[test]
    fn finds_keys_and_items() {
        let index = LineIndex::new(DOC);
        assert_eq!(index.line_of("server"), Some(1));
        assert_eq!(index.line_of("server.threads"), Some(2));
        assert_eq!(index.line_of("services[0].name"), Some(4));
        assert_eq!(index.line_of("services[0].backends[0]"), Some(6));
        assert_eq!(index.line_of("services[0].backends[1].weight"), Some(7));
        assert_eq!(index.line_of("services[1]"), Some(8));
        assert_eq!(index.line_of("services[1].hash.header"), Some(10));
    }

    #[test]
    fn unknown_paths_fall_back_to_parent() {
        let index = LineIndex::new(DOC);
        assert_eq!(index.line_of("services[1].hash.nope"), Some(9));
        assert_eq!(index.line_of("nothing.here"), None);
    }

    #[test]
    fn broken_yaml_gives_empty_index() {
        let index = LineIndex::new("a: [1, 2\nb: 3");
        assert_eq!(index.line_of("a"), None);
    }
}
