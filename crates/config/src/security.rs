//! Security configuration into one [`SecuritySpec`]: Istio `security.istio.io`
//! PeerAuthentications, AuthorizationPolicies and RequestAuthentications; Linkerd
//! `policy.linkerd.io` Servers, ServerAuthorizations, AuthorizationPolicies,
//! MeshTLSAuthentications, NetworkAuthentications and inbound HTTPRoutes (a `Server` parent);
//! and the default inbound policies and root namespace (a Mesh document's
//! `spec.defaultInboundPolicy` / `spec.rootNamespace`, the
//! `config.linkerd.io/default-inbound-policy` annotation on a Mesh file's service or a
//! `kind: Namespace`).
//!
//! Documents are parsed as they are read and translated once every file is read (the root
//! namespace, the mesh's workloads and the authentications they refer to are known then). A
//! resource with errors is rejected alone, its messages naming `KIND NS/NAME` (Linkerd's kinds
//! as `KIND.policy.linkerd.io`, a Namespace as `Namespace NAME`); what is accepted but ignored is
//! a notice. Two resources of one kind and name: the first loaded applies, the later is
//! rejected.
//!
//! Layout: `istio` (the three Istio kinds and their scopes), `linkerd` (Linkerd's kinds and
//! inbound routes), `defaults` (default inbound policies, root namespace, Namespace
//! documents), `values` (CIDRs, ports, condition keys, path templates).

mod defaults;
mod istio;
mod linkerd;
mod values;

#[cfg(test)]
mod tests;

pub(crate) use defaults::Defaults;
pub(crate) use linkerd::{inbound_route, InboundRoute};

use crate::diagnostic::{reject, Diagnostic};
use crate::doc::{Doc, Parsed};
use crate::k8s::Object;
use model::security::{Scope, SecuritySpec};
use model::{Labels, ServiceSpec};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// Where weft's ingress runs, as Istio's: policies that target the Gateway
/// `istio-ingressgateway` select it by these.
pub(crate) const INGRESS_NAMESPACE: &str = "istio-system";
pub(crate) const INGRESS_NAME: &str = "istio-ingressgateway";
pub(crate) const INGRESS_LABELS: [(&str, &str); 1] = [("istio", "ingressgateway")];

#[derive(Debug)]
pub(crate) enum Kind {
    // Boxed: they differ in size a lot. Istio's `spec` may be left out (`{}` policies).
    PeerAuthentication(Box<Object<Option<istio::PeerAuthenticationSpec>>>),
    AuthorizationPolicy(Box<Object<Option<istio::AuthorizationPolicySpec>>>),
    RequestAuthentication(Box<Object<Option<istio::RequestAuthenticationSpec>>>),
    Server(Box<Object<linkerd::ServerSpec>>),
    ServerAuthorization(Box<Object<linkerd::ServerAuthorizationSpec>>),
    LinkerdAuthorizationPolicy(Box<Object<linkerd::AuthorizationPolicySpec>>),
    MeshTlsAuthentication(Box<Object<linkerd::MeshTlsAuthenticationSpec>>),
    NetworkAuthentication(Box<Object<linkerd::NetworkAuthenticationSpec>>),
    Namespace(Box<defaults::NamespaceObject>),
}

fn boxed<T: DeserializeOwned>(
    text: &str,
    kind: impl FnOnce(Box<T>) -> Kind,
) -> serde_yaml_ng::Result<Kind> {
    serde_yaml_ng::from_str(text).map(|o| kind(Box::new(o)))
}

/// Parses a document of a kind this module reads; `None` for any other kind or version.
pub(crate) fn parse(
    api_version: &str,
    kind: &str,
    text: &str,
) -> Option<serde_yaml_ng::Result<Kind>> {
    let istio = istio::API_VERSIONS.contains(&api_version);
    let server = linkerd::SERVER_VERSIONS.contains(&api_version);
    let server_authz = linkerd::SERVER_AUTHORIZATION_VERSIONS.contains(&api_version);
    let policy = api_version == linkerd::POLICY_VERSION;
    Some(match kind {
        "PeerAuthentication" if istio => boxed(text, Kind::PeerAuthentication),
        "AuthorizationPolicy" if istio => boxed(text, Kind::AuthorizationPolicy),
        "RequestAuthentication" if istio => boxed(text, Kind::RequestAuthentication),
        "Server" if server => boxed(text, Kind::Server),
        "ServerAuthorization" if server_authz => boxed(text, Kind::ServerAuthorization),
        "AuthorizationPolicy" if policy => boxed(text, Kind::LinkerdAuthorizationPolicy),
        "MeshTLSAuthentication" if policy => boxed(text, Kind::MeshTlsAuthentication),
        "NetworkAuthentication" if policy => boxed(text, Kind::NetworkAuthentication),
        "Namespace" if api_version == defaults::NAMESPACE_API_VERSION => {
            boxed(text, Kind::Namespace)
        }
        _ => return None,
    })
}

