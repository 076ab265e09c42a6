//! Gateway API `gateway.networking.k8s.io` HTTPRoutes and Gateways, and SMI
//! `split.smi-spec.io` TrafficSplits: their serde shape, the "not yet supported; ignored"
//! notices, and their translation once every document is read: HTTPRoutes bound to mesh
//! Services (GAMMA) and TrafficSplits into [`model::ServiceRoutes`], HTTPRoutes bound to a
//! Gateway into ingress routes per host.
//!
//! An HTTPRoute's `(rule, match)` pairs become one [`HttpRoute`] each and are ordered by the
//! Gateway API's precedence ([`order_by_gateway_api_precedence`]), across every HTTPRoute of a
//! service (or of an ingress host). When several APIs route one service, or one ingress host:
//! VirtualService > HTTPRoute > TrafficSplit, with a warning naming both resources.
//!
//! An HTTPRoute bound to a Gateway serves the hosts its `hostnames` share with the Gateway's
//! HTTP listeners (all of them, or those `sectionName` / `port` pick), or the listeners'
//! hostnames, or `*`. A Gateway that is not declared is taken to be weft's ingress with no
//! hostname of its own (a warning says so). A resource that cannot be honoured is rejected
//! whole; the others apply. One thing weft does not do as the Gateway API says: a backendRef to
//! an unknown Service is an error (the resource is rejected) where the spec answers 500 for
//! that backend's share, because the model has no per-destination fixed answer.
//!
//! Layout: `filters` (HTTPRoute filters).

mod filters;

use crate::diagnostic::reject;
use crate::doc::{Doc, Parsed};
use crate::http_route::{translate_match, HttpRouteSpec, Match, Parent, ParentRef, Rule};
use crate::ingress::{intersect, HostRoutes};
use crate::k8s::{is_policy_group, Metadata, Object};
use crate::services::{Services, PRECEDENCE};
use crate::{policy, Diagnostic};
use model::{
    Destination, HttpRoute, PathMatch, RetryOn, RetryPolicy, RouteMatch, ServiceKey, ServiceRoutes,
    ServiceSpec,
};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;

/// The HTTPRoute and Gateway `apiVersion`s read.
const GATEWAY_API_VERSIONS: [&str; 2] = [
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

/// Parses a document of a kind this module reads; `None` for any other kind or version.
pub(crate) fn parse(
    api_version: &str,
    kind: &str,
    text: &str,
) -> Option<serde_yaml_ng::Result<Kind>> {
    if kind == "HTTPRoute" && GATEWAY_API_VERSIONS.contains(&api_version) {
        Some(serde_yaml_ng::from_str(text).map(Kind::HttpRoute))
    } else if kind == "Gateway" && GATEWAY_API_VERSIONS.contains(&api_version) {
        Some(serde_yaml_ng::from_str(text).map(|o| Kind::Gateway(Box::new(o))))
    } else if kind == "TrafficSplit" && TRAFFIC_SPLIT_API_VERSIONS.contains(&api_version) {
        Some(serde_yaml_ng::from_str(text).map(Kind::TrafficSplit))
    } else {
        None
    }
}

/// Retries when an HTTPRoute's `retry` leaves `attempts` out (implementation-specific; Istio's).
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// A Gateway: weft's ingress, and the hostnames its HTTP listeners serve. Its class, addresses
/// and ports do not pick another gateway: weft runs one, listening where the Mesh's
/// `spec.ingress` says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GatewaySpec {
    #[allow(dead_code)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    pub addresses: Option<Value>,
    pub infrastructure: Option<Value>,
    #[serde(rename = "backendTLS")]
    pub backend_tls: Option<Value>,
    pub allowed_listeners: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Listener {
    pub name: String,
    pub hostname: Option<String>,
    pub port: u32,
    pub protocol: String,
    /// Only HTTPS and TLS listeners have one, and those are not yet supported (a notice).
    #[allow(dead_code)]
    pub tls: Option<Value>,
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
    pub kinds: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    pub from: Option<String>,
    #[allow(dead_code)]
    pub selector: Option<Value>,
}

impl Listener {
    fn from(&self) -> &str {
        self.allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref()?.from.as_deref())
            .unwrap_or("Same")
    }

    /// Whether an HTTPRoute of `namespace` may attach (a `Selector` is not evaluated: any).
    fn allows(&self, namespace: &str, gateway_namespace: &str) -> bool {
        self.from() != "Same" || namespace == gateway_namespace
    }

    fn is_http(&self) -> bool {
        self.protocol == "HTTP"
    }
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
    // Boxed: larger than the others.
    Gateway(Box<Object<GatewaySpec>>),
    TrafficSplit(Object<TrafficSplitSpec>),
}

