//! Istio `networking.istio.io` VirtualService, DestinationRule and Gateway documents: their serde
//! shape, the "not yet supported; ignored" notices for fields weft accepts but does not
//! implement, and their translation once every document has been read: VirtualServices into
//! [`model::ServiceRoutes`] (bound to `mesh`) and ingress routes (bound to a gateway),
//! DestinationRules into subsets and [`model::ServicePolicy`]s.
//!
//! A resource that cannot be honoured is rejected whole (its errors go to `rejected`) and the
//! others apply. Two DestinationRules for one host, or two VirtualServices bound to `mesh` for
//! one host: the first loaded applies and the later one is rejected. VirtualServices bound to
//! gateways may share a host: their rules are tried in load order, as Istio merges them.
//!
//! Layout: `filters` (rewrite, redirect, direct response, mirrors, CORS, header edits),
//! `traffic_policy` (a DestinationRule's `trafficPolicy`).

mod filters;
mod traffic_policy;

#[cfg(test)]
mod tests;

use crate::diagnostic::reject;
use crate::doc::{Doc, Parsed};
use crate::ingress::{intersect, HostRoutes};
use crate::k8s::{Metadata, Object};
use crate::services::Services;
use crate::{pattern, policy, Diagnostic};
use model::{
    Destination, Fault, HeaderMatch, HttpRoute, Labels, Mirror, PathMatch, PathRewrite, QueryMatch,
    RetryPolicy, Rewrite, RouteMatch, ServiceKey, ServicePolicy, ServiceRoutes, ServiceSpec,
    StringMatch, SubsetPolicy,
};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};

/// The `apiVersion`s read; other versions of these kinds stay unsupported notices.
const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1alpha3",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1",
];

