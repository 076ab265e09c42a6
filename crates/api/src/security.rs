//! Security-policy conversions between `model::security` and the wire: scopes, PeerAuthentication
//! modes, Istio authorization policies, RequestAuthentication JWT rules, Linkerd Servers,
//! authorizations and default inbound policies.
//!
//! Modes, actions and default policies travel as names (as `Service.lb` does); a name this
//! proxy does not know, a scope, target or authentication of no kind, or a port outside
//! 1..=65535 rejects the snapshot with a [`WireError::Security`] naming the policy.

use crate::pb;
use crate::route::{match_from, match_to};
use crate::WireError;
use model::security::{
    AuthzAction, AuthzPolicy, AuthzRule, Condition, DefaultPolicy, JwtRule, LinkerdAuthn,
    LinkerdAuthz, LinkerdServer, LinkerdTarget, MtlsMode, Operation, PeerAuthn, RequestAuthn,
    Scope, SecuritySpec, Source,
};

fn bad(policy: &str, why: impl Into<String>) -> WireError {
    WireError::Security {
        policy: policy.to_string(),
        why: why.into(),
    }
}

pub(crate) fn to_wire(s: &SecuritySpec) -> pb::Security {
    pb::Security {
        root_namespace: s.root_namespace.clone(),
        default_inbound_policy: policy_name(s.default_inbound_policy).to_string(),
        default_policy_overrides: s
            .default_policy_overrides
            .iter()
            .map(|(scope, p)| pb::DefaultPolicyOverride {
                scope: Some(scope_to(scope)),
                policy: policy_name(*p).to_string(),
            })
            .collect(),
        peer_authns: s.peer_authns.iter().map(peer_to).collect(),
        authz: s.authz.iter().map(authz_to).collect(),
        request_authns: s.request_authns.iter().map(request_authn_to).collect(),
        servers: s.servers.iter().map(server_to).collect(),
        linkerd_authz: s.linkerd_authz.iter().map(linkerd_authz_to).collect(),
        cluster_networks: s.cluster_networks.clone(),
    }
}

/// An absent message is what an older control plane sends: no policies.
pub(crate) fn from_wire(s: Option<pb::Security>) -> Result<SecuritySpec, WireError> {
    let Some(s) = s else {
        return Ok(SecuritySpec::new());
    };
    let default_inbound_policy = policy_from(&s.default_inbound_policy)
        .ok_or_else(|| bad("default inbound policy", unknown(&s.default_inbound_policy)))?;
    let mut default_policy_overrides = Vec::with_capacity(s.default_policy_overrides.len());
    for o in s.default_policy_overrides {
        let what = "default inbound policy override";
        let scope = scope_from(o.scope, what)?;
        let policy = policy_from(&o.policy).ok_or_else(|| bad(what, unknown(&o.policy)))?;
        default_policy_overrides.push((scope, policy));
    }
    Ok(SecuritySpec {
        root_namespace: s.root_namespace,
        default_inbound_policy,
        default_policy_overrides,
        peer_authns: collect(s.peer_authns, peer_from)?,
        authz: collect(s.authz, authz_from)?,
        request_authns: collect(s.request_authns, request_authn_from)?,
        servers: collect(s.servers, server_from)?,
        linkerd_authz: collect(s.linkerd_authz, linkerd_authz_from)?,
        cluster_networks: s.cluster_networks,
    })
}

fn collect<W, M>(
    items: Vec<W>,
    f: impl Fn(W) -> Result<M, WireError>,
) -> Result<Vec<M>, WireError> {
    items.into_iter().map(f).collect()
}

fn unknown(name: &str) -> String {
    format!("unknown name {name:?}")
}

fn port_from(port: u32, policy: &str) -> Result<u16, WireError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(policy, format!("port {port} is not a valid port")))
}

fn ports_from(ports: Vec<u32>, policy: &str) -> Result<Vec<u16>, WireError> {
    ports.into_iter().map(|p| port_from(p, policy)).collect()
}

pub(crate) fn scope_to(s: &Scope) -> pb::Scope {
    use pb::scope::Kind;
    pb::Scope {
        kind: Some(match s {
            Scope::Mesh => Kind::Mesh(true),
            Scope::Namespace(ns) => Kind::Namespace(ns.clone()),
            Scope::Workload { namespace, labels } => Kind::Workload(pb::WorkloadScope {
                namespace: namespace.clone(),
                labels: labels.clone().into_iter().collect(),
            }),
        }),
    }
}

