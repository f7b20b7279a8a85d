//! Line numbers for key paths in a YAML file, so that checks made after
//! deserialising (duplicate routes, bad step names) can still say `file:line`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Maps a key path (`["pipelines", "crm_contact", "chain", "1"]`) to the line
/// where that key or sequence item starts.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<Vec<String>, usize>,
}

impl LineIndex {
    /// Indexes `text`; a file that does not parse yields an empty index (the
    /// deserialiser reports the syntax error with its own line).
    pub fn build(text: &str) -> Self {
        let mut indexer = Indexer::default();
        let _ = Parser::new_from_str(text).load(&mut indexer, false);
        LineIndex {
            lines: indexer.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len()).rev().find_map(|n| {
            let key: Vec<String> = path[..n].iter().map(|s| s.to_string()).collect();
            self.lines.get(&key).copied()
        })
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { next: usize },
}

#[derive(Default)]
struct Indexer {
    frames: Vec<Frame>,
    path: Vec<String>,
    lines: HashMap<Vec<String>, usize>,
}

impl Indexer {
    /// A value starts inside the current container: step into its path.
    fn enter_value(&mut self, mark: Marker) {
        match self.frames.last_mut() {
            Some(Frame::Map { key }) => {
                let k = key.clone().unwrap_or_default();
                self.path.push(k);
            }
            Some(Frame::Seq { next }) => {
                let i = next.to_string();
                *next += 1;
                self.path.push(i);
                self.lines.insert(self.path.clone(), mark.line());
            }
            None => {}
        }
    }

    fn leave_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key }) => {
                *key = None;
                self.path.pop();
            }
            Some(Frame::Seq { .. }) => {
                self.path.pop();
            }
            None => {}
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::MappingStart(..) => {
                self.enter_value(mark);
                self.frames.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.enter_value(mark);
                self.frames.push(Frame::Seq { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.leave_value();
            }
            Event::Scalar(s, ..) => {
                if let Some(Frame::Map { key: key @ None }) = self.frames.last_mut() {
                    *key = Some(s.clone());
                    let mut p = self.path.clone();
                    p.push(s);
                    self.lines.insert(p, mark.line());
                } else {
                    self.enter_value(mark);
                    self.leave_value();
                }
            }
            Event::Alias(_) => {
                self.enter_value(mark);
                self.leave_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineIndex;

    #[test]
    fn finds_keys_and_items() {
        let text = "kafka:\n  brokers: x\npipelines:\n  a:\n    chain:\n      - s.one\n      - s.two\n  b:\n    chain: [s.x, s.y]\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line(&["kafka", "brokers"]), Some(2));
        assert_eq!(idx.line(&["pipelines", "a", "chain", "1"]), Some(7));
        assert_eq!(idx.line(&["pipelines", "b"]), Some(8));
        assert_eq!(idx.line(&["pipelines", "b", "chain", "1"]), Some(9));
        assert_eq!(idx.line(&["pipelines", "b", "nope"]), Some(8));
    }
}
