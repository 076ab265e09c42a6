//! The snapshot builder: what every proxy gets, as a pure function of the declared mesh (services,
//! routes, policies, gateway, security) and the proxies connected (which sidecars are ready to
//! serve, or what a cluster's EndpointSlices say serves: [`Discovered`]). Whatever keeps the
//! configuration and the registrations hands them here; the builder does not know where they
//! came from.

use crate::registry::{ProxyRecord, Registrations};
use model::route::{Destination, HttpRoute, RetryPolicy};
use model::{Endpoint, MeshSpec, Service, ServiceKey, Snapshot};
use std::collections::BTreeMap;

/// Endpoints and virtual IPs found outside the proxies' registrations: a Kubernetes cluster's
/// EndpointSlices (the ready addresses of each Service's meshed pods) and ClusterIPs. A service
/// listed here takes its endpoints from here, not from the sidecars registered for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    pub endpoints: BTreeMap<ServiceKey, Vec<Endpoint>>,
    pub vips: BTreeMap<ServiceKey, std::net::Ipv4Addr>,
}

/// The name of the catch-all route a service without routes gets when the mesh has a default
/// retry policy (`weft routes` and the proxies' `/routes` show it).
pub const DEFAULT_ROUTE: &str = "default route (spec.defaultRetries)";

/// The snapshot every proxy gets: each declared service with the sidecars that are ready to
/// serve it, and the ids of those sidecars' registrations. When a replica has several
/// registrations, the newest wins (its proxy restarted or reconnected), except that one at
/// another address that cannot serve yet leaves a serving one listed (a replacement is
/// starting beside it). A service [`Discovered`] lists has the endpoints listed there; its
/// sidecars' registrations count as listed when their instance is one of them.
pub fn build(
    spec: &MeshSpec,
    proxies: &BTreeMap<u64, ProxyRecord>,
    discovered: &Discovered,
    version: u64,
) -> (Snapshot, Vec<u64>) {
    let mut listed = Vec::new();
    let vips = match spec.interception {
        model::Interception::Transparent => model::mesh::service_vips(
            spec.services
                .iter()
                .map(|s| s.key())
                .collect::<Vec<_>>()
                .iter(),
        ),
        model::Interception::ProxyEnv => BTreeMap::new(),
    };
    // Each service's sidecars, found in one pass over the proxies (in id order).
    let mut sidecars: std::collections::HashMap<(&str, &str), Vec<(u64, &ProxyRecord)>> =
        std::collections::HashMap::new();
    for (id, p) in proxies {
        if p.node.mode == "sidecar" {
            sidecars
                .entry((p.node.service.as_str(), p.node.namespace.as_str()))
                .or_default()
                .push((*id, p));
        }
    }
    let services = spec
        .services
        .iter()
        .map(|svc| {
            let mut newest: BTreeMap<&str, (u64, &ProxyRecord)> = BTreeMap::new();
            let serving = |p: &ProxyRecord| p.ready && !p.draining;
            let own = sidecars.get(&(svc.name.as_str(), svc.namespace.as_str()));
            if let Some(found) = discovered.endpoints.get(&svc.key()) {
                for &(id, p) in own.into_iter().flatten() {
                    if found.iter().any(|e| e.instance == p.node.instance) {
                        listed.push(id);
                    }
                }
            }
            for &(id, p) in own.into_iter().flatten() {
                {
                    // A newer registration at another address (a replacement started beside
                    // the old process) that cannot serve yet does not displace one that
                    // serves: the old one stays listed until the new one is ready. At the same
                    // address it is the same proxy restarted (or moved to another
                    // control-plane replica), and the old registration is stale once the new
                    // one has said how it is (its first health report follows its hello at
                    // once): until then the address stays listed as it was.
                    let displaces = newest.get(p.node.instance.as_str()).is_none_or(|(_, q)| {
                        serving(p)
                            || !serving(q)
                            || (p.reported && p.node.inbound == q.node.inbound)
                    });
                    if displaces {
                        newest.insert(&p.node.instance, (id, p));
                    }
                }
            }
            let endpoints = match discovered.endpoints.get(&svc.key()) {
                Some(found) => found.clone(),
                None => newest
                    .values()
                    .filter(|(_, p)| p.ready && !p.draining)
                    .filter_map(|(id, p)| {
                        let address = p.node.inbound?;
                        listed.push(*id);
                        Some(Endpoint {
                            instance: p.node.instance.clone(),
                            workload: p.node.workload.clone(),
                            address,
                            labels: p.node.labels.clone(),
                            identity: p.node.identity.clone(),
                        })
                    })
                    .collect(),
            };
            let routes = spec
                .routes
                .iter()
                .find(|r| r.service == svc.key())
                .map(|r| r.routes.clone())
                .unwrap_or_default();
            let routes = with_default_retries(routes, svc.key(), spec.default_retries.as_ref());
            let tcp_routes = spec
                .tcp_routes
                .iter()
                .find(|r| r.service == svc.key())
                .map(|r| r.routes.clone())
                .unwrap_or_default();
            let (policy, subsets) = spec
                .policies
                .iter()
                .find(|p| p.service == svc.key())
                .map(|p| (p.policy.clone(), p.subsets.clone()))
                .unwrap_or_default();
            Service {
                key: svc.key(),
                port: svc.port,
                lb: svc.lb,
                endpoints,
                routes,
                tcp_routes,
                policy,
                subsets,
                vip: discovered
                    .vips
                    .get(&svc.key())
                    .or_else(|| vips.get(&svc.key()))
                    .copied(),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| model::PortSpec {
                        why: String::new(),
                        ..p.clone()
                    })
                    .collect(),
            }
        })
        .collect();
    let snapshot = Snapshot {
        version,
        services,
        gateway: spec
            .gateway
            .iter()
            .map(|vh| model::VirtualHost {
                routes: vh
                    .routes
                    .iter()
                    .cloned()
                    .map(|r| retried(r, spec.default_retries.as_ref()))
                    .collect(),
                ..vh.clone()
            })
            .collect(),
        security: spec.security.clone(),
        outbound_policy: spec.outbound_policy,
        outbound_policies: spec.outbound_policies.clone(),
        egress: spec.egress.clone(),
        scope: spec.scope,
        declared: spec
            .services
            .iter()
            .filter_map(|s| {
                Some(model::egress::Declared {
                    service: s.key(),
                    hosts: s.depends_on.clone()?,
                })
            })
            .collect(),
        on_demand: false,
    };
    (snapshot, listed)
}

