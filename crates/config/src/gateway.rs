//! Gateway API `gateway.networking.k8s.io` HTTPRoutes bound to mesh Services (GAMMA) and SMI
//! `split.smi-spec.io` TrafficSplits: their serde shape, the "not yet supported; ignored"
//! notices, and their translation into [`model::ServiceRoutes`] once every document is read.
//!
//! An HTTPRoute's `(rule, match)` pairs become one [`HttpRoute`] each and are ordered by the
//! Gateway API's precedence ([`order_by_gateway_api_precedence`]), across every HTTPRoute of a
//! service. When several APIs route one service: VirtualService > HTTPRoute > TrafficSplit.

use crate::k8s::{Metadata, Object};
use crate::loader::Doc;
use crate::marked::Node;
use crate::{policy, Diagnostic};
use model::{
    Destination, HeaderMatch, HttpRoute, PathMatch, QueryMatch, RetryOn, RetryPolicy, RouteMatch,
    ServiceKey, ServiceRoutes, ServiceSpec, StringMatch,
};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;
use std::path::PathBuf;

/// The HTTPRoute `apiVersion`s read.
const HTTP_ROUTE_API_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];

/// The TrafficSplit `apiVersion`s read.
const TRAFFIC_SPLIT_API_VERSIONS: [&str; 4] = [
    "split.smi-spec.io/v1alpha1",
    "split.smi-spec.io/v1alpha2",
    "split.smi-spec.io/v1alpha3",
    "split.smi-spec.io/v1alpha4",
];

/// The Gateway API's largest backend weight.
const MAX_WEIGHT: i64 = 1_000_000;

const PRECEDENCE: &str = "precedence: VirtualService > HTTPRoute > TrafficSplit";

/// Parses a document of a kind this module reads; `None` for any other kind or version.
pub(crate) fn parse(
    api_version: &str,
    kind: &str,
    text: &str,
) -> Option<serde_yaml_ng::Result<Kind>> {
    if kind == "HTTPRoute" && HTTP_ROUTE_API_VERSIONS.contains(&api_version) {
        Some(serde_yaml_ng::from_str(text).map(Kind::HttpRoute))
    } else if kind == "TrafficSplit" && TRAFFIC_SPLIT_API_VERSIONS.contains(&api_version) {
        Some(serde_yaml_ng::from_str(text).map(Kind::TrafficSplit))
    } else {
        None
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// GAMMA: a Service parent is reached by its own name; hostnames do not apply.
    #[allow(dead_code)]
    pub hostnames: Option<Vec<String>>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u32>,
}

enum Parent<'a> {
    Service,
    /// `kind: Service` without `group: ""`: the group then defaults to the Gateway API's.
    ServiceWithoutGroup,
    Gateway,
    Other(&'a str, &'a str),
}

