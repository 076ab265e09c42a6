//! Kubernetes object framing shared by every API read from Kubernetes-style YAML (Istio,
//! Gateway API, SMI): the header, metadata and a kind-specific `spec`.

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
