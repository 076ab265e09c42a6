//! The Istio documents resolved once every file is read: DestinationRules first (their subsets
//! are what destinations name), then Gateways, then each VirtualService's rules bound to `mesh`
//! (routes of the services its hosts name) and to gateways (ingress routes per host).

use super::destination_rule::destination_rules;
use super::gateway::{gateways, GatewayKey, Namespaces};
use super::rules::translate_rule;
use super::tcp;
use super::virtual_service::VirtualService;
use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use crate::ingress::{intersect, HostRoutes};
use crate::services::Services;
use crate::valid;
use model::{ServiceKey, ServicePolicy, ServiceRoutes, ServiceSpec, ServiceTcpRoutes};
use std::collections::HashMap;

/// What the Istio documents translate into.
#[derive(Default)]
pub(crate) struct Resolved {
    pub routes: Vec<ServiceRoutes>,
    /// Connection routes (`tls[]`, `tcp[]`) per service.
    pub tcp_routes: Vec<ServiceTcpRoutes>,
    /// The VirtualService (`VirtualService NS/NAME`) that routes each service.
    pub owners: HashMap<ServiceKey, String>,
    pub policies: Vec<ServicePolicy>,
    /// Routes bound to gateways, per ingress host.
    pub ingress: Vec<HostRoutes>,
    /// Sidecars' outbound traffic policies.
    pub outbound_policies: Vec<model::ScopedOutboundPolicy>,
    /// Sidecars' egress hosts.
    pub egress: Vec<model::ScopedEgress>,
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
    let sidecars = super::sidecar::sidecars(pending, rejected);
    out.outbound_policies = sidecars.outbound_policies;
    out.egress = sidecars.egress;

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
            let before = errors.len();
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
            if errors.len() == before {
                let field = format!("spec.http[{i}]");
                valid::routes(&doc, &field, &rule, services.checked(), &mut errors);
            }
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

        let connections = !vs.spec.tcp.is_empty() || !vs.spec.tls.is_empty();
        let hosts_keys: Vec<ServiceKey> = keys.iter().map(|(k, _)| k.clone()).collect();
        let tcp_rules = tcp::translate(
            &doc,
            &vs.spec,
            &label,
            namespace,
            &hosts_keys,
            &services,
            &subsets,
            &mut errors,
        );
        if connections && !mesh {
            notes.push(doc.error(
                if vs.spec.tls.is_empty() {
                    "spec.tcp"
                } else {
                    "spec.tls"
                },
                format!(
                    "{label}: its tcp and tls rules are bound only to gateways, and weft's \
                     ingress routes HTTP only; they are ignored"
                ),
            ));
        }

        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        warnings.extend(notes);
        for (key, at) in keys {
            vs_at.insert(key.clone(), at);
            if !tcp_rules.is_empty() {
                out.tcp_routes.push(ServiceTcpRoutes {
                    service: key.clone(),
                    routes: tcp_rules.clone(),
                });
            }
            // A VirtualService with connection rules only leaves the service's HTTP routing
            // to the other APIs.
            if vs.spec.http.is_empty() && connections {
                continue;
            }
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
