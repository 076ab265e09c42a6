//! Istio's Sidecar resource, for the two things weft reads from it, for the workloads it
//! selects: `egress[].hosts` (which services their proxies are told about; the control plane
//! sends each proxy only those) and `outboundTrafficPolicy` (what their sidecars do with
//! captured traffic to addresses that are no service). An egress listener's `port`, `bind` and
//! `captureMode`, and `ingress` and `inboundConnectionPool`, are notices.

use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use model::security::Scope;
use model::{EgressHost, Labels, OutboundPolicy, ScopedEgress, ScopedOutboundPolicy};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Sidecar {
    pub workload_selector: Option<SidecarSelector>,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    pub egress: Option<Vec<EgressListener>>,
    pub ingress: Option<Value>,
    pub inbound_connection_pool: Option<Value>,
}

/// One `egress[]` listener. weft's proxies have one outbound listener whatever the port, so
/// the hosts of every listener together say what the workload sees.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct EgressListener {
    pub port: Option<Value>,
    pub bind: Option<Value>,
    pub capture_mode: Option<Value>,
    #[serde(default)]
    pub hosts: Vec<String>,
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
    /// The fields weft accepts and ignores, as `(field, what is said of it)`.
    pub(super) fn ignored(&self) -> Vec<(String, &'static str)> {
        const NOT_YET: &str = "is not yet supported; ignored";
        let egress_proxy = self
            .outbound_traffic_policy
            .as_ref()
            .is_some_and(|p| p.egress_proxy.is_some());
        let mut out = Vec::new();
        for (i, l) in self.egress.iter().flatten().enumerate() {
            let field = |name: &str| format!("spec.egress[{i}].{name}");
            if l.port.is_some() {
                out.push((
                    field("port"),
                    "is ignored: weft's proxies have one outbound listener, and the hosts apply on every port",
                ));
            }
            if l.bind.is_some() {
                out.push((field("bind"), NOT_YET));
            }
            if l.capture_mode.is_some() {
                out.push((field("captureMode"), NOT_YET));
            }
        }
        let rest = [
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
        .map(|(f, _, _)| (f.to_string(), NOT_YET));
        out.extend(rest);
        out
    }
}

/// What the Sidecars say, each scoped to the workloads it selects (without a selector, its
/// namespace; a namespace scope in the root namespace is the mesh's default, as in Istio).
#[derive(Default)]
pub(crate) struct Sidecars {
    pub outbound_policies: Vec<ScopedOutboundPolicy>,
    /// Every Sidecar's egress hosts (`None` for one without `egress`: it narrows nothing, but
    /// still takes the place of a less specific one).
    pub egress: Vec<ScopedEgress>,
}

/// Every Sidecar's outbound traffic policy and egress hosts. One Sidecar without a selector per
/// namespace: a second is rejected; so is one with a malformed host (`NAMESPACE/DNS_NAME`) or an
/// egress listener without hosts.
pub(super) fn sidecars(pending: &[Pending], rejected: &mut Vec<Diagnostic>) -> Sidecars {
    let mut out = Sidecars::default();
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
        let mut hosts: Option<Vec<EgressHost>> = None;
        for (i, l) in sc.spec.egress.iter().flatten().enumerate() {
            if l.hosts.is_empty() {
                errors.push(doc.error(
                    &format!("spec.egress[{i}].hosts"),
                    "an egress listener needs at least one host (NAMESPACE/DNS_NAME; `~/*` for none)",
                ));
            }
            for (j, h) in l.hosts.iter().enumerate() {
                match EgressHost::parse(h) {
                    Ok(h) => hosts.get_or_insert_with(Vec::new).push(h),
                    Err(e) => errors
                        .push(doc.error(&format!("spec.egress[{i}].hosts[{j}]"), e.to_string())),
                }
            }
        }
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
        let scope = match selector {
            Some(labels) => Scope::Workload { namespace, labels },
            None => Scope::Namespace(namespace),
        };
        out.egress.push(ScopedEgress {
            name: label.clone(),
            scope: scope.clone(),
            hosts,
        });
        if let Some(mode) = mode {
            out.outbound_policies
                .push(ScopedOutboundPolicy { scope, mode });
        }
    }
    out
}
