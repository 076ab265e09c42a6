//! Linkerd `policy.linkerd.io` Servers, ServerAuthorizations, AuthorizationPolicies,
//! MeshTLSAuthentications and NetworkAuthentications, and inbound HTTPRoutes (a `Server`
//! parent, of either HTTPRoute group): their serde shape, the checks Linkerd's admission
//! webhook makes, and their translation into [`LinkerdServer`]s and [`LinkerdAuthz`]s.
//!
//! - A Server's `podSelector.matchLabels` selects workloads of its namespace
//!   (`matchExpressions` is noticed and ignored); a named `port` is the workload's one service
//!   port (weft workloads have one), noticed when the workloads it selects serve on different
//!   ports; `accessPolicy` defaults to `deny`.
//! - Identities: `identities` are kept as written (SPIFFE IDs, Linkerd names such as
//!   `web.emojivoto.serviceaccount.identity.linkerd.cluster.local`, `*.NS.serviceaccount…`,
//!   `*`); a ServiceAccount (ServerAuthorization `serviceAccounts`, an `identityRefs` or
//!   `requiredAuthenticationRefs` entry) becomes its SPIFFE ID
//!   `spiffe://cluster.local/ns/NS/sa/NAME`; an `identityRefs` Namespace becomes
//!   `*.NS.serviceaccount.identity.linkerd.cluster.local`.
//! - A NetworkAuthentication's (or a ServerAuthorization's) `networks` become one network
//!   authentication: every `cidr`, minus every `except`.
//! - An AuthorizationPolicy whose `requiredAuthenticationRefs` name an authentication that is
//!   not declared (or was rejected) is rejected; one whose target is not declared is noticed
//!   and applies to nothing.

use super::{Ctx, Out, Pending};
use crate::doc::Doc;
use crate::http_route::{translate_match, HttpRouteSpec, Match};
use crate::k8s::Object;
use crate::marked::Value as Tree;
use crate::Diagnostic;
use model::security::{
    DefaultPolicy, LinkerdAuthn, LinkerdAuthz, LinkerdServer, LinkerdTarget, Scope,
};
use model::{Identity, Labels, RouteMatch};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;

/// The Server versions read.
pub(crate) const SERVER_VERSIONS: [&str; 3] = [
    "policy.linkerd.io/v1beta1",
    "policy.linkerd.io/v1beta2",
    "policy.linkerd.io/v1beta3",
];
/// The ServerAuthorization versions read.
pub(crate) const SERVER_AUTHORIZATION_VERSIONS: [&str; 2] =
    ["policy.linkerd.io/v1alpha1", "policy.linkerd.io/v1beta1"];
/// The AuthorizationPolicy, MeshTLSAuthentication and NetworkAuthentication version read.
pub(crate) const POLICY_VERSION: &str = "policy.linkerd.io/v1alpha1";

const GROUP: &str = "policy.linkerd.io";

