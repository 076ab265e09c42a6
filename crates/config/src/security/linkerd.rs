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
//!
//! Layout: `servers` (Servers), `authorizations` (ServerAuthorizations and
//! AuthorizationPolicies), `authentications` (MeshTLSAuthentications, NetworkAuthentications
//! and the networks and identities they list), `inbound` (HTTPRoutes with Server parents).

mod authentications;
mod authorizations;
mod inbound;
mod servers;

pub(crate) use authentications::{MeshTlsAuthenticationSpec, NetworkAuthenticationSpec};
pub(crate) use authorizations::{AuthorizationPolicySpec, ServerAuthorizationSpec};
pub(crate) use inbound::{inbound_route, InboundRoute};
pub(crate) use servers::ServerSpec;

use super::{Ctx, Pending};
use crate::diagnostic::Diagnostic;
use authentications::{mesh_tls_authentication, network_authentication};
use authorizations::{authorization_policy, server_authorization};
use model::security::{LinkerdAuthn, LinkerdAuthz, LinkerdServer};
use model::{Identity, Labels};
use serde::Deserialize;
use servers::server;
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

/// A translated Server with the labels its ServerAuthorizations select it by.
struct Server {
    server: LinkerdServer,
    namespace: String,
    labels: Labels,
}

/// A ServiceAccount as the SPIFFE ID of its workloads.
fn service_account(namespace: &str, name: &str) -> String {
    Identity::spiffe(namespace, name).0
}

/// Everything resolution looks up: the translated Servers, the authentications by
/// `(KIND, NS, NAME)`, the inbound routes by `NS/NAME`.
struct Tables<'a> {
    servers: Vec<Server>,
    authns: HashMap<(&'static str, String, String), LinkerdAuthn>,
    routes: &'a [InboundRoute],
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
