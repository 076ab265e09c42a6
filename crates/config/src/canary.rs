//! `kind: Canary` (weft.dev/v1alpha1): a progressive rollout for the control plane's canary
//! controller, checked field by field (a bad one is rejected alone, with its file, line and
//! field, as routes are).
//!
//! ```yaml
//! apiVersion: weft.dev/v1alpha1
//! kind: Canary
//! metadata: {name: payment, namespace: default}
//! spec:
//!   service: payment             # workloads differ by their `version` label; or
//!   # targetRef: {kind: HTTPRoute, name: reviews}     # backends: the two versions' Services
//!   # targetRef: {kind: TrafficSplit, name: reviews}
//!   from: v1
//!   to: v2
//!   steps: [10, 25, 50, 100]     # the default
//!   interval: 30s                # the default
//!   analysis: {maxErrorRate: 1%, maxP99: 500ms, minRequests: 100, failedChecks: 1}
//!   abTest: {header: "x-canary: true", duration: 1m}
//!   webhooks: {preRollout: http://…, prePromotion: http://…}
//! ```

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::policy::istio_duration;
use model::canary::{AbPhase, Analysis, Canary, Target, DEFAULT_INTERVAL, DEFAULT_STEPS};
use model::{Authority, ServiceKey, ServiceSpec};
use serde::Deserialize;
use std::time::Duration;

/// The shortest interval: analyses read the proxies' counters, which need a few seconds of
/// traffic to mean anything.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Deserialize)]
pub(crate) struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, rename = "labels")]
    _labels: Option<serde_yaml_ng::Value>,
    #[serde(default, rename = "annotations")]
    _annotations: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Spec {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    target_ref: Option<TargetRef>,
    from: String,
    to: String,
    #[serde(default)]
    steps: Option<Vec<u32>>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    analysis: Option<AnalysisSpec>,
    #[serde(default)]
    ab_test: Option<AbSpec>,
    #[serde(default)]
    webhooks: Option<Webhooks>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetRef {
    kind: String,
    name: String,
    #[serde(default, rename = "group")]
    _group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AnalysisSpec {
    #[serde(default)]
    max_error_rate: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    max_p99: Option<String>,
    #[serde(default)]
    min_requests: Option<u64>,
    #[serde(default)]
    failed_checks: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbSpec {
    header: String,
    duration: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Webhooks {
    #[serde(default)]
    pre_rollout: Option<String>,
    #[serde(default)]
    pre_promotion: Option<String>,
}

/// `1%`, `0.5%` or a fraction such as `0.01`, as a fraction.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a rate like 1% or 0.01"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("`{text}` is not between 0% and 100%"));
    }
    Ok(value)
}

/// `NAME: VALUE` (or `NAME=VALUE`), the header as lower case.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .or_else(|| text.split_once('='))
        .ok_or_else(|| format!("`{text}` is not a header like `x-canary: true`"))?;
    let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
    model::valid::header_name(&name)?;
    if value.is_empty() {
        return Err(format!("`{text}` has no value"));
    }
    Ok((name, value))
}

fn duration(text: &str) -> Result<Duration, String> {
    match istio_duration(text)? {
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("`{text}` is zero")),
    }
}

/// A service's short name from any name it answers to (`NAME`, `NAME.NAMESPACE`, the FQDN),
/// if it is in `namespace`: a rollout moves traffic within its own namespace.
fn short_name(name: &str, namespace: &str) -> Result<String, String> {
    match Authority::parse(name).service_key(namespace) {
        Some(key) if key.namespace == namespace => Ok(key.name),
        Some(key) => Err(format!(
            "{key} is in another namespace than the Canary's ({namespace})"
        )),
        None => Err(format!("`{name}` is not a service name")),
    }
}

fn webhook(url: &str) -> Result<String, String> {
    let ok = url
        .strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if ok {
        Ok(url.to_string())
    } else {
        Err(format!("`{url}` is not an http:// URL"))
    }
}

