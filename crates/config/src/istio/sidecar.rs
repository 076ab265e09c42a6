//! Istio's Sidecar resource, for the one thing weft reads from it: the `outboundTrafficPolicy`
//! of the workloads it selects (what their sidecars do with captured traffic to addresses that
//! are no service). Its `egress`, `ingress` and `inboundConnectionPool` are notices.

use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use model::security::Scope;
use model::{Labels, OutboundPolicy, ScopedOutboundPolicy};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Sidecar {
    pub workload_selector: Option<SidecarSelector>,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    pub egress: Option<Value>,
    pub ingress: Option<Value>,
    pub inbound_connection_pool: Option<Value>,
}

/// Networking's WorkloadSelector: `labels`, not `matchLabels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SidecarSelector {
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct OutboundTrafficPolicy {
    pub mode: Option<String>,
    pub egress_proxy: Option<Value>,
}

impl Sidecar {
    /// The fields weft accepts and ignores, as `(field, name)`.
    pub(super) fn ignored(&self) -> Vec<(String, &'static str)> {
        let egress_proxy = self
            .outbound_traffic_policy
            .as_ref()
            .is_some_and(|p| p.egress_proxy.is_some());
        [
            ("spec.egress", "egress", self.egress.is_some()),
            ("spec.ingress", "ingress", self.ingress.is_some()),
            (
                "spec.inboundConnectionPool",
                "inboundConnectionPool",
                self.inbound_connection_pool.is_some(),
            ),
            (
                "spec.outboundTrafficPolicy.egressProxy",
                "egressProxy",
                egress_proxy,
            ),
        ]
        .into_iter()
        .filter(|(_, _, set)| *set)
        .map(|(f, n, _)| (f.to_string(), n))
        .collect()
    }
}

/// Every Sidecar's outbound traffic policy, scoped to the workloads it selects (without a
/// selector, its namespace; proxies take a namespace scope in the root namespace as the whole
/// mesh, as Istio does). One Sidecar without a selector per namespace: a second is rejected.
pub(super) fn sidecars(
    pending: &[Pending],
    rejected: &mut Vec<Diagnostic>,
) -> Vec<ScopedOutboundPolicy> {
    let mut out = Vec::new();
    let mut namespace_wide: HashMap<String, String> = HashMap::new();
    for p in pending {
        let Kind::Sidecar(sc) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = sc.metadata.namespace().to_string();
        let mut errors = Vec::new();
        let selector = sc
            .spec
            .workload_selector
            .as_ref()
            .map(|s| s.labels.clone())
            .filter(|l| !l.is_empty());
        let mode = match sc
            .spec
            .outbound_traffic_policy
            .as_ref()
            .and_then(|p| p.mode.as_deref())
        {
            None => None,
            Some("ALLOW_ANY") => Some(OutboundPolicy::AllowAny),
            Some("REGISTRY_ONLY") => Some(OutboundPolicy::RegistryOnly),
            Some(other) => {
                errors.push(doc.error(
                    "spec.outboundTrafficPolicy.mode",
                    format!("unknown mode `{other}`: use ALLOW_ANY or REGISTRY_ONLY"),
                ));
                None
            }
        };
        if selector.is_none() {
            if let Some(at) = namespace_wide.get(&namespace) {
                errors.push(doc.error(
                    "metadata.name",
                    format!(
                        "one Sidecar without workloadSelector per namespace: {namespace} already has one at {at}"
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        if selector.is_none() {
            namespace_wide.insert(namespace.clone(), doc.place("metadata.name"));
        }
        let Some(mode) = mode else {
            continue;
        };
        let scope = match selector {
            Some(labels) => Scope::Workload { namespace, labels },
            None => Scope::Namespace(namespace),
        };
        out.push(ScopedOutboundPolicy { scope, mode });
    }
    out
}