/// A Kubernetes LabelSelector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
    pub match_expressions: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ServerSpec {
    pub pod_selector: Option<LabelSelector>,
    pub external_workload_selector: Option<LabelSelector>,
    /// A number or a port name.
    pub port: Value,
    pub proxy_protocol: Option<String>,
    pub access_policy: Option<DefaultPolicy>,
}

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
#[serde(deny_unknown_fields)]
pub(crate) struct Network {
    pub cidr: String,
    #[serde(default)]
    pub except: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AuthorizationPolicySpec {
    pub target_ref: PolicyRef,
    #[serde(default)]
    pub required_authentication_refs: Vec<PolicyRef>,
}

/// A (namespaced) target reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyRef {
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

impl PolicyRef {
    /// Whether it names `kind` of `group` (`""` and `core` are the same group), with kinds
    /// compared as Linkerd compares them, ignoring case.
    fn is(&self, group: &str, kind: &str) -> bool {
        let own = match self.group.as_deref() {
            None | Some("core") => "",
            Some(g) => g,
        };
        let group = if group == "core" { "" } else { group };
        self.kind.eq_ignore_ascii_case(kind) && (own == group || own.is_empty() && group == GROUP)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MeshTlsAuthenticationSpec {
    pub identities: Option<Vec<String>>,
    pub identity_refs: Option<Vec<PolicyRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkAuthenticationSpec {
    #[serde(default)]
    pub networks: Vec<Network>,
}

/// An HTTPRoute with `Server` parents, translated when it is read.
#[derive(Debug)]
pub(crate) struct InboundRoute {
    /// `HTTPRoute NS/NAME` or `HTTPRoute.policy.linkerd.io NS/NAME`, for diagnostics.
    pub label: String,
    /// `NS/NAME`, as Servers and AuthorizationPolicies name it.
    pub name: String,
    /// Each Server parent (`NS/NAME`) and where it is written.
    pub servers: Vec<(String, Diagnostic)>,
    pub matches: Vec<RouteMatch>,
}

/// The inbound part of an HTTPRoute (`label` names it): `Ok(None)` without Server parents;
/// errors (the route is rejected) when a match cannot be honoured; notices for what an inbound
/// route ignores.
#[allow(clippy::type_complexity)]
pub(crate) fn inbound_route(
    doc: &Doc,
    label: String,
    o: &Object<HttpRouteSpec>,
) -> Result<Option<(InboundRoute, Vec<Diagnostic>)>, Vec<Diagnostic>> {
    let namespace = o.metadata.namespace();
    let servers: Vec<(String, Diagnostic)> = o
        .spec
        .parent_refs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_server())
        .map(|(i, r)| {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            (
                format!("{ns}/{}", r.name),
                doc.error(&format!("spec.parentRefs[{i}]"), ""),
            )
        })
        .collect();
    if servers.is_empty() {
        return Ok(None);
    }
    let server_only = servers.len() == o.spec.parent_refs.len();
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut matches = Vec::new();
    let default = [Match::default()];
    // No rules: the Gateway API's default rule, every request.
    let rules: Vec<(String, &[Match])> = if o.spec.rules.is_empty() {
        vec![("spec".to_string(), &default[..])]
    } else {
        o.spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let m = if r.matches.is_empty() {
                    &default[..]
                } else {
                    &r.matches[..]
                };
                (format!("spec.rules[{i}]"), m)
            })
            .collect()
    };
    for (field, list) in rules {
        for (j, m) in list.iter().enumerate() {
            let mfield = format!("{field}.matches[{j}]");
            if let Some(m) = translate_match(doc, &mfield, m, &mut errors) {
                matches.push(m);
            }
        }
    }
    for (i, rule) in o.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        for (name, set) in [
            ("filters", !rule.filters.is_empty()),
            ("timeouts", rule.timeouts.is_some()),
            ("retry", rule.retry.is_some()),
        ] {
            if set {
                notes.push(doc.error(
                    &format!("{field}.{name}"),
                    format!(
                        "{label}: {name} are not yet supported on an inbound route (Server \
                         parent); ignored there"
                    ),
                ));
            }
        }
        if server_only && !rule.backend_refs.is_empty() {
            notes.push(doc.error(
                &format!("{field}.backendRefs"),
                format!(
                    "{label}: backendRefs: an inbound route (Server parent) serves the Server's \
                     own workload; ignored"
                ),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let route = InboundRoute {
        label,
        name: format!("{namespace}/{}", o.metadata.name),
        servers,
        matches,
    };
    Ok(Some((route, notes)))
}

/// The labels of a document's `metadata.labels`, read from its tree (Server selectors of
/// ServerAuthorizations match them).
fn object_labels(doc: &Doc) -> Labels {
    let Some(Tree::Map(entries)) = doc
        .tree
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .map(|n| &n.value)
    else {
        return Labels::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect()
}

fn selects(want: &Labels, labels: &Labels) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Kubernetes port name (IANA_SVC_NAME): 1–15 lowercase letters, digits and `-`, with a
/// letter, not starting or ending with `-`, no `--`.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && s.bytes().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A translated Server with the labels its ServerAuthorizations select it by.
struct Server {
    server: LinkerdServer,
    namespace: String,
    labels: Labels,
}

fn server(o: &Object<ServerSpec>, doc: &Doc, ctx: &Ctx, out: &mut Out) -> Option<Server> {
    let spec = &o.spec;
    let namespace = o.metadata.namespace();
    let scope = match (&spec.pod_selector, &spec.external_workload_selector) {
        (Some(_), Some(_)) => {
            out.error(
                "spec.externalWorkloadSelector",
                "set podSelector or externalWorkloadSelector, not both",
            );
            None
        }
        (None, Some(_)) => {
            out.note(
                "spec.externalWorkloadSelector",
                "externalWorkloadSelector: weft has no external workloads; this Server selects \
                 nothing",
            );
            return None;
        }
        (None, None) => {
            out.error("spec", "a Server needs a podSelector");
            None
        }
        (Some(sel), None) => {
            if sel.match_expressions.is_some() {
                out.note(
                    "spec.podSelector.matchExpressions",
                    "podSelector.matchExpressions is not yet supported; ignored (the Server \
                     selects by matchLabels alone)",
                );
            }
            Some(Scope::Workload {
                namespace: namespace.to_string(),
                labels: sel.match_labels.clone(),
            })
        }
    };
    let port = match &spec.port {
        Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(p) if p != 0 => Some(Some(p)),
            _ => {
                out.error("spec.port", format!("port {n} must be between 1 and 65535"));
                None
            }
        },
        Value::String(name) if is_port_name(name) => Some(None),
        other => {
            out.error(
                "spec.port",
                format!("{other:?} is neither a port number nor a port name"),
            );
            None
        }
    };
    match spec.proxy_protocol.as_deref() {
        None | Some("unknown" | "HTTP/1" | "HTTP/2" | "gRPC") => {}
        Some(p @ ("opaque" | "TLS")) => out.note(
            "spec.proxyProtocol",
            format!("proxyProtocol {p} is not yet supported; weft detects the protocol"),
        ),
        Some(other) => out.error(
            "spec.proxyProtocol",
            format!(
                "unknown proxyProtocol `{other}`: unknown, HTTP/1, HTTP/2, gRPC, opaque or TLS"
            ),
        ),
    }
    let (scope, port) = (scope?, port?);
    if let Some(selected) = ctx.selected(&scope) {
        let mut ports: Vec<(String, u16)> = selected
            .iter()
            .map(|w| (w.service.to_string(), w.port))
            .collect();
        ports.sort();
        ports.dedup();
        let listed = || {
            let all: Vec<String> = ports.iter().map(|(s, p)| format!("{s}: {p}")).collect();
            all.join(", ")
        };
        match port {
            _ if ports.is_empty() => {
                out.note("spec.podSelector", "selects no workload of the mesh")
            }
            None if ports.iter().any(|(_, p)| *p != ports[0].1) => out.note(
                "spec.port",
                format!(
                    "port name `{}`: weft workloads have one port, their service's, so the name \
                     means it; the workloads this Server selects serve on different ports ({})",
                    spec.port.as_str().unwrap_or_default(),
                    listed()
                ),
            ),
            Some(p) if !ports.iter().any(|(_, q)| *q == p) => out.note(
                "spec.port",
                format!(
                    "port {p} is not the port of a workload this Server selects ({}); it \
                     covers nothing",
                    listed()
                ),
            ),
            _ => {}
        }
    }
    Some(Server {
        server: LinkerdServer {
            name: format!("{namespace}/{}", o.metadata.name),
            scope,
            port,
            access_policy: spec.access_policy.unwrap_or(DefaultPolicy::Deny),
            routes: Vec::new(),
        },
        namespace: namespace.to_string(),
        labels: object_labels(doc),
    })
}

/// `networks` as one network authentication, checked as Linkerd checks them.
fn networks(field: &str, list: &[Network], out: &mut Out) -> LinkerdAuthn {
    let mut cidrs = Vec::new();
    let mut except = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let nf = format!("{field}[{i}]");
        let net = match super::values::cidr(&n.cidr) {
            Ok(net) => Some(net),
            Err(message) => {
                out.error(&format!("{nf}.cidr"), message);
                None
            }
        };
        for (j, e) in n.except.iter().enumerate() {
            let ef = format!("{nf}.except[{j}]");
            match (super::values::cidr(e), net) {
                (Err(message), _) => out.error(&ef, message),
                (Ok(ex), Some(net)) if super::values::contains(ex, net) => out.error(
                    &ef,
                    format!("cidr `{}` is completely negated by exception `{e}`", n.cidr),
                ),
                (Ok(ex), Some(net)) if !super::values::contains(net, ex) => out.error(
                    &ef,
                    format!("cidr `{}` does not include exception `{e}`", n.cidr),
                ),
                _ => except.push(e.clone()),
            }
        }
        cidrs.push(n.cidr.clone());
    }
    LinkerdAuthn::Network { cidrs, except }
}

fn service_account(namespace: &str, name: &str) -> String {
    Identity::spiffe(namespace, name).0
}

fn identities(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    for (i, id) in list.iter().enumerate() {
        if id.is_empty() {
            out.error(&format!("{field}[{i}]"), "must not be empty");
        }
    }
    list.to_vec()
}

fn mesh_tls_authentication(o: &Object<MeshTlsAuthenticationSpec>, out: &mut Out) -> LinkerdAuthn {
    let namespace = o.metadata.namespace();
    let mut found = identities(
        "spec.identities",
        o.spec.identities.as_deref().unwrap_or_default(),
        out,
    );
    for (i, r) in o.spec.identity_refs.iter().flatten().enumerate() {
        let field = format!("spec.identityRefs[{i}]");
        if r.is("", "ServiceAccount") {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            found.push(service_account(ns, &r.name));
        } else if r.is("", "Namespace") {
            if r.namespace.is_some() {
                out.error(
                    &format!("{field}.namespace"),
                    "a Namespace identityRef is cluster-scoped and cannot have a namespace",
                );
            }
            found.push(format!(
                "*.{}.serviceaccount.identity.linkerd.{}",
                r.name,
                model::names::TRUST_DOMAIN
            ));
        } else {
            out.error(
                &format!("{field}.kind"),
                format!(
                    "invalid identity target kind {}: ServiceAccount or Namespace",
                    r.kind
                ),
            );
        }
    }
    if found.is_empty() {
        out.note(
            "spec",
            "has no identities or identityRefs, so it authenticates no client",
        );
    }
    LinkerdAuthn::MeshTls { identities: found }
}

fn network_authentication(o: &Object<NetworkAuthenticationSpec>, out: &mut Out) -> LinkerdAuthn {
    if o.spec.networks.is_empty() {
        out.error("spec.networks", "at least one network must be specified");
    }
    networks("spec.networks", &o.spec.networks, out)
}

/// Everything resolution looks up: the translated Servers, the authentications by
/// `(KIND, NS, NAME)`, the inbound routes by `NS/NAME`.
struct Tables<'a> {
    servers: Vec<Server>,
    authns: HashMap<(&'static str, String, String), LinkerdAuthn>,
    routes: &'a [InboundRoute],
}

fn server_authorization(
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

fn authorization_policy(
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

/// Translates the Linkerd documents among `pending` (first loaded first; duplicates already
/// left out) into `servers` and `linkerd_authz`, with `routes` attached to their Servers.
pub(super) fn resolve(
    pending: &[&Pending],
    routes: &[InboundRoute],
    ctx: &Ctx,
    servers_out: &mut Vec<LinkerdServer>,
    authz_out: &mut Vec<LinkerdAuthz>,
    rejected: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    use super::Kind;
    let mut t = Tables {
        servers: Vec::new(),
        authns: HashMap::new(),
        routes,
    };
    // Authentications and Servers first: the authorizations refer to them.
    for p in pending {
        let doc = p.doc();
        let kind = match &p.kind {
            Kind::MeshTlsAuthentication(_) => "MeshTLSAuthentication",
            Kind::NetworkAuthentication(_) => "NetworkAuthentication",
            Kind::Server(_) => "Server",
            _ => continue,
        };
        let key = (kind, p.namespace().to_string(), p.name().to_string());
        let found = super::translate(p, &doc, rejected, warnings, |out| match &p.kind {
            Kind::MeshTlsAuthentication(o) => (Some(mesh_tls_authentication(o, out)), None),
            Kind::NetworkAuthentication(o) => (Some(network_authentication(o, out)), None),
            Kind::Server(o) => (None, server(o, &doc, ctx, out)),
            _ => (None, None),
        });
        match found {
            Some((Some(authn), _)) => _ = t.authns.insert(key, authn),
            Some((None, Some(server))) => t.servers.push(server),
            _ => {}
        }
    }
    for r in routes {
        for (server, at) in &r.servers {
            match t.servers.iter_mut().find(|s| s.server.name == *server) {
                Some(s) => s.server.routes.push((r.name.clone(), r.matches.clone())),
                None => warnings.push(at.with_message(format!(
                    "{}: Server {server} is not declared; this inbound route applies to nothing",
                    r.label
                ))),
            }
        }
    }
    for p in pending {
        let doc = p.doc();
        let found = super::translate(p, &doc, rejected, warnings, |out| match &p.kind {
            Kind::ServerAuthorization(o) => Some(server_authorization(o, &t, out)),
            Kind::LinkerdAuthorizationPolicy(o) => {
                Some(authorization_policy(o, &t, out).into_iter().collect())
            }
            _ => None,
        });
        authz_out.extend(found.into_iter().flatten().flatten());
    }
    servers_out.extend(t.servers.into_iter().map(|s| s.server));
}
