//! Kubernetes object framing shared by every API read from Kubernetes-style YAML (Istio,
//! Gateway API, SMI, Linkerd): the header, metadata and a kind-specific `spec`, and how a
//! resource is named in diagnostics (`KIND NS/NAME`).

use crate::marked::Node;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// A Kubernetes object as written: header, metadata and a kind-specific `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Object<S> {
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
    /// What `kubectl get -o yaml` prints back; not configuration.
    #[allow(dead_code)]
    pub status: Option<Value>,
}

/// Kubernetes object metadata: name, namespace and creation time (HTTPRoute precedence) are
/// used; labels, annotations and the rest are accepted as in any Kubernetes object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Metadata {
    pub name: String,
    pub namespace: Option<String>,
    pub creation_timestamp: Option<String>,
}

impl Metadata {
    /// The object's namespace, `default` when it names none (as kubectl applies it).
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(model::names::DEFAULT_NAMESPACE)
    }
}

/// Whether an `apiVersion` is Linkerd's `policy.linkerd.io`.
pub(crate) fn is_policy_group(api_version: &str) -> bool {
    api_version.starts_with("policy.linkerd.io/")
}

/// How a kind is named in diagnostics: `KIND.policy.linkerd.io` (kubectl's `KIND.GROUP`) for
/// Linkerd's kinds, so that its HTTPRoute cannot be mistaken for the Gateway API's, nor its
/// AuthorizationPolicy for Istio's.
pub(crate) fn kind_label(api_version: &str, kind: &str) -> String {
    if is_policy_group(api_version) {
        format!("{kind}.policy.linkerd.io")
    } else {
        kind.to_string()
    }
}

/// How a resource is named in diagnostics (`KIND NS/NAME`, `Namespace NAME`), from its header
/// and tree: for one that does not parse.
pub(crate) fn label_of(api_version: &str, kind: &str, tree: &Node) -> String {
    let meta = |field: &str| {
        tree.get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Node::as_str)
    };
    let name = meta("name").unwrap_or_default();
    if kind == "Namespace" {
        return format!("Namespace {name}");
    }
    let namespace = meta("namespace").unwrap_or(model::names::DEFAULT_NAMESPACE);
    format!("{} {namespace}/{name}", kind_label(api_version, kind))
}
