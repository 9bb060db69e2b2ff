//! Where each node of a YAML document sits: field path → line, so validation can point at the
//! line of `spec.workloads[0].http.port` after serde has forgotten it.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line numbers (1-based) of the nodes of one YAML document, by field path
/// (`spec.workloads[0].http.port`; the root is `""`).
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    /// Line of the document's first node.
    pub start: usize,
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return *l;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.lines.get("").copied().unwrap_or(self.start),
            }
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Indexer {
    docs: Vec<LineIndex>,
    stack: Vec<Frame>,
}

impl Indexer {
    /// The path of the node that starts now, advancing the parent's position.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => key.take().map(|k| {
                if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }
            }),
        }
    }

    /// True when the parent is a mapping waiting for a key (the scalar is a key, not a node).
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn record(&mut self, path: &str, line: usize) {
        if let Some(doc) = self.docs.last_mut() {
            doc.lines.entry(path.to_string()).or_insert(line);
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                self.docs.push(LineIndex {
                    start: line,
                    ..Default::default()
                });
                self.stack.clear();
            }
            Event::Scalar(value, ..) => {
                if self.expects_key() {
                    if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                        let p = if path.is_empty() {
                            value.clone()
                        } else {
                            format!("{path}.{value}")
                        };
                        *key = Some(value);
                        self.record(&p, line);
                    }
                } else if let Some(p) = self.next_path() {
                    self.record(&p, line);
                }
            }
            Event::Alias(_) => {
                if self.expects_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("*alias".into());
                    }
                } else {
                    self.next_path();
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex mapping key: index it under a placeholder so the stack stays balanced.
                let path = if self.expects_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("?".into());
                    }
                    "?".to_string()
                } else {
                    self.next_path().unwrap_or_default()
                };
                self.record(&path, line);
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Indexes every document of a YAML stream. Returns the scanner's error (with its line) when the
/// text is not YAML.
pub fn index_documents(text: &str) -> Result<Vec<LineIndex>, (usize, String)> {
    let mut indexer = Indexer::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut indexer, true)
        .map_err(|e| (e.marker().line(), e.info().to_string()))?;
    Ok(indexer.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_of_nested_fields() {
        let text = "a: 1\nspec:\n  workloads:\n    - name: x\n      http:\n        port: 80a\n    - name: y\n---\nb: 2\n";
        let docs = index_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line_of("a"), 1);
        assert_eq!(docs[0].line_of("spec.workloads[0].http.port"), 6);
        assert_eq!(docs[0].line_of("spec.workloads[1].name"), 7);
        assert_eq!(docs[0].line_of("spec.workloads[1].missing"), 7);
        assert_eq!(docs[1].line_of("b"), 9);
    }

    #[test]
    fn reports_syntax_errors_with_lines() {
        let (line, _) = index_documents("a: 1\nb: [\n").unwrap_err();
        assert!(line >= 2, "{line}");
    }
}
