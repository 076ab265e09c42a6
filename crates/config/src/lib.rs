//! weft's mesh files: YAML (or JSON) `kind: Mesh` documents (plus Istio VirtualServices,
//! DestinationRules and Gateways, Gateway API HTTPRoutes and Gateways, SMI TrafficSplits, and
//! Linkerd ServiceProfiles, `policy.linkerd.io` HTTPRoutes and annotations, which become the
//! mesh's routes, policies and ingress routes; and Istio `security.istio.io` and Linkerd
//! `policy.linkerd.io` security resources and Namespaces, which become its security policies)
//! in, one validated [`model::MeshSpec`] out, with every problem reported as
//! `FILE:LINE:COL: FIELD: MESSAGE`.
//!
//! An error in a `kind: Mesh` document, a YAML syntax error or a file that cannot be read fails
//! the whole load ([`Errors`]). A routing or security resource (VirtualService, DestinationRule,
//! Gateway, HTTPRoute, TrafficSplit, ServiceProfile, PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication, Server, ServerAuthorization, MeshTLSAuthentication,
//! NetworkAuthentication, Namespace) that cannot be honoured is rejected alone: its errors, each
//! naming `KIND NS/NAME` (`Namespace NAME`), go to [`Loaded::rejected`] and the rest applies.
//!
//! When several APIs route one service (or one ingress host), one wins and a warning in
//! [`Loaded::unsupported`] names both resources: VirtualService > ServiceProfile (with routes
//! or dstOverrides, as in Linkerd) > HTTPRoute > TrafficSplit.
//! Within one API: the first VirtualService (bound to `mesh`) and the first DestinationRule
//! loaded for a host apply and later ones are rejected; HTTPRoutes of one service merge by the
//! Gateway API's precedence; one TrafficSplit per service.
//!
//! Layout:
//! - [`load`] / [`load_str`]: the entry points; files, directories (`*.yaml`, `*.yml`, `*.json`)
//!   and multi-document files, merged into one mesh.
//! - `loader`: header reading, validation, merging, and the unsupported-kind notices; it hands
//!   each document to its dialect and resolves the dialects once every file is read.
//! - [`inject`]: Kubernetes workloads given weft's sidecar and capture init container (`weft
//!   inject`, the admission webhook): YAML in, YAML out, errors located the same way.
//! - [`Store`] / [`Resource`]: the resources in force, keyed by API group, kind, namespace and
//!   name, as `weft apply` / `weft delete` change them.
//!
//! The dialects, which import the shared modules below and never each other:
//! - `istio`: Istio VirtualService / DestinationRule / Gateway documents, translated into
//!   routes, filters, traffic policies and ingress routes.
//! - `gateway`: Gateway API HTTPRoutes bound to Services (GAMMA) or Gateways, their filters,
//!   Gateways, and SMI TrafficSplits, translated into routes and ingress routes.
//! - `linkerd`: Linkerd ServiceProfiles (conditions in disjunctive normal form, response
//!   classes, dstOverrides, retry budgets), `policy.linkerd.io` HTTPRoutes (translated by
//!   `gateway`), and the retry, timeout and failure-accrual annotations of Services and
//!   HTTPRoutes.
//! - `security`: Istio `security.istio.io` PeerAuthentications, AuthorizationPolicies and
//!   RequestAuthentications, Linkerd `policy.linkerd.io` Servers, authorizations,
//!   authentications and inbound HTTPRoutes (Server parents), default inbound policies (Mesh
//!   documents, service and `kind: Namespace` annotations), translated into
//!   [`model::security::SecuritySpec`].
//!
//! The shared modules, which import no dialect:
//! - `split`: cuts a file into documents at `---` / `...` lines, keeping their start lines.
//! - `marked`: a position-marked tree of a document (yaml-rust2 events), to find a field's line.
//! - `doc`: a document with its tree and file, and the diagnostics located in it.
//! - [`Diagnostic`] / [`Errors`]: what goes wrong, where.
//! - `format`: the serde shape of a `kind: Mesh` document.
//! - `k8s`: Kubernetes object framing (header, metadata, `spec`) and resource names in
//!   diagnostics.
//! - `http_route`: the HTTPRoute's shape as the Gateway API and Linkerd write it, and its
//!   matches.
//! - `services`: the mesh's services as route translation checks them, and which API wins.
//! - `ingress`: hostname intersection and the ingress gateway's virtual hosts.
//! - `policy`: durations and Istio `retryOn` lists, for timeouts and retries.
//! - `pattern`: regular expressions in routes, checked as the proxy compiles them.
//! - `valid`: the backstop behind the field checks: every route, traffic policy and JWT
//!   rule a resource translates into, checked whole as the proxy decodes it
//!   (`model::valid`) and located at the part it came from.

