//! Istio `networking.istio.io` VirtualService and DestinationRule documents: their serde shape,
//! the "not yet supported; ignored" notices for fields weft accepts but does not implement, and
//! their translation into [`model::ServiceRoutes`] once every document has been read.

use crate::k8s::Object;
use crate::loader::Doc;
use crate::marked::Node;
use crate::{policy, Diagnostic};
use model::{
    Authority, Destination, Fault, HeaderMatch, HttpRoute, Labels, PathMatch, QueryMatch,
    RetryPolicy, RouteMatch, ServiceKey, ServiceRoutes, ServiceSpec, StringMatch,
};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// The `apiVersion`s read; other versions of these kinds stay unsupported notices.
pub(crate) const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1alpha3",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1",
];

/// The kinds read.
pub(crate) const KINDS: [&str; 2] = ["VirtualService", "DestinationRule"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct VirtualService {
    #[serde(default)]
    pub hosts: Vec<String>,
    pub gateways: Option<Vec<String>>,
    #[serde(default)]
    pub http: Vec<HttpRule>,
    pub tls: Option<Value>,
    pub tcp: Option<Value>,
    pub export_to: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRule {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matches: Vec<MatchRequest>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    pub redirect: Option<Value>,
    pub direct_response: Option<Value>,
    pub delegate: Option<Value>,
    pub rewrite: Option<Value>,
    /// A protobuf Duration; `0s` disables.
    pub timeout: Option<String>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFault>,
    pub mirror: Option<Value>,
    pub mirrors: Option<Value>,
    pub mirror_percentage: Option<Value>,
    pub mirror_percent: Option<Value>,
    pub cors_policy: Option<Value>,
    pub headers: Option<Value>,
}

impl HttpRule {
    /// The accepted-but-ignored fields that are set.
    fn ignored(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("redirect", &self.redirect),
            ("directResponse", &self.direct_response),
            ("delegate", &self.delegate),
            ("rewrite", &self.rewrite),
            ("mirror", &self.mirror),
            ("mirrors", &self.mirrors),
            ("mirrorPercentage", &self.mirror_percentage),
            ("mirrorPercent", &self.mirror_percent),
            ("corsPolicy", &self.cors_policy),
            ("headers", &self.headers),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.is_some().then_some(name))
    }

    /// A rule that answers by itself (redirect, direct response) or hands over (delegate) needs
    /// no `route`; weft drops it for now.
    fn answers_itself(&self) -> bool {
        self.redirect.is_some() || self.direct_response.is_some() || self.delegate.is_some()
    }
}

/// Istio's HTTPFaultInjection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpFault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

/// Istio's HTTPFaultInjection.Delay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FaultDelay {
    pub fixed_delay: Option<String>,
    pub exponential_delay: Option<Value>,
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage; `percentage` wins when both are set.
    pub percent: Option<i64>,
}

/// Istio's HTTPFaultInjection.Abort.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FaultAbort {
    pub http_status: Option<i64>,
    pub grpc_status: Option<Value>,
    pub http2_error: Option<Value>,
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage; `percentage` wins when both are set.
    pub percent: Option<i64>,
}

/// Istio's Percent: a share of requests, 0 to 100.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// A fault's share of requests in millionths, from `percentage.value` or the legacy `percent`,
/// or (field suffix, message). Neither given: no request, as Istio translates it (the legacy
/// integer `percent` defaults to 0).
fn per_million(
    percentage: Option<&Percent>,
    percent: Option<i64>,
) -> Result<u32, (&'static str, String)> {
    match (percentage, percent) {
        (Some(p), _) => {
            if (0.0..=100.0).contains(&p.value) {
                // At most 1e6 after the range check, so the cast is exact.
                Ok((p.value * 10_000.0).round() as u32)
            } else {
                Err((
                    "percentage.value",
                    format!("percentage {} must be between 0 and 100", p.value),
                ))
            }
        }
        (None, Some(p)) => match u32::try_from(p) {
            Ok(p) if p <= 100 => Ok(p * 10_000),
            _ => Err(("percent", format!("percent {p} must be between 0 and 100"))),
        },
        (None, None) => Ok(0),
    }
}