pub(crate) fn scope_from(s: Option<pb::Scope>, policy: &str) -> Result<Scope, WireError> {
    use pb::scope::Kind;
    match s.and_then(|s| s.kind) {
        Some(Kind::Mesh(_)) => Ok(Scope::Mesh),
        Some(Kind::Namespace(ns)) => Ok(Scope::Namespace(ns)),
        Some(Kind::Workload(w)) => Ok(Scope::Workload {
            namespace: w.namespace,
            labels: w.labels.into_iter().collect(),
        }),
        // Also what a kind added by a newer control plane decodes to: applying the policy
        // nowhere (or everywhere) would be a guess.
        None => Err(bad(policy, "a scope of an unknown kind")),
    }
}

/// The wire name of a Linkerd default policy, as Linkerd spells it.
pub fn policy_name(p: DefaultPolicy) -> &'static str {
    p.as_str()
}

/// The empty name is the default (`all-unauthenticated`).
fn policy_from(name: &str) -> Option<DefaultPolicy> {
    match name {
        "" => Some(DefaultPolicy::AllUnauthenticated),
        name => DefaultPolicy::parse(name),
    }
}

fn mode_name(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Unset => "UNSET",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Strict => "STRICT",
    }
}

/// The empty name is UNSET.
fn mode_from(name: &str) -> Option<MtlsMode> {
    Some(match name {
        "" | "UNSET" => MtlsMode::Unset,
        "DISABLE" => MtlsMode::Disable,
        "PERMISSIVE" => MtlsMode::Permissive,
        "STRICT" => MtlsMode::Strict,
        _ => return None,
    })
}

fn peer_to(p: &PeerAuthn) -> pb::PeerAuthn {
    pb::PeerAuthn {
        name: p.name.clone(),
        scope: Some(scope_to(&p.scope)),
        mode: mode_name(p.mode).to_string(),
        ports: p
            .ports
            .iter()
            .map(|(port, mode)| pb::PortMtls {
                port: (*port).into(),
                mode: mode_name(*mode).to_string(),
            })
            .collect(),
    }
}

fn peer_from(p: pb::PeerAuthn) -> Result<PeerAuthn, WireError> {
    let name = p.name;
    let mode = mode_from(&p.mode).ok_or_else(|| bad(&name, unknown(&p.mode)))?;
    let mut ports = Vec::with_capacity(p.ports.len());
    for port in p.ports {
        let m = mode_from(&port.mode).ok_or_else(|| bad(&name, unknown(&port.mode)))?;
        ports.push((port_from(port.port, &name)?, m));
    }
    Ok(PeerAuthn {
        scope: scope_from(p.scope, &name)?,
        mode,
        ports,
        name,
    })
}

fn action_name(a: AuthzAction) -> &'static str {
    match a {
        AuthzAction::Allow => "ALLOW",
        AuthzAction::Deny => "DENY",
        AuthzAction::Audit => "AUDIT",
        AuthzAction::Custom => "CUSTOM",
    }
}

fn action_from(name: &str) -> Option<AuthzAction> {
    Some(match name {
        "ALLOW" => AuthzAction::Allow,
        "DENY" => AuthzAction::Deny,
        "AUDIT" => AuthzAction::Audit,
        "CUSTOM" => AuthzAction::Custom,
        _ => return None,
    })
}