impl ParentRef {
    fn parent(&self) -> Parent<'_> {
        let group = self.group.as_deref();
        match (group, self.kind.as_deref()) {
            (Some("" | "core"), Some("Service")) => Parent::Service,
            (None, Some("Service")) => Parent::ServiceWithoutGroup,
            (None | Some("gateway.networking.k8s.io"), None | Some("Gateway")) => Parent::Gateway,
            (g, k) => Parent::Other(
                g.unwrap_or("gateway.networking.k8s.io"),
                k.unwrap_or("Gateway"),
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Rule {
    #[allow(dead_code)]
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<Match>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    pub filters: Option<Value>,
    pub timeouts: Option<Timeouts>,
    /// Experimental (HTTPRouteRetry).
    pub retry: Option<Retry>,
    pub session_persistence: Option<Value>,
}

/// HTTPRouteTimeouts: Gateway API Durations; `0s` disables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Timeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

/// HTTPRouteRetry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    #[serde(default)]
    pub codes: Vec<i64>,
    pub attempts: Option<i64>,
    pub backoff: Option<String>,
}

/// Retries when an HTTPRoute's `retry` leaves `attempts` out (implementation-specific; Istio's).
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Match {
    pub path: Option<PathSpec>,
    #[serde(default)]
    pub headers: Vec<NameValue>,
    #[serde(default)]
    pub query_params: Vec<NameValue>,
    pub method: Option<Method>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathSpec {
    #[serde(rename = "type", default)]
    pub kind: PathType,
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) enum PathType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NameValue {
    #[serde(rename = "type", default)]
    pub kind: ValueType,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) enum ValueType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<u32>,
    pub weight: Option<i64>,
    pub filters: Option<Value>,
}

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

#[derive(Debug)]
pub(crate) enum Kind {
    HttpRoute(Object<HttpRouteSpec>),
    TrafficSplit(Object<TrafficSplitSpec>),
}

/// A parsed document, kept (with its marked tree) until every file has been read.
#[derive(Debug)]
pub(crate) struct Pending {
    pub file: PathBuf,
    pub first_line: usize,
    pub tree: Node,
    pub kind: Kind,
    /// Load order among these documents: the age of an HTTPRoute without creationTimestamp.
    pub order: usize,
}

impl Pending {
    fn doc(&self) -> Doc<'_> {
        Doc {
            file: &self.file,
            first_line: self.first_line,
            tree: &self.tree,
        }
    }

    fn metadata(&self) -> &Metadata {
        match &self.kind {
            Kind::HttpRoute(o) => &o.metadata,
            Kind::TrafficSplit(o) => &o.metadata,
        }
    }

    fn label(&self) -> String {
        let kind = match &self.kind {
            Kind::HttpRoute(_) => "HTTPRoute",
            Kind::TrafficSplit(_) => "TrafficSplit",
        };
        let m = self.metadata();
        format!("{kind} {}/{}", m.namespace(), m.name)
    }

    /// Notices for what weft accepts and ignores, in document order.
    pub fn notices(&self) -> Vec<Diagnostic> {
        let Kind::HttpRoute(o) = &self.kind else {
            return Vec::new();
        };
        let (doc, label) = (self.doc(), self.label());
        let mut notices = Vec::new();
        let mut ignored = |field: String| {
            let short = field.rsplit('.').next().unwrap_or(&field).to_string();
            notices.push(doc.error(
                &field,
                format!("{label}: {short} is not yet supported; ignored"),
            ));
        };
        for (i, p) in o.spec.parent_refs.iter().enumerate() {
            if matches!(p.parent(), Parent::Service) && p.section_name.is_some() {
                ignored(format!("spec.parentRefs[{i}].sectionName"));
            }
        }
        for (i, rule) in o.spec.rules.iter().enumerate() {
            for (name, value) in [
                ("filters", &rule.filters),
                ("sessionPersistence", &rule.session_persistence),
            ] {
                if value.is_some() {
                    ignored(format!("spec.rules[{i}].{name}"));
                }
            }
            if rule.retry.as_ref().is_some_and(|r| r.backoff.is_some()) {
                ignored(format!("spec.rules[{i}].retry.backoff"));
            }
            for (j, b) in rule.backend_refs.iter().enumerate() {
                if b.filters.is_some() {
                    ignored(format!("spec.rules[{i}].backendRefs[{j}].filters"));
                }
            }
        }
        for (i, p) in o.spec.parent_refs.iter().enumerate() {
            if matches!(p.parent(), Parent::Gateway) {
                let gateway = match &p.namespace {
                    Some(ns) => format!("{ns}/{}", p.name),
                    None => p.name.clone(),
                };
                notices.push(doc.error(
                    &format!("spec.parentRefs[{i}]"),
                    format!(
                        "{label}: parentRef to Gateway {gateway} is not yet supported; ignored"
                    ),
                ));
            }
        }
        if o.spec.parent_refs.is_empty() {
            notices.push(doc.error(
                "spec",
                format!("{label}: has no parentRefs, so it routes nothing; ignored"),
            ));
        }
        notices.sort_by_key(|d| (d.line, d.column));
        notices
    }
}

/// How old an HTTPRoute is, oldest first: by `metadata.creationTimestamp` (RFC 3339, UTC,
/// whole seconds, so text order is time order); routes without one come after, in load order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Age {
    Created(String),
    Loaded(usize),
}

/// One `(rule, match)` pair of one HTTPRoute, as a route, with what orders it.
#[derive(Clone, Debug)]
pub(crate) struct Ranked {
    pub age: Age,
    /// The HTTPRoute's `namespace/name`.
    pub owner: String,
    pub rule: usize,
    pub index: usize,
    /// With exactly one match.
    pub route: HttpRoute,
}