/// A parsed document of this dialect, kept until every file has been read.
pub(crate) type Pending = Parsed<Kind>;

impl Pending {
    fn name(&self) -> &str {
        match &self.kind {
            Kind::PeerAuthentication(o) => &o.metadata.name,
            Kind::AuthorizationPolicy(o) => &o.metadata.name,
            Kind::RequestAuthentication(o) => &o.metadata.name,
            Kind::Server(o) => &o.metadata.name,
            Kind::ServerAuthorization(o) => &o.metadata.name,
            Kind::LinkerdAuthorizationPolicy(o) => &o.metadata.name,
            Kind::MeshTlsAuthentication(o) => &o.metadata.name,
            Kind::NetworkAuthentication(o) => &o.metadata.name,
            Kind::Namespace(o) => &o.metadata.name,
        }
    }

    fn namespace(&self) -> &str {
        match &self.kind {
            Kind::PeerAuthentication(o) => o.metadata.namespace(),
            Kind::AuthorizationPolicy(o) => o.metadata.namespace(),
            Kind::RequestAuthentication(o) => o.metadata.namespace(),
            Kind::Server(o) => o.metadata.namespace(),
            Kind::ServerAuthorization(o) => o.metadata.namespace(),
            Kind::LinkerdAuthorizationPolicy(o) => o.metadata.namespace(),
            Kind::MeshTlsAuthentication(o) => o.metadata.namespace(),
            Kind::NetworkAuthentication(o) => o.metadata.namespace(),
            // Cluster-scoped.
            Kind::Namespace(_) => "",
        }
    }

    /// `KIND NS/NAME` (`KIND.policy.linkerd.io NS/NAME` for Linkerd's, `Namespace NAME`).
    fn label(&self) -> String {
        let kind = match &self.kind {
            Kind::PeerAuthentication(_) => "PeerAuthentication",
            Kind::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Kind::RequestAuthentication(_) => "RequestAuthentication",
            Kind::Server(_) => "Server.policy.linkerd.io",
            Kind::ServerAuthorization(_) => "ServerAuthorization.policy.linkerd.io",
            Kind::LinkerdAuthorizationPolicy(_) => "AuthorizationPolicy.policy.linkerd.io",
            Kind::MeshTlsAuthentication(_) => "MeshTLSAuthentication.policy.linkerd.io",
            Kind::NetworkAuthentication(_) => "NetworkAuthentication.policy.linkerd.io",
            Kind::Namespace(_) => return format!("Namespace {}", self.name()),
        };
        format!("{kind} {}/{}", self.namespace(), self.name())
    }
}

/// One resource's translation: where its errors (which reject it) and notices go.
pub(crate) struct Out<'a, 'b> {
    pub doc: &'a Doc<'b>,
    pub label: &'a str,
    pub errors: &'a mut Vec<Diagnostic>,
    pub notes: &'a mut Vec<Diagnostic>,
}

impl Out<'_, '_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(self.doc.error(field, message));
    }

    fn note(&mut self, field: &str, message: impl AsRef<str>) {
        let note = format!("{}: {}", self.label, message.as_ref());
        self.notes.push(self.doc.error(field, note));
    }
}

/// Runs `f` on one resource: `None` (and the resource's rejection) when it finds errors; its
/// notices are kept when the resource is accepted.
fn translate<T>(
    p: &Pending,
    doc: &Doc,
    rejected: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
    f: impl FnOnce(&mut Out) -> T,
) -> Option<T> {
    let label = p.label();
    let (mut errors, mut notes) = (Vec::new(), Vec::new());
    let found = f(&mut Out {
        doc,
        label: &label,
        errors: &mut errors,
        notes: &mut notes,
    });
    if errors.is_empty() {
        warnings.extend(notes);
        Some(found)
    } else {
        reject(&label, errors, rejected);
        None
    }
}

/// A workload of the mesh with a sidecar (the others have no proxy to apply policies).
pub(crate) struct Workload<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub port: u16,
    pub labels: &'a Labels,
}

/// What translation checks against: the root namespace, and the mesh's workloads (`None`
/// without a Mesh document).
pub(crate) struct Ctx<'a> {
    pub root: &'a str,
    pub workloads: Option<Vec<Workload<'a>>>,
}