/// Checks a parsed document; the rollout, or every error with its field.
pub(crate) fn check(
    doc: &Doc,
    d: Document,
    services: Option<&[ServiceSpec]>,
) -> Result<Canary, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let namespace = d
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| model::names::DEFAULT_NAMESPACE.to_string());
    let s = d.spec;
    let mut err = |field: &str, why: String| errors.push(doc.error(field, why));
    let target = match (&s.service, &s.target_ref) {
        (Some(service), None) => short_name(service, &namespace)
            .map_err(|e| err("spec.service", e))
            .ok()
            .map(|service| Target::Subsets { service }),
        (None, Some(t)) => match t.kind.as_str() {
            "HTTPRoute" => Some(Target::HttpRoute {
                route: t.name.clone(),
            }),
            "TrafficSplit" => Some(Target::TrafficSplit {
                split: t.name.clone(),
            }),
            other => {
                err(
                    "spec.targetRef.kind",
                    format!("`{other}`: a Canary targets an HTTPRoute or a TrafficSplit (or a `service`)"),
                );
                None
            }
        },
        (Some(_), Some(_)) => {
            err(
                "spec.targetRef",
                "give `service` or `targetRef`, not both".into(),
            );
            None
        }
        (None, None) => {
            err(
                "spec",
                "missing `service` (a service whose workloads differ by `version`) or `targetRef`"
                    .into(),
            );
            None
        }
    };
    // With a route's or a TrafficSplit's backends the versions are Services: by short name.
    let (mut from, mut to) = (s.from.clone(), s.to.clone());
    if matches!(
        target,
        Some(Target::HttpRoute { .. } | Target::TrafficSplit { .. })
    ) {
        for (field, v) in [("spec.from", &mut from), ("spec.to", &mut to)] {
            match short_name(v, &namespace) {
                Ok(name) => *v = name,
                Err(e) => err(field, e),
            }
        }
    }
    if from == to {
        err("spec.to", format!("`{}` is also `from`", s.to));
    }
    // The versions exist: as `version` labels of the service's workloads (when the mesh runs
    // them: a service without workloads, such as a cluster's, has replicas the mesh file does
    // not list), or as services.
    if let Some(services) = services {
        let find = |name: &str| {
            let key = ServiceKey::new(name, namespace.as_str());
            services.iter().find(|svc| svc.key() == key)
        };
        match &target {
            Some(Target::Subsets { service }) => match find(service) {
                None => err(
                    "spec.service",
                    format!("{service} is not a service of the mesh"),
                ),
                Some(svc) if svc.workloads.is_empty() => {}
                Some(svc) => {
                    let versions: Vec<&str> = svc
                        .workloads
                        .iter()
                        .filter_map(|w| w.labels.get("version").map(String::as_str))
                        .collect();
                    for (field, v) in [("spec.from", &s.from), ("spec.to", &s.to)] {
                        if !versions.contains(&v.as_str()) {
                            err(
                                field,
                                format!(
                                    "no workload of {service} has the label version: {v} (versions: {})",
                                    if versions.is_empty() { "none".to_string() } else { versions.join(", ") }
                                ),
                            );
                        }
                    }
                }
            },
            Some(_) => {
                for (field, v) in [("spec.from", &from), ("spec.to", &to)] {
                    if find(v).is_none() {
                        err(field, format!("{v} is not a service of the mesh"));
                    }
                }
            }
            None => {}
        }
    }
    let steps = s.steps.unwrap_or_else(|| DEFAULT_STEPS.to_vec());
    if steps.is_empty() {
        err("spec.steps", "at least one step (the last is 100)".into());
    } else if steps.windows(2).any(|w| w[0] >= w[1]) || steps[0] == 0 {
        err(
            "spec.steps",
            format!("{steps:?}: weights from 1 to 100, rising"),
        );
    } else if steps.last() != Some(&100) {
        err(
            "spec.steps",
            format!("{steps:?}: the last step is 100 (the new version gets everything)"),
        );
    }
    let interval = match s.interval.as_deref().map(duration) {
        None => DEFAULT_INTERVAL,
        Some(Ok(d)) if d >= MIN_INTERVAL => d,
        Some(Ok(d)) => {
            err(
                "spec.interval",
                format!("{d:?} is shorter than {MIN_INTERVAL:?}"),
            );
            DEFAULT_INTERVAL
        }
        Some(Err(e)) => {
            err("spec.interval", e);
            DEFAULT_INTERVAL
        }
    };
    let mut analysis = Analysis::default();
    if let Some(a) = s.analysis {
        if let Some(v) = a.max_error_rate {
            let text = match &v {
                serde_yaml_ng::Value::String(t) => t.clone(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            match parse_rate(&text) {
                Ok(r) => analysis.max_error_rate = r,
                Err(e) => err("spec.analysis.maxErrorRate", e),
            }
        }
        if let Some(t) = a.max_p99 {
            match istio_duration(&t) {
                Ok(ms) => analysis.max_p99 = ms.map(Duration::from_millis),
                Err(e) => err("spec.analysis.maxP99", e),
            }
        }
        if let Some(n) = a.min_requests {
            analysis.min_requests = n;
        }
        match a.failed_checks {
            Some(0) => err(
                "spec.analysis.failedChecks",
                "at least 1 (the failed analyses that roll the rollout back)".into(),
            ),
            Some(n) => analysis.failed_checks = n,
            None => {}
        }
    }
    let ab = match s.ab_test {
        None => None,
        Some(ab) => {
            if matches!(target, Some(Target::TrafficSplit { .. })) {
                err(
                    "spec.abTest",
                    "a TrafficSplit splits by weight only: an A/B phase needs a `service` or an HTTPRoute".into(),
                );
            }
            let header = parse_header(&ab.header)
                .map_err(|e| err("spec.abTest.header", e))
                .ok();
            let duration = duration(&ab.duration)
                .map_err(|e| err("spec.abTest.duration", e))
                .ok();
            header
                .zip(duration)
                .map(|((header, value), duration)| AbPhase {
                    header,
                    value,
                    duration,
                })
        }
    };
    let (mut pre_rollout, mut pre_promotion) = (None, None);
    if let Some(w) = s.webhooks {
        if let Some(u) = w.pre_rollout {
            pre_rollout = webhook(&u)
                .map_err(|e| err("spec.webhooks.preRollout", e))
                .ok();
        }
        if let Some(u) = w.pre_promotion {
            pre_promotion = webhook(&u)
                .map_err(|e| err("spec.webhooks.prePromotion", e))
                .ok();
        }
    }
    match target {
        Some(target) if errors.is_empty() => Ok(Canary {
            namespace,
            name: d.metadata.name,
            target,
            from,
            to,
            steps,
            interval,
            analysis,
            ab,
            pre_rollout,
            pre_promotion,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_headers_parse_as_written() {
        assert_eq!(parse_rate("1%"), Ok(0.01));
        assert_eq!(parse_rate("0.05"), Ok(0.05));
        assert!(parse_rate("150%").is_err());
        assert!(parse_rate("lots").is_err());
        assert_eq!(
            parse_header("X-Canary: true"),
            Ok(("x-canary".into(), "true".into()))
        );
        assert_eq!(
            parse_header("x-canary=yes"),
            Ok(("x-canary".into(), "yes".into()))
        );
        assert!(parse_header("x-canary").is_err());
        assert!(parse_header("bad header: 1").is_err());
    }
}