/// Orders the `(rule, match)` pairs of every HTTPRoute of one service by the Gateway API's
/// precedence (first match wins, so the most specific comes first):
///
/// 1. an `Exact` path before any prefix, and a (segment-wise) path prefix before a
///    `RegularExpression` path (regex precedence is implementation-specific; this is Istio's);
///    within a kind, the longer path (in characters) first;
/// 2. then a match with a `method` before one without;
/// 3. then more header matches first;
/// 4. then more query-parameter matches first;
/// 5. ties: the older HTTPRoute ([`Age`]), then the HTTPRoute's `namespace/name`
///    alphabetically, then rule order, then match order within the rule.
pub(crate) fn order_by_gateway_api_precedence(routes: &mut [Ranked]) {
    fn path_rank(m: &RouteMatch) -> (u8, std::cmp::Reverse<usize>) {
        let (kind, len) = match &m.path {
            Some(PathMatch::Exact(p)) => (0, p.chars().count()),
            Some(PathMatch::SegmentPrefix(p) | PathMatch::Prefix(p)) => (1, p.chars().count()),
            Some(PathMatch::Regex(p)) => (2, p.chars().count()),
            // The Gateway API's default match is `PathPrefix /`.
            None => (1, 1),
        };
        (kind, std::cmp::Reverse(len))
    }
    routes.sort_by_cached_key(|r| {
        let empty = RouteMatch::default();
        let m = r.route.matches.first().unwrap_or(&empty);
        (
            path_rank(m),
            m.method.is_none(),
            std::cmp::Reverse(m.headers.len()),
            std::cmp::Reverse(m.query.len()),
            r.age.clone(),
            r.owner.clone(),
            r.rule,
            r.index,
        )
    });
}

/// What resolution checks against: the mesh's services, if there is a mesh.
struct Services<'a> {
    known: Option<HashMap<ServiceKey, &'a ServiceSpec>>,
}

impl Services<'_> {
    /// The service `name` in `namespace`, or an error message. Without a mesh nothing is
    /// checked.
    fn resolve(&self, name: &str, namespace: &str, what: &str) -> Result<ServiceKey, String> {
        let key = ServiceKey::new(name, namespace);
        match &self.known {
            Some(known) if !known.contains_key(&key) => {
                Err(format!("{what} {key} is not a service of the mesh"))
            }
            _ => Ok(key),
        }
    }

    fn port(&self, key: &ServiceKey) -> Option<u16> {
        self.known.as_ref()?.get(key).map(|s| s.port)
    }

    /// An error message if `port` is not the service's.
    fn check_port(&self, key: &ServiceKey, port: u32) -> Option<String> {
        match self.port(key) {
            _ if port == 0 || port > 65535 => Some("port must be between 1 and 65535".into()),
            Some(p) if u32::from(p) != port => {
                Some(format!("service {key} listens on port {p}, not {port}"))
            }
            _ => None,
        }
    }
}

/// A service's HTTPRoute `(rule, match)` pairs, and each HTTPRoute's label and parentRef.
type HttpRoutesOf = (Vec<Ranked>, Vec<(String, Diagnostic)>);

/// Routes per service in first-seen order, with who set them.
#[derive(Default)]
struct Table<T> {
    order: Vec<ServiceKey>,
    entries: HashMap<ServiceKey, T>,
}

impl<T: Default> Table<T> {
    fn entry(&mut self, key: &ServiceKey) -> &mut T {
        if !self.entries.contains_key(key) {
            self.order.push(key.clone());
        }
        self.entries.entry(key.clone()).or_default()
    }
}

