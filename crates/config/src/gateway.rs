//! Gateway API `gateway.networking.k8s.io` HTTPRoutes and Gateways, and SMI
//! `split.smi-spec.io` TrafficSplits: their serde shape, the "not yet supported; ignored"
//! notices, and their translation once every document is read: HTTPRoutes bound to mesh
//! Services (GAMMA) and TrafficSplits into [`model::ServiceRoutes`], HTTPRoutes bound to a
//! Gateway into ingress routes per host.
//!
//! An HTTPRoute's `(rule, match)` pairs become one [`model::HttpRoute`] each and are ordered by
//! the Gateway API's precedence ([`rules::order_by_gateway_api_precedence`]), across every
//! HTTPRoute of a service (or of an ingress host). When several APIs route one service, or one
//! ingress host: VirtualService > ServiceProfile > HTTPRoute > TrafficSplit, with a warning naming both
//! resources.
//!
//! An HTTPRoute bound to a Gateway serves the hosts its `hostnames` share with the Gateway's
//! HTTP listeners (all of them, or those `sectionName` / `port` pick), or the listeners'
//! hostnames, or `*`. A Gateway that is not declared is taken to be weft's ingress with no
//! hostname of its own (a warning says so). A rule without backendRefs (nor a redirect) sends
//! to its parent Service (GAMMA, as Linkerd does) and answers 500 through a Gateway (the
//! Gateway API's HTTPRouteNoBackendRefs). A resource that cannot be honoured is rejected
//! whole; the others apply. One thing weft does not do as the Gateway API says: a backendRef to
//! an unknown Service is an error (the resource is rejected) where the spec answers 500 for
//! that backend's share, because the model has no per-destination fixed answer.
//!
//! Layout: `listeners` (Gateways and the hosts routes get through them), `rules` (an
//! HTTPRoute's rules as ranked routes), `filters` (HTTPRoute filters), `traffic_split` (SMI
//! TrafficSplits), `resolve` (everything together, once every file is read). The HTTPRoute's
//! serde shape is in `http_route`, shared with Linkerd's HTTPRoute.

mod filters;
mod listeners;
mod resolve;
mod rules;
mod traffic_split;

#[cfg(test)]
mod tests;

pub(crate) use resolve::{resolve, Placed};

use crate::diagnostic::Diagnostic;
use crate::doc::Parsed;
use crate::http_route::{HttpRouteSpec, Parent};
use crate::k8s::{is_policy_group, Metadata, Object};
use listeners::GatewaySpec;
use traffic_split::TrafficSplitSpec;

/// The HTTPRoute and Gateway `apiVersion`s read.
const GATEWAY_API_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];

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
    } else if kind == "TrafficSplit" && traffic_split::API_VERSIONS.contains(&api_version) {
        Some(serde_yaml_ng::from_str(text).map(Kind::TrafficSplit))
    } else {
        None
    }
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
                    ("tls", &o.spec.tls),
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

/// A backendRef (of a rule or a mirror) must name a Service: group `""` or `core` and kind
/// `Service`, the defaults. The error message otherwise.
fn service_backend(group: Option<&str>, kind: Option<&str>) -> Result<(), String> {
    let (group, kind) = (group.unwrap_or(""), kind.unwrap_or("Service"));
    if matches!(group, "" | "core") && kind == "Service" {
        Ok(())
    } else {
        Err(format!(
            "backend kind {kind} (group `{group}`) is not supported: only Services"
        ))
    }
}