/// A parsed document of this dialect, kept until every file has been read.
pub(crate) type Pending = Parsed<Kind>;

impl Pending {
    fn metadata(&self) -> &Metadata {
        match &self.kind {
            Kind::HttpRoute(o) => &o.metadata,
            Kind::Gateway(o) => &o.metadata,
            Kind::TrafficSplit(o) => &o.metadata,
        }
    }

    pub(crate) fn label(&self) -> String {
        let kind = match &self.kind {
            Kind::HttpRoute(o) if is_policy_group(&o.api_version) => "HTTPRoute.policy.linkerd.io",
            Kind::HttpRoute(_) => "HTTPRoute",
            Kind::Gateway(_) => "Gateway",
            Kind::TrafficSplit(_) => "TrafficSplit",
        };
        let m = self.metadata();
        format!("{kind} {}/{}", m.namespace(), m.name)
    }

    /// Notices for what weft accepts and ignores, in document order.
    pub fn notices(&self) -> Vec<Diagnostic> {
        let (doc, label) = (self.doc(), self.label());
        let mut notices = Vec::new();
        let mut say = |field: String, what: &str| {
            let short = field.rsplit('.').next().unwrap_or(&field).to_string();
            notices.push(doc.error(&field, format!("{label}: {short} {what}")));
        };
        const NOT_YET: &str = "is not yet supported; ignored";
        match &self.kind {
            Kind::TrafficSplit(_) => {}
            Kind::Gateway(o) => {
                for (name, value) in [
                    ("addresses", &o.spec.addresses),
                    ("infrastructure", &o.spec.infrastructure),
                    ("backendTLS", &o.spec.backend_tls),
                    ("allowedListeners", &o.spec.allowed_listeners),
                ] {
                    if value.is_some() {
                        say(format!("spec.{name}"), NOT_YET);
                    }
                }
                for (i, l) in o.spec.listeners.iter().enumerate() {
                    let field = format!("spec.listeners[{i}]");
                    if !l.is_http() {
                        say(
                            format!("{field}.protocol"),
                            &format!(
                                "{} is not yet supported (weft's ingress serves plain HTTP); \
                                 this listener is ignored",
                                l.protocol
                            ),
                        );
                        continue;
                    }
                    if l.from() == "Selector" {
                        say(
                            format!("{field}.allowedRoutes.namespaces.from"),
                            "Selector is not yet supported; routes of every namespace may attach",
                        );
                    }
                    if l.allowed_routes.as_ref().is_some_and(|a| a.kinds.is_some()) {
                        say(format!("{field}.allowedRoutes.kinds"), NOT_YET);
                    }
                }
            }
            Kind::HttpRoute(o) => {
                for (i, p) in o.spec.parent_refs.iter().enumerate() {
                    if matches!(p.parent(), Parent::Service) && p.section_name.is_some() {
                        say(format!("spec.parentRefs[{i}].sectionName"), NOT_YET);
                    }
                }
                for (i, rule) in o.spec.rules.iter().enumerate() {
                    if rule.session_persistence.is_some() {
                        say(format!("spec.rules[{i}].sessionPersistence"), NOT_YET);
                    }
                    if rule.retry.as_ref().is_some_and(|r| r.backoff.is_some()) {
                        say(format!("spec.rules[{i}].retry.backoff"), NOT_YET);
                    }
                }
                if o.spec.parent_refs.is_empty() {
                    notices.push(doc.error(
                        "spec",
                        format!("{label}: has no parentRefs, so it routes nothing; ignored"),
                    ));
                }
            }
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

/// A declared Gateway: its listeners (HTTP or not, for messages) and namespace.
struct DeclaredGateway<'a> {
    namespace: &'a str,
    listeners: &'a [Listener],
}

/// Every declared Gateway by (namespace, name); one with errors is rejected.
fn gateways<'a>(
    pending: &'a [Pending],
    rejected: &mut Vec<Diagnostic>,
) -> HashMap<(String, String), (DeclaredGateway<'a>, String)> {
    let mut out: HashMap<(String, String), (DeclaredGateway, String)> = HashMap::new();
    for p in pending {
        let Kind::Gateway(o) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = o.metadata.namespace();
        let key = (namespace.to_string(), o.metadata.name.clone());
        let mut errors = Vec::new();
        if let Some((_, at)) = out.get(&key) {
            errors.push(doc.error(
                "metadata.name",
                format!("Gateway {}/{} is already defined at {at}", key.0, key.1),
            ));
        }
        if o.spec.listeners.is_empty() {
            errors.push(doc.error("spec.listeners", "needs at least one listener"));
        }
        for (i, l) in o.spec.listeners.iter().enumerate() {
            let field = format!("spec.listeners[{i}]");
            if o.spec.listeners[..i].iter().any(|x| x.name == l.name) {
                errors.push(doc.error(
                    &format!("{field}.name"),
                    format!("duplicate listener {}", l.name),
                ));
            }
            if l.port == 0 || l.port > 65535 {
                errors
                    .push(doc.error(&format!("{field}.port"), "port must be between 1 and 65535"));
            }
            if let Some(h) = &l.hostname {
                if h.is_empty() || h == "*" || h.parse::<std::net::IpAddr>().is_ok() {
                    errors.push(doc.error(
                        &format!("{field}.hostname"),
                        format!("`{h}` is not a hostname (`*.example.com` for a wildcard)"),
                    ));
                }
            }
            if !matches!(l.from(), "Same" | "All" | "Selector") {
                errors.push(doc.error(
                    &format!("{field}.allowedRoutes.namespaces.from"),
                    format!("`{}` must be Same, All or Selector", l.from()),
                ));
            }
        }
        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        let gateway = DeclaredGateway {
            namespace,
            listeners: &o.spec.listeners,
        };
        out.insert(key, (gateway, doc.place("metadata.name")));
    }
    out
}

/// An HTTPRoute's hosts through a Gateway parent (added to `hosts`), with errors and warnings.
#[allow(clippy::too_many_arguments)]
fn gateway_hosts(
    doc: &Doc,
    field: &str,
    parent: &ParentRef,
    route: &HttpRouteSpec,
    namespace: &str,
    label: &str,
    gateways: &HashMap<(String, String), (DeclaredGateway, String)>,
    hosts: &mut Vec<(String, Diagnostic)>,
    errors: &mut Vec<Diagnostic>,
    notes: &mut Vec<Diagnostic>,
) {
    let at = doc.error(field, "");
    let gns = parent.namespace.as_deref().unwrap_or(namespace);
    let name = format!("{gns}/{}", parent.name);
    let own: Vec<String> = route
        .hostnames
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut add = |host: String| {
        if !hosts.iter().any(|(h, _)| *h == host) {
            hosts.push((host, at.clone()));
        }
    };
    let Some((gateway, _)) = gateways.get(&(gns.to_string(), parent.name.clone())) else {
        notes.push(at.with_message(format!(
            "{label}: Gateway {name} is not declared; the route is bound to weft's ingress \
             with its own hostnames"
        )));
        if own.is_empty() {
            add("*".into());
        }
        own.into_iter().for_each(add);
        return;
    };
    let selected: Vec<&Listener> = gateway
        .listeners
        .iter()
        .filter(|l| parent.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|l| parent.port.is_none_or(|p| p == l.port))
        .collect();
    if selected.is_empty() {
        let which = match (&parent.section_name, parent.port) {
            (Some(s), Some(p)) => format!("named {s} on port {p}"),
            (Some(s), None) => format!("named {s}"),
            (None, Some(p)) => format!("on port {p}"),
            (None, None) => "at all".into(),
        };
        errors.push(doc.error(field, format!("Gateway {name} has no listener {which}")));
        return;
    }
    let allowed: Vec<&Listener> = selected
        .into_iter()
        .filter(|l| l.allows(namespace, gateway.namespace))
        .collect();
    if allowed.is_empty() {
        errors.push(doc.error(
            field,
            format!(
                "Gateway {name} does not let routes of namespace {namespace} attach \
                 (allowedRoutes.namespaces.from: Same)"
            ),
        ));
        return;
    }
    let http: Vec<&Listener> = allowed.into_iter().filter(|l| l.is_http()).collect();
    if http.is_empty() {
        notes.push(at.with_message(format!(
            "{label}: Gateway {name} has no HTTP listener for it (HTTPS is not yet supported); \
             nothing is routed through it"
        )));
        return;
    }
    let mut served = Vec::new();
    for l in &http {
        match (&l.hostname, own.is_empty()) {
            (None, true) => served.push("*".to_string()),
            (None, false) => served.extend(own.iter().cloned()),
            (Some(h), true) => served.push(h.to_ascii_lowercase()),
            (Some(h), false) => served.extend(own.iter().filter_map(|o| intersect(o, h))),
        }
    }
    if served.is_empty() {
        errors.push(doc.error(
            "spec.hostnames",
            format!("none of these hostnames is served by a listener of Gateway {name}"),
        ));
    }
    served.into_iter().for_each(add);
}

/// Turns every pending document into routes, added to `routes` (the VirtualServices' routes;
/// `owners` names the VirtualService of each of them), and returns the HTTPRoutes' ingress
/// routes per host. `services` is `None` when there is no Mesh document, and then names are not
/// checked. A resource with errors is rejected (its errors go to `rejected`) and the others
/// still apply; `warnings` gets what applies but may surprise (precedence, undeclared
/// Gateways).
pub(crate) fn resolve(
    services: Option<&[ServiceSpec]>,
    pending: &[Pending],
    routes: &mut Vec<ServiceRoutes>,
    owners: &HashMap<ServiceKey, String>,
    rejected: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<HostRoutes> {
    let services = Services::new(services);
    let gateways = gateways(pending, rejected);

    // HTTPRoutes: every (rule, match) of every route of a service, with (route label, where);
    // and the same per ingress host.
    let mut http: Table<HttpRoutesOf> = Table::default();
    let mut ingress: Vec<(String, HttpRoutesOf)> = Vec::new();
    // Load order among these documents: the age of an HTTPRoute without creationTimestamp.
    for (order, p) in pending.iter().enumerate() {
        let Kind::HttpRoute(o) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = o.metadata.namespace();
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        let age = match &o.metadata.creation_timestamp {
            Some(t) if is_timestamp(t) => Age::Created(t.clone()),
            Some(t) => {
                errors.push(doc.error(
                    "metadata.creationTimestamp",
                    format!("`{t}` is not a timestamp like 2024-01-31T12:00:00Z"),
                ));
                Age::Loaded(order)
            }
            None => Age::Loaded(order),
        };

        let mut parents: Vec<(ServiceKey, Diagnostic)> = Vec::new();
        let mut hosts: Vec<(String, Diagnostic)> = Vec::new();
        for (i, parent) in o.spec.parent_refs.iter().enumerate() {
            let field = format!("spec.parentRefs[{i}]");
            match parent.parent() {
                Parent::Gateway => gateway_hosts(
                    &doc,
                    &field,
                    parent,
                    &o.spec,
                    namespace,
                    &label,
                    &gateways,
                    &mut hosts,
                    &mut errors,
                    &mut notes,
                ),
                Parent::Server => {}
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
                    let key = match services.named(&parent.name, ns, "parentRef") {
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

        let ranked = http_route_rules(&doc, o, &label, age, &services, &mut errors);
        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        warnings.extend(notes);
        for (key, at) in parents {
            let (all, sources) = http.entry(&key);
            all.extend(ranked.iter().cloned());
            sources.push((label.clone(), at));
        }
        for (host, at) in hosts {
            let i = match ingress.iter().position(|(h, _)| *h == host) {
                Some(i) => i,
                None => {
                    ingress.push((host, HttpRoutesOf::default()));
                    ingress.len() - 1
                }
            };
            let (all, sources) = &mut ingress[i].1;
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
            if let Some(Some((_, other, at))) = splits.entries.get(apex) {
                errors.push(doc.error(
                    "spec.service",
                    format!(
                        "one TrafficSplit per service: {apex} already has {other} at {}:{}",
                        at.file.display(),
                        at.line
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
        *splits.entry(&apex) = Some((route, label, doc.error("spec.service", "")));
    }

    let vs_wins = |key: &ServiceKey, label: &str, at: &Diagnostic| {
        let vs = owners.get(key)?;
        Some(at.with_message(format!(
            "{label}: service {key} is also routed by {vs}; VirtualService wins; {PRECEDENCE}"
        )))
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
            warnings.push(at.with_message(format!(
                "{split}: service {key} is also routed by {}; HTTPRoute wins; {PRECEDENCE}",
                names.join(", ")
            )));
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

    ingress
        .into_iter()
        .map(|(host, (mut ranked, sources))| {
            order_by_gateway_api_precedence(&mut ranked);
            HostRoutes {
                host,
                sources,
                routes: ranked.into_iter().map(|r| r.route).collect(),
            }
        })
        .collect()
}

/// An HTTPRoute's `(rule, match)` pairs as routes with their filters, to be ordered with those
/// of the other HTTPRoutes of the same service or host.
fn http_route_rules(
    doc: &Doc,
    o: &Object<HttpRouteSpec>,
    label: &str,
    age: Age,
    services: &Services,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Ranked> {
    let namespace = o.metadata.namespace();
    let mut ranked = Vec::new();
    for (i, rule) in o.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let f = filters::rule_filters(doc, &field, &rule.filters, namespace, services, errors);
        let destinations = match &f.redirect {
            Some(_) if !rule.backend_refs.is_empty() => {
                errors.push(doc.error(
                    &format!("{field}.backendRefs"),
                    "a rule with a RequestRedirect filter cannot have backendRefs",
                ));
                Vec::new()
            }
            Some(_) => Vec::new(),
            None => backends(doc, &field, rule, namespace, services, errors),
        };
        let (timeout_ms, retry) = timeout_and_retry(doc, &field, rule, errors);
        let default = [Match::default()];
        let matches = if rule.matches.is_empty() {
            &default[..]
        } else {
            &rule.matches[..]
        };
        for (j, m) in matches.iter().enumerate() {
            let mfield = format!("{field}.matches[{j}]");
            let Some(m) = translate_match(doc, &mfield, m, errors) else {
                continue;
            };
            if f.replaces_prefix && !matches!(m.path, Some(PathMatch::SegmentPrefix(_))) {
                errors.push(doc.error(
                    &format!("{mfield}.path"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix",
                ));
            }
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
                    request_headers: f.request_headers.clone(),
                    response_headers: f.response_headers.clone(),
                    rewrite: f.rewrite.clone(),
                    redirect: f.redirect.clone(),
                    mirrors: f.mirrors.clone(),
                    cors: f.cors.clone(),
                    ..Default::default()
                },
            });
        }
    }
    ranked
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

/// A rule's `backendRefs` as weighted destinations, with their own header filters.
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
            "needs at least one backendRef, or a RequestRedirect filter",
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    let before = errors.len();
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
            continue;
        }
        let weight = match b.weight.unwrap_or(1) {
            w @ 0..=MAX_WEIGHT => w as u32,
            w => {
                errors.push(doc.error(
                    &format!("{field}.weight"),
                    format!("weight {w} must be between 0 and {MAX_WEIGHT}"),
                ));
                0
            }
        };
        let ns = b.namespace.as_deref().unwrap_or(namespace);
        let key = match services.named(&b.name, ns, "backend") {
            Ok(key) => key,
            Err(message) => {
                errors.push(doc.error(&format!("{field}.name"), message));
                continue;
            }
        };
        if let Some(message) = b.port.and_then(|n| services.check_port(&key, n)) {
            errors.push(doc.error(&format!("{field}.port"), message));
        }
        let (request_headers, response_headers) =
            filters::backend_filters(doc, &field, &b.filters, errors);
        out.push(Destination {
            request_headers,
            response_headers,
            ..Destination::service(key, weight)
        });
    }
    if errors.len() == before && out.iter().all(|d| d.weight == 0) {
        errors.push(doc.error(&format!("{field}.backendRefs"), "all weights are 0"));
    }
    out
}

#[cfg(test)]
mod tests;
