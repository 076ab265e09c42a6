//! Located documents: one document of one file with its position-marked tree ([`Doc`]), a parsed
//! document kept until every file has been read ([`Parsed`]), and the diagnostics that point
//! into them (a field's line, serde's errors, an annotation's key, a whole file).

use crate::diagnostic::Diagnostic;
use crate::marked::{Node, Pos, Value};
use std::path::{Path, PathBuf};

/// A parsed document of one dialect (its `kind`), kept with its marked tree until every file
/// has been read.
#[derive(Debug)]
pub(crate) struct Parsed<K> {
    pub file: PathBuf,
    pub first_line: usize,
    pub tree: Node,
    pub kind: K,
}

impl<K> Parsed<K> {
    /// The document, for locating errors.
    pub fn doc(&self) -> Doc<'_> {
        Doc {
            file: &self.file,
            first_line: self.first_line,
            tree: &self.tree,
        }
    }
}

/// One document of one file, to turn field paths into diagnostics.
pub(crate) struct Doc<'a> {
    pub file: &'a Path,
    pub first_line: usize,
    pub tree: &'a Node,
}

/// An annotation of an object (`metadata.annotations` of a Kubernetes object, or a Mesh file
/// service's `annotations`) and where it is written.
#[derive(Clone, Debug)]
pub(crate) struct Annotation {
    pub key: String,
    /// `None` when the value is not a string.
    pub value: Option<String>,
    /// A diagnostic at the annotation's key, without a message yet.
    pub at: Diagnostic,
}

impl Doc<'_> {
    /// A diagnostic at `pos` of this document.
    pub fn at(&self, pos: Pos, field: &str, message: impl Into<String>) -> Diagnostic {
        at(self.file, self.first_line, pos, field, message.into())
    }

    /// A diagnostic at the line of `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.at(self.tree.locate(field), field, message)
    }

    /// A check's refusal (`model::valid`: what the proxy could not build), if any, as an error
    /// at `field`; whether the value passed.
    pub fn check<T>(
        &self,
        field: &str,
        result: Result<T, String>,
        errors: &mut Vec<Diagnostic>,
    ) -> bool {
        match result {
            Ok(_) => true,
            Err(why) => {
                errors.push(self.error(field, why));
                false
            }
        }
    }

    /// `FILE:LINE` of `field`, for "first defined at" messages.
    pub fn place(&self, field: &str) -> String {
        let d = self.error(field, "");
        format!("{}:{}", d.file.display(), d.line)
    }

    /// serde_yaml_ng's error as a diagnostic. Its message reads `PATH: MESSAGE at line L column C`;
    /// an unknown, missing or duplicate field's name is added to the path.
    pub fn serde_error(&self, err: &serde_yaml_ng::Error) -> Diagnostic {
        let text = err.to_string();
        let text = match (err.location(), text.rfind(" at line ")) {
            (Some(_), Some(i)) => &text[..i],
            _ => &text,
        };
        let (path, message) = match text.split_once(": ") {
            Some((path, message)) if !path.contains(' ') => (path, message),
            _ => ("", text),
        };
        let named = ["unknown field `", "missing field `", "duplicate field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix)?.split('`').next());
        let field = match named {
            Some(name) if path.is_empty() => name.to_string(),
            Some(name) => format!("{path}.{name}"),
            None => path.to_string(),
        };
        match err.location() {
            Some(l) if field.is_empty() => self.at(
                Pos {
                    line: l.line(),
                    column: l.column(),
                },
                "",
                message,
            ),
            _ => self.error(&field, message),
        }
    }

    /// The annotations with string keys of the object at `base` (`metadata` of a Kubernetes
    /// object, `spec.services[2]` of a Mesh document), in file order, each located at its key
    /// as the field `BASE.annotations[KEY]`.
    pub fn annotations(&self, base: &str) -> Vec<Annotation> {
        let Some(node) = self.tree.at(base).and_then(|n| n.get("annotations")) else {
            return Vec::new();
        };
        let Value::Map(entries) = &node.value else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| {
                let key = k.as_str()?;
                Some(Annotation {
                    key: key.to_string(),
                    value: v.as_str().map(str::to_string),
                    at: self.at(k.pos, &format!("{base}.annotations[{key}]"), ""),
                })
            })
            .collect()
    }
}

/// A diagnostic at `pos` of the document that starts at file line `first_line`.
pub(crate) fn at(
    file: &Path,
    first_line: usize,
    pos: Pos,
    field: &str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: first_line + pos.line.saturating_sub(1),
        column: pos.column,
        field: field.to_string(),
        message,
    }
}

/// A diagnostic about a whole file (it cannot be read, …): no line, no field.
pub(crate) fn whole_file(file: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
    }
}
