//! The Gateway API's and SMI's documents resolved once every file is read: HTTPRoutes bound to
//! mesh Services (GAMMA) and TrafficSplits into [`ServiceRoutes`], HTTPRoutes bound to Gateways
//! into ingress routes per host, with the precedence between the APIs that route one service.

use super::listeners::{gateway_hosts, gateways};
use super::rules::{http_route_rules, is_timestamp, order_by_gateway_api_precedence, Age, Ranked};
use super::traffic_split::traffic_splits;
use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use crate::http_route::Parent;
use crate::ingress::HostRoutes;
use crate::services::{Services, PRECEDENCE};
use model::{HttpRoute, ServiceKey, ServiceRoutes, ServiceSpec};
use std::collections::HashMap;

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
/// `owners` names the VirtualService of each of them), and returns the HTTPRoutes' ingress
/// routes per host. `services` is `None` when there is no Mesh document, and then names are not
/// checked. A resource with errors is rejected (its errors go to `rejected`) and the others
/// still apply; `warnings` gets what applies but may surprise (precedence, undeclared
/// Gateways).
/// The resources whose routes a service got here (label, where: the parentRef naming the
/// service, a TrafficSplit's `spec.service`), for a warning at them when a later API wins.
pub(crate) type Placed = HashMap<ServiceKey, Vec<(String, Diagnostic)>>;

pub(crate) fn resolve(
    services: Option<&[ServiceSpec]>,
    pending: &[Pending],
    routes: &mut Vec<ServiceRoutes>,
    owners: &HashMap<ServiceKey, String>,
    rejected: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
    placed: &mut Placed,
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
            all.extend(ranked.iter().map(|r| Ranked {
                route: r.for_service(&key),
                to_parent: false,
                ..r.clone()
            }));
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
            all.extend(ranked.iter().map(|r| Ranked {
                route: r.for_gateway(),
                to_parent: false,
                ..r.clone()
            }));
            sources.push((label.clone(), at));
        }
    }

    // TrafficSplits: one route per apex service.
    let mut splits: Table<Option<(HttpRoute, String, Diagnostic)>> = Table::default();
    for s in traffic_splits(pending, &services, rejected) {
        *splits.entry(&s.apex) = Some((s.route, s.label, s.at));
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
        placed.insert(key.clone(), sources.clone());
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
        placed.insert(key.clone(), vec![(label, at)]);
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