/// Turns every pending document into routes, added to `routes` (the VirtualServices' routes;
/// `owners` names the VirtualService of each of them). `services` is `None` when there is no
/// Mesh document, and then names are not checked.
pub(crate) fn resolve(
    services: Option<&[ServiceSpec]>,
    pending: &[Pending],
    routes: &mut Vec<ServiceRoutes>,
    owners: &HashMap<ServiceKey, String>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    let services = Services {
        known: services.map(|s| s.iter().map(|s| (s.key(), s)).collect()),
    };

    // HTTPRoutes: every (rule, match) of every route of a service, with (route label, where).
    let mut http: Table<HttpRoutesOf> = Table::default();
    for p in pending {
        let Kind::HttpRoute(o) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = o.metadata.namespace();
        let age = match &o.metadata.creation_timestamp {
            Some(t) if is_timestamp(t) => Age::Created(t.clone()),
            Some(t) => {
                errors.push(doc.error(
                    "metadata.creationTimestamp",
                    format!("`{t}` is not a timestamp like 2024-01-31T12:00:00Z"),
                ));
                Age::Loaded(p.order)
            }
            None => Age::Loaded(p.order),
        };

        let mut parents: Vec<(ServiceKey, Diagnostic)> = Vec::new();
        for (i, parent) in o.spec.parent_refs.iter().enumerate() {
            let field = format!("spec.parentRefs[{i}]");
            match parent.parent() {
                Parent::Gateway => {}
                Parent::ServiceWithoutGroup => errors.push(doc.error(
                    &field,
                    "a Service parentRef needs `group: \"\"` (no group means \
                     gateway.networking.k8s.io)",
                )),
                Parent::Other(group, kind) => errors.push(doc.error(
                    &field,
                    format!(
                        "parentRef kind {kind} (group `{group}`) is not supported: use a Service \
                         (group \"\") or a Gateway"
                    ),
                )),
                Parent::Service => {
                    let ns = parent.namespace.as_deref().unwrap_or(namespace);
                    let key = match services.resolve(&parent.name, ns, "parentRef") {
                        Ok(key) => key,
                        Err(message) => {
                            errors.push(doc.error(&format!("{field}.name"), message));
                            continue;
                        }
                    };
                    if let Some(message) = parent.port.and_then(|n| services.check_port(&key, n)) {
                        errors.push(doc.error(&format!("{field}.port"), message));
                    }
                    if !parents.iter().any(|(k, _)| *k == key) {
                        parents.push((key, doc.error(&field, "")));
                    }
                }
            }
        }
        if parents.is_empty() {
            // Gateway parents only (noticed already), or errors: nothing for the mesh.
            continue;
        }

        let mut ranked = Vec::new();
        for (i, rule) in o.spec.rules.iter().enumerate() {
            let field = format!("spec.rules[{i}]");
            let destinations = backends(&doc, &field, rule, namespace, &services, errors);
            let (timeout_ms, retry) = timeout_and_retry(&doc, &field, rule, errors);
            let default = [Match::default()];
            let matches = if rule.matches.is_empty() {
                &default[..]
            } else {
                &rule.matches[..]
            };
            for (j, m) in matches.iter().enumerate() {
                let Some(m) = translate_match(&doc, &format!("{field}.matches[{j}]"), m, errors)
                else {
                    continue;
                };
                ranked.push(Ranked {
                    age: age.clone(),
                    owner: format!("{namespace}/{}", o.metadata.name),
                    rule: i,
                    index: j,
                    route: HttpRoute {
                        name: format!("{label} rules[{i}].matches[{j}]"),
                        matches: vec![m],
                        destinations: destinations.clone(),
                        timeout_ms,
                        retry: retry.clone(),
                        ..Default::default()
                    },
                });
            }
        }
        for (key, at) in parents {
            let (all, sources) = http.entry(&key);
            all.extend(ranked.iter().cloned());
            sources.push((label.clone(), at));
        }
    }

    // TrafficSplits: one route per apex service.
    let mut splits: Table<Option<(HttpRoute, String, Diagnostic)>> = Table::default();
    for p in pending {
        let Kind::TrafficSplit(o) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = o.metadata.namespace();
        if o.spec.matches.is_some() {
            errors.push(doc.error(
                "spec.matches",
                "matching on HTTPRouteGroups is not yet supported",
            ));
        }
        let apex = services.resolve(&o.spec.service, namespace, "service");
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
            match services.resolve(&b.service, namespace, "backend") {
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
        let Ok(apex) = apex else {
            continue;
        };
        let slot = splits.entry(&apex);
        if let Some((_, other, at)) = slot {
            errors.push(doc.error(
                "spec.service",
                format!(
                    "one TrafficSplit per service: {apex} already has {other} at {}:{}",
                    at.file.display(),
                    at.line
                ),
            ));
            continue;
        }
        let route = HttpRoute {
            name: label.clone(),
            matches: Vec::new(),
            destinations,
            ..HttpRoute::default()
        };
        *slot = Some((route, label, doc.error("spec.service", "")));
    }

    let vs_wins = |key: &ServiceKey, label: &str, at: &Diagnostic| {
        let vs = owners.get(key)?;
        Some(warning(
            at,
            format!(
                "{label}: service {key} is also routed by {vs}; VirtualService wins; {PRECEDENCE}"
            ),
        ))
    };
    for key in &http.order {
        let (mut ranked, sources) = http.entries.remove(key).unwrap_or_default();
        let lost: Vec<_> = sources
            .iter()
            .filter_map(|(label, at)| vs_wins(key, label, at))
            .collect();
        if !lost.is_empty() {
            warnings.extend(lost);
            continue;
        }
        order_by_gateway_api_precedence(&mut ranked);
        routes.push(ServiceRoutes {
            service: key.clone(),
            routes: ranked.into_iter().map(|r| r.route).collect(),
        });
        if let Some(Some((_, split, at))) = splits.entries.remove(key) {
            let names: Vec<&str> = sources.iter().map(|(l, _)| l.as_str()).collect();
            warnings.push(warning(
                &at,
                format!(
                    "{split}: service {key} is also routed by {}; HTTPRoute wins; {PRECEDENCE}",
                    names.join(", ")
                ),
            ));
        }
    }
    for key in &splits.order {
        let Some(Some((route, label, at))) = splits.entries.remove(key) else {
            continue;
        };
        if let Some(w) = vs_wins(key, &label, &at) {
            warnings.push(w);
            continue;
        }
        routes.push(ServiceRoutes {
            service: key.clone(),
            routes: vec![route],
        });
    }
}

fn warning(at: &Diagnostic, message: String) -> Diagnostic {
    Diagnostic {
        message,
        ..at.clone()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as Kubernetes writes creation timestamps.
fn is_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
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

/// A rule's `timeouts` and `retry`: `request` is the route's timeout, `backendRequest` each
/// attempt's (with `attempts: 0` when the rule does not retry).
fn timeout_and_retry(
    doc: &Doc,
    field: &str,
    rule: &Rule,
    errors: &mut Vec<Diagnostic>,
) -> (Option<u64>, Option<RetryPolicy>) {
    let mut duration =
        |name: &str, text: &Option<String>| match text.as_deref().map(policy::gateway_duration) {
            Some(Ok(ms)) => ms,
            Some(Err(message)) => {
                errors.push(doc.error(&format!("{field}.{name}"), message));
                None
            }
            None => None,
        };
    let (timeout_ms, per_try_timeout_ms) = match &rule.timeouts {
        Some(t) => (
            duration("timeouts.request", &t.request),
            duration("timeouts.backendRequest", &t.backend_request),
        ),
        None => (None, None),
    };
    if let (Some(request), Some(backend)) = (timeout_ms, per_try_timeout_ms) {
        if backend > request {
            errors.push(doc.error(
                &format!("{field}.timeouts.backendRequest"),
                format!(
                    "backendRequest ({backend}ms) must not be longer than request ({request}ms)"
                ),
            ));
        }
    }
    let retry = match &rule.retry {
        Some(r) => {
            let attempts = match r.attempts.map(u32::try_from) {
                None => DEFAULT_RETRY_ATTEMPTS,
                Some(Ok(a)) => a,
                Some(Err(_)) => {
                    errors.push(doc.error(
                        &format!("{field}.retry.attempts"),
                        "attempts must be 0 or more",
                    ));
                    0
                }
            };
            let mut status_codes = Vec::new();
            for (k, &code) in r.codes.iter().enumerate() {
                match u16::try_from(code).ok().filter(|c| (400..=599).contains(c)) {
                    Some(c) if !status_codes.contains(&c) => status_codes.push(c),
                    Some(_) => {}
                    None => errors.push(doc.error(
                        &format!("{field}.retry.codes[{k}]"),
                        format!("retry code {code} must be between 400 and 599"),
                    )),
                }
            }
            Some(RetryPolicy {
                attempts,
                per_try_timeout_ms,
                on: RetryOn {
                    connect_failure: true,
                    status_codes,
                    ..RetryOn::default()
                },
            })
        }
        // A per-attempt timeout without retries.
        None => per_try_timeout_ms.map(|ms| RetryPolicy {
            attempts: 0,
            per_try_timeout_ms: Some(ms),
            on: RetryOn::default(),
        }),
    };
    (timeout_ms, retry)
}

/// A rule's `backendRefs` as weighted destinations.
fn backends(
    doc: &Doc,
    field: &str,
    rule: &Rule,
    namespace: &str,
    services: &Services,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Destination> {
    if rule.backend_refs.is_empty() {
        errors.push(doc.error(
            &format!("{field}.backendRefs"),
            "needs at least one backendRef (filters such as RequestRedirect are not yet supported)",
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (j, b) in rule.backend_refs.iter().enumerate() {
        let field = format!("{field}.backendRefs[{j}]");
        let (group, kind) = (
            b.group.as_deref().unwrap_or(""),
            b.kind.as_deref().unwrap_or("Service"),
        );
        if !matches!(group, "" | "core") || kind != "Service" {
            errors.push(doc.error(
                &field,
                format!("backend kind {kind} (group `{group}`) is not supported: only Services"),
            ));
            ok = false;
            continue;
        }
        let weight = match b.weight.unwrap_or(1) {
            w @ 0..=MAX_WEIGHT => w as u32,
            w => {
                errors.push(doc.error(
                    &format!("{field}.weight"),
                    format!("weight {w} must be between 0 and {MAX_WEIGHT}"),
                ));
                ok = false;
                0
            }
        };
        let ns = b.namespace.as_deref().unwrap_or(namespace);
        let key = match services.resolve(&b.name, ns, "backend") {
            Ok(key) => key,
            Err(message) => {
                errors.push(doc.error(&format!("{field}.name"), message));
                ok = false;
                continue;
            }
        };
        if let Some(message) = b.port.and_then(|n| services.check_port(&key, n)) {
            errors.push(doc.error(&format!("{field}.port"), message));
        }
        out.push(Destination::service(key, weight));
    }
    if ok && out.iter().all(|d| d.weight == 0) {
        errors.push(doc.error(&format!("{field}.backendRefs"), "all weights are 0"));
    }
    out
}

/// One `matches[]` entry, or `None` (with errors) if it cannot be honoured.
fn translate_match(
    doc: &Doc,
    field: &str,
    m: &Match,
    errors: &mut Vec<Diagnostic>,
) -> Option<RouteMatch> {
    let before = errors.len();
    let (kind, value) = match &m.path {
        Some(p) => (p.kind, p.value.clone().unwrap_or_else(|| "/".into())),
        None => (PathType::PathPrefix, "/".into()),
    };
    let vfield = format!("{field}.path.value");
    let path = match kind {
        PathType::RegularExpression => {
            check_regex(doc, &vfield, &value, errors);
            PathMatch::Regex(value)
        }
        _ if !value.starts_with('/') => {
            errors.push(doc.error(&vfield, "a path must start with `/`"));
            PathMatch::Exact(value)
        }
        PathType::Exact => PathMatch::Exact(value),
        PathType::PathPrefix => PathMatch::SegmentPrefix(value),
    };
    let mut out = RouteMatch {
        path: Some(path),
        method: m.method.map(|m| m_name(m).to_string()),
        ..RouteMatch::default()
    };
    // Equivalent names after the first are not considered, as the Gateway API says.
    for (i, h) in m.headers.iter().enumerate() {
        let name = h.name.to_ascii_lowercase();
        if out.headers.iter().any(|x| x.name == name) {
            continue;
        }
        let f = format!("{field}.headers[{i}]");
        out.headers.push(HeaderMatch {
            value: value_match(doc, &f, h, errors),
            name,
            invert: false,
        });
    }
    for (i, q) in m.query_params.iter().enumerate() {
        if out.query.iter().any(|x| x.name == q.name) {
            continue;
        }
        let f = format!("{field}.queryParams[{i}]");
        out.query.push(QueryMatch {
            value: value_match(doc, &f, q, errors),
            name: q.name.clone(),
        });
    }
    (errors.len() == before).then_some(out)
}

fn m_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
    }
}

fn value_match(doc: &Doc, field: &str, v: &NameValue, errors: &mut Vec<Diagnostic>) -> StringMatch {
    if v.name.is_empty() {
        errors.push(doc.error(&format!("{field}.name"), "must not be empty"));
    }
    match v.kind {
        ValueType::Exact => StringMatch::Exact(v.value.clone()),
        ValueType::RegularExpression => {
            check_regex(doc, &format!("{field}.value"), &v.value, errors);
            StringMatch::Regex(v.value.clone())
        }
    }
}

fn check_regex(doc: &Doc, field: &str, re: &str, errors: &mut Vec<Diagnostic>) {
    if let Err(e) = regex::Regex::new(re) {
        let text = e.to_string();
        let text: Vec<&str> = text.split_whitespace().collect();
        errors.push(doc.error(field, format!("invalid regex: {}", text.join(" "))));
    }
}

#[cfg(test)]
mod tests;
