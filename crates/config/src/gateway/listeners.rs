//! Gateway API Gateways: their serde shape, their checks, and the hosts an HTTPRoute bound to one
//! serves: those its `hostnames` share with the Gateway's HTTP listeners (all of them, or those
//! `sectionName` / `port` pick), or the listeners' hostnames, or `*`. A Gateway that is not
//! declared is taken to be weft's ingress with no hostname of its own (a warning says so).

use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use crate::doc::Doc;
use crate::http_route::{HttpRouteSpec, ParentRef};
use crate::ingress::intersect;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;

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
    /// Gateway-level TLS (client certificates to backends, frontend validation): weft's
    /// ingress serves plain HTTP.
    pub tls: Option<Value>,
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
    /// Which namespaces' routes may attach: `Same` (the default), `All` or `Selector`.
    pub(super) fn from(&self) -> &str {
        self.allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref()?.from.as_deref())
            .unwrap_or("Same")
    }

    /// Whether an HTTPRoute of `namespace` may attach (a `Selector` is not evaluated: any).
    pub(super) fn allows(&self, namespace: &str, gateway_namespace: &str) -> bool {
        self.from() != "Same" || namespace == gateway_namespace
    }

    pub(super) fn is_http(&self) -> bool {
        self.protocol == "HTTP"
    }
}

/// A declared Gateway: its listeners (HTTP or not, for messages) and namespace.
pub(super) struct DeclaredGateway<'a> {
    namespace: &'a str,
    listeners: &'a [Listener],
}

/// The declared Gateways by (namespace, name), each with where it is defined.
pub(super) type Gateways<'a> = HashMap<(String, String), (DeclaredGateway<'a>, String)>;

/// Every declared Gateway by (namespace, name); one with errors is rejected.
pub(super) fn gateways<'a>(pending: &'a [Pending], rejected: &mut Vec<Diagnostic>) -> Gateways<'a> {
    let mut out: Gateways = HashMap::new();
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
pub(super) fn gateway_hosts(
    doc: &Doc,
    field: &str,
    parent: &ParentRef,
    route: &HttpRouteSpec,
    namespace: &str,
    label: &str,
    gateways: &Gateways,
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
