//! Security policy as weft holds it: which inbound ports require mTLS (Istio
//! PeerAuthentication), who may call what (Istio AuthorizationPolicy; Linkerd Server,
//! AuthorizationPolicy, ServerAuthorization and default inbound policies), and how end-user
//! JWTs are checked (Istio RequestAuthentication). The `config` crate translates each API into
//! these shapes, keeping its own semantics; every proxy receives all of them and applies those
//! whose scope selects its workload.

use crate::route::RouteMatch;
use crate::Labels;
use serde::{Deserialize, Serialize};

/// Istio's default root namespace: policies there apply to the whole mesh.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Which workloads a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every workload (a policy without selector in the root namespace).
    Mesh,
    /// Every workload of one namespace (a policy without selector).
    Namespace(String),
    /// The workloads of `namespace` whose labels include all of `labels` (`selector.matchLabels`).
    Workload { namespace: String, labels: Labels },
}

impl Scope {
    pub fn selects(&self, namespace: &str, labels: &Labels) -> bool {
        match self {
            Scope::Mesh => true,
            Scope::Namespace(ns) => ns == namespace,
            Scope::Workload {
                namespace: ns,
                labels: want,
            } => ns == namespace && want.iter().all(|(k, v)| labels.get(k) == Some(v)),
        }
    }

    /// Workload beats namespace beats mesh, when policies of one kind conflict.
    pub fn specificity(&self) -> u8 {
        match self {
            Scope::Mesh => 0,
            Scope::Namespace(_) => 1,
            Scope::Workload { .. } => 2,
        }
    }
}

/// What an inbound port accepts (Istio `PeerAuthentication.mtls.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the wider scope; PERMISSIVE when nothing is set anywhere.
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext, told apart by the first bytes.
    Permissive,
    /// mTLS only: plaintext is refused at the handshake.
    Strict,
}

/// One PeerAuthentication.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAuthn {
    /// `PeerAuthentication NS/NAME`.
    pub name: String,
    pub scope: Scope,
    pub mode: MtlsMode,
    /// `portLevelMtls` (only with a workload selector): port → mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<(u16, MtlsMode)>,
}

/// Istio AuthorizationPolicy actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    Allow,
    Deny,
    /// Only marks the request; never changes the outcome.
    Audit,
    /// External authorization: reported as unsupported, never evaluated.
    Custom,
}

/// `rules[].from[].source`. Every non-empty field must match (AND); strings may be exact,
/// `prefix*`, `*suffix` or `*` (presence).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// CIDRs or single addresses of the connection's peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// CIDRs of the original client (from `X-Forwarded-For`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `rules[].to[].operation`. Paths may use `*` prefix/suffix/presence and the `{*}` (one
/// segment) / `{**}` (any suffix) templates; hosts are case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// `rules[].when[]`: `key` is an Istio attribute (`request.headers[x-foo]`, `source.ip`,
/// `source.principal`, `source.namespace`, `request.auth.principal`, `request.auth.audiences`,
/// `request.auth.presenter`, `request.auth.claims[iss]` (nested: `claims[a][b]`),
/// `destination.port`, `connection.sni`…).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Condition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// A rule matches when at least one source (or none listed), at least one operation (or none
/// listed) and every condition match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthzRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// One Istio AuthorizationPolicy. Empty `rules` with ALLOW denies everything; with DENY it
/// denies nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthzPolicy {
    /// `NS/NAME`, as decisions are labelled in metrics and logs.
    pub name: String,
    pub scope: Scope,
    pub action: AuthzAction,
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

/// Linkerd's default inbound policies (`proxy.defaultInboundPolicy`,
/// `config.linkerd.io/default-inbound-policy`), and a Server's `accessPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Everything, meshed or not (Linkerd's default).
    #[default]
    AllUnauthenticated,
    /// Only mTLS clients with a mesh identity.
    AllAuthenticated,
    /// Only mTLS clients of this cluster (trust domain).
    ClusterAuthenticated,
    /// Anything from within the cluster's networks (here: loopback).
    ClusterUnauthenticated,
    Deny,
    /// Allow, but log and count what `deny` would refuse.
    Audit,
}

