//! Inbound authorization: who may call what on this workload, with Istio AuthorizationPolicy and
//! Linkerd Server / AuthorizationPolicy / default-policy semantics.
//!
//! [`Authorizer::compile`] turns a snapshot's [`SecuritySpec`] into the policies that apply to
//! one workload, once per snapshot: string patterns, path templates, CIDRs and route matches are
//! parsed there, and a bad rule becomes an [`AuthzError`] naming its policy (it then fails
//! closed: a bad ALLOW rule matches nothing, a bad DENY rule matches everything). Per request,
//! [`Authorizer::authorize`] reads the compiled form and counts the decision; it takes no lock.
//!
//! Istio, in the documented order: CUSTOM policies are reported in
//! [`Authorizer::unsupported`] and never evaluated; any matching DENY denies; with no ALLOW policy
//! the request is allowed; any matching ALLOW allows; otherwise it is denied. AUDIT policies only
//! set [`Decision::audited`]. On a connection that is not HTTP ([`RequestContext::http`] is
//! `None`), HTTP-only fields make an ALLOW or AUDIT rule match nothing and are ignored in a DENY
//! rule (which then matches more), as Istio does for TCP.
//!
//! Linkerd: a `Server` selecting this workload and the destination port admits only requests
//! that one of its authorizations (targeting the Server, its Namespace, or the HTTPRoute of the
//! Server the request matches) lets in, else its `accessPolicy` decides; a Server with routes
//! answers a request matching none of them with [`Reason::RouteNotFound`] (Linkerd's 404).
//! Without a Server, the workload's default inbound policy decides.
//!
//! When both meshes' policies exist for a workload, **both must allow**: the request is denied by
//! the first that denies (Istio first), and an allowed request is attributed to the Istio ALLOW
//! policy that matched if any, else to the Linkerd authorization or default that admitted it.
//! With no policy at all, Linkerd's cluster default (`all-unauthenticated` unless configured)
//! admits everything, as Istio does.

mod istio;
mod linkerd;
mod path;
mod stats;

pub use path::{normalize_path, InvalidPath};
pub use stats::{AuthzStats, Protocol};

use crate::body::{self, Body};
use crate::flags::{Flag, FLAG_HEADER};
use crate::jwt::VerifiedJwt;
use http::{HeaderMap, HeaderValue, Method, Response};
use ipnet::IpNet;
use istio::{Action, Attrs, IstioPolicy};
use linkerd::{LinkerdAuthzM, Server};
use model::security::{AuthzAction, DefaultPolicy, SecuritySpec};
use model::{Identity, Labels};
use stats::{Tallies, Tally};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// The body of a request denied by policy, as Envoy's RBAC filter writes it.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// The policy name of an Istio denial when ALLOW policies apply but none matched (Envoy's RBAC
/// reports "none" as the matched policy there too).
pub const NO_MATCH: &str = "none";

/// The prefix of the policy name a Linkerd default policy is counted under, as Linkerd labels
/// them (`default:all-unauthenticated`).
pub const DEFAULT_PREFIX: &str = "default:";

/// Linkerd's default `clusterNetworks`, plus loopback: where `cluster-unauthenticated` clients
/// may come from. Every local-mode workload talks over loopback.
const CLUSTER_NETWORKS: [&str; 7] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fd00::/8",
];

/// The workload an [`Authorizer`] is compiled for.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
    /// The port a Linkerd `Server` without a port number covers (the workload's service port).
    pub service_port: u16,
    /// This mesh's trust domain (`cluster-authenticated` admits only identities of it).
    pub trust_domain: &'a str,
}

/// What is known about one request (or, with `http: None`, one non-HTTP connection).
#[derive(Clone, Copy, Debug)]
pub struct RequestContext<'a> {
    /// The connection's peer address (`source.ip`, `ipBlocks`).
    pub peer_ip: IpAddr,
    /// The peer's verified SPIFFE ID; `None` on a plaintext connection.
    pub peer_identity: Option<&'a Identity>,
    /// The address the client connected to (`destination.ip`), when known.
    pub destination_ip: Option<IpAddr>,
    /// The port the client addressed (`ports`, `destination.port`, Linkerd Server ports).
    pub destination_port: u16,
    /// The TLS SNI the client sent (`connection.sni`).
    pub sni: Option<&'a str>,
    /// The HTTP attributes; `None` for a connection on a non-HTTP port.
    pub http: Option<HttpAttributes<'a>>,
}

