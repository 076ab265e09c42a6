//! A snapshot compiled for the hot path: services indexed by key, each with its balancer and the
//! live state of its endpoints. Built off the data path whenever a snapshot arrives; requests
//! read it through one `ArcSwap` load.

use crate::balance::{self, EndpointState};
use crate::route::{Route, RouteError};
use http::request::Parts;
use model::{Authority, LoadBalancer, ServiceKey, Snapshot};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// A set of endpoints and how to choose among them: a whole service, or the subset of one a
/// route's destination selects.
pub struct Backend {
    /// What it is, for messages: `reviews.default` or `reviews.default (subset v2)`.
    pub name: String,
    pub lb: LoadBalancer,
    pub endpoints: Vec<Arc<EndpointState>>,
    rr_next: AtomicUsize,
}

impl Backend {
    /// The endpoint for the next attempt, never one of `exclude` (already tried).
    fn new(name: String, lb: LoadBalancer, endpoints: Vec<Arc<EndpointState>>) -> Self {
        Backend {
            name,
            lb,
            endpoints,
            rr_next: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self, exclude: &[usize]) -> Option<(usize, &Arc<EndpointState>)> {
        match self.lb {
            LoadBalancer::PeakEwma | LoadBalancer::LeastRequest | LoadBalancer::Random => {
                balance::pick_p2c(&self.endpoints, exclude)
            }
            LoadBalancer::RoundRobin => {
                balance::pick_round_robin(&self.endpoints, &self.rr_next, exclude)
            }
        }
    }
}

/// One service as requests see it: its port, all its endpoints, and its routes.
pub struct Service {
    pub key: ServiceKey,
    pub port: u16,
    pub all: Arc<Backend>,
    pub routes: Vec<Route>,
}

impl Service {
    /// The rule this request falls under (if the service has rules) and the endpoints it goes
    /// to: that rule's destination drawn by weight, or all endpoints when the service has no
    /// rules. `None`: the service has rules and none matched.
    pub fn route(&self, req: &Parts) -> Option<(Option<&Route>, &Arc<Backend>)> {
        if self.routes.is_empty() {
            return Some((None, &self.all));
        }
        let r = self.routes.iter().find(|r| r.matches(req))?;
        Some((Some(r), r.pick()))
    }
}

/// Everything a request needs to be routed, at one snapshot version.
#[derive(Default)]
pub struct RouteTable {
    pub snapshot: Arc<Snapshot>,
    services: HashMap<ServiceKey, Arc<Service>>,
}

impl RouteTable {
    /// Compiles `snapshot`, carrying over the state (latency estimates, in-flight counts, pooled
    /// connections) of endpoints that `previous` already had.
    pub fn compile(snapshot: Snapshot, previous: &RouteTable) -> Result<RouteTable, RouteError> {
        let mut known: HashMap<(&ServiceKey, SocketAddr, &str), &Arc<EndpointState>> =
            HashMap::new();
        for svc in previous.services.values() {
            for e in &svc.all.endpoints {
                known.insert((&svc.key, e.endpoint.address, &e.endpoint.instance), e);
            }
        }
        // First every service's endpoints, then routes, which may point at other services.
        let mut alls: HashMap<&ServiceKey, Arc<Backend>> = HashMap::new();
        for svc in &snapshot.services {
            let (mut kept, mut fresh) = (Vec::new(), Vec::new());
            for ep in &svc.endpoints {
                match known.get(&(&svc.key, ep.address, ep.instance.as_str())) {
                    Some(state) if state.endpoint == *ep => kept.push((*state).clone()),
                    _ => fresh.push(ep.clone()),
                }
            }
            let initial = balance::initial_rtt_ns(&kept);
            let mut endpoints = kept;
            endpoints.extend(
                fresh
                    .into_iter()
                    .map(|ep| Arc::new(EndpointState::new(ep, initial))),
            );
            endpoints.sort_by(|a, b| a.endpoint.instance.cmp(&b.endpoint.instance));
            alls.insert(
                &svc.key,
                Arc::new(Backend::new(svc.key.to_string(), svc.lb, endpoints)),
            );
        }
        let mut services = HashMap::with_capacity(snapshot.services.len());
        for svc in &snapshot.services {
            let mut routes = Vec::with_capacity(svc.routes.len());
            for r in &svc.routes {
                routes.push(Route::compile(r, |d| {
                    let Some(all) = alls.get(&d.service) else {
                        return Arc::new(Backend::new(d.service.to_string(), svc.lb, Vec::new()));
                    };
                    if d.labels.is_empty() {
                        return all.clone();
                    }
                    let endpoints = all
                        .endpoints
                        .iter()
                        .filter(|e| {
                            d.labels
                                .iter()
                                .all(|(k, v)| e.endpoint.labels.get(k) == Some(v))
                        })
                        .cloned()
                        .collect();
                    let name = match &d.subset {
                        Some(s) => format!("{} (subset {s})", d.service),
                        None => d.service.to_string(),
                    };
                    Arc::new(Backend::new(name, all.lb, endpoints))
                })?);
            }
            services.insert(
                svc.key.clone(),
                Arc::new(Service {
                    key: svc.key.clone(),
                    port: svc.port,
                    all: alls[&svc.key].clone(),
                    routes,
                }),
            );
        }
        Ok(RouteTable {
            snapshot: Arc::new(snapshot),
            services,
        })
    }

    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    /// The service an authority names (`NAME`, `NAME.NS`, `NAME.NS.svc.cluster.local`, with or
    /// without a port), a bare name resolving in `namespace`.
    pub fn resolve(&self, authority: &Authority<'_>, namespace: &str) -> Option<&Arc<Service>> {
        self.services.get(&authority.service_key(namespace)?)
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    //! Test helpers for building backends without a snapshot.
    use super::*;

    pub fn backend(name: &str, lb: LoadBalancer) -> Backend {
        Backend::new(name.to_string(), lb, Vec::new())
    }
}