impl DefaultPolicy {
    /// Linkerd's name for the policy (`config.linkerd.io/default-inbound-policy` values).
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::Audit => "audit",
        }
    }

    /// The policy Linkerd calls `name`.
    pub fn parse(name: &str) -> Option<DefaultPolicy> {
        [
            DefaultPolicy::AllUnauthenticated,
            DefaultPolicy::AllAuthenticated,
            DefaultPolicy::ClusterAuthenticated,
            DefaultPolicy::ClusterUnauthenticated,
            DefaultPolicy::Deny,
            DefaultPolicy::Audit,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }
}

/// Who a Linkerd authorization lets in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkerdAuthn {
    /// MeshTLSAuthentication / ServerAuthorization `meshTLS`: mTLS clients with one of these
    /// identities (SPIFFE IDs or Linkerd names; `*` any authenticated client).
    MeshTls { identities: Vec<String> },
    /// NetworkAuthentication / ServerAuthorization `networks`: clients in these CIDRs (minus
    /// `except`), authenticated or not.
    Network {
        cidrs: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<String>,
    },
    /// ServerAuthorization `unauthenticated: true`.
    Unauthenticated,
}

/// A Linkerd `Server`: an inbound port of the workloads its `podSelector` picks. Once a
/// Server covers a port, only its authorizations let traffic in (`accessPolicy`, default
/// deny, otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkerdServer {
    /// `NS/NAME`.
    pub name: String,
    pub scope: Scope,
    /// A port number; `None`: the workload's one service port (a named port in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub access_policy: DefaultPolicy,
    /// Inbound HTTPRoutes attached to the Server: `(NS/NAME, matches)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<(String, Vec<RouteMatch>)>,
}

/// What a Linkerd AuthorizationPolicy / ServerAuthorization targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkerdTarget {
    /// A Server, `NS/NAME`.
    Server(String),
    /// An inbound HTTPRoute, `NS/NAME`.
    Route(String),
    /// Every Server of a namespace.
    Namespace(String),
}

/// One Linkerd AuthorizationPolicy or ServerAuthorization: requests to `target` are allowed
/// when every one of `authns` is satisfied (AuthorizationPolicy `requiredAuthenticationRefs`
/// are ANDed; a ServerAuthorization's `client` is one authn).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkerdAuthz {
    /// `AuthorizationPolicy NS/NAME`, for metrics (`authz_name`) and logs.
    pub name: String,
    pub target: LinkerdTarget,
    pub authns: Vec<LinkerdAuthn>,
}

/// One `jwtRules[]` entry of an Istio RequestAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JwtRule {
    pub issuer: String,
    /// Any of these must be in the token's `aud`; empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Inline JWKS (JSON). Wins over `jwks_uri` when both are set, as in Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `(header, prefix)`; empty with no params/cookies: `Authorization: Bearer` and the
    /// `access_token` query parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// `(header, claim)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<(String, String)>,
    /// How long fetching `jwks_uri` may take (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One Istio RequestAuthentication.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestAuthn {
    /// `NS/NAME`.
    pub name: String,
    pub scope: Scope,
    pub rules: Vec<JwtRule>,
}

/// Every security policy of the mesh. Proxies apply the ones whose scope selects them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    /// Policies here are mesh-wide (Istio's root namespace, `istio-system` by default).
    #[serde(default = "root_namespace")]
    pub root_namespace: String,
    /// Linkerd's cluster-wide default inbound policy.
    #[serde(default)]
    pub default_inbound_policy: DefaultPolicy,
    /// Per-namespace / per-workload overrides of the default (`config.linkerd.io/
    /// default-inbound-policy` on a namespace or a workload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_policy_overrides: Vec<(Scope, DefaultPolicy)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_authns: Vec<PeerAuthn>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authz: Vec<AuthzPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_authns: Vec<RequestAuthn>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<LinkerdServer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linkerd_authz: Vec<LinkerdAuthz>,
    /// Linkerd's `clusterNetworks` (CIDRs): where `cluster-authenticated` /
    /// `cluster-unauthenticated` clients must come from. Empty: Linkerd's defaults (private
    /// ranges and loopback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_networks: Vec<String>,
}

