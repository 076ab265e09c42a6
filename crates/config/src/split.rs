//! Splits a file into its YAML documents, remembering the line each one starts at, so that
//! positions inside a document can be reported as lines of the whole file; and finds what makes
//! a file no YAML text at all (a NUL byte, other control characters).

/// The first character YAML does not allow in a document (its `c-printable` set: no control
/// characters but tab, LF and CR, no DEL, no C1 controls but NEL, no U+FFFE / U+FFFF), with its
/// 1-based line and column: a binary file, or one a tool mangled, is not configuration.
pub(crate) fn unprintable(text: &str) -> Option<(usize, usize, char)> {
    let allowed = |c: char| match c {
        '\t' | '\n' | '\r' | '\u{85}' => true,
        '\u{fffe}' | '\u{ffff}' => false,
        c => !c.is_control(),
    };
    let (mut line, mut column) = (1, 1);
    for c in text.chars() {
        if !allowed(c) {
            return Some((line, column, c));
        }
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    None
}

/// One document of a file: its text and the (1-based) file line its text starts at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Document<'a> {
    pub first_line: usize,
    pub text: &'a str,
}

/// A line starting with `---` at column 0 starts a document (and belongs to it); a line starting
/// with `...` ends one. Empty documents are returned too; the caller skips them.
pub(crate) fn split(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let (mut start, mut first_line, mut offset) = (0, 1, 0);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| {
            content
                .strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        };
        if marker("---") {
            documents.push(Document {
                first_line,
                text: &text[start..offset],
            });
            (start, first_line) = (offset, i + 1);
        } else if marker("...") {
            documents.push(Document {
                first_line,
                text: &text[start..offset],
            });
            (start, first_line) = (offset + line.len(), i + 2);
        }
        offset += line.len();
    }
    documents.push(Document {
        first_line,
        text: &text[start..],
    });
    documents
}