/// A service's routes under the mesh's default retry policy `default`: each forwarding route
/// without a policy of its own gets it (a route's own, even `attempts: 0`, wins, as a
/// VirtualService's `retries` does in Istio); a service without routes gets one catch-all route
/// to all its endpoints that carries it, so that requests no route was written for are retried
/// too. Without a default the routes are as written.
fn with_default_retries(
    routes: Vec<HttpRoute>,
    service: ServiceKey,
    default: Option<&RetryPolicy>,
) -> Vec<HttpRoute> {
    let Some(policy) = default else {
        return routes;
    };
    if routes.is_empty() {
        return vec![HttpRoute {
            name: DEFAULT_ROUTE.to_string(),
            destinations: vec![Destination::service(service, 100)],
            retry: Some(policy.clone()),
            ..HttpRoute::default()
        }];
    }
    routes.into_iter().map(|r| retried(r, default)).collect()
}

/// `route` with the default retry policy if it forwards and has none of its own.
fn retried(mut route: HttpRoute, default: Option<&RetryPolicy>) -> HttpRoute {
    let forwards = !route.destinations.is_empty()
        && route.redirect.is_none()
        && route.direct_response.is_none();
    if route.retry.is_none() && forwards {
        route.retry = default.cloned();
    }
    route
}

/// Records which proxies the snapshot at `version` lists as endpoints: a proxy newly listed is
/// listed since `version`, one no longer listed is not.
pub fn mark_listed(proxies: &mut dyn Registrations, listed: &[u64], version: u64) {
    let listed: std::collections::HashSet<u64> = listed.iter().copied().collect();
    let changed: Vec<(u64, ProxyRecord)> = proxies
        .all()
        .iter()
        .filter_map(|(id, p)| {
            let since = match (listed.contains(id), p.listed_since) {
                (false, None) | (true, Some(_)) => return None,
                (false, Some(_)) => None,
                (true, None) => Some(version),
            };
            let mut p = p.clone();
            p.listed_since = since;
            Some((*id, p))
        })
        .collect();
    for (id, p) in changed {
        proxies.put(id, p);
    }
    proxies.settle();
}