/// The HTTP side of a [`RequestContext`].
#[derive(Clone, Copy, Debug)]
pub struct HttpAttributes<'a> {
    /// The authority (`Host` / `:authority`), port included or not.
    pub host: &'a str,
    pub method: &'a Method,
    /// The request target as received: path and query, not normalised.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The end-user token [`crate::jwt`] verified, if any (`requestPrincipals`,
    /// `request.auth.*`).
    pub jwt: Option<&'a VerifiedJwt>,
}

impl<'a> HttpAttributes<'a> {
    /// The attributes of a request: the authority from the URI, else the `Host` header.
    pub fn of<B>(req: &'a http::Request<B>, jwt: Option<&'a VerifiedJwt>) -> Self {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        HttpAttributes {
            host,
            method: req.method(),
            path,
            headers: req.headers(),
            jwt,
        }
    }
}

/// The outcome of [`Authorizer::authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The deciding policy: an Istio or Linkerd policy name, a Linkerd Server's name (its access
    /// policy decided), `default:<policy>` (a Linkerd default), or [`NO_MATCH`].
    pub policy: Arc<str>,
    pub reason: Reason,
    /// An Istio AUDIT policy matched, or a Linkerd `audit` policy let in what `deny` would not.
    pub audited: bool,
}

impl Decision {
    /// Linkerd answers a request matching none of its Server's routes with 404, not 403.
    pub fn route_not_found(&self) -> bool {
        self.reason == Reason::RouteNotFound
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verb} by {}: {}", self.policy, self.reason)?;
        if self.audited {
            f.write_str(" (audited)")?;
        }
        Ok(())
    }
}

/// Why a [`Decision`] went the way it did: a closed set, cheap on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An Istio ALLOW policy matched.
    AllowPolicyMatched,
    /// An Istio DENY policy matched.
    DenyPolicyMatched,
    /// Istio ALLOW policies apply to this workload and none matched.
    NoAllowPolicyMatched,
    /// A Linkerd authorization admitted the client.
    Authorized,
    /// A Linkerd Server covers the port, no authorization admitted the client and its access
    /// policy is `deny`.
    Unauthorized,
    /// The Linkerd default (or the Server's access) policy admits this client.
    DefaultAllows,
    /// The Linkerd default policy is `deny`.
    DefaultDeny,
    /// The policy asks for an mTLS client identity; the connection is plaintext.
    NotAuthenticated,
    /// `cluster-authenticated`: the client's identity is of another trust domain.
    ForeignTrustDomain,
    /// `cluster-unauthenticated`: the client is outside the cluster networks.
    OutsideClusterNetworks,
    /// The request matches none of the Linkerd Server's HTTPRoutes.
    RouteNotFound,
    /// The path cannot be normalised (`%00`); Istio refuses such requests.
    InvalidPath,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::AllowPolicyMatched => "an ALLOW policy matched",
            Reason::DenyPolicyMatched => "a DENY policy matched",
            Reason::NoAllowPolicyMatched => {
                "ALLOW policies apply to this workload and none matched the request"
            }
            Reason::Authorized => "the client satisfies the authorization",
            Reason::Unauthorized => {
                "no authorization of the Server admits the client and its access policy is deny"
            }
            Reason::DefaultAllows => "the default policy admits the client",
            Reason::DefaultDeny => "the default policy is deny",
            Reason::NotAuthenticated => {
                "the policy requires an mTLS client identity and the connection is plaintext"
            }
            Reason::ForeignTrustDomain => "the client identity is not of this trust domain",
            Reason::OutsideClusterNetworks => "the client address is outside the cluster networks",
            Reason::RouteNotFound => "the request matches no HTTPRoute of the Server",
            Reason::InvalidPath => "the request path cannot be normalised",
        })
    }
}

/// A policy that could not be compiled as written; it fails closed (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// A field of an Istio AuthorizationPolicy rule.
    #[error("AuthorizationPolicy {policy}: rules[{rule}].{field}: {why}")]
    Rule {
        policy: String,
        rule: usize,
        field: String,
        why: String,
    },
    /// A Linkerd Server, route or authorization.
    #[error("{policy}: {why}")]
    Linkerd { policy: String, why: String },
}

/// 403 `RBAC: access denied` with `x-weft-flag: RBAC`, as Envoy answers a denied request.
pub fn denied_response() -> Response<Body> {
    let mut rsp = Response::new(body::full(DENIED_BODY));
    *rsp.status_mut() = Flag::Rbac.status();
    let h = rsp.headers_mut();
    h.insert(FLAG_HEADER, HeaderValue::from_static(Flag::Rbac.as_str()));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    rsp
}

// ---------------------------------------------------------------------------------------------
// The authorizer

