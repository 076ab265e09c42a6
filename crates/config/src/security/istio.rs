//! Istio `security.istio.io` (`v1beta1`, `v1`) PeerAuthentication, AuthorizationPolicy and
//! RequestAuthentication: their serde shape, Istio's validation, and their translation into
//! [`model::security::PeerAuthn`], [`model::security::AuthzPolicy`] and
//! [`model::security::RequestAuthn`].
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
//!
//! Layout: `mtls` (PeerAuthentications), `authorization` (AuthorizationPolicies), `jwt`
//! (RequestAuthentications); here, what they share: selectors, targets and list checks.

mod authorization;
mod jwt;
mod mtls;

pub(super) use authorization::{authorization_policy, AuthorizationPolicySpec};
pub(super) use jwt::{request_authentication, RequestAuthenticationSpec};
pub(super) use mtls::{peer_authentication, PeerAuthenticationSpec};

use super::{Ctx, Out, INGRESS_LABELS, INGRESS_NAME, INGRESS_NAMESPACE};
use model::security::Scope;
use model::Labels;
use serde::Deserialize;

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

/// A selector with at least one label (Istio treats an empty one as none).
pub(super) fn selector(s: &Option<WorkloadSelector>) -> Option<&Labels> {
    s.as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

/// The scopes of a policy with `selector`, `targetRef` or `targetRefs` (at most one of them).
pub(super) fn scopes(
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

/// Checks that no string of a list is empty, as Istio does.
pub(super) fn strings(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    checked(field, list, out, |s| {
        if s.is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(())
        }
    })
}

/// The list as it is, after reporting each entry `check` rejects as `FIELD[K]`.
pub(super) fn checked(
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
