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
//! - [`Store`] / [`Resource`]: the resources in force, keyed by kind, namespace and name, as
//!   `weft apply` / `weft delete` change them.
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
mod store;

pub use diagnostic::{Diagnostic, Errors};
pub use format::API_VERSION;
pub use store::{resources, Resource, Store};

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

/// Reads files and directories into a [`Store`] (not yet validated: call [`Store::load`]).
pub fn read_store(paths: &[PathBuf]) -> Result<Store, Errors> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| read_error(path, e))?;
            let mut names: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect();
            names.sort();
            files.extend(names);
        } else {
            files.push(path.clone());
        }
    }
    let mut store = Store::default();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| read_error(&f, e))?;
        store = store.applied(resources(&f, &text));
    }
    Ok(store)
}

fn read_error(path: &Path, e: std::io::Error) -> Errors {
    Errors(vec![Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read: {e}"),
    }])
}

/// Loads one file's text; `file` is only used in diagnostics.
pub fn load_str(file: &Path, text: &str) -> Result<Loaded, Errors> {
    let mut loader = loader::Loader::default();
    loader.text(file, text);
    loader.finish()
}

#[cfg(test)]
mod tests;
