//! Linkerd ServerAuthorizations (a Server by name or selector, and the clients it admits) and
//! AuthorizationPolicies (a Server, an inbound HTTPRoute or a namespace, and the
//! authentications it requires), as [`LinkerdAuthz`]s.

use super::super::Out;
use super::authentications::{identities, networks, Network};
use super::servers::LabelSelector;
use super::{service_account, PolicyRef, Tables, GROUP};
use crate::k8s::Object;
use model::security::{LinkerdAuthn, LinkerdAuthz, LinkerdTarget};
use model::Labels;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerAuthorizationSpec {
    pub server: ServerRef,
    pub client: Client,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerRef {
    pub name: Option<String>,
    pub selector: Option<LabelSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Client {
    #[serde(default)]
    pub unauthenticated: bool,
    pub networks: Option<Vec<Network>>,
    #[serde(rename = "meshTLS")]
    pub mesh_tls: Option<MeshTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MeshTls {
    #[serde(rename = "unauthenticatedTLS", default)]
    pub unauthenticated_tls: bool,
    pub identities: Option<Vec<String>>,
    #[serde(rename = "serviceAccounts")]
    pub service_accounts: Option<Vec<ServiceAccountRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceAccountRef {
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AuthorizationPolicySpec {
    pub target_ref: PolicyRef,
    #[serde(default)]
    pub required_authentication_refs: Vec<PolicyRef>,
}

fn selects(want: &Labels, labels: &Labels) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(super) fn server_authorization(
    o: &Object<ServerAuthorizationSpec>,
    t: &Tables,
    out: &mut Out,
) -> Vec<LinkerdAuthz> {
    let namespace = o.metadata.namespace();
    let spec = &o.spec;
    let targets: Vec<String> = match (&spec.server.name, &spec.server.selector) {
        (Some(_), Some(_)) | (None, None) => {
            out.error(
                "spec.server",
                "set server.name or server.selector (one of them)",
            );
            Vec::new()
        }
        (Some(name), None) => {
            let key = format!("{namespace}/{name}");
            if !t.servers.iter().any(|s| s.server.name == key) {
                out.note(
                    "spec.server.name",
                    format!("Server {key} is not declared; this authorization applies to nothing"),
                );
            }
            vec![key]
        }
        (None, Some(sel)) => {
            if sel.match_expressions.is_some() {
                out.note(
                    "spec.server.selector.matchExpressions",
                    "matchExpressions is not yet supported; ignored (Servers are selected by \
                     matchLabels alone)",
                );
            }
            let found: Vec<String> = t
                .servers
                .iter()
                .filter(|s| s.namespace == namespace && selects(&sel.match_labels, &s.labels))
                .map(|s| s.server.name.clone())
                .collect();
            if found.is_empty() {
                out.note(
                    "spec.server.selector",
                    "selects no Server; this authorization applies to nothing",
                );
            }
            found
        }
    };
    let client = &spec.client;
    let mut authns = Vec::new();
    if let Some(list) = &client.networks {
        authns.push(networks("spec.client.networks", list, out));
    }
    match (&client.mesh_tls, client.unauthenticated) {
        (Some(_), true) => out.error(
            "spec.client.unauthenticated",
            "`unauthenticated` must be false if `meshTLS` is specified",
        ),
        (None, true) => authns.push(LinkerdAuthn::Unauthenticated),
        (None, false) => out.error(
            "spec.client",
            "a client needs `unauthenticated: true` or `meshTLS`",
        ),
        (Some(m), false) => {
            let ids = m.identities.as_deref().unwrap_or_default();
            let sas = m.service_accounts.as_deref().unwrap_or_default();
            if m.unauthenticated_tls {
                if !ids.is_empty() || !sas.is_empty() {
                    out.error(
                        "spec.client.meshTLS.unauthenticatedTLS",
                        "`unauthenticatedTLS` must be false if any `identities` or \
                         `serviceAccounts` is specified",
                    );
                }
                out.note(
                    "spec.client.meshTLS.unauthenticatedTLS",
                    "unauthenticatedTLS is not yet supported: weft requires a client identity \
                     here (any: `*`)",
                );
                authns.push(LinkerdAuthn::MeshTls {
                    identities: vec!["*".into()],
                });
            } else {
                let mut found = identities("spec.client.meshTLS.identities", ids, out);
                found.extend(sas.iter().map(|sa| {
                    service_account(sa.namespace.as_deref().unwrap_or(namespace), &sa.name)
                }));
                if found.is_empty() {
                    out.error(
                        "spec.client.meshTLS",
                        "meshTLS needs identities, serviceAccounts or unauthenticatedTLS",
                    );
                }
                authns.push(LinkerdAuthn::MeshTls { identities: found });
            }
        }
    }
    let name = format!("ServerAuthorization {namespace}/{}", o.metadata.name);
    targets
        .into_iter()
        .map(|server| LinkerdAuthz {
            name: name.clone(),
            target: LinkerdTarget::Server(server),
            authns: authns.clone(),
        })
        .collect()
}

pub(super) fn authorization_policy(
    o: &Object<AuthorizationPolicySpec>,
    t: &Tables,
    out: &mut Out,
) -> Option<LinkerdAuthz> {
    let namespace = o.metadata.namespace();
    let spec = &o.spec;
    let target_ref = &spec.target_ref;
    if target_ref
        .namespace
        .as_deref()
        .is_some_and(|ns| ns != namespace)
    {
        out.error(
            "spec.targetRef.namespace",
            "a targetRef names a resource of the policy's own namespace",
        );
    }
    let key = format!("{namespace}/{}", target_ref.name);
    let target = if target_ref.is(GROUP, "Server") {
        if !t.servers.iter().any(|s| s.server.name == key) {
            out.note(
                "spec.targetRef",
                format!("Server {key} is not declared; this policy applies to nothing"),
            );
        }
        Some(LinkerdTarget::Server(key))
    } else if target_ref.is(GROUP, "HTTPRoute")
        || target_ref.is("gateway.networking.k8s.io", "HTTPRoute")
    {
        if !t.routes.iter().any(|r| r.name == key) {
            out.note(
                "spec.targetRef",
                format!(
                    "HTTPRoute {key} is not an inbound route (one with a Server parent); this \
                     policy applies to nothing"
                ),
            );
        }
        Some(LinkerdTarget::Route(key))
    } else if target_ref.kind.eq_ignore_ascii_case("GRPCRoute") {
        out.note(
            "spec.targetRef",
            "GRPCRoute targets are not yet supported; this policy applies to nothing",
        );
        None
    } else if target_ref.is("", "Namespace") {
        if target_ref.name != namespace {
            out.error(
                "spec.targetRef.name",
                format!("cannot target another namespace: {}", target_ref.name),
            );
        }
        Some(LinkerdTarget::Namespace(namespace.to_string()))
    } else {
        out.error(
            "spec.targetRef.kind",
            format!(
                "invalid targetRef kind {}: Server, HTTPRoute, GRPCRoute or Namespace",
                target_ref.kind
            ),
        );
        None
    };
    let refs = &spec.required_authentication_refs;
    let count = |group: &str, kind: &str| refs.iter().filter(|r| r.is(group, kind)).count();
    let (mtls, sas, nets) = (
        count(GROUP, "MeshTLSAuthentication"),
        count("", "ServiceAccount"),
        count(GROUP, "NetworkAuthentication"),
    );
    let field = "spec.requiredAuthenticationRefs";
    if mtls > 1 {
        out.error(field, "only a single MeshTLSAuthentication may be set");
    }
    if sas > 1 {
        out.error(field, "only a single ServiceAccount may be set");
    }
    if mtls == 1 && sas == 1 {
        out.error(
            field,
            "a MeshTLSAuthentication and ServiceAccount may not be set together",
        );
    }
    if nets > 1 {
        out.error(field, "only a single NetworkAuthentication may be set");
    }
    let mut authns = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let rf = format!("{field}[{i}]");
        let ns = r.namespace.as_deref().unwrap_or(namespace).to_string();
        let table_kind = if r.is(GROUP, "MeshTLSAuthentication") {
            "MeshTLSAuthentication"
        } else if r.is(GROUP, "NetworkAuthentication") {
            "NetworkAuthentication"
        } else if r.is("", "ServiceAccount") {
            authns.push(LinkerdAuthn::MeshTls {
                identities: vec![service_account(&ns, &r.name)],
            });
            continue;
        } else {
            out.error(
                &format!("{rf}.kind"),
                format!(
                    "unsupported authentication kind {}: MeshTLSAuthentication, \
                     NetworkAuthentication or ServiceAccount",
                    r.kind
                ),
            );
            continue;
        };
        match t.authns.get(&(table_kind, ns.clone(), r.name.clone())) {
            Some(a) => authns.push(a.clone()),
            None => out.error(
                &format!("{rf}.name"),
                format!(
                    "{table_kind} {ns}/{} is not declared (or was rejected)",
                    r.name
                ),
            ),
        }
    }
    Some(LinkerdAuthz {
        name: format!("AuthorizationPolicy {namespace}/{}", o.metadata.name),
        target: target?,
        authns,
    })
}