pub mod canary;
mod capture;
mod diagnostic;
mod doc;
mod format;
mod gateway;
mod http_route;
mod ingress;
pub mod inject;
mod istio;
mod k8s;
mod linkerd;
mod loader;
mod marked;
mod pattern;
mod policy;
mod ports;
mod security;
mod services;
mod split;
mod store;
mod valid;

pub use diagnostic::{Diagnostic, Errors};
pub use format::API_VERSION;
pub use store::{resources, Resource, Store};

use std::path::{Path, PathBuf};

/// What a set of files declares.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The merged `kind: Mesh` documents; `None` if there were none.
    pub mesh: Option<model::MeshSpec>,
    /// Documents of kinds weft does not implement yet (a ServiceEntry, …), one notice each,
    /// fields of implemented kinds that are accepted but ignored for now (a VirtualService's
    /// `delegate`, …), one notice each with its line, and what applies but may surprise (two
    /// APIs routing one service, and which wins): warnings for the caller to print.
    pub unsupported: Vec<Diagnostic>,
    /// The errors of routing and security resources that were rejected (and left out); each
    /// message starts with the resource's `KIND NS/NAME: ` (`Namespace NAME: `). The rest of the
    /// configuration applies.
    pub rejected: Vec<Diagnostic>,
    /// The progressive rollouts declared (`kind: Canary`), for the control plane's canary
    /// controller; a Canary with errors is rejected (in `rejected`) and not here.
    pub canaries: Vec<model::canary::Canary>,
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

/// The configuration files of a directory: its `*.yaml`, `*.yml` and `*.json` files (not its
/// subdirectories), sorted by name. `weft up DIR`, `weft apply -f DIR` and `--watch` all read a
/// directory this way.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads files and directories into a [`Store`] (not yet validated: call [`Store::load`]).
pub fn read_store(paths: &[PathBuf]) -> Result<Store, Errors> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(config_files(path).map_err(|e| read_error(path, e))?);
        } else {
            files.push(path.clone());
        }
    }
    let mut store = Store::default();
    for f in files {
        let text = read_text(&f).map_err(|d| Errors(vec![d]))?;
        store = store.applied(resources(&f, &text));
    }
    Ok(store)
}

fn read_error(path: &Path, e: std::io::Error) -> Errors {
    Errors(vec![doc::whole_file(path, format!("cannot read: {e}"))])
}

/// A configuration file's text. A file that cannot be read, or is not UTF-8 text (then with the
/// line and column of the first byte that is not), is a diagnostic naming it.
pub fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let bytes =
        std::fs::read(path).map_err(|e| doc::whole_file(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // Up to the first bad byte the text is UTF-8: count its lines and characters.
        let text = std::str::from_utf8(good).unwrap_or_default();
        let line = text.matches('\n').count() + 1;
        let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic {
            file: path.to_path_buf(),
            line,
            column,
            field: String::new(),
            message: format!(
                "not UTF-8 text: byte 0x{:02X} here (a binary file, or another encoding?)",
                e.as_bytes()[good.len()]
            ),
        }
    })
}

/// Loads one file's text; `file` is only used in diagnostics.
pub fn load_str(file: &Path, text: &str) -> Result<Loaded, Errors> {
    let mut loader = loader::Loader::default();
    loader.text(file, text);
    loader.finish()
}

#[cfg(test)]
mod tests;