fn root_namespace() -> String {
    DEFAULT_ROOT_NAMESPACE.to_string()
}

impl SecuritySpec {
    pub fn new() -> Self {
        Self {
            root_namespace: root_namespace(),
            ..Default::default()
        }
    }

    /// The mTLS mode of `port` on a workload: the most specific PeerAuthentication that sets
    /// one (port-level, then workload, then namespace, then mesh); PERMISSIVE when none does.
    pub fn mtls_mode(&self, namespace: &str, labels: &Labels, port: u16) -> MtlsMode {
        let mut best: Option<(u8, MtlsMode)> = None;
        for p in &self.peer_authns {
            if !p.scope.selects(namespace, labels) {
                continue;
            }
            let port_mode = p
                .ports
                .iter()
                .find(|(n, m)| *n == port && *m != MtlsMode::Unset)
                .map(|(_, m)| (3, *m));
            let mode = port_mode
                .or((p.mode != MtlsMode::Unset).then_some((p.scope.specificity(), p.mode)));
            if let Some((rank, m)) = mode {
                if best.is_none_or(|(r, _)| rank > r) {
                    best = Some((rank, m));
                }
            }
        }
        match best {
            Some((_, m)) => m,
            None => MtlsMode::Permissive,
        }
    }

    /// The Linkerd default inbound policy for a workload.
    pub fn default_policy(&self, namespace: &str, labels: &Labels) -> DefaultPolicy {
        self.default_policy_overrides
            .iter()
            .filter(|(s, _)| s.selects(namespace, labels))
            .max_by_key(|(s, _)| s.specificity())
            .map_or(self.default_inbound_policy, |(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_most_specific_peer_authentication_wins() {
        let pa = |name: &str, scope: Scope, mode, ports| PeerAuthn {
            name: name.into(),
            scope,
            mode,
            ports,
        };
        let mut s = SecuritySpec::new();
        assert_eq!(s.mtls_mode("foo", &Labels::new(), 80), MtlsMode::Permissive);
        s.peer_authns = vec![
            pa("mesh", Scope::Mesh, MtlsMode::Strict, vec![]),
            pa(
                "ns",
                Scope::Namespace("legacy".into()),
                MtlsMode::Disable,
                vec![],
            ),
            pa(
                "w",
                Scope::Workload {
                    namespace: "foo".into(),
                    labels: labels(&[("app", "httpbin")]),
                },
                MtlsMode::Unset,
                vec![(8080, MtlsMode::Disable)],
            ),
        ];
        let httpbin = labels(&[("app", "httpbin"), ("version", "v1")]);
        assert_eq!(
            s.mtls_mode("foo", &httpbin, 80),
            MtlsMode::Strict,
            "UNSET inherits"
        );
        assert_eq!(s.mtls_mode("foo", &httpbin, 8080), MtlsMode::Disable);
        assert_eq!(s.mtls_mode("legacy", &httpbin, 80), MtlsMode::Disable);
        assert_eq!(s.mtls_mode("bar", &Labels::new(), 80), MtlsMode::Strict);
    }

    #[test]
    fn meshes_and_snapshots_without_security_have_none_and_workloads_have_sidecars() {
        let mesh: crate::MeshSpec = serde_json::from_str(
            r#"{"name": "m", "ingress": "127.0.0.1:0", "services": [{"name": "a",
                "namespace": "default", "port": 80, "lb": "peak-ewma", "labels": {},
                "annotations": {}, "workloads": [{"name": "a-v1", "labels": {}, "replicas": 1,
                "command": ["a"], "env": {}}]}]}"#,
        )
        .unwrap();
        assert_eq!(mesh.security, SecuritySpec::new());
        assert_eq!(mesh.security.root_namespace, DEFAULT_ROOT_NAMESPACE);
        assert!(mesh.services[0].workloads[0].sidecar);
        let snapshot: crate::Snapshot =
            serde_json::from_str(r#"{"version": 1, "services": []}"#).unwrap();
        assert_eq!(snapshot.security, SecuritySpec::new());
    }
}
