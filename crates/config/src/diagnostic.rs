//! What the loader reports: one [`Diagnostic`] per problem, pointing at a file, line and field.

use std::fmt;
use std::path::PathBuf;

/// One problem (or notice) about a file, at `line`:`column` (both 1-based; 0 when the problem is
/// about the whole file, e.g. it cannot be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The offending field, e.g. `spec.services[0].workloads[1].command`; empty if none.
    pub field: String,
    pub message: String,
}

/// `FILE:LINE:COL: FIELD: MESSAGE`, without `FIELD: ` when there is no field and without
/// `:LINE:COL` when there is no line.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// Everything wrong with a set of files, one diagnostic per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct Errors(pub Vec<Diagnostic>);

fn lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(Diagnostic::to_string).collect();
    lines.join("\n")
}

impl Diagnostic {
    /// The same place with another message (a warning about what was found there).
    pub(crate) fn with_message(&self, message: String) -> Diagnostic {
        Diagnostic {
            message,
            ..self.clone()
        }
    }
}

/// A resource's errors as the diagnostics of its rejection: each message starts with the
/// resource's `KIND NS/NAME: `, which [`crate::Loaded::rejected_for`] relies on.
pub(crate) fn reject(label: &str, errors: Vec<Diagnostic>, rejected: &mut Vec<Diagnostic>) {
    rejected.extend(errors.into_iter().map(|d| Diagnostic {
        message: format!("{label}: {}", d.message),
        ..d
    }));
}
