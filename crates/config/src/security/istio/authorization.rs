//! Istio AuthorizationPolicies: their rules (`from` sources, `to` operations, `when`
//! conditions) checked as Istio checks them, for each scope the policy applies to.

use super::super::{values, Ctx, Out};
use super::{checked, scopes, strings, TargetRef, WorkloadSelector};
use crate::k8s::Object;
use model::security::{AuthzAction, AuthzPolicy, AuthzRule, Condition, Operation, Source};
use serde::Deserialize;
use serde_yaml_ng::Value;

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
    /// Newer Istio: `NAMESPACE/SERVICE_ACCOUNT`, or `SERVICE_ACCOUNT` for one in the policy's
    /// namespace; translated into principals.
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

pub(crate) fn authorization_policy(
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
        rules.push(rule(&format!("spec.rules[{i}]"), r, namespace, out));
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

fn ip_blocks(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    checked(field, list, out, |s| values::cidr(s).map(|_| ()))
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

/// The most entries Istio takes in `serviceAccounts` (and in `notServiceAccounts`): its CRD's
/// `maxItems`, there to bound the configuration's size.
const MAX_SERVICE_ACCOUNTS: usize = 16;

/// The longest entry Istio takes: its CRD's `maxLength`.
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

/// `serviceAccounts` entries as Istio reads them (istio/api `Source.service_accounts`, istio's
/// `CheckServiceAccount` and `serviceAccountRegex`): `NAMESPACE/SERVICE_ACCOUNT`, or
/// `SERVICE_ACCOUNT` alone for one in the policy's `namespace`; no wildcard. Each becomes a
/// principal of any trust domain (`*/ns/NAMESPACE/sa/SERVICE_ACCOUNT`, a suffix match).
fn service_account_principals(
    field: &str,
    list: &[String],
    namespace: &str,
    out: &mut Out,
) -> Vec<String> {
    if list.len() > MAX_SERVICE_ACCOUNTS {
        out.error(
            field,
            format!("at most {MAX_SERVICE_ACCOUNTS} service accounts (Istio's limit)"),
        );
    }
    let mut found = Vec::new();
    for (k, s) in list.iter().enumerate() {
        let (ns, sa) = s.split_once('/').unwrap_or((namespace, s));
        let problem = if s.is_empty() {
            Some("must not be empty".to_string())
        } else if s.contains('*') {
            Some(format!(
                "`{s}`: no wildcard is allowed in a service account"
            ))
        } else if s.len() > MAX_SERVICE_ACCOUNT_LEN {
            Some(format!(
                "`{s}` is longer than {MAX_SERVICE_ACCOUNT_LEN} characters"
            ))
        } else if ns.is_empty() || sa.is_empty() || sa.contains('/') {
            Some(format!(
                "`{s}` is not SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT"
            ))
        } else {
            None
        };
        match problem {
            Some(message) => out.error(&format!("{field}[{k}]"), message),
            None => found.push(format!("*/ns/{ns}/sa/{sa}")),
        }
    }
    found
}

fn rule(field: &str, r: &Rule, namespace: &str, out: &mut Out) -> AuthzRule {
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
        // As Istio: either kind of service-account list excludes every kind of principal and
        // namespace list.
        let by_identity = [
            &s.principals,
            &s.not_principals,
            &s.namespaces,
            &s.not_namespaces,
        ];
        if by_identity.iter().any(|l| !l.is_empty()) {
            let set = if s.service_accounts.is_empty() {
                "notServiceAccounts"
            } else {
                "serviceAccounts"
            };
            if !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty() {
                out.error(
                    &f(set),
                    "serviceAccounts and notServiceAccounts cannot be set with principals, \
                     notPrincipals, namespaces or notNamespaces",
                );
            }
        }
        principals.extend(service_account_principals(
            &f("serviceAccounts"),
            &s.service_accounts,
            namespace,
            out,
        ));
        not_principals.extend(service_account_principals(
            &f("notServiceAccounts"),
            &s.not_service_accounts,
            namespace,
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