impl HttpFault {
    /// The rule's faults, with error messages for (field suffix, message). A delay or abort of
    /// an unsupported kind only (`exponentialDelay`, `grpcStatus`, `http2Error`) is left out;
    /// `notices` reports it.
    fn fault(&self) -> (Option<Fault>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let mut fault = Fault::default();
        if let Some(delay) = &self.delay {
            match (&delay.fixed_delay, &delay.exponential_delay) {
                (Some(text), _) => match policy::istio_duration(text) {
                    Ok(ms) => fault.delay_ms = ms,
                    Err(message) => problems.push(("delay.fixedDelay".into(), message)),
                },
                (None, Some(_)) => {}
                (None, None) => problems.push(("delay".into(), "a delay needs fixedDelay".into())),
            }
            match per_million(delay.percentage.as_ref(), delay.percent) {
                Ok(share) if fault.delay_ms.is_some() => fault.delay_per_million = share,
                Ok(_) => {}
                Err((name, message)) => problems.push((format!("delay.{name}"), message)),
            }
        }
        if let Some(abort) = &self.abort {
            let unsupported_only = abort.grpc_status.is_some() || abort.http2_error.is_some();
            match abort.http_status {
                Some(code) => match u16::try_from(code) {
                    Ok(code) if (200..=599).contains(&code) => fault.abort_status = Some(code),
                    _ => problems.push((
                        "abort.httpStatus".into(),
                        format!("httpStatus {code} must be between 200 and 599"),
                    )),
                },
                None if unsupported_only => {}
                None => problems.push(("abort".into(), "an abort needs httpStatus".into())),
            }
            match per_million(abort.percentage.as_ref(), abort.percent) {
                Ok(share) if fault.abort_status.is_some() => fault.abort_per_million = share,
                Ok(_) => {}
                Err((name, message)) => problems.push((format!("abort.{name}"), message)),
            }
        }
        let any = fault.delay_ms.is_some() || fault.abort_status.is_some();
        (any.then_some(fault), problems)
    }
}

/// Istio's HTTPRetry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRetry {
    pub attempts: i64,
    pub per_try_timeout: Option<String>,
    /// Comma-separated Envoy retry-on names and status codes; absent: Istio's default.
    pub retry_on: Option<String>,
    pub retry_remote_localities: Option<Value>,
}

