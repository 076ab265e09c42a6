//! A VirtualService's `tls[]` and `tcp[]` rules as connection routes ([`model::TcpRoute`]):
//! `tls[]` first (they need the server name a TLS client sends, and Envoy's filter chains try
//! server names first too), then `tcp[]`, each in written order.

use super::destination_rule::Subsets;
use super::rules::destinations;
use super::virtual_service::{L4Match, RouteDestination, VirtualService};
use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::services::Services;
use model::{ServiceKey, TcpDestination, TcpMatch, TcpRoute};

/// The rules of `vs` for connections to the services `hosts` (those of its hosts that are
/// services of the mesh). Errors go to `errors`.
#[allow(clippy::too_many_arguments)]
pub(super) fn translate(
    doc: &Doc,
    vs: &VirtualService,
    label: &str,
    namespace: &str,
    hosts: &[ServiceKey],
    services: &Services,
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Vec<TcpRoute> {
    let tls = vs.tls.iter().enumerate().map(|(i, r)| {
        let field = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            errors.push(doc.error(
                &format!("{field}.match"),
                "a tls rule needs at least one match with sniHosts",
            ));
        }
        (field, &r.matches, &r.route, true)
    });
    let rules: Vec<_> = tls
        .collect::<Vec<_>>()
        .into_iter()
        .chain(
            vs.tcp
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("spec.tcp[{i}]"), &r.matches, &r.route, false)),
        )
        .collect();
    let mut out = Vec::with_capacity(rules.len());
    for (field, matches, route, tls) in rules {
        let matches = matches
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let at = format!("{field}.match[{j}]");
                l4_match(doc, &at, m, tls, hosts, services, errors)
            })
            .collect();
        out.push(TcpRoute {
            name: format!("{label} {}", field.trim_start_matches("spec.")),
            matches,
            destinations: tcp_destinations(
                doc, &field, route, namespace, services, subsets, errors,
            ),
        });
    }
    out
}

/// One match of a `tls[]` (`tls`: `sniHosts` required) or `tcp[]` rule.
fn l4_match(
    doc: &Doc,
    field: &str,
    m: &L4Match,
    tls: bool,
    hosts: &[ServiceKey],
    services: &Services,
    errors: &mut Vec<Diagnostic>,
) -> TcpMatch {
    let sni_hosts = m.sni_hosts.clone().unwrap_or_default();
    if tls && sni_hosts.is_empty() {
        errors.push(doc.error(
            &format!("{field}.sniHosts"),
            "a tls match needs at least one SNI host",
        ));
    }
    if !tls && m.sni_hosts.is_some() {
        errors.push(doc.error(
            &format!("{field}.sniHosts"),
            "sniHosts belongs in tls[] rules; a tcp[] rule cannot match a server name",
        ));
    }
    for (k, h) in sni_hosts.iter().enumerate() {
        let wildcard_ok =
            h == "*" || !h[1..].contains('*') && (!h.starts_with('*') || h.starts_with("*."));
        if h.is_empty() || !wildcard_ok {
            errors.push(doc.error(
                &format!("{field}.sniHosts[{k}]"),
                format!("`{h}` is not a server name: use NAME, *.SUFFIX or *"),
            ));
        }
    }
    // Ignoring either would make the match wider than written.
    for (name, set) in [
        ("destinationSubnets", m.destination_subnets.is_some()),
        ("gateways", m.gateways.is_some()),
    ] {
        if set {
            errors.push(doc.error(
                &format!("{field}.{name}"),
                format!("{name} is not yet supported in a connection match"),
            ));
        }
    }
    let port = m.port.and_then(|p| {
        let known: Vec<Vec<u16>> = hosts.iter().filter_map(|k| services.ports(k)).collect();
        let fits = known.is_empty() || known.iter().flatten().any(|q| u32::from(*q) == p);
        if p == 0 || p > 65535 {
            errors.push(doc.error(&format!("{field}.port"), "port must be between 1 and 65535"));
            None
        } else if !fits {
            errors.push(doc.error(
                &format!("{field}.port"),
                format!("no host of this VirtualService has port {p}"),
            ));
            None
        } else {
            u16::try_from(p).ok()
        }
    });
    TcpMatch {
        port,
        sni_hosts: sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
    }
}

/// A rule's `route[]`: weighted destinations as HTTP rules have them, each with its port.
fn tcp_destinations(
    doc: &Doc,
    field: &str,
    route: &[RouteDestination],
    namespace: &str,
    services: &Services,
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Vec<TcpDestination> {
    for (j, r) in route.iter().enumerate() {
        if r.headers.is_some() {
            errors.push(doc.error(
                &format!("{field}.route[{j}].headers"),
                "headers apply to HTTP only; a connection route cannot edit them",
            ));
        }
    }
    let found = destinations(
        doc, field, route, false, namespace, services, subsets, errors,
    );
    // `destinations` skips those naming no service; without errors the two line up.
    if found.len() != route.len() {
        return Vec::new();
    }
    found
        .into_iter()
        .zip(route)
        .map(|(to, r)| TcpDestination {
            to,
            port: r
                .destination
                .port
                .as_ref()
                .and_then(|p| u16::try_from(p.number).ok()),
        })
        .collect()
}
