//! A snapshot compiled for the hot path: services indexed by key, each with its balancer and the
//! live state of its endpoints. Built off the data path whenever a snapshot arrives; requests
//! read it through one `ArcSwap` load.

use crate::balance::{self, EndpointState};
use model::{Authority, LoadBalancer, ServiceKey, Snapshot};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// One service as requests see it.
pub struct Backend {
    pub key: ServiceKey,
    pub port: u16,
    pub lb: LoadBalancer,
    pub endpoints: Vec<Arc<EndpointState>>,
    rr_next: AtomicUsize,
}

impl Backend {
    /// The endpoint for the next attempt, never one of `exclude` (already tried).
    pub fn pick(&self, exclude: &[usize]) -> Option<(usize, &Arc<EndpointState>)> {
        match self.lb {
            LoadBalancer::PeakEwma => balance::pick_p2c(&self.endpoints, exclude),
            LoadBalancer::RoundRobin => {
                balance::pick_round_robin(&self.endpoints, &self.rr_next, exclude)
            }
        }
    }
}

/// Everything a request needs to be routed, at one snapshot version.
#[derive(Default)]
pub struct RouteTable {
    pub snapshot: Arc<Snapshot>,
    services: HashMap<ServiceKey, Arc<Backend>>,
}

impl RouteTable {
    /// Compiles `snapshot`, carrying over the state (latency estimates, in-flight counts, pooled
    /// connections) of endpoints that `previous` already had.
    pub fn compile(snapshot: Snapshot, previous: &RouteTable) -> RouteTable {
        let mut known: HashMap<(&ServiceKey, SocketAddr, &str), &Arc<EndpointState>> =
            HashMap::new();
        for b in previous.services.values() {
            for e in &b.endpoints {
                known.insert((&b.key, e.endpoint.address, &e.endpoint.instance), e);
            }
        }
        let mut services = HashMap::with_capacity(snapshot.services.len());
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
            services.insert(
                svc.key.clone(),
                Arc::new(Backend {
                    key: svc.key.clone(),
                    port: svc.port,
                    lb: svc.lb,
                    endpoints,
                    rr_next: AtomicUsize::new(0),
                }),
            );
        }
        RouteTable {
            snapshot: Arc::new(snapshot),
            services,
        }
    }

    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    /// The service an authority names (`NAME`, `NAME.NS`, `NAME.NS.svc.cluster.local`, with or
    /// without a port), a bare name resolving in `namespace`.
    pub fn resolve(&self, authority: &Authority<'_>, namespace: &str) -> Option<&Arc<Backend>> {
        self.services.get(&authority.service_key(namespace)?)
    }
}
