//! Istio DestinationRules: their serde shape and their translation into subsets (for the
//! VirtualServices' destinations) and [`ServicePolicy`]s. One DestinationRule per host: the
//! first loaded applies and a later one is rejected.

use super::traffic_policy::{self, TrafficPolicySpec};
use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use crate::services::Services;
use crate::valid;
use model::{Labels, ServiceKey, ServicePolicy, SubsetPolicy};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct DestinationRule {
    pub host: String,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    pub traffic_policy: Option<TrafficPolicySpec>,
    pub export_to: Option<Value>,
    pub workload_selector: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub traffic_policy: Option<TrafficPolicySpec>,
}

/// Subsets per service, from the DestinationRule that defines them, and where it is.
pub(super) type Subsets = HashMap<ServiceKey, (BTreeMap<String, Labels>, String)>;

/// Every DestinationRule's subsets, and its policy added to `policies`; a rejected one
/// contributes nothing.
pub(super) fn destination_rules(
    services: &Services,
    pending: &[Pending],
    policies: &mut Vec<ServicePolicy>,
    rejected: &mut Vec<Diagnostic>,
) -> Subsets {
    let mut subsets: Subsets = HashMap::new();
    for p in pending {
        let Kind::DestinationRule(dr) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let mut errors = Vec::new();
        let key = match services.host(&dr.spec.host, dr.metadata.namespace()) {
            Ok(key) => key,
            Err(message) => {
                errors.push(doc.error("spec.host", message));
                None
            }
        };
        if let Some((key, (_, at))) = key.as_ref().and_then(|k| Some((k, subsets.get(k)?))) {
            errors.push(doc.error(
                "spec.host",
                format!("one DestinationRule per host: {key} already has one at {at}"),
            ));
        }
        let port = key.as_ref().and_then(|k| services.port(k));
        let service_policy = match &dr.spec.traffic_policy {
            Some(tp) => traffic_policy::effective(traffic_policy::translate(
                &doc,
                "spec.trafficPolicy",
                tp,
                port,
                &mut errors,
            )),
            None => traffic_policy::Translated::default(),
        };
        let mut named = BTreeMap::new();
        let mut subset_policies = Vec::new();
        for (i, subset) in dr.spec.subsets.iter().enumerate() {
            if named
                .insert(subset.name.clone(), subset.labels.clone())
                .is_some()
            {
                errors.push(doc.error(
                    &format!("spec.subsets[{i}].name"),
                    format!("duplicate subset {}", subset.name),
                ));
            }
            if let Some(tp) = &subset.traffic_policy {
                let field = format!("spec.subsets[{i}].trafficPolicy");
                let (own, port_level) =
                    traffic_policy::translate(&doc, &field, tp, port, &mut errors);
                // A subset's port-level entry replaces the whole merged policy, as in Istio.
                let merged = port_level.unwrap_or_else(|| service_policy.merged(&own));
                subset_policies.push(SubsetPolicy {
                    name: subset.name.clone(),
                    labels: subset.labels.clone(),
                    policy: merged.policy,
                });
            }
        }
        if errors.is_empty() {
            valid::policy(
                &doc,
                "spec.trafficPolicy",
                &service_policy.policy,
                &mut errors,
            );
            for (s, (i, _)) in subset_policies.iter().zip(
                dr.spec
                    .subsets
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.traffic_policy.is_some()),
            ) {
                let field = format!("spec.subsets[{i}].trafficPolicy");
                valid::policy(&doc, &field, &s.policy, &mut errors);
            }
        }
        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        let Some(key) = key else {
            continue;
        };
        if !service_policy.policy.is_empty() || !subset_policies.is_empty() {
            policies.push(ServicePolicy {
                service: key.clone(),
                source: label,
                policy: service_policy.policy,
                subsets: subset_policies,
            });
        }
        subsets.insert(key, (named, doc.place("spec.host")));
    }
    subsets
}