impl Ctx<'_> {
    /// The scopes of an Istio policy in `namespace` with `selector` (non-empty labels).
    fn istio_scopes(&self, namespace: &str, selector: Option<&Labels>) -> Vec<Scope> {
        let Some(labels) = selector else {
            return vec![if namespace == self.root {
                Scope::Mesh
            } else {
                Scope::Namespace(namespace.to_string())
            }];
        };
        let mut namespaces = vec![namespace];
        if namespace == self.root {
            // Istio: a selector in the root namespace matches workloads of every namespace.
            for w in self.workloads.iter().flatten() {
                let scope = Scope::Workload {
                    namespace: w.namespace.to_string(),
                    labels: labels.clone(),
                };
                if !namespaces.contains(&w.namespace) && scope.selects(w.namespace, w.labels) {
                    namespaces.push(w.namespace);
                }
            }
        }
        namespaces
            .into_iter()
            .map(|ns| Scope::Workload {
                namespace: ns.to_string(),
                labels: labels.clone(),
            })
            .collect()
    }

    /// The mesh's workloads `scope` selects; `None` without a Mesh document.
    fn selected(&self, scope: &Scope) -> Option<Vec<&Workload<'_>>> {
        let all = self.workloads.as_ref()?;
        Some(
            all.iter()
                .filter(|w| scope.selects(w.namespace, w.labels))
                .collect(),
        )
    }
}

/// The security documents read so far, the inbound routes, and what Mesh documents set.
#[derive(Default)]
pub(crate) struct Security {
    pending: Vec<Pending>,
    routes: Vec<InboundRoute>,
    pub defaults: Defaults,
}

impl Security {
    pub fn document(&mut self, pending: Pending) {
        self.pending.push(pending);
    }

    pub fn route(&mut self, route: InboundRoute) {
        self.routes.push(route);
    }

    /// Translates every document. `services` is `None` when there is no Mesh document (then
    /// root-namespace selectors match the root namespace only, and Server ports are not
    /// checked against the workloads).
    pub fn resolve(
        &self,
        services: Option<&[ServiceSpec]>,
        rejected: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) -> SecuritySpec {
        let root = self.defaults.root();
        let workloads = services.map(|services| {
            services
                .iter()
                .flat_map(|s| {
                    s.workloads.iter().filter(|w| w.sidecar).map(|w| Workload {
                        namespace: &s.namespace,
                        service: &s.name,
                        port: s.port,
                        labels: &w.labels,
                    })
                })
                .collect()
        });
        let ctx = Ctx {
            root: &root,
            workloads,
        };
        let mut spec = SecuritySpec {
            root_namespace: root.clone(),
            default_inbound_policy: self.defaults.policy(),
            ..SecuritySpec::new()
        };

        // One resource per kind and name: the first loaded.
        let mut first: HashMap<String, String> = HashMap::new();
        let mut pending = Vec::new();
        for p in &self.pending {
            let (doc, label) = (p.doc(), p.label());
            match first.get(&label) {
                Some(at) => reject(
                    &label,
                    vec![doc.error(
                        "metadata.name",
                        format!("defined twice; the first, at {at}, applies"),
                    )],
                    rejected,
                ),
                None => {
                    first.insert(label, doc.place("metadata.name"));
                    pending.push(p);
                }
            }
        }

        for p in &pending {
            let doc = p.doc();
            let (rejected, warnings) = (&mut *rejected, &mut *warnings);
            match &p.kind {
                Kind::PeerAuthentication(o) => {
                    let found = translate(p, &doc, rejected, warnings, |out| {
                        istio::peer_authentication(o, &ctx, out)
                    });
                    spec.peer_authns.extend(found.into_iter().flatten());
                }
                Kind::AuthorizationPolicy(o) => {
                    let found = translate(p, &doc, rejected, warnings, |out| {
                        istio::authorization_policy(o, &ctx, out)
                    });
                    spec.authz.extend(found.into_iter().flatten());
                }
                Kind::RequestAuthentication(o) => {
                    let found = translate(p, &doc, rejected, warnings, |out| {
                        istio::request_authentication(o, &ctx, out)
                    });
                    spec.request_authns.extend(found.into_iter().flatten());
                }
                Kind::Namespace(o) => {
                    let found = translate(p, &doc, rejected, warnings, |out| {
                        defaults::namespace(o, &doc, out.errors)
                    });
                    spec.default_policy_overrides
                        .extend(found.into_iter().flatten());
                }
                _ => {}
            }
        }
        spec.default_policy_overrides
            .extend(self.defaults.overrides.iter().cloned());

        linkerd::resolve(
            &pending,
            &self.routes,
            &ctx,
            &mut spec.servers,
            &mut spec.linkerd_authz,
            rejected,
            warnings,
        );
        spec
    }
}