/// Every policy that applies to one workload, compiled. Immutable; build one per snapshot.
#[derive(Debug)]
pub struct Authorizer {
    deny: Vec<IstioPolicy>,
    allow: Vec<IstioPolicy>,
    audit: Vec<IstioPolicy>,
    /// Whether any Istio rule looks at the path (normalised once per request if so).
    needs_path: bool,
    servers: Vec<Server>,
    default_policy: DefaultPolicy,
    default_tally: Arc<Tally>,
    no_match: Arc<Tally>,
    trust_domain: String,
    cluster_networks: Vec<IpNet>,
    errors: Vec<AuthzError>,
    unsupported: Vec<String>,
}

/// A decision before it is combined with the other mesh's and counted.
struct Verdict<'a> {
    allowed: bool,
    tally: &'a Arc<Tally>,
    reason: Reason,
    audited: bool,
}

impl Authorizer {
    /// Compiles the policies of `spec` that select `workload`. Never fails: policies that cannot
    /// be compiled are listed in [`Authorizer::errors`] and fail closed; CUSTOM policies are
    /// listed in [`Authorizer::unsupported`].
    pub fn compile(spec: &SecuritySpec, workload: Workload<'_>, stats: &AuthzStats) -> Self {
        let mut tallies = Tallies::new(stats);
        let mut errors = Vec::new();
        let mut unsupported = Vec::new();
        let (mut deny, mut allow, mut audit) = (Vec::new(), Vec::new(), Vec::new());
        for p in &spec.authz {
            if !p.scope.selects(workload.namespace, workload.labels) {
                continue;
            }
            let list = match p.action {
                AuthzAction::Allow => &mut allow,
                AuthzAction::Deny => &mut deny,
                AuthzAction::Audit => &mut audit,
                AuthzAction::Custom => {
                    unsupported.push(format!(
                        "AuthorizationPolicy {}: action CUSTOM (external authorization) is not \
                         supported; the policy is ignored",
                        p.name
                    ));
                    continue;
                }
            };
            list.push(IstioPolicy::compile(p, &mut tallies, &mut errors));
        }
        let needs_path = deny
            .iter()
            .chain(&allow)
            .chain(&audit)
            .any(IstioPolicy::reads_path);

        let servers = spec
            .servers
            .iter()
            .filter(|s| s.scope.selects(workload.namespace, workload.labels))
            .map(|s| {
                Server::compile(
                    s,
                    workload.service_port,
                    &spec.linkerd_authz,
                    &mut tallies,
                    &mut errors,
                )
            })
            .collect();

        let default_policy = spec.default_policy(workload.namespace, workload.labels);
        let default_tally = tallies.get(&format!("{DEFAULT_PREFIX}{}", default_policy.as_str()));
        let no_match = tallies.get(NO_MATCH);
        // The mesh's `clusterNetworks` when it sets them (a bad one fails closed: it is left
        // out, so fewer clients count as in-cluster), else Linkerd's defaults.
        let cluster_networks = if spec.cluster_networks.is_empty() {
            CLUSTER_NETWORKS
                .iter()
                .map(|c| c.parse().expect("the cluster networks are valid CIDRs"))
                .collect()
        } else {
            spec.cluster_networks
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect()
        };
        Authorizer {
            deny,
            allow,
            audit,
            needs_path,
            servers,
            default_policy,
            default_tally,
            no_match,
            trust_domain: workload.trust_domain.to_string(),
            cluster_networks,
            errors,
            unsupported,
        }
    }

    /// Policies (or parts of them) that could not be compiled; each fails closed.
    pub fn errors(&self) -> &[AuthzError] {
        &self.errors
    }

    /// Policies that select this workload but are not enforced (CUSTOM).
    pub fn unsupported(&self) -> &[String] {
        &self.unsupported
    }

    /// Decides one request (or connection) and counts the decision.
    pub fn authorize(&self, ctx: &RequestContext<'_>) -> Decision {
        let (istio, audit_marked) = self.istio(ctx);
        let linkerd = self.linkerd(ctx);
        let audited = audit_marked || linkerd.audited;
        let v = match istio {
            Some(i) if !i.allowed => i,
            _ if !linkerd.allowed => linkerd,
            Some(i) => i,
            None => linkerd,
        };
        let proto = usize::from(ctx.http.is_none());
        if v.allowed {
            v.tally.allow[proto].inc();
        } else {
            v.tally.deny[proto].inc();
        }
        Decision {
            allowed: v.allowed,
            policy: v.tally.name.clone(),
            reason: v.reason,
            audited,
        }
    }