impl HttpRetry {
    /// The rule's retry policy, with error messages for (field suffix, message).
    fn policy(&self) -> (RetryPolicy, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let attempts = match u32::try_from(self.attempts) {
            Ok(a) => a,
            Err(_) => {
                problems.push((
                    "attempts",
                    format!("attempts {} must be 0 or more", self.attempts),
                ));
                0
            }
        };
        let per_try_timeout_ms = match self.per_try_timeout.as_deref().map(policy::istio_duration) {
            Some(Ok(ms)) => ms,
            Some(Err(message)) => {
                problems.push(("perTryTimeout", message));
                None
            }
            None => None,
        };
        let on = match &self.retry_on {
            Some(text) => {
                let list = policy::istio_retry_on(text);
                problems.extend(list.invalid.into_iter().map(|m| ("retryOn", m)));
                list.on
            }
            None => policy::istio_default_retry_on(),
        };
        let policy = RetryPolicy {
            attempts,
            per_try_timeout_ms,
            on,
        };
        (policy, problems)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MatchRequest {
    /// Only a label for logs.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub uri: Option<IstioStringMatch>,
    pub method: Option<IstioStringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, IstioStringMatch>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, IstioStringMatch>,
    #[serde(default)]
    pub query_params: BTreeMap<String, IstioStringMatch>,
    pub scheme: Option<Value>,
    pub authority: Option<Value>,
    pub port: Option<Value>,
    pub source_labels: Option<Value>,
    pub gateways: Option<Value>,
    pub ignore_uri_case: Option<Value>,
    pub source_namespace: Option<Value>,
    pub stat_prefix: Option<Value>,
}

impl MatchRequest {
    /// Conditions weft cannot test yet. Ignoring one would make the match wider than written,
    /// so these are errors rather than notices.
    fn unsupported(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("scheme", &self.scheme),
            ("authority", &self.authority),
            ("port", &self.port),
            ("sourceLabels", &self.source_labels),
            ("gateways", &self.gateways),
            ("ignoreUriCase", &self.ignore_uri_case),
            ("sourceNamespace", &self.source_namespace),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.is_some().then_some(name))
    }
}

/// Istio's StringMatch: one of `exact`, `prefix`, `regex`; `{}` tests presence (headers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IstioStringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteDestination {
    pub destination: IstioDestination,
    pub weight: Option<i64>,
    pub headers: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IstioDestination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortSelector {
    pub number: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct DestinationRule {
    pub host: String,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    pub traffic_policy: Option<Value>,
    pub export_to: Option<Value>,
    pub workload_selector: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub traffic_policy: Option<Value>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    VirtualService(Object<VirtualService>),
    DestinationRule(Object<DestinationRule>),
}

/// A parsed Istio document, kept (with its marked tree) until every file has been read.
#[derive(Debug)]
pub(crate) struct Pending {
    pub file: PathBuf,
    pub first_line: usize,
    pub tree: Node,
    pub kind: Kind,
}

impl Pending {
    fn doc(&self) -> Doc<'_> {
        Doc {
            file: &self.file,
            first_line: self.first_line,
            tree: &self.tree,
        }
    }

    fn label(&self) -> String {
        let (kind, metadata) = match &self.kind {
            Kind::VirtualService(o) => ("VirtualService", &o.metadata),
            Kind::DestinationRule(o) => ("DestinationRule", &o.metadata),
        };
        format!("{kind} {}/{}", metadata.namespace(), metadata.name)
    }

    /// Notices for the fields weft accepts and ignores, in document order.
    pub fn notices(&self) -> Vec<Diagnostic> {
        let (doc, label) = (self.doc(), self.label());
        let mut fields = Vec::new();
        match &self.kind {
            Kind::DestinationRule(o) => {
                let spec = &o.spec;
                if spec.traffic_policy.is_some() {
                    fields.push("spec.trafficPolicy".to_string());
                }
                for (i, subset) in spec.subsets.iter().enumerate() {
                    if subset.traffic_policy.is_some() {
                        fields.push(format!("spec.subsets[{i}].trafficPolicy"));
                    }
                }
                if spec.export_to.is_some() {
                    fields.push("spec.exportTo".to_string());
                }
                if spec.workload_selector.is_some() {
                    fields.push("spec.workloadSelector".to_string());
                }
            }
            Kind::VirtualService(o) => {
                let spec = &o.spec;
                for (i, rule) in spec.http.iter().enumerate() {
                    fields.extend(rule.ignored().map(|f| format!("spec.http[{i}].{f}")));
                    if let Some(fault) = &rule.fault {
                        let delay = fault.delay.as_ref();
                        let abort = fault.abort.as_ref();
                        for (name, set) in [
                            (
                                "delay.exponentialDelay",
                                delay.is_some_and(|d| d.exponential_delay.is_some()),
                            ),
                            (
                                "abort.grpcStatus",
                                abort.is_some_and(|a| a.grpc_status.is_some()),
                            ),
                            (
                                "abort.http2Error",
                                abort.is_some_and(|a| a.http2_error.is_some()),
                            ),
                        ] {
                            if set {
                                fields.push(format!("spec.http[{i}].fault.{name}"));
                            }
                        }
                    }
                    if let Some(retries) = &rule.retries {
                        if retries.retry_remote_localities.is_some() {
                            fields.push(format!("spec.http[{i}].retries.retryRemoteLocalities"));
                        }
                    }
                    for (j, m) in rule.matches.iter().enumerate() {
                        if m.stat_prefix.is_some() {
                            fields.push(format!("spec.http[{i}].match[{j}].statPrefix"));
                        }
                    }
                    for (j, route) in rule.route.iter().enumerate() {
                        if route.headers.is_some() {
                            fields.push(format!("spec.http[{i}].route[{j}].headers"));
                        }
                    }
                }
                for (name, value) in [
                    ("tls", &spec.tls),
                    ("tcp", &spec.tcp),
                    ("exportTo", &spec.export_to),
                ] {
                    if value.is_some() {
                        fields.push(format!("spec.{name}"));
                    }
                }
            }
        }
        let mut notices: Vec<Diagnostic> = fields
            .iter()
            .map(|field| {
                let short = field.rsplit('.').next().unwrap_or(field);
                doc.error(
                    field,
                    format!("{label}: {short} is not yet supported; ignored"),
                )
            })
            .collect();
        if let Kind::VirtualService(o) = &self.kind {
            for (i, rule) in o.spec.http.iter().enumerate() {
                let Some(text) = rule.retries.as_ref().and_then(|r| r.retry_on.as_ref()) else {
                    continue;
                };
                for value in policy::istio_retry_on(text).unsupported {
                    notices.push(doc.error(
                        &format!("spec.http[{i}].retries.retryOn"),
                        format!("{label}: retryOn {value} is not yet supported; ignored"),
                    ));
                }
            }
            if !applies_to_sidecars(&o.spec) {
                notices.push(doc.error(
                    "spec.gateways",
                    format!(
                        "{label}: applies only to gateways, not to sidecars (add `mesh`); ignored"
                    ),
                ));
            }
        }
        notices.sort_by_key(|d| (d.line, d.column));
        notices
    }
}

/// `gateways` absent, empty, or naming `mesh`.
fn applies_to_sidecars(spec: &VirtualService) -> bool {
    spec.gateways
        .as_ref()
        .is_none_or(|g| g.is_empty() || g.iter().any(|g| g == "mesh"))
}

/// What resolution checks against: the mesh's services, if there is a mesh.
struct Services<'a> {
    known: Option<HashMap<ServiceKey, &'a ServiceSpec>>,
}