fn authz_to(p: &AuthzPolicy) -> pb::AuthzPolicy {
    pb::AuthzPolicy {
        name: p.name.clone(),
        scope: Some(scope_to(&p.scope)),
        action: action_name(p.action).to_string(),
        rules: p
            .rules
            .iter()
            .map(|r| pb::AuthzRule {
                from: r.from.iter().map(source_to).collect(),
                to: r.to.iter().map(operation_to).collect(),
                when: r
                    .when
                    .iter()
                    .map(|c| pb::AuthzCondition {
                        key: c.key.clone(),
                        values: c.values.clone(),
                        not_values: c.not_values.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn authz_from(p: pb::AuthzPolicy) -> Result<AuthzPolicy, WireError> {
    let name = p.name;
    // An unknown action must not be guessed: ALLOW and DENY mean opposite things.
    let action = action_from(&p.action).ok_or_else(|| bad(&name, unknown(&p.action)))?;
    let mut rules = Vec::with_capacity(p.rules.len());
    for r in p.rules {
        let mut to = Vec::with_capacity(r.to.len());
        for o in r.to {
            to.push(operation_from(o, &name)?);
        }
        rules.push(AuthzRule {
            from: r.from.into_iter().map(source_from).collect(),
            to,
            when: r
                .when
                .into_iter()
                .map(|c| Condition {
                    key: c.key,
                    values: c.values,
                    not_values: c.not_values,
                })
                .collect(),
        });
    }
    Ok(AuthzPolicy {
        scope: scope_from(p.scope, &name)?,
        action,
        rules,
        name,
    })
}

fn source_to(s: &Source) -> pb::AuthzSource {
    pb::AuthzSource {
        principals: s.principals.clone(),
        not_principals: s.not_principals.clone(),
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        ip_blocks: s.ip_blocks.clone(),
        not_ip_blocks: s.not_ip_blocks.clone(),
        remote_ip_blocks: s.remote_ip_blocks.clone(),
        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
    }
}

fn source_from(s: pb::AuthzSource) -> Source {
    Source {
        principals: s.principals,
        not_principals: s.not_principals,
        request_principals: s.request_principals,
        not_request_principals: s.not_request_principals,
        namespaces: s.namespaces,
        not_namespaces: s.not_namespaces,
        ip_blocks: s.ip_blocks,
        not_ip_blocks: s.not_ip_blocks,
        remote_ip_blocks: s.remote_ip_blocks,
        not_remote_ip_blocks: s.not_remote_ip_blocks,
    }
}

fn operation_to(o: &Operation) -> pb::AuthzOperation {
    let ports = |p: &[u16]| p.iter().map(|&p| u32::from(p)).collect();
    pb::AuthzOperation {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: ports(&o.ports),
        not_ports: ports(&o.not_ports),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: o.paths.clone(),
        not_paths: o.not_paths.clone(),
    }
}

fn operation_from(o: pb::AuthzOperation, policy: &str) -> Result<Operation, WireError> {
    Ok(Operation {
        hosts: o.hosts,
        not_hosts: o.not_hosts,
        ports: ports_from(o.ports, policy)?,
        not_ports: ports_from(o.not_ports, policy)?,
        methods: o.methods,
        not_methods: o.not_methods,
        paths: o.paths,
        not_paths: o.not_paths,
    })
}

fn request_authn_to(r: &RequestAuthn) -> pb::RequestAuthn {
    pb::RequestAuthn {
        name: r.name.clone(),
        scope: Some(scope_to(&r.scope)),
        rules: r.rules.iter().map(jwt_to).collect(),
    }
}

fn request_authn_from(r: pb::RequestAuthn) -> Result<RequestAuthn, WireError> {
    let mut rules = Vec::with_capacity(r.rules.len());
    for j in r.rules {
        let rule = jwt_from(j);
        // Keys the proxy cannot verify with, or a header it cannot read or write, would leave
        // the rule failing closed: not what the policy says.
        model::valid::jwt_rule(&rule)
            .map_err(|why| bad(&format!("RequestAuthentication {}", r.name), why))?;
        rules.push(rule);
    }
    Ok(RequestAuthn {
        scope: scope_from(r.scope, &r.name)?,
        rules,
        name: r.name,
    })
}

fn jwt_to(j: &JwtRule) -> pb::JwtRule {
    pb::JwtRule {
        issuer: j.issuer.clone(),
        audiences: j.audiences.clone(),
        jwks: j.jwks.clone(),
        jwks_uri: j.jwks_uri.clone(),
        from_headers: j
            .from_headers
            .iter()
            .map(|(name, prefix)| pb::JwtHeader {
                name: name.clone(),
                prefix: prefix.clone(),
            })
            .collect(),
        from_params: j.from_params.clone(),
        from_cookies: j.from_cookies.clone(),
        forward_original_token: j.forward_original_token,
        output_payload_to_header: j.output_payload_to_header.clone(),
        output_claim_to_headers: j
            .output_claim_to_headers
            .iter()
            .map(|(header, claim)| pb::ClaimHeader {
                header: header.clone(),
                claim: claim.clone(),
            })
            .collect(),
        timeout_ms: j.timeout_ms,
    }
}

fn jwt_from(j: pb::JwtRule) -> JwtRule {
    JwtRule {
        issuer: j.issuer,
        audiences: j.audiences,
        jwks: j.jwks,
        jwks_uri: j.jwks_uri,
        from_headers: j
            .from_headers
            .into_iter()
            .map(|h| (h.name, h.prefix))
            .collect(),
        from_params: j.from_params,
        from_cookies: j.from_cookies,
        forward_original_token: j.forward_original_token,
        output_payload_to_header: j.output_payload_to_header,
        output_claim_to_headers: j
            .output_claim_to_headers
            .into_iter()
            .map(|c| (c.header, c.claim))
            .collect(),
        timeout_ms: j.timeout_ms,
    }
}

fn server_to(s: &LinkerdServer) -> pb::LinkerdServer {
    pb::LinkerdServer {
        name: s.name.clone(),
        scope: Some(scope_to(&s.scope)),
        port: s.port.map(u32::from),
        access_policy: policy_name(s.access_policy).to_string(),
        routes: s
            .routes
            .iter()
            .map(|(name, matches)| pb::InboundRoute {
                name: name.clone(),
                matches: matches.iter().map(match_to).collect(),
            })
            .collect(),
    }
}

fn server_from(s: pb::LinkerdServer) -> Result<LinkerdServer, WireError> {
    let name = s.name;
    let access_policy =
        policy_from(&s.access_policy).ok_or_else(|| bad(&name, unknown(&s.access_policy)))?;
    let mut routes = Vec::with_capacity(s.routes.len());
    for r in s.routes {
        let matches: Vec<_> = r
            .matches
            .into_iter()
            .map(|m| match_from(m, &r.name))
            .collect::<Result<_, _>>()?;
        for m in &matches {
            model::valid::route_match(m)
                .map_err(|why| bad(&name, format!("HTTPRoute {}: {why}", r.name)))?;
        }
        routes.push((r.name, matches));
    }
    Ok(LinkerdServer {
        scope: scope_from(s.scope, &name)?,
        port: s.port.map(|p| port_from(p, &name)).transpose()?,
        access_policy,
        routes,
        name,
    })
}

fn linkerd_authz_to(a: &LinkerdAuthz) -> pb::LinkerdAuthz {
    use pb::linkerd_authn::Kind as Authn;
    use pb::linkerd_target::Kind as Target;
    pb::LinkerdAuthz {
        name: a.name.clone(),
        target: Some(pb::LinkerdTarget {
            kind: Some(match &a.target {
                LinkerdTarget::Server(s) => Target::Server(s.clone()),
                LinkerdTarget::Route(r) => Target::Route(r.clone()),
                LinkerdTarget::Namespace(ns) => Target::Namespace(ns.clone()),
            }),
        }),
        authns: a
            .authns
            .iter()
            .map(|authn| pb::LinkerdAuthn {
                kind: Some(match authn {
                    LinkerdAuthn::MeshTls { identities } => Authn::MeshTls(pb::MeshTlsAuthn {
                        identities: identities.clone(),
                    }),
                    LinkerdAuthn::Network { cidrs, except } => Authn::Network(pb::NetworkAuthn {
                        cidrs: cidrs.clone(),
                        except: except.clone(),
                    }),
                    LinkerdAuthn::Unauthenticated => Authn::Unauthenticated(true),
                }),
            })
            .collect(),
    }
}

fn linkerd_authz_from(a: pb::LinkerdAuthz) -> Result<LinkerdAuthz, WireError> {
    use pb::linkerd_authn::Kind as Authn;
    use pb::linkerd_target::Kind as Target;
    let name = a.name;
    let target = match a.target.and_then(|t| t.kind) {
        Some(Target::Server(s)) => LinkerdTarget::Server(s),
        Some(Target::Route(r)) => LinkerdTarget::Route(r),
        Some(Target::Namespace(ns)) => LinkerdTarget::Namespace(ns),
        None => return Err(bad(&name, "a target of an unknown kind")),
    };
    let mut authns = Vec::with_capacity(a.authns.len());
    for authn in a.authns {
        authns.push(match authn.kind {
            Some(Authn::MeshTls(m)) => LinkerdAuthn::MeshTls {
                identities: m.identities,
            },
            Some(Authn::Network(n)) => LinkerdAuthn::Network {
                cidrs: n.cidrs,
                except: n.except,
            },
            Some(Authn::Unauthenticated(_)) => LinkerdAuthn::Unauthenticated,
            // Dropping a required authentication would let more clients in.
            None => return Err(bad(&name, "an authentication of an unknown kind")),
        });
    }
    Ok(LinkerdAuthz {
        name,
        target,
        authns,
    })
}