    /// The Istio verdict — `None` when no Istio policy decides the request by name (none
    /// applies, or no ALLOW policy and no DENY match) — and whether an AUDIT policy matched.
    fn istio(&self, ctx: &RequestContext<'_>) -> (Option<Verdict<'_>>, bool) {
        if self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty() {
            return (None, false);
        }
        let verdict = |allowed, tally, reason| Verdict {
            allowed,
            tally,
            reason,
            audited: false,
        };
        let Ok(attrs) = Attrs::new(ctx, self.needs_path) else {
            return (
                Some(verdict(false, &self.no_match, Reason::InvalidPath)),
                false,
            );
        };
        let audited = self.audit.iter().any(|p| p.matches(&attrs, Action::Allow));
        if let Some(p) = self.deny.iter().find(|p| p.matches(&attrs, Action::Deny)) {
            let v = verdict(false, &p.tally, Reason::DenyPolicyMatched);
            return (Some(v), audited);
        }
        if self.allow.is_empty() {
            return (None, audited);
        }
        let v = match self.allow.iter().find(|p| p.matches(&attrs, Action::Allow)) {
            Some(p) => verdict(true, &p.tally, Reason::AllowPolicyMatched),
            None => verdict(false, &self.no_match, Reason::NoAllowPolicyMatched),
        };
        (Some(v), audited)
    }

    /// The Linkerd verdict: the Server covering the port, else the default policy.
    fn linkerd(&self, ctx: &RequestContext<'_>) -> Verdict<'_> {
        let Some(server) = self.servers.iter().find(|s| s.port == ctx.destination_port) else {
            return self.default_verdict(self.default_policy, &self.default_tally, ctx, false);
        };
        let mut route_authz: &[LinkerdAuthzM] = &[];
        if let (Some(http), false) = (&ctx.http, server.routes.is_empty()) {
            // The most specific matching route decides; the first declared wins a tie.
            let best = server
                .routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.best(http).map(|rank| (rank, std::cmp::Reverse(i), r)))
                .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
                .map(|(_, _, r)| r);
            match best {
                Some(r) => route_authz = &r.authz,
                None => {
                    return Verdict {
                        allowed: false,
                        tally: &server.tally,
                        reason: Reason::RouteNotFound,
                        audited: false,
                    }
                }
            }
        }
        if let Some(a) = server
            .authz
            .iter()
            .chain(route_authz)
            .find(|a| a.admits(ctx))
        {
            return Verdict {
                allowed: true,
                tally: &a.tally,
                reason: Reason::Authorized,
                audited: false,
            };
        }
        self.default_verdict(server.access_policy, &server.tally, ctx, true)
    }

    fn default_verdict<'s>(
        &'s self,
        policy: DefaultPolicy,
        tally: &'s Arc<Tally>,
        ctx: &RequestContext<'_>,
        server: bool,
    ) -> Verdict<'s> {
        let verdict = |allowed, reason, audited| Verdict {
            allowed,
            tally,
            reason,
            audited,
        };
        let allow = verdict(true, Reason::DefaultAllows, false);
        match policy {
            DefaultPolicy::AllUnauthenticated => allow,
            DefaultPolicy::AllAuthenticated => match ctx.peer_identity {
                Some(_) => allow,
                None => verdict(false, Reason::NotAuthenticated, false),
            },
            // Linkerd: an authenticated identity of this cluster, from the cluster's networks.
            DefaultPolicy::ClusterAuthenticated => match ctx.peer_identity {
                None => verdict(false, Reason::NotAuthenticated, false),
                Some(id) if trust_domain(id) != Some(self.trust_domain.as_str()) => {
                    verdict(false, Reason::ForeignTrustDomain, false)
                }
                Some(_)
                    if !self
                        .cluster_networks
                        .iter()
                        .any(|n| n.contains(&ctx.peer_ip.to_canonical())) =>
                {
                    verdict(false, Reason::OutsideClusterNetworks, false)
                }
                Some(_) => allow,
            },
            DefaultPolicy::ClusterUnauthenticated => {
                let ip = ctx.peer_ip.to_canonical();
                if self.cluster_networks.iter().any(|n| n.contains(&ip)) {
                    allow
                } else {
                    verdict(false, Reason::OutsideClusterNetworks, false)
                }
            }
            DefaultPolicy::Deny if server => verdict(false, Reason::Unauthorized, false),
            DefaultPolicy::Deny => verdict(false, Reason::DefaultDeny, false),
            DefaultPolicy::Audit => verdict(true, Reason::DefaultAllows, true),
        }
    }
}

/// The trust domain of a SPIFFE ID.
fn trust_domain(id: &Identity) -> Option<&str> {
    id.0.strip_prefix("spiffe://")?.split('/').next()
}

#[cfg(test)]
mod tests;
