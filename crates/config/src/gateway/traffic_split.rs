//! SMI `split.smi-spec.io` TrafficSplits: their serde shape and their translation into one
//! weighted route for the apex service (one TrafficSplit per service; the first loaded applies
//! and a later one is rejected).

use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use crate::services::Services;
use model::{Destination, HttpRoute, ServiceKey};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// The TrafficSplit `apiVersion`s read.
pub(super) const API_VERSIONS: [&str; 4] = [
    "split.smi-spec.io/v1alpha1",
    "split.smi-spec.io/v1alpha2",
    "split.smi-spec.io/v1alpha3",
    "split.smi-spec.io/v1alpha4",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrafficSplitSpec {
    pub service: String,
    #[serde(default)]
    pub backends: Vec<SplitBackend>,
    /// v1alpha2+: references to HTTPRouteGroups; not implemented (an error, since ignoring it
    /// would send more traffic than written).
    pub matches: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitBackend {
    pub service: String,
    /// An integer, or (v1alpha1) a quantity string; only plain numbers are accepted.
    pub weight: Value,
}

/// A TrafficSplit translated: the route of its apex service, its label, and where it names
/// the service (for warnings).
pub(super) struct Split {
    pub apex: ServiceKey,
    pub route: HttpRoute,
    pub label: String,
    pub at: Diagnostic,
}

/// Every TrafficSplit among `pending` that can be honoured, in load order; one with errors is
/// rejected (its errors go to `rejected`).
pub(super) fn traffic_splits(
    pending: &[Pending],
    services: &Services,
    rejected: &mut Vec<Diagnostic>,
) -> Vec<Split> {
    let mut splits: Vec<Split> = Vec::new();
    for p in pending {
        let Kind::TrafficSplit(o) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = o.metadata.namespace();
        let mut errors = Vec::new();
        if o.spec.matches.is_some() {
            errors.push(doc.error(
                "spec.matches",
                "matching on HTTPRouteGroups is not yet supported",
            ));
        }
        let apex = services.named(&o.spec.service, namespace, "service");
        if let Err(message) = &apex {
            errors.push(doc.error("spec.service", message.clone()));
        }
        let mut destinations = Vec::new();
        if o.spec.backends.is_empty() {
            errors.push(doc.error("spec.backends", "needs at least one backend"));
        }
        for (j, b) in o.spec.backends.iter().enumerate() {
            let field = format!("spec.backends[{j}]");
            let weight = match split_weight(&b.weight) {
                Ok(w) => w,
                Err(message) => {
                    errors.push(doc.error(&format!("{field}.weight"), message));
                    continue;
                }
            };
            match services.named(&b.service, namespace, "backend") {
                Ok(service) => destinations.push(Destination::service(service, weight)),
                Err(message) => errors.push(doc.error(&format!("{field}.service"), message)),
            }
        }
        if destinations.len() == o.spec.backends.len()
            && !destinations.is_empty()
            && destinations.iter().all(|d| d.weight == 0)
        {
            errors.push(doc.error("spec.backends", "all weights are 0"));
        }
        if let Ok(apex) = &apex {
            if let Some(other) = splits.iter().find(|s| s.apex == *apex) {
                errors.push(doc.error(
                    "spec.service",
                    format!(
                        "one TrafficSplit per service: {apex} already has {} at {}:{}",
                        other.label,
                        other.at.file.display(),
                        other.at.line
                    ),
                ));
            }
        }
        let apex = match apex {
            Ok(apex) if errors.is_empty() => apex,
            _ => {
                reject(&label, errors, rejected);
                continue;
            }
        };
        let route = HttpRoute {
            name: label.clone(),
            matches: Vec::new(),
            destinations,
            ..HttpRoute::default()
        };
        splits.push(Split {
            apex,
            route,
            label,
            at: doc.error("spec.service", ""),
        });
    }
    splits
}

/// An SMI weight: an integer, or a string of digits (v1alpha1 wrote quantities; `500m` and the
/// like are not accepted).
fn split_weight(v: &Value) -> Result<u32, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        _ => None,
    };
    match n.and_then(|n| u32::try_from(n).ok()) {
        Some(n) => Ok(n),
        None => Err(format!(
            "weight must be a non-negative integer or a string of digits, not `{}`",
            serde_yaml_ng::to_string(v).unwrap_or_default().trim_end()
        )),
    }
}
