//! Inbound HTTPRoutes: an HTTPRoute (of either group) with Linkerd `Server` parents is an
//! inbound route of those Servers, its matches what AuthorizationPolicies targeting the route
//! authorize.

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::http_route::{translate_match, HttpRouteSpec, Match};
use crate::k8s::Object;
use model::RouteMatch;

/// An HTTPRoute with `Server` parents, translated when it is read.
#[derive(Debug)]
pub(crate) struct InboundRoute {
    /// `HTTPRoute NS/NAME` or `HTTPRoute.policy.linkerd.io NS/NAME`, for diagnostics.
    pub label: String,
    /// `NS/NAME`, as Servers and AuthorizationPolicies name it.
    pub name: String,
    /// Each Server parent (`NS/NAME`) and where it is written.
    pub servers: Vec<(String, Diagnostic)>,
    pub matches: Vec<RouteMatch>,
}

/// The inbound part of an HTTPRoute (`label` names it): `Ok(None)` without Server parents;
/// errors (the route is rejected) when a match cannot be honoured; notices for what an inbound
/// route ignores.
#[allow(clippy::type_complexity)]
pub(crate) fn inbound_route(
    doc: &Doc,
    label: String,
    o: &Object<HttpRouteSpec>,
) -> Result<Option<(InboundRoute, Vec<Diagnostic>)>, Vec<Diagnostic>> {
    let namespace = o.metadata.namespace();
    let servers: Vec<(String, Diagnostic)> = o
        .spec
        .parent_refs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_server())
        .map(|(i, r)| {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            (
                format!("{ns}/{}", r.name),
                doc.error(&format!("spec.parentRefs[{i}]"), ""),
            )
        })
        .collect();
    if servers.is_empty() {
        return Ok(None);
    }
    let server_only = servers.len() == o.spec.parent_refs.len();
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut matches = Vec::new();
    let default = [Match::default()];
    // No rules: the Gateway API's default rule, every request.
    let rules: Vec<(String, &[Match])> = if o.spec.rules.is_empty() {
        vec![("spec".to_string(), &default[..])]
    } else {
        o.spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let m = if r.matches.is_empty() {
                    &default[..]
                } else {
                    &r.matches[..]
                };
                (format!("spec.rules[{i}]"), m)
            })
            .collect()
    };
    for (field, list) in rules {
        for (j, m) in list.iter().enumerate() {
            let mfield = format!("{field}.matches[{j}]");
            if let Some(m) = translate_match(doc, &mfield, m, &mut errors) {
                matches.push(m);
            }
        }
    }
    for (i, rule) in o.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        for (name, set) in [
            ("filters", !rule.filters.is_empty()),
            ("timeouts", rule.timeouts.is_some()),
            ("retry", rule.retry.is_some()),
        ] {
            if set {
                notes.push(doc.error(
                    &format!("{field}.{name}"),
                    format!(
                        "{label}: {name} are not yet supported on an inbound route (Server \
                         parent); ignored there"
                    ),
                ));
            }
        }
        if server_only && !rule.backend_refs.is_empty() {
            notes.push(doc.error(
                &format!("{field}.backendRefs"),
                format!(
                    "{label}: backendRefs: an inbound route (Server parent) serves the Server's \
                     own workload; ignored"
                ),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let route = InboundRoute {
        label,
        name: format!("{namespace}/{}", o.metadata.name),
        servers,
        matches,
    };
    Ok(Some((route, notes)))
}
