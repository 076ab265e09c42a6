//! weft's mesh files: YAML (or JSON) `kind: Mesh` documents (plus Istio VirtualServices and
//! DestinationRules, Gateway API HTTPRoutes and SMI TrafficSplits, which become the mesh's routes) in, one validated
//! [`model::MeshSpec`] out, with every problem reported as `FILE:LINE:COL: FIELD: MESSAGE`.
//!
//! Layout:
//! - [`load`] / [`load_str`]: the entry points; files, directories (`*.yaml`, `*.yml`, `*.json`)
//!   and multi-document files, merged into one mesh.
//! - `split`: cuts a file into documents at `---` / `...` lines, keeping their start lines.
//! - `marked`: a position-marked tree of a document (yaml-rust2 events), to find a field's line.
//! - `format`: the serde shape of a `kind: Mesh` document.
//! - `istio`: Istio VirtualService / DestinationRule documents, translated into routes.
//! - `gateway`: Gateway API HTTPRoutes bound to Services (GAMMA) and SMI TrafficSplits,
//!   translated into routes (VirtualService > HTTPRoute > TrafficSplit when several apply).
//! - `policy`: durations and Istio `retryOn` lists, for timeouts and retries.
//! - `loader`: header reading, validation, merging, and the unsupported-kind notices.
//! - [`Diagnostic`] / [`Errors`]: what goes wrong, where.

mod diagnostic;
mod format;
mod gateway;
mod istio;
mod k8s;
mod loader;
mod marked;
mod policy;
mod split;

pub use diagnostic::{Diagnostic, Errors};
pub use format::API_VERSION;

use std::path::{Path, PathBuf};

/// What a set of files declares.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The merged `kind: Mesh` documents; `None` if there were none.
    pub mesh: Option<model::MeshSpec>,
    /// Documents of kinds weft does not implement yet (a Gateway, …), one notice each, and
    /// fields of implemented kinds that are accepted but ignored for now (a VirtualService's
    /// `fault`, …), one notice each with its line: warnings for the caller to print.
    pub unsupported: Vec<Diagnostic>,
}

/// Loads files and directories (a directory means its `*.yaml`, `*.yml` and `*.json` files,
/// sorted by name, not recursive), like `kubectl apply -f`.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, Errors> {
    let mut loader = loader::Loader::default();
    for path in paths {
        if path.is_dir() {
            loader.dir(path);
        } else {
            loader.file(path);
        }
    }
    loader.finish()
}

/// Loads one file's text; `file` is only used in diagnostics.
pub fn load_str(file: &Path, text: &str) -> Result<Loaded, Errors> {
    let mut loader = loader::Loader::default();
    loader.text(file, text);
    loader.finish()
}

#[cfg(test)]
mod tests;
