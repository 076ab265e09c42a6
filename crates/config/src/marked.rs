//! A small tree of one YAML document with the position of every node, built from yaml-rust2's
//! marked events: used to read a document's header and to point a diagnostic at the line of a
//! field path such as `spec.services[1].name`.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A position inside a document; line and column are 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Pos {
        // yaml-rust2's lines are 1-based, its columns 0-based.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Value {
    Scalar(String),
    Seq(Vec<Node>),
    /// Entries in file order: (key, value).
    Map(Vec<(Node, Node)>),
    Alias,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// Deeper nesting than this is rejected rather than risking the stack.
const MAX_DEPTH: usize = 128;

impl Node {
    /// Parses one document; `Ok(None)` if it has no content (only comments, or `---` alone).
    pub fn parse(text: &str) -> Result<Option<Node>, (Pos, String)> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // Events are pulled one by one rather than with `Parser::load`, which recurses once per
        // nesting level and so can overflow the stack on hostile input.
        loop {
            let (event, mark) = parser
                .next_token()
                .map_err(|e| (Pos::from(*e.marker()), e.info().to_string()))?;
            if matches!(event, Event::DocumentEnd | Event::StreamEnd) {
                break;
            }
            builder.on_event(event, mark);
            if let Some(pos) = builder.too_deep {
                return Err((pos, format!("nested more than {MAX_DEPTH} levels deep")));
            }
        }
        Ok(builder.root.filter(|root| {
            !matches!(&root.value, Value::Scalar(s) if s.is_empty() || s == "~" || s == "null")
        }))
    }

    /// The node at a path such as `spec.services[2]`.
    pub fn at(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for step in steps(path) {
            node = node.step(step)?.0;
        }
        Some(node)
    }

    /// The node one step down (a mapping's field, a sequence's item, or a mapping's key given
    /// in brackets), with the position a diagnostic points at: the key's, or the item's.
    fn step(&self, step: Step<'_>) -> Option<(&Node, Pos)> {
        match (step, &self.value) {
            (Step::Index(i), Value::Seq(items)) => {
                let item = items.get(i.parse::<usize>().ok()?)?;
                Some((item, item.pos))
            }
            (Step::Key(key) | Step::Index(key), Value::Map(_)) => {
                self.entry(key).map(|(k, v)| (v, k.pos))
            }
            _ => None,
        }
    }

    /// The value of a mapping's field.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, value)| value)
    }

    fn entry(&self, key: &str) -> Option<&(Node, Node)> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Where `path` (`spec.services[1].name`, `spec.http[0].headers.request.set[x-a]`) is: a
    /// mapping field's key, a sequence element's first character. A path that does not exist
    /// resolves to its deepest existing parent.
    pub fn locate(&self, path: &str) -> Pos {
        let (mut node, mut pos) = (self, self.pos);
        for step in steps(path) {
            match node.step(step) {
                Some((next, at)) => (node, pos) = (next, at),
                None => return pos,
            }
        }
        pos
    }
}

/// One step of a field path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step<'a> {
    /// `name` (between dots).
    Key(&'a str),
    /// `[…]`: a sequence's index, or a mapping's key written as it is (it may hold dots or
    /// spaces, or be empty).
    Index(&'a str),
}

/// The steps of `a.b[0].c[some key]`.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').unwrap_or(inner.len());
            out.push(Step::Index(&inner[..end]));
            rest = inner.get(end + 1..).unwrap_or("");
        } else if let Some(after) = rest.strip_prefix('.') {
            rest = after;
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Step::Key(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

#[derive(Default)]
struct Builder {
    /// Open sequences and mappings, each with the key waiting for its value (mappings only).
    open: Vec<(Node, Option<Node>)>,
    root: Option<Node>,
    too_deep: Option<Pos>,
}

impl Builder {
    fn add(&mut self, node: Node) {
        match self.open.last_mut() {
            None => self.root = self.root.take().or(Some(node)),
            Some((
                Node {
                    value: Value::Seq(items),
                    ..
                },
                _,
            )) => items.push(node),
            Some((
                Node {
                    value: Value::Map(entries),
                    ..
                },
                key,
            )) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
            Some(_) => {}
        }
    }

    fn open(&mut self, value: Value, pos: Pos) {
        if self.open.len() >= MAX_DEPTH {
            self.too_deep.get_or_insert(pos);
        }
        self.open.push((Node { pos, value }, None));
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match event {
            Event::Scalar(s, ..) => self.add(Node {
                pos,
                value: Value::Scalar(s),
            }),
            Event::Alias(_) => self.add(Node {
                pos,
                value: Value::Alias,
            }),
            Event::SequenceStart(..) => self.open(Value::Seq(Vec::new()), pos),
            Event::MappingStart(..) => self.open(Value::Map(Vec::new()), pos),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((mut node, _)) = self.open.pop() {
                    // A block collection's start mark lies past its first token: use its first
                    // child's position instead.
                    match &node.value {
                        Value::Seq(items) if !items.is_empty() => node.pos = items[0].pos,
                        Value::Map(entries) if !entries.is_empty() => node.pos = entries[0].0.pos,
                        _ => {}
                    }
                    self.add(node);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_reach_mapping_keys_written_in_brackets() {
        assert_eq!(
            steps("a.b[0].c[x.y z]"),
            vec![
                Step::Key("a"),
                Step::Key("b"),
                Step::Index("0"),
                Step::Key("c"),
                Step::Index("x.y z"),
            ]
        );
        let doc = "spec:\n  set:\n    x-a: one\n    \"bad name\": two\n    \"\": three\n  list:\n  - a\n  - b\n";
        let tree = Node::parse(doc).unwrap().unwrap();
        let line = |path: &str| tree.locate(path).line;
        assert_eq!(line("spec.set[x-a]"), 3);
        assert_eq!(line("spec.set[bad name]"), 4);
        assert_eq!(line("spec.set[]"), 5);
        assert_eq!(line("spec.list[1]"), 8);
        assert_eq!(line("spec.set[missing]"), 2, "the deepest existing parent");
        assert_eq!(
            tree.at("spec.set[bad name]").and_then(Node::as_str),
            Some("two")
        );
    }
}
