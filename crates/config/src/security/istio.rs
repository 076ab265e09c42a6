//! Istio `security.istio.io` (`v1beta1`, `v1`) PeerAuthentication, AuthorizationPolicy and
//! RequestAuthentication: their serde shape, Istio's validation, and their translation into
//! [`PeerAuthn`], [`AuthzPolicy`] and [`RequestAuthn`].
//!
//! Scopes, as Istio applies them:
//! - no selector: the policy's namespace, or the whole mesh in the root namespace;
//! - `selector.matchLabels`: those workloads of the policy's namespace. In the root namespace an
//!   AuthorizationPolicy's or RequestAuthentication's selector also matches workloads of every
//!   other namespace: the policy is repeated for each namespace of the mesh that has a matching
//!   workload. A PeerAuthentication with a selector in the root namespace is ignored, as Istio
//!   ignores it (with a notice);
//! - `targetRef` / `targetRefs` (AuthorizationPolicy, RequestAuthentication): the Gateway
//!   `istio-ingressgateway` is weft's ingress (namespace `istio-system`, labels
//!   `istio: ingressgateway`); any other target is noticed and selects nothing.

use super::{values, Ctx, Out, INGRESS_LABELS, INGRESS_NAME, INGRESS_NAMESPACE};
use crate::k8s::Object;
use crate::policy;
use model::security::{
    AuthzAction, AuthzPolicy, AuthzRule, Condition, JwtRule, MtlsMode, Operation, PeerAuthn,
    RequestAuthn, Scope, Source,
};
use model::Labels;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// The `apiVersion`s read.
pub(crate) const API_VERSIONS: [&str; 2] = ["security.istio.io/v1beta1", "security.istio.io/v1"];

/// Istio's WorkloadSelector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

