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
//! Layout: `virtual_service` (a VirtualService's shape), `rules` (an `http[]` rule as routes),
//! `matches` (a `match[]` block), `filters` (rewrite, redirect, direct response, mirrors, CORS,
//! header edits), `destination_rule` (subsets and policies), `traffic_policy` (a
//! DestinationRule's `trafficPolicy`), `gateway` (Gateways and their hosts), `resolve`
//! (everything together, once every file is read).

mod destination_rule;
mod filters;
mod gateway;
mod matches;
mod resolve;
mod rules;
mod sidecar;
mod tcp;
mod traffic_policy;
mod virtual_service;

#[cfg(test)]
mod tests;

pub(crate) use resolve::resolve;

use crate::diagnostic::Diagnostic;
use crate::doc::Parsed;
use crate::k8s::{Metadata, Object};
use crate::policy;
use destination_rule::DestinationRule;
use gateway::GatewaySpec;
use virtual_service::VirtualService;

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
        "Sidecar" => serde_yaml_ng::from_str(text).map(|o| Kind::Sidecar(Box::new(o))),
        _ => return None,
    })
}

#[derive(Debug)]
pub(crate) enum Kind {
    // Boxed: the three differ in size by hundreds of bytes.
    VirtualService(Box<Object<VirtualService>>),
    DestinationRule(Box<Object<DestinationRule>>),
    Gateway(Box<Object<GatewaySpec>>),
    Sidecar(Box<Object<sidecar::Sidecar>>),
}

/// A parsed document of this dialect, kept until every file has been read.
pub(crate) type Pending = Parsed<Kind>;

impl Pending {
    fn metadata(&self) -> &Metadata {
        match &self.kind {
            Kind::VirtualService(o) => &o.metadata,
            Kind::DestinationRule(o) => &o.metadata,
            Kind::Gateway(o) => &o.metadata,
            Kind::Sidecar(o) => &o.metadata,
        }
    }

    fn label(&self) -> String {
        let kind = match &self.kind {
            Kind::VirtualService(_) => "VirtualService",
            Kind::DestinationRule(_) => "DestinationRule",
            Kind::Gateway(_) => "Gateway",
            Kind::Sidecar(_) => "Sidecar",
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
            Kind::Sidecar(o) => {
                for (field, what) in o.spec.ignored() {
                    fields.push((field, what.to_string()));
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
                if spec.export_to.is_some() {
                    fields.push(("spec.exportTo".to_string(), not_yet()));
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