impl Services<'_> {
    /// The service `host` names (in `namespace` when short), or an error message. Without a
    /// mesh a host is only resolved by form (`None`: cannot tell, skip).
    fn resolve(&self, host: &str, namespace: &str) -> Result<Option<ServiceKey>, String> {
        let key = Authority::parse(host).service_key(namespace);
        match (&self.known, key) {
            (None, key) => Ok(key),
            (Some(known), Some(key)) if known.contains_key(&key) => Ok(Some(key)),
            (Some(_), _) => Err(format!("host `{host}` is not a service of the mesh")),
        }
    }
}

/// Turns every pending document into routes, with the VirtualService (`VirtualService NS/NAME`)
/// that routes each service; `services` is `None` when there is no Mesh document, and then hosts
/// and subsets are not checked (and no routes can be produced).
pub(crate) fn resolve(
    services: Option<&[ServiceSpec]>,
    pending: &[Pending],
    errors: &mut Vec<Diagnostic>,
) -> (Vec<ServiceRoutes>, HashMap<ServiceKey, String>) {
    let services = Services {
        known: services.map(|s| s.iter().map(|s| (s.key(), s)).collect()),
    };

    // Subsets per service, from every DestinationRule wherever it appears.
    let mut subsets: HashMap<ServiceKey, (BTreeMap<String, Labels>, String)> = HashMap::new();
    for p in pending {
        let Kind::DestinationRule(dr) = &p.kind else {
            continue;
        };
        let doc = p.doc();
        let key = match services.resolve(&dr.spec.host, dr.metadata.namespace()) {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(message) => {
                errors.push(doc.error("spec.host", message));
                continue;
            }
        };
        if let Some((_, at)) = subsets.get(&key) {
            errors.push(doc.error(
                "spec.host",
                format!("one DestinationRule per host: {key} already has one at {at}"),
            ));
            continue;
        }
        let mut named = BTreeMap::new();
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
        }
        subsets.insert(key, (named, doc.place("spec.host")));
    }

    let mut routes = Vec::new();
    let mut vs_at: HashMap<ServiceKey, String> = HashMap::new();
    let mut owners: HashMap<ServiceKey, String> = HashMap::new();
    for p in pending {
        let Kind::VirtualService(vs) = &p.kind else {
            continue;
        };
        if !applies_to_sidecars(&vs.spec) {
            continue;
        }
        let doc = p.doc();
        let namespace = vs.metadata.namespace();
        let label = p.label();
        let mut rules = Vec::new();
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let field = format!("spec.http[{i}]");
            let matches = rule
                .matches
                .iter()
                .enumerate()
                .filter_map(|(j, m)| {
                    translate_match(&doc, &format!("{field}.match[{j}]"), m, errors)
                })
                .collect();
            let destinations =
                destinations(&doc, &field, rule, namespace, &services, &subsets, errors);
            let (timeout_ms, retry) = timeout_and_retry(&doc, &field, rule, errors);
            let fault = rule.fault.as_ref().and_then(|f| {
                let (fault, problems) = f.fault();
                for (name, message) in problems {
                    errors.push(doc.error(&format!("{field}.fault.{name}"), message));
                }
                fault
            });
            if rule.route.is_empty() && rule.answers_itself() {
                continue;
            }
            rules.push(HttpRoute {
                name: rule
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{label} http[{i}]")),
                matches,
                destinations,
                timeout_ms,
                retry,
                fault,
                ..Default::default()
            });
        }
        if vs.spec.hosts.is_empty() {
            errors.push(doc.error("spec.hosts", "needs at least one host"));
        }
        for (k, host) in vs.spec.hosts.iter().enumerate() {
            let field = format!("spec.hosts[{k}]");
            let key = match services.resolve(host, namespace) {
                Ok(Some(key)) => key,
                Ok(None) => continue,
                Err(message) => {
                    errors.push(doc.error(&field, message));
                    continue;
                }
            };
            if let Some(at) = vs_at.get(&key) {
                errors.push(doc.error(
                    &field,
                    format!("one VirtualService per host: {key} already has one at {at}"),
                ));
                continue;
            }
            vs_at.insert(key.clone(), doc.place(&field));
            owners.insert(key.clone(), label.clone());
            routes.push(ServiceRoutes {
                service: key,
                routes: rules.clone(),
            });
        }
    }
    (routes, owners)
}