/// Istio's PolicyTargetReference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetRef {
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
    /// Accepted: weft runs one ingress, whichever namespace names it.
    #[allow(dead_code)]
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PeerAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    pub mtls: Option<MutualTls>,
    /// Port → MutualTLS; read by hand, so that a bad port is named.
    pub port_level_mtls: Option<serde_yaml_ng::Mapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AuthorizationPolicySpec {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<TargetRef>,
    pub target_refs: Option<Vec<TargetRef>>,
    pub rules: Option<Vec<Rule>>,
    pub action: Option<AuthzAction>,
    pub provider: Option<Provider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Provider {
    #[allow(dead_code)]
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rule {
    #[serde(default)]
    pub from: Vec<RuleFrom>,
    #[serde(default)]
    pub to: Vec<RuleTo>,
    #[serde(default)]
    pub when: Vec<ConditionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFrom {
    pub source: Option<SourceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleTo {
    pub operation: Option<OperationSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SourceSpec {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
    /// Newer Istio: `NAMESPACE/SERVICE_ACCOUNT`, translated into principals.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct OperationSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Strings in Istio; plain numbers are taken too.
    #[serde(default)]
    pub ports: Vec<Value>,
    #[serde(default)]
    pub not_ports: Vec<Value>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ConditionSpec {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<TargetRef>,
    pub target_refs: Option<Vec<TargetRef>>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct JwtRuleSpec {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// A protobuf Duration: how long fetching `jwksUri` may take.
    pub timeout: Option<String>,
    pub failure_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

/// A selector with at least one label (Istio treats an empty one as none).
fn selector(s: &Option<WorkloadSelector>) -> Option<&Labels> {
    s.as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

pub(super) fn peer_authentication(
    o: &Object<Option<PeerAuthenticationSpec>>,
    ctx: &Ctx,
    out: &mut Out,
) -> Vec<PeerAuthn> {
    let default = PeerAuthenticationSpec::default();
    let spec = o.spec.as_ref().unwrap_or(&default);
    let namespace = o.metadata.namespace();
    let labels = selector(&spec.selector);
    let mut ports = Vec::new();
    if let Some(map) = &spec.port_level_mtls {
        if labels.is_none() {
            out.error(
                "spec.portLevelMtls",
                "portLevelMtls needs a workload selector (selector.matchLabels), as in Istio",
            );
        }
        for (key, value) in map {
            let shown = match key {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            let field = format!("spec.portLevelMtls.{shown}");
            let port = match values::port(key) {
                Ok(port) => port,
                Err(message) => {
                    out.error(&field, message);
                    continue;
                }
            };
            match serde_yaml_ng::from_value::<MutualTls>(value.clone()) {
                Ok(m) => ports.push((port, m.mode)),
                Err(e) => out.error(&field, e.to_string()),
            }
        }
    }
    if labels.is_some() && namespace == ctx.root {
        out.note(
            "spec.selector",
            format!(
                "a PeerAuthentication with a selector in the root namespace {} is ignored, as in \
                 Istio (a workload's PeerAuthentication goes in the workload's namespace)",
                ctx.root
            ),
        );
        return Vec::new();
    }
    let scope = ctx.istio_scopes(namespace, labels).remove(0);
    vec![PeerAuthn {
        name: format!("PeerAuthentication {namespace}/{}", o.metadata.name),
        scope,
        mode: spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default(),
        ports,
    }]
}

/// The scopes of a policy with `selector`, `targetRef` or `targetRefs` (at most one of them).
fn scopes(
    ctx: &Ctx,
    namespace: &str,
    sel: &Option<WorkloadSelector>,
    target_ref: &Option<TargetRef>,
    target_refs: &Option<Vec<TargetRef>>,
    out: &mut Out,
) -> Vec<Scope> {
    let refs: Vec<(String, &TargetRef)> = match (target_ref, target_refs) {
        (Some(_), Some(_)) => {
            out.error("spec.targetRefs", "set targetRef or targetRefs, not both");
            return Vec::new();
        }
        (Some(t), None) => vec![("spec.targetRef".to_string(), t)],
        (None, Some(ts)) => ts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("spec.targetRefs[{i}]"), t))
            .collect(),
        (None, None) => return ctx.istio_scopes(namespace, selector(sel)),
    };
    if sel.is_some() {
        out.error(
            "spec.selector",
            "set selector or targetRef(s), not both, as Istio requires",
        );
        return Vec::new();
    }
    let mut found = Vec::new();
    for (field, t) in refs {
        let gateway_group = matches!(t.group.as_deref(), None | Some("gateway.networking.k8s.io"));
        if t.kind == "Gateway" && gateway_group && t.name == INGRESS_NAME {
            let scope = Scope::Workload {
                namespace: INGRESS_NAMESPACE.to_string(),
                labels: INGRESS_LABELS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            if !found.contains(&scope) {
                found.push(scope);
            }
        } else {
            out.note(
                &field,
                format!(
                    "targetRef {} {}: only the Gateway {INGRESS_NAME} (weft's ingress) can be \
                     targeted; this target selects nothing",
                    t.kind, t.name
                ),
            );
        }
    }
    found
}

pub(super) fn authorization_policy(
    o: &Object<Option<AuthorizationPolicySpec>>,
    ctx: &Ctx,
    out: &mut Out,
) -> Vec<AuthzPolicy> {
    let default = AuthorizationPolicySpec::default();
    let spec = o.spec.as_ref().unwrap_or(&default);
    let namespace = o.metadata.namespace();
    let action = spec.action.unwrap_or(AuthzAction::Allow);
    match (action, &spec.provider) {
        (AuthzAction::Custom, None) => {
            out.error("spec.action", "action CUSTOM needs provider.name")
        }
        (AuthzAction::Custom, Some(_)) => out.note(
            "spec.action",
            "CUSTOM (external authorization) is not supported; this policy is not enforced",
        ),
        (_, Some(_)) => out.error("spec.provider", "provider is only for action CUSTOM"),
        (_, None) => {}
    }
    let scopes = scopes(
        ctx,
        namespace,
        &spec.selector,
        &spec.target_ref,
        &spec.target_refs,
        out,
    );
    let mut rules = Vec::new();
    for (i, r) in spec.rules.iter().flatten().enumerate() {
        rules.push(rule(&format!("spec.rules[{i}]"), r, out));
    }
    let name = format!("{namespace}/{}", o.metadata.name);
    scopes
        .into_iter()
        .map(|scope| AuthzPolicy {
            name: name.clone(),
            scope,
            action,
            rules: rules.clone(),
        })
        .collect()
}

/// Checks that no string of a list is empty, as Istio does.
fn strings(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    checked(field, list, out, |s| {
        if s.is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(())
        }
    })
}

fn ip_blocks(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    checked(field, list, out, |s| values::cidr(s).map(|_| ()))
}

/// The list as it is, after reporting each entry `check` rejects as `FIELD[K]`.
fn checked(
    field: &str,
    list: &[String],
    out: &mut Out,
    check: impl Fn(&str) -> Result<(), String>,
) -> Vec<String> {
    for (k, s) in list.iter().enumerate() {
        if let Err(message) = check(s) {
            out.error(&format!("{field}[{k}]"), message);
        }
    }
    list.to_vec()
}

fn ports(field: &str, list: &[Value], out: &mut Out) -> Vec<u16> {
    let mut found = Vec::new();
    for (k, v) in list.iter().enumerate() {
        match values::port(v) {
            Ok(p) => found.push(p),
            Err(message) => out.error(&format!("{field}[{k}]"), message),
        }
    }
    found
}

fn paths(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    checked(field, list, out, values::authz_path)
}

/// `NAMESPACE/SERVICE_ACCOUNT` as a principal of any trust domain (Istio's `*` suffix match).
fn service_account_principals(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    let mut found = Vec::new();
    for (k, s) in list.iter().enumerate() {
        match s.split_once('/') {
            Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
                found.push(format!("*/ns/{ns}/sa/{sa}"))
            }
            _ => out.error(
                &format!("{field}[{k}]"),
                format!("`{s}` is not NAMESPACE/SERVICE_ACCOUNT"),
            ),
        }
    }
    found
}

fn rule(field: &str, r: &Rule, out: &mut Out) -> AuthzRule {
    let mut from = Vec::new();
    for (j, f) in r.from.iter().enumerate() {
        let field = format!("{field}.from[{j}].source");
        let Some(s) = &f.source else {
            from.push(Source::default());
            continue;
        };
        let f = |name: &str| format!("{field}.{name}");
        let mut principals = strings(&f("principals"), &s.principals, out);
        let mut not_principals = strings(&f("notPrincipals"), &s.not_principals, out);
        if !s.service_accounts.is_empty() && (!s.principals.is_empty() || !s.namespaces.is_empty())
        {
            out.error(
                &f("serviceAccounts"),
                "serviceAccounts cannot be set with principals or namespaces",
            );
        }
        principals.extend(service_account_principals(
            &f("serviceAccounts"),
            &s.service_accounts,
            out,
        ));
        not_principals.extend(service_account_principals(
            &f("notServiceAccounts"),
            &s.not_service_accounts,
            out,
        ));
        from.push(Source {
            principals,
            not_principals,
            request_principals: strings(&f("requestPrincipals"), &s.request_principals, out),
            not_request_principals: strings(
                &f("notRequestPrincipals"),
                &s.not_request_principals,
                out,
            ),
            namespaces: strings(&f("namespaces"), &s.namespaces, out),
            not_namespaces: strings(&f("notNamespaces"), &s.not_namespaces, out),
            ip_blocks: ip_blocks(&f("ipBlocks"), &s.ip_blocks, out),
            not_ip_blocks: ip_blocks(&f("notIpBlocks"), &s.not_ip_blocks, out),
            remote_ip_blocks: ip_blocks(&f("remoteIpBlocks"), &s.remote_ip_blocks, out),
            not_remote_ip_blocks: ip_blocks(&f("notRemoteIpBlocks"), &s.not_remote_ip_blocks, out),
        });
    }
    let mut to = Vec::new();
    for (j, t) in r.to.iter().enumerate() {
        let field = format!("{field}.to[{j}].operation");
        let Some(o) = &t.operation else {
            to.push(Operation::default());
            continue;
        };
        let f = |name: &str| format!("{field}.{name}");
        to.push(Operation {
            hosts: strings(&f("hosts"), &o.hosts, out),
            not_hosts: strings(&f("notHosts"), &o.not_hosts, out),
            ports: ports(&f("ports"), &o.ports, out),
            not_ports: ports(&f("notPorts"), &o.not_ports, out),
            methods: strings(&f("methods"), &o.methods, out),
            not_methods: strings(&f("notMethods"), &o.not_methods, out),
            paths: paths(&f("paths"), &o.paths, out),
            not_paths: paths(&f("notPaths"), &o.not_paths, out),
        });
    }
    let mut when = Vec::new();
    for (j, c) in r.when.iter().enumerate() {
        let field = format!("{field}.when[{j}]");
        if let Err(message) = values::condition_key(&c.key) {
            out.error(&format!("{field}.key"), message);
        }
        if c.values.is_empty() && c.not_values.is_empty() {
            out.error(&field, "a condition needs values or notValues");
        }
        for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
            for (k, v) in list.iter().enumerate() {
                if let Err(message) = values::condition_value(&c.key, v) {
                    out.error(&format!("{field}.{name}[{k}]"), message);
                }
            }
        }
        when.push(Condition {
            key: c.key.clone(),
            values: c.values.clone(),
            not_values: c.not_values.clone(),
        });
    }
    AuthzRule { from, to, when }
}

pub(super) fn request_authentication(
    o: &Object<Option<RequestAuthenticationSpec>>,
    ctx: &Ctx,
    out: &mut Out,
) -> Vec<RequestAuthn> {
    let default = RequestAuthenticationSpec::default();
    let spec = o.spec.as_ref().unwrap_or(&default);
    let namespace = o.metadata.namespace();
    let scopes = scopes(
        ctx,
        namespace,
        &spec.selector,
        &spec.target_ref,
        &spec.target_refs,
        out,
    );
    let mut rules = Vec::new();
    for (i, r) in spec.jwt_rules.iter().enumerate() {
        let field = format!("spec.jwtRules[{i}]");
        if let Some(rule) = jwt_rule(&field, r, out) {
            if rules.iter().any(|x: &JwtRule| x.issuer == rule.issuer) {
                out.error(
                    &format!("{field}.issuer"),
                    format!("issuer `{}` has another rule in this policy", rule.issuer),
                );
            }
            rules.push(rule);
        }
    }
    let name = format!("{namespace}/{}", o.metadata.name);
    scopes
        .into_iter()
        .map(|scope| RequestAuthn {
            name: name.clone(),
            scope,
            rules: rules.clone(),
        })
        .collect()
}

fn jwt_rule(field: &str, r: &JwtRuleSpec, out: &mut Out) -> Option<JwtRule> {
    let before = out.errors.len();
    let f = |name: &str| format!("{field}.{name}");
    if r.issuer.is_empty() {
        out.error(&f("issuer"), "issuer must be set");
    }
    let jwks = r.jwks.clone().filter(|j| !j.is_empty());
    if let Some(text) = &jwks {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if v.get("keys").is_some_and(|k| k.is_array()) => {}
            Ok(_) => out.error(
                &f("jwks"),
                "a JWKS must be a JSON object with a `keys` array",
            ),
            Err(e) => out.error(&f("jwks"), format!("not JSON: {e}")),
        }
    }
    let jwks_uri = r.jwks_uri.clone().filter(|u| !u.is_empty());
    if let Some(uri) = &jwks_uri {
        let host = uri
            .strip_prefix("https://")
            .or_else(|| uri.strip_prefix("http://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) {
            out.error(
                &f("jwksUri"),
                format!("`{uri}` is not an http:// or https:// URL with a host"),
            );
        }
    }
    match (&jwks, &jwks_uri) {
        (Some(_), Some(_)) => out.note(
            &f("jwksUri"),
            "jwksUri is ignored when jwks is set, as in Istio",
        ),
        (None, None) if !r.issuer.is_empty() => out.note(
            &f("issuer"),
            format!(
                "neither jwks nor jwksUri is set, and finding the keys of `{}` by OpenID Connect \
                 discovery is not yet supported: its tokens will fail verification",
                r.issuer
            ),
        ),
        _ => {}
    }
    let mut from_headers = Vec::new();
    for (k, h) in r.from_headers.iter().enumerate() {
        if !values::is_header_name(&h.name) {
            out.error(
                &format!("{field}.fromHeaders[{k}].name"),
                format!("`{}` is not a header name", h.name),
            );
        }
        from_headers.push((h.name.to_ascii_lowercase(), h.prefix.clone()));
    }
    let from_params = strings(&f("fromParams"), &r.from_params, out);
    let from_cookies = strings(&f("fromCookies"), &r.from_cookies, out);
    let output_payload_to_header = r.output_payload_to_header.clone().filter(|h| !h.is_empty());
    if let Some(h) = &output_payload_to_header {
        if !values::is_header_name(h) {
            out.error(
                &f("outputPayloadToHeader"),
                format!("`{h}` is not a header name"),
            );
        }
    }
    let mut output_claim_to_headers: Vec<(String, String)> = Vec::new();
    for (k, c) in r.output_claim_to_headers.iter().enumerate() {
        let cf = format!("{field}.outputClaimToHeaders[{k}]");
        if !values::is_header_name(&c.header) {
            out.error(
                &format!("{cf}.header"),
                format!("`{}` is not a header name", c.header),
            );
        } else if output_claim_to_headers
            .iter()
            .any(|(h, _)| h.eq_ignore_ascii_case(&c.header))
        {
            out.error(
                &format!("{cf}.header"),
                format!("header `{}` is set by another claim", c.header),
            );
        }
        if c.claim.is_empty() {
            out.error(&format!("{cf}.claim"), "must not be empty");
        }
        output_claim_to_headers.push((c.header.to_ascii_lowercase(), c.claim.clone()));
    }
    let timeout_ms = match r.timeout.as_deref().map(policy::istio_duration) {
        Some(Ok(ms)) => ms,
        Some(Err(message)) => {
            out.error(&f("timeout"), message);
            None
        }
        None => None,
    };
    match r.failure_mode.as_deref() {
        None | Some("PERMISSIVE") => {}
        Some(mode @ ("IGNORE" | "STRICT")) => out.note(
            &f("failureMode"),
            format!(
                "failureMode {mode} is not yet supported; PERMISSIVE applies (a missing token \
                 passes, an invalid one is refused)"
            ),
        ),
        Some(other) => out.error(
            &f("failureMode"),
            format!("unknown failureMode `{other}`: PERMISSIVE, IGNORE or STRICT"),
        ),
    }
    let audiences = strings(&f("audiences"), &r.audiences, out);
    (out.errors.len() == before).then(|| JwtRule {
        issuer: r.issuer.clone(),
        audiences,
        jwks,
        jwks_uri,
        from_headers,
        from_params,
        from_cookies,
        forward_original_token: r.forward_original_token,
        output_payload_to_header,
        output_claim_to_headers,
        timeout_ms,
    })
}