/// Parses a document of a kind this module reads; `None` for any other kind or version.
pub(crate) fn parse(
    api_version: &str,
    kind: &str,
    text: &str,
) -> Option<serde_yaml_ng::Result<Kind>> {
    if !API_VERSIONS.contains(&api_version) {
        return None;
    }
    Some(match kind {
        "VirtualService" => {
            serde_yaml_ng::from_str(text).map(|o| Kind::VirtualService(Box::new(o)))
        }
        "DestinationRule" => {
            serde_yaml_ng::from_str(text).map(|o| Kind::DestinationRule(Box::new(o)))
        }
        "Gateway" => serde_yaml_ng::from_str(text).map(|o| Kind::Gateway(Box::new(o))),
        _ => return None,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct VirtualService {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `mesh` (all sidecars) and gateway names (`NAME` in the VirtualService's namespace, or
    /// `NAMESPACE/NAME`); absent or empty: `mesh`.
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
    pub redirect: Option<filters::HttpRedirect>,
    pub direct_response: Option<filters::HttpDirectResponse>,
    pub delegate: Option<Value>,
    pub rewrite: Option<filters::HttpRewrite>,
    /// A protobuf Duration; `0s` disables.
    pub timeout: Option<String>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFault>,
    pub mirror: Option<IstioDestination>,
    pub mirrors: Option<Vec<filters::MirrorPolicy>>,
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer share of `mirror`; `mirrorPercentage` wins when both are set.
    pub mirror_percent: Option<i64>,
    pub cors_policy: Option<filters::CorsPolicy>,
    pub headers: Option<filters::Headers>,
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
    pub scheme: Option<IstioStringMatch>,
    pub authority: Option<IstioStringMatch>,
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    pub gateways: Option<Value>,
    pub ignore_uri_case: Option<Value>,
    pub source_namespace: Option<String>,
    pub stat_prefix: Option<Value>,
}

impl MatchRequest {
    /// Conditions weft cannot test yet. Ignoring one would make the match wider than written,
    /// so these are errors rather than notices.
    fn unsupported(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("gateways", &self.gateways),
            ("ignoreUriCase", &self.ignore_uri_case),
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
    /// Header edits for requests sent to (and responses from) this destination only.
    pub headers: Option<filters::Headers>,
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
    pub traffic_policy: Option<traffic_policy::TrafficPolicySpec>,
    pub export_to: Option<Value>,
    pub workload_selector: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub traffic_policy: Option<traffic_policy::TrafficPolicySpec>,
}

/// An Istio Gateway: which hosts the ingress serves, per server. weft runs one ingress, so the
/// `selector` (which gateway workloads run it) and the ports are not used to pick another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewaySpec {
    #[allow(dead_code)]
    pub selector: Option<Labels>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Server {
    pub port: ServerPort,
    pub bind: Option<Value>,
    /// `HOST`, or `NAMESPACE/HOST`: only VirtualServices of that namespace (`.`: the
    /// Gateway's own; `*`: any; `~`: none) may bind the host.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub tls: Option<Value>,
    pub default_endpoint: Option<Value>,
    #[allow(dead_code)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ServerPort {
    /// Accepted; weft's ingress listens where the Mesh's `spec.ingress` says.
    #[allow(dead_code)]
    pub number: u32,
    pub protocol: String,
    #[allow(dead_code)]
    pub name: Option<String>,
    pub target_port: Option<Value>,
}

impl Server {
    /// Whether the server carries plain HTTP, which weft's ingress routes.
    fn is_http(&self) -> bool {
        matches!(
            self.port.protocol.to_ascii_uppercase().as_str(),
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
        )
    }
}

#[derive(Debug)]
pub(crate) enum Kind {
    // Boxed: the three differ in size by hundreds of bytes.
    VirtualService(Box<Object<VirtualService>>),
    DestinationRule(Box<Object<DestinationRule>>),
    Gateway(Box<Object<GatewaySpec>>),
}

/// A parsed document of this dialect, kept until every file has been read.
pub(crate) type Pending = Parsed<Kind>;

impl Pending {
    fn metadata(&self) -> &Metadata {
        match &self.kind {
            Kind::VirtualService(o) => &o.metadata,
            Kind::DestinationRule(o) => &o.metadata,
            Kind::Gateway(o) => &o.metadata,
        }
    }

    fn label(&self) -> String {
        let kind = match &self.kind {
            Kind::VirtualService(_) => "VirtualService",
            Kind::DestinationRule(_) => "DestinationRule",
            Kind::Gateway(_) => "Gateway",
        };
        let m = self.metadata();
        format!("{kind} {}/{}", m.namespace(), m.name)
    }

    /// Notices for the fields weft accepts and ignores, in document order.
    pub fn notices(&self) -> Vec<Diagnostic> {
        let (doc, label) = (self.doc(), self.label());
        // (field, what is said of it).
        let mut fields: Vec<(String, String)> = Vec::new();
        let not_yet = || "is not yet supported; ignored".to_string();
        match &self.kind {
            Kind::DestinationRule(o) => {
                let spec = &o.spec;
                let mut ignored = Vec::new();
                if let Some(tp) = &spec.traffic_policy {
                    traffic_policy::ignored(tp, "spec.trafficPolicy", &mut ignored);
                }
                for (i, subset) in spec.subsets.iter().enumerate() {
                    if let Some(tp) = &subset.traffic_policy {
                        let field = format!("spec.subsets[{i}].trafficPolicy");
                        traffic_policy::ignored(tp, &field, &mut ignored);
                    }
                }
                fields.extend(ignored.into_iter().map(|(f, what)| (f, what.to_string())));
                if spec.export_to.is_some() {
                    fields.push(("spec.exportTo".to_string(), not_yet()));
                }
                if spec.workload_selector.is_some() {
                    fields.push(("spec.workloadSelector".to_string(), not_yet()));
                }
            }
            Kind::Gateway(o) => {
                for (i, server) in o.spec.servers.iter().enumerate() {
                    let field = format!("spec.servers[{i}]");
                    if !server.is_http() {
                        fields.push((
                            format!("{field}.port.protocol"),
                            format!(
                                "{} is not yet supported (weft's ingress serves plain HTTP); \
                                 this server is ignored",
                                server.port.protocol
                            ),
                        ));
                        continue;
                    }
                    for (name, set) in [
                        ("tls", server.tls.is_some()),
                        ("bind", server.bind.is_some()),
                        ("defaultEndpoint", server.default_endpoint.is_some()),
                        ("port.targetPort", server.port.target_port.is_some()),
                    ] {
                        if set {
                            fields.push((format!("{field}.{name}"), not_yet()));
                        }
                    }
                }
            }
            Kind::VirtualService(o) => {
                let spec = &o.spec;
                for (i, rule) in spec.http.iter().enumerate() {
                    let field = format!("spec.http[{i}]");
                    if rule.delegate.is_some() {
                        fields.push((format!("{field}.delegate"), not_yet()));
                    }
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
                                fields.push((format!("{field}.fault.{name}"), not_yet()));
                            }
                        }
                    }
                    if let Some(retries) = &rule.retries {
                        if retries.retry_remote_localities.is_some() {
                            fields.push((
                                format!("{field}.retries.retryRemoteLocalities"),
                                not_yet(),
                            ));
                        }
                    }
                    for (j, m) in rule.matches.iter().enumerate() {
                        if m.stat_prefix.is_some() {
                            fields.push((format!("{field}.match[{j}].statPrefix"), not_yet()));
                        }
                    }
                    if let Some(cors) = &rule.cors_policy {
                        if cors.unmatched_preflights.is_some() {
                            fields.push((
                                format!("{field}.corsPolicy.unmatchedPreflights"),
                                not_yet(),
                            ));
                        }
                    }
                    if let Some(r) = &rule.redirect {
                        let scheme = r.scheme.is_some();
                        if r.derive_port.as_deref() == Some("FROM_PROTOCOL_DEFAULT") && !scheme {
                            fields.push((
                                format!("{field}.redirect.derivePort"),
                                "FROM_PROTOCOL_DEFAULT without a scheme is not yet supported; \
                                 the request's port is kept"
                                    .to_string(),
                            ));
                        }
                    }
                }
                for (name, value) in [
                    ("tls", &spec.tls),
                    ("tcp", &spec.tcp),
                    ("exportTo", &spec.export_to),
                ] {
                    if value.is_some() {
                        fields.push((format!("spec.{name}"), not_yet()));
                    }
                }
            }
        }
        let mut notices: Vec<Diagnostic> = fields
            .iter()
            .map(|(field, what)| {
                let short = field.rsplit('.').next().unwrap_or(field);
                doc.error(field, format!("{label}: {short} {what}"))
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
        }
        notices.sort_by_key(|d| (d.line, d.column));
        notices
    }
}

/// Whether the VirtualService applies to sidecars (`gateways` absent, empty, or naming
/// `mesh`), and the gateways (`NAMESPACE`, `NAME`) it names otherwise, with their index.
fn bindings(spec: &VirtualService, namespace: &str) -> (bool, Vec<(usize, GatewayKey)>) {
    let names = spec.gateways.as_deref().unwrap_or_default();
    let mesh = names.is_empty() || names.iter().any(|g| g == "mesh");
    let gateways = names
        .iter()
        .enumerate()
        .filter(|(_, g)| *g != "mesh")
        .map(|(i, g)| {
            let key = match g.split_once('/') {
                Some((ns, name)) => (ns.to_string(), name.to_string()),
                None => (namespace.to_string(), g.clone()),
            };
            (i, key)
        })
        .collect();
    (mesh, gateways)
}

/// A Gateway's (namespace, name).
type GatewayKey = (String, String);

/// Which VirtualServices may bind a host of an Istio Gateway server.
#[derive(Debug)]
enum Namespaces {
    Any,
    Only(String),
    None,
}

/// A Gateway's HTTP hosts, and where it is defined.
type GatewayHosts = (Vec<(Namespaces, String)>, String);

/// Subsets per service, from the DestinationRule that defines them, and where it is.
type Subsets = HashMap<ServiceKey, (BTreeMap<String, Labels>, String)>;

/// What the Istio documents translate into.
#[derive(Default)]
pub(crate) struct Resolved {
    pub routes: Vec<ServiceRoutes>,
    /// The VirtualService (`VirtualService NS/NAME`) that routes each service.
    pub owners: HashMap<ServiceKey, String>,
    pub policies: Vec<ServicePolicy>,
    /// Routes bound to gateways, per ingress host.
    pub ingress: Vec<HostRoutes>,
}

/// Turns every pending document into routes, policies and ingress routes; `services` is `None`
/// when there is no Mesh document, and then hosts and subsets are not checked (and nothing can
/// be produced). A resource with errors is rejected (its errors go to `rejected`) and the
/// others still apply; `warnings` gets what applies but may surprise.
pub(crate) fn resolve(
    services: Option<&[ServiceSpec]>,
    pending: &[Pending],
    rejected: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Resolved {
    let services = Services::new(services);
    let mut out = Resolved::default();
    let subsets = destination_rules(&services, pending, &mut out.policies, rejected);
    let gateways = gateways(pending, rejected);

    let mut vs_at: HashMap<ServiceKey, String> = HashMap::new();
    for p in pending {
        let Kind::VirtualService(vs) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = vs.metadata.namespace();
        let mut errors = Vec::new();
        let (mesh, bound) = bindings(&vs.spec, namespace);
        let mut rules = Vec::new();
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let rule = translate_rule(
                &doc,
                i,
                rule,
                &label,
                namespace,
                &services,
                &subsets,
                &mut errors,
            );
            rules.extend(rule);
        }
        if vs.spec.hosts.is_empty() {
            errors.push(doc.error("spec.hosts", "needs at least one host"));
        }

        // Bound to `mesh`: each host must be a service, unless the VirtualService is bound to
        // gateways too (whose hosts are names clients use at the ingress, not services).
        let mut keys: Vec<(ServiceKey, String)> = Vec::new();
        for (k, host) in vs.spec.hosts.iter().enumerate().filter(|_| mesh) {
            let field = format!("spec.hosts[{k}]");
            match services.host(host, namespace) {
                Ok(Some(key)) => match vs_at.get(&key) {
                    Some(at) => errors.push(doc.error(
                        &field,
                        format!("one VirtualService per host: {key} already has one at {at}"),
                    )),
                    None if keys.iter().any(|(k, _)| *k == key) => {}
                    None => keys.push((key, doc.place(&field))),
                },
                Ok(None) => {}
                Err(_) if !bound.is_empty() => {}
                Err(message) => errors.push(doc.error(&field, message)),
            }
        }

        // Bound to gateways: the hosts each gateway serves too.
        let mut hosts: Vec<(String, Diagnostic)> = Vec::new();
        let mut notes = Vec::new();
        for (g, (gns, gname)) in &bound {
            let at = doc.error(&format!("spec.gateways[{g}]"), "");
            let mut add = |host: String| {
                if !hosts.iter().any(|(h, _)| *h == host) {
                    hosts.push((host, at.clone()));
                }
            };
            match gateways.get(&(gns.clone(), gname.clone())) {
                None => {
                    notes.push(at.with_message(format!(
                        "{label}: Gateway {gns}/{gname} is not declared; its hosts are bound to \
                         weft's ingress as they are"
                    )));
                    vs.spec
                        .hosts
                        .iter()
                        .for_each(|h| add(h.to_ascii_lowercase()));
                }
                Some((servers, _)) => {
                    let mut served = false;
                    for host in &vs.spec.hosts {
                        for (allowed, server_host) in servers {
                            let allows = match allowed {
                                Namespaces::Any => true,
                                Namespaces::Only(ns) => ns == namespace,
                                Namespaces::None => false,
                            };
                            if let Some(h) = intersect(host, server_host).filter(|_| allows) {
                                served = true;
                                add(h);
                            }
                        }
                    }
                    if !served {
                        notes.push(at.with_message(format!(
                            "{label}: none of its hosts is served by Gateway {gns}/{gname} (for \
                             namespace {namespace}); nothing is routed through it"
                        )));
                    }
                }
            }
        }

        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        warnings.extend(notes);
        for (key, at) in keys {
            vs_at.insert(key.clone(), at);
            out.owners.insert(key.clone(), label.clone());
            out.routes.push(ServiceRoutes {
                service: key,
                routes: rules.clone(),
            });
        }
        for (host, at) in hosts {
            match out.ingress.iter_mut().find(|h| h.host == host) {
                Some(h) => {
                    h.sources.push((label.clone(), at));
                    h.routes.extend(rules.iter().cloned());
                }
                None => out.ingress.push(HostRoutes {
                    host,
                    sources: vec![(label.clone(), at)],
                    routes: rules.clone(),
                }),
            }
        }
    }
    out
}

/// Every DestinationRule's subsets, and its policy added to `policies`; a rejected one
/// contributes nothing.
fn destination_rules(
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

/// Every Istio Gateway's HTTP hosts, by (namespace, name).
fn gateways(
    pending: &[Pending],
    rejected: &mut Vec<Diagnostic>,
) -> HashMap<GatewayKey, GatewayHosts> {
    let mut out: HashMap<GatewayKey, GatewayHosts> = HashMap::new();
    for p in pending {
        let Kind::Gateway(gw) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = gw.metadata.namespace();
        let mut errors = Vec::new();
        let key = (namespace.to_string(), gw.metadata.name.clone());
        if let Some((_, at)) = out.get(&key) {
            errors.push(doc.error(
                "metadata.name",
                format!("Gateway {}/{} is already defined at {at}", key.0, key.1),
            ));
        }
        let mut hosts = Vec::new();
        for (i, server) in gw.spec.servers.iter().enumerate() {
            if server.hosts.is_empty() {
                errors.push(doc.error(
                    &format!("spec.servers[{i}].hosts"),
                    "needs at least one host",
                ));
            }
            if !server.is_http() {
                continue;
            }
            for (k, h) in server.hosts.iter().enumerate() {
                let (allowed, host) = match h.split_once('/') {
                    None | Some(("*", _)) => (Namespaces::Any, h.rsplit('/').next().unwrap_or(h)),
                    Some((".", host)) => (Namespaces::Only(namespace.to_string()), host),
                    Some(("~", host)) => (Namespaces::None, host),
                    Some((ns, host)) => (Namespaces::Only(ns.to_string()), host),
                };
                if host.is_empty() || host.contains('/') {
                    errors.push(doc.error(
                        &format!("spec.servers[{i}].hosts[{k}]"),
                        format!("`{h}` is not a host or NAMESPACE/HOST"),
                    ));
                    continue;
                }
                hosts.push((allowed, host.to_ascii_lowercase()));
            }
        }
        if gw.spec.servers.is_empty() {
            errors.push(doc.error("spec.servers", "needs at least one server"));
        }
        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        out.insert(key, (hosts, doc.place("metadata.name")));
    }
    out
}

/// One `http[]` rule as routes: one, or several when `rewrite.uri` follows matches of different
/// kinds (after a prefix match it replaces the prefix, after any other the whole path), so that
/// each route's rewrite says what its matches mean. Errors go to `errors`.
#[allow(clippy::too_many_arguments)]
fn translate_rule(
    doc: &Doc,
    i: usize,
    rule: &HttpRule,
    label: &str,
    namespace: &str,
    services: &Services,
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Vec<HttpRoute> {
    let field = format!("spec.http[{i}]");
    let matches: Vec<RouteMatch> = rule
        .matches
        .iter()
        .enumerate()
        .filter_map(|(j, m)| translate_match(doc, &format!("{field}.match[{j}]"), m, errors))
        .collect();
    let forwards = !rule.route.is_empty();
    let conflicts = [
        (
            rule.redirect.is_some() && forwards,
            "redirect",
            "route and redirect",
        ),
        (
            rule.redirect.is_some() && rule.rewrite.is_some(),
            "rewrite",
            "rewrite and redirect",
        ),
        (
            rule.redirect.is_some() && rule.fault.is_some(),
            "fault",
            "fault and redirect",
        ),
        (
            rule.direct_response.is_some() && forwards,
            "directResponse",
            "route and directResponse",
        ),
        (
            rule.direct_response.is_some() && rule.redirect.is_some(),
            "directResponse",
            "redirect and directResponse",
        ),
        (
            rule.mirror.is_some() && rule.mirrors.is_some(),
            "mirrors",
            "mirror and mirrors",
        ),
    ];
    for (_, name, what) in conflicts.iter().filter(|(c, ..)| *c) {
        errors.push(doc.error(
            &format!("{field}.{name}"),
            format!("a rule cannot have both {what}"),
        ));
    }
    let answers = rule.redirect.is_some() || rule.direct_response.is_some();
    for (name, set) in [
        ("rewrite", rule.rewrite.is_some() && rule.redirect.is_none()),
        ("mirror", rule.mirror.is_some()),
        ("mirrors", rule.mirrors.is_some()),
    ] {
        if set && !forwards && answers {
            errors.push(doc.error(
                &format!("{field}.{name}"),
                format!("{name} applies only to forwarded requests: the rule needs route"),
            ));
        }
    }
    let destinations = destinations(doc, &field, rule, namespace, services, subsets, errors);
    let (timeout_ms, retry) = timeout_and_retry(doc, &field, rule, errors);
    let fault = rule.fault.as_ref().and_then(|f| {
        let (fault, problems) = f.fault();
        for (name, message) in problems {
            errors.push(doc.error(&format!("{field}.fault.{name}"), message));
        }
        fault
    });
    if !forwards && !answers && rule.delegate.is_some() {
        // Delegation is not implemented (a notice says so): the rule is left out.
        return Vec::new();
    }
    let (request_headers, response_headers) = rule
        .headers
        .as_ref()
        .map(filters::Headers::edits)
        .unwrap_or_default();
    let mut mirrors = Vec::new();
    // A mirror's weight means nothing: it gets its share of copies, whatever the split.
    let mirror_of = |d: &IstioDestination, f: &str, errors: &mut Vec<Diagnostic>| {
        destination(doc, f, d, 1, namespace, services, subsets, errors)
    };
    if let Some(d) = &rule.mirror {
        let destination = mirror_of(d, &format!("{field}.mirror"), errors);
        let share = filters::mirror_share(
            doc,
            (
                &format!("{field}.mirrorPercentage.value"),
                &format!("{field}.mirrorPercent"),
            ),
            rule.mirror_percentage.as_ref(),
            rule.mirror_percent,
            errors,
        );
        mirrors.extend(destination.map(|destination| Mirror {
            destination,
            per_million: share,
        }));
    }
    for (j, m) in rule.mirrors.iter().flatten().enumerate() {
        let f = format!("{field}.mirrors[{j}]");
        let destination = mirror_of(&m.destination, &format!("{f}.destination"), errors);
        let share = filters::mirror_share(
            doc,
            (&format!("{f}.percentage.value"), &f),
            m.percentage.as_ref(),
            None,
            errors,
        );
        mirrors.extend(destination.map(|destination| Mirror {
            destination,
            per_million: share,
        }));
    }
    let (uri, regex, authority) = match &rule.rewrite {
        Some(r) => filters::rewrite(doc, &format!("{field}.rewrite"), r, errors),
        None => (None, None, None),
    };
    let route = HttpRoute {
        name: rule
            .name
            .clone()
            .unwrap_or_else(|| format!("{label} http[{i}]")),
        matches,
        destinations,
        timeout_ms,
        retry,
        fault,
        request_headers,
        response_headers,
        rewrite: (regex.is_some() || authority.is_some()).then(|| Rewrite {
            path: regex,
            authority: authority.clone(),
        }),
        redirect: rule
            .redirect
            .as_ref()
            .map(|r| filters::redirect(doc, &format!("{field}.redirect"), r, errors)),
        direct_response: rule
            .direct_response
            .as_ref()
            .map(|d| filters::direct_response(doc, &format!("{field}.directResponse"), d, errors)),
        mirrors,
        cors: rule
            .cors_policy
            .as_ref()
            .map(|c| filters::cors(doc, &format!("{field}.corsPolicy"), c, errors)),
        response_classes: Vec::new(),
    };
    let Some(uri) = uri else {
        return vec![route];
    };
    // Istio matches a block without `uri` as the prefix `/`; the rewrite then replaces that `/`.
    let mut matches = route.matches.clone();
    if matches.is_empty() {
        matches.push(RouteMatch::default());
    }
    let mut out: Vec<HttpRoute> = Vec::new();
    for mut m in matches {
        let path = match m.path.get_or_insert_with(|| PathMatch::Prefix("/".into())) {
            PathMatch::Prefix(_) => PathRewrite::Prefix(uri.clone()),
            _ => PathRewrite::Full(uri.clone()),
        };
        let rewrite = Some(Rewrite {
            path: Some(path),
            authority: authority.clone(),
        });
        match out.last_mut() {
            Some(last) if last.rewrite == rewrite => last.matches.push(m),
            _ => out.push(HttpRoute {
                matches: vec![m],
                rewrite,
                ..route.clone()
            }),
        }
    }
    out
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
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Destination> {
    if rule.route.is_empty() {
        let answers =
            rule.redirect.is_some() || rule.direct_response.is_some() || rule.delegate.is_some();
        if !answers {
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
    let before = errors.len();
    let mut out = Vec::new();
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
                0
            }
        };
        let d = destination(
            doc,
            &format!("{field}.destination"),
            &r.destination,
            weight,
            namespace,
            services,
            subsets,
            errors,
        );
        if let Some(mut d) = d {
            if let Some(h) = &r.headers {
                (d.request_headers, d.response_headers) = h.edits();
            }
            out.push(d);
        }
    }
    let ok = errors.len() == before;
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

/// One Istio Destination (`field` is where it is written): its service, subset and port
/// checked against the mesh. `None` when it names no service (an error says why, or, without
/// a mesh, the host is not a service name).
#[allow(clippy::too_many_arguments)]
fn destination(
    doc: &Doc,
    field: &str,
    d: &IstioDestination,
    weight: u32,
    namespace: &str,
    services: &Services,
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Option<Destination> {
    let key = match services.host(&d.host, namespace) {
        Ok(key) => key,
        Err(message) => {
            errors.push(doc.error(&format!("{field}.host"), message));
            None
        }
    };
    if let Some(port) = &d.port {
        let service_port = key.as_ref().and_then(|k| services.port(k));
        match service_port {
            _ if port.number == 0 || port.number > 65535 => {
                errors.push(doc.error(
                    &format!("{field}.port.number"),
                    "port must be between 1 and 65535",
                ));
            }
            Some(p) if u32::from(p) != port.number => errors.push(doc.error(
                &format!("{field}.port.number"),
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
            None if services.checked() => errors.push(doc.error(
                &format!("{field}.subset"),
                format!("unknown subset {subset} of {key}"),
            )),
            None => {}
        }
    }
    key.map(|key| Destination {
        subset: d.subset.clone(),
        labels,
        ..Destination::service(key, weight)
    })
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
    if let Some(scheme) = &m.scheme {
        out.scheme = string_match(doc, &format!("{field}.scheme"), scheme, false, errors);
    }
    if let Some(authority) = &m.authority {
        out.authority = string_match(doc, &format!("{field}.authority"), authority, false, errors);
    }
    if let Some(port) = m.port {
        match u16::try_from(port).ok().filter(|p| *p != 0) {
            Some(p) => out.port = Some(p),
            None => errors.push(doc.error(
                &format!("{field}.port"),
                format!("{port} is not a port number"),
            )),
        }
    }
    out.source_labels = m.source_labels.clone().into_iter().collect();
    out.source_namespace = m.source_namespace.clone();
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
        (None, None, Some(s)) => match pattern::error(s) {
            None => Some(StringMatch::Regex(s.clone())),
            Some(message) => {
                errors.push(doc.error(&format!("{field}.regex"), message));
                None
            }
        },
        _ => {
            errors.push(doc.error(field, "set only one of exact, prefix, regex"));
            None
        }
    }
}
