//! Linkerd's default inbound policies and Istio's root namespace, from where weft reads them:
//!
//! - a Mesh document's `spec.defaultInboundPolicy` (the cluster-wide default, Linkerd's
//!   `proxy.defaultInboundPolicy`) and `spec.rootNamespace`; two Mesh documents that set
//!   different values are an error;
//! - the annotation `config.linkerd.io/default-inbound-policy` on a `kind: Namespace`
//!   (`apiVersion: v1`) document: the default of that namespace's workloads;
//! - the same annotation on a Mesh file's service: the default of that service's workloads.
//!   Linkerd reads it on pods; a Mesh file's service stands for its workloads' pods, so the
//!   override is scoped, per workload, by that workload's labels (which include `app`, the
//!   service's name unless the workload sets another) in the service's namespace.
//!
//! The most specific override wins: workload, then namespace, then the default.

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use model::security::{DefaultPolicy, Scope, DEFAULT_ROOT_NAMESPACE};
use model::ServiceSpec;
use serde::Deserialize;

/// The annotation Linkerd reads on namespaces and pods.
pub(crate) const ANNOTATION: &str = "config.linkerd.io/default-inbound-policy";

/// The Namespace version read.
pub(crate) const NAMESPACE_API_VERSION: &str = "v1";

const POLICIES: &str = "all-unauthenticated, all-authenticated, cluster-authenticated, \
                        cluster-unauthenticated, deny or audit";

/// A `kind: Namespace` document: only its name and annotations are read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct NamespaceObject {
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    pub metadata: NamespaceMetadata,
    /// Finalizers; not configuration.
    #[allow(dead_code)]
    pub spec: Option<serde_yaml_ng::Value>,
    #[allow(dead_code)]
    pub status: Option<serde_yaml_ng::Value>,
}

/// A Namespace's metadata; labels, annotations (read from the tree, for their lines) and the
/// rest are accepted as in any Kubernetes object.
#[derive(Debug, Deserialize)]
pub(crate) struct NamespaceMetadata {
    pub name: String,
}

/// What the Mesh documents and their services set.
#[derive(Default)]
pub(crate) struct Defaults {
    /// The root namespace and where (`FILE:LINE`) it was set.
    root: Option<(String, String)>,
    /// The default inbound policy and where it was set.
    policy: Option<(DefaultPolicy, String)>,
    /// Mesh-file services' overrides, per workload.
    pub overrides: Vec<(Scope, DefaultPolicy)>,
}

/// The policy of the annotation [`ANNOTATION`] of the object at `base` (`metadata` of a
/// Kubernetes object, `spec.services[2]` of a Mesh document), or the error at its key.
fn annotated(doc: &Doc, base: &str) -> Option<Result<DefaultPolicy, Diagnostic>> {
    let a = doc
        .annotations(base)
        .into_iter()
        .find(|a| a.key == ANNOTATION)?;
    Some(match a.value.as_deref().and_then(DefaultPolicy::parse) {
        Some(p) => Ok(p),
        None => Err(a.at.with_message(format!(
            "annotation {ANNOTATION}: `{}` is not a default inbound policy: {POLICIES}",
            a.value.unwrap_or_default()
        ))),
    })
}

impl Defaults {
    /// What a Mesh document sets; a value that differs from an earlier document's is an error.
    pub fn mesh(
        &mut self,
        doc: &Doc,
        root: Option<&str>,
        policy: Option<DefaultPolicy>,
        errors: &mut Vec<Diagnostic>,
    ) {
        if let Some(root) = root {
            let field = "spec.rootNamespace";
            match &self.root {
                Some((first, at)) if first != root => errors.push(doc.error(
                    field,
                    format!(
                        "root namespace {root} conflicts with root namespace {first} set at {at}"
                    ),
                )),
                Some(_) => {}
                None => self.root = Some((root.to_string(), doc.place(field))),
            }
        }
        if let Some(policy) = policy {
            let field = "spec.defaultInboundPolicy";
            match &self.policy {
                Some((first, at)) if *first != policy => errors.push(doc.error(
                    field,
                    format!(
                        "default inbound policy {} conflicts with {} set at {at}",
                        policy.as_str(),
                        first.as_str()
                    ),
                )),
                Some(_) => {}
                None => self.policy = Some((policy, doc.place(field))),
            }
        }
    }

    /// The annotation on the Mesh document's service at `field`: an override for each of its
    /// workloads with a sidecar. A bad value is an error of the Mesh document.
    pub fn service(
        &mut self,
        doc: &Doc,
        field: &str,
        service: &ServiceSpec,
        errors: &mut Vec<Diagnostic>,
    ) {
        match annotated(doc, field) {
            None => {}
            Some(Err(e)) => errors.push(Diagnostic {
                message: format!("service {}: {}", service.key(), e.message),
                ..e
            }),
            Some(Ok(policy)) => {
                for w in service.workloads.iter().filter(|w| w.sidecar) {
                    self.overrides.push((
                        Scope::Workload {
                            namespace: service.namespace.clone(),
                            labels: w.labels.clone(),
                        },
                        policy,
                    ));
                }
            }
        }
    }

    pub fn root(&self) -> String {
        self.root
            .as_ref()
            .map_or(DEFAULT_ROOT_NAMESPACE.to_string(), |(r, _)| r.clone())
    }

    pub fn policy(&self) -> DefaultPolicy {
        self.policy.as_ref().map(|(p, _)| *p).unwrap_or_default()
    }
}

/// A Namespace document's override, if it is annotated; the error rejects the document.
pub(super) fn namespace(
    o: &NamespaceObject,
    doc: &Doc,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Scope, DefaultPolicy)> {
    match annotated(doc, "metadata")? {
        Ok(policy) => Some((Scope::Namespace(o.metadata.name.clone()), policy)),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}