/// A rule's `timeout` (`0s`: none) and `retries` (`attempts: 0`: retries disabled).
fn timeout_and_retry(
    doc: &Doc,
    field: &str,
    rule: &HttpRule,
    errors: &mut Vec<Diagnostic>,
) -> (Option<u64>, Option<RetryPolicy>) {
    let timeout_ms = match rule.timeout.as_deref().map(policy::istio_duration) {
        Some(Ok(ms)) => ms,
        Some(Err(message)) => {
            errors.push(doc.error(&format!("{field}.timeout"), message));
            None
        }
        None => None,
    };
    let retry = rule.retries.as_ref().map(|r| {
        let (policy, problems) = r.policy();
        for (name, message) in problems {
            errors.push(doc.error(&format!("{field}.retries.{name}"), message));
        }
        policy
    });
    (timeout_ms, retry)
}

/// A rule's `route[]` as weighted destinations.
fn destinations(
    doc: &Doc,
    field: &str,
    rule: &HttpRule,
    namespace: &str,
    services: &Services,
    subsets: &HashMap<ServiceKey, (BTreeMap<String, Labels>, String)>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Destination> {
    if rule.route.is_empty() {
        if !rule.answers_itself() {
            errors.push(doc.error(&format!("{field}.route"), "needs at least one destination"));
        }
        return Vec::new();
    }
    let several = rule.route.len() > 1;
    if several && rule.route.iter().all(|r| r.weight.is_none()) {
        errors.push(doc.error(
            &format!("{field}.route"),
            "several destinations need weights",
        ));
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (j, r) in rule.route.iter().enumerate() {
        let field = format!("{field}.route[{j}]");
        let weight = match r.weight {
            None if several => 0,
            None => 100,
            Some(w @ 0..=100) => w as u32,
            Some(w) => {
                errors.push(doc.error(
                    &format!("{field}.weight"),
                    format!("weight {w} must be between 0 and 100"),
                ));
                ok = false;
                0
            }
        };
        let d = &r.destination;
        let key = match services.resolve(&d.host, namespace) {
            Ok(key) => key,
            Err(message) => {
                errors.push(doc.error(&format!("{field}.destination.host"), message));
                ok = false;
                None
            }
        };
        if let Some(port) = &d.port {
            let service_port = key
                .as_ref()
                .and_then(|k| services.known.as_ref()?.get(k))
                .map(|s| s.port);
            match service_port {
                _ if port.number == 0 || port.number > 65535 => {
                    errors.push(doc.error(
                        &format!("{field}.destination.port.number"),
                        "port must be between 1 and 65535",
                    ));
                }
                Some(p) if u32::from(p) != port.number => errors.push(doc.error(
                    &format!("{field}.destination.port.number"),
                    format!(
                        "service {} listens on port {p}, not {}",
                        key.as_ref().map(ToString::to_string).unwrap_or_default(),
                        port.number
                    ),
                )),
                _ => {}
            }
        }
        let mut labels = Labels::new();
        if let (Some(subset), Some(key)) = (&d.subset, &key) {
            match subsets.get(key).and_then(|(named, _)| named.get(subset)) {
                Some(l) => labels = l.clone(),
                None if services.known.is_some() => errors.push(doc.error(
                    &format!("{field}.destination.subset"),
                    format!("unknown subset {subset} of {key}"),
                )),
                None => {}
            }
        }
        if let Some(key) = key {
            out.push(Destination {
                subset: d.subset.clone(),
                labels,
                ..Destination::service(key, weight)
            });
        }
    }
    if ok
        && several
        && out.iter().all(|d| d.weight == 0)
        && rule.route.iter().any(|r| r.weight.is_some())
    {
        errors.push(doc.error(&format!("{field}.route"), "all weights are 0"));
    } else if ok && !several && rule.route[0].weight == Some(0) {
        errors.push(doc.error(&format!("{field}.route[0].weight"), "all weights are 0"));
    }
    out
}

/// One `match[]` block, or `None` (with errors) if it cannot be honoured.
fn translate_match(
    doc: &Doc,
    field: &str,
    m: &MatchRequest,
    errors: &mut Vec<Diagnostic>,
) -> Option<RouteMatch> {
    let before = errors.len();
    for name in m.unsupported() {
        errors.push(doc.error(
            &format!("{field}.{name}"),
            "matching on this is not yet supported",
        ));
    }
    let mut out = RouteMatch::default();
    if let Some(uri) = &m.uri {
        let f = format!("{field}.uri");
        out.path = match string_match(doc, &f, uri, false, errors) {
            Some(StringMatch::Exact(s)) => Some(PathMatch::Exact(s)),
            Some(StringMatch::Prefix(s)) => Some(PathMatch::Prefix(s)),
            Some(StringMatch::Regex(s)) => Some(PathMatch::Regex(s)),
            _ => None,
        };
    }
    if let Some(method) = &m.method {
        let f = format!("{field}.method");
        match method {
            IstioStringMatch {
                exact: Some(exact),
                prefix: None,
                regex: None,
            } => out.method = Some(exact.clone()),
            _ => errors.push(doc.error(&f, "only exact is supported for method")),
        }
    }
    for (headers, invert, key) in [
        (&m.headers, false, "headers"),
        (&m.without_headers, true, "withoutHeaders"),
    ] {
        for (name, value) in headers {
            let f = format!("{field}.{key}.{name}");
            if let Some(value) = string_match(doc, &f, value, true, errors) {
                out.headers.push(HeaderMatch {
                    name: name.to_ascii_lowercase(),
                    value,
                    invert,
                });
            }
        }
    }
    for (name, value) in &m.query_params {
        let f = format!("{field}.queryParams.{name}");
        if value.prefix.is_some() {
            errors.push(doc.error(
                &format!("{f}.prefix"),
                "Istio does not support prefix for queryParams; use exact or regex",
            ));
            continue;
        }
        if let Some(value) = string_match(doc, &f, value, true, errors) {
            out.query.push(QueryMatch {
                name: name.clone(),
                value,
            });
        }
    }
    (errors.len() == before).then_some(out)
}

/// An Istio StringMatch as the model's; `{}` is a presence test where `empty_is_present`.
fn string_match(
    doc: &Doc,
    field: &str,
    m: &IstioStringMatch,
    empty_is_present: bool,
    errors: &mut Vec<Diagnostic>,
) -> Option<StringMatch> {
    match (&m.exact, &m.prefix, &m.regex) {
        (None, None, None) if empty_is_present => Some(StringMatch::Present),
        (None, None, None) => {
            errors.push(doc.error(field, "needs one of exact, prefix, regex"));
            None
        }
        (Some(s), None, None) => Some(StringMatch::Exact(s.clone())),
        (None, Some(s), None) => Some(StringMatch::Prefix(s.clone())),
        (None, None, Some(s)) => match regex::Regex::new(s) {
            Ok(_) => Some(StringMatch::Regex(s.clone())),
            Err(e) => {
                errors.push(doc.error(
                    &format!("{field}.regex"),
                    format!("invalid regex: {}", one_line(&e.to_string())),
                ));
                None
            }
        },
        _ => {
            errors.push(doc.error(field, "set only one of exact, prefix, regex"));
            None
        }
    }
}

/// The regex crate's multi-line error text on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
