//! Where each node of a YAML document starts, by path (`services[0].real_servers[1].address`),
//! so that errors found after deserialisation still point at `FILE:LINE:COLUMN`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Path → position of the value at that path (for map entries, the value; `key@path` for keys).
#[derive(Debug, Default)]
pub struct Positions {
    by_path: HashMap<String, Position>,
}

impl Positions {
    /// Indexes `text`; a document that does not parse yields an empty index (serde_yaml
    /// reports the syntax error with its own location).
    pub fn index(text: &str) -> Self {
        let mut walker = Walker::default();
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Positions { by_path: walker.by_path }
    }

    /// The position of the value at `path`, or of its nearest indexed ancestor.
    pub fn find(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.by_path.get("").copied().unwrap_or(Position { line: 1, column: 1 }),
            }
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    by_path: HashMap<String, Position>,
}

fn position(mark: Marker) -> Position {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Position { line: mark.line(), column: mark.col() + 1 }
}

impl Walker {
    /// Path of the node that starts now; `None` when the node is a mapping key.
    fn node_path(&mut self, ev: &Event, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(if path.is_empty() { k } else { format!("{path}.{k}") }),
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => "?".to_string(),
                    };
                    let full = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                    self.by_path.entry(format!("key@{full}")).or_insert(position(mark));
                    *key = Some(name);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(..) | Event::Alias(..) => {
                if let Some(p) = self.node_path(&ev, mark) {
                    self.by_path.entry(p).or_insert(position(mark));
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key is not valid config; index it as "?".
                let p = self.node_path(&ev, mark).unwrap_or_else(|| "?".into());
                self.by_path.entry(p.clone()).or_insert(position(mark));
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Map { path: p, key: None },
                    _ => Frame::Seq { path: p, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values() {
        let text = "a:\n  b:\n    - x: 1\n    - { x: 2, y: 3 }\n";
        let pos = Positions::index(text);
        assert_eq!(pos.find("a.b[0].x"), Position { line: 3, column: 10 });
        assert_eq!(pos.find("a.b[1].y"), Position { line: 4, column: 18 });
        assert_eq!(pos.find("key@a.b"), Position { line: 2, column: 3 });
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(pos.find("a.b[1].zzz"), Position { line: 4, column: 7 });
    }
}
