//! The routing state one proxy serves from: every service it can call and their endpoints.
//! A snapshot is immutable; the control plane builds a new one for every change and the proxy
//! swaps it in whole.

use crate::names::{Identity, ServiceKey};
use crate::Labels;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How a proxy picks among a service's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// Power of two choices over a peak-EWMA latency estimate weighted by in-flight requests
    /// (Linkerd's default): steers away from slow or overloaded replicas.
    #[default]
    PeakEwma,
    /// Each endpoint in turn.
    RoundRobin,
}

/// One ready-to-serve replica: where its sidecar's inbound listener is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The replica's name (`WORKLOAD-i`).
    pub instance: String,
    pub workload: String,
    /// The sidecar's inbound listener: peers send traffic for this replica here.
    pub address: SocketAddr,
    pub labels: Labels,
    pub identity: Identity,
}

/// A service as a client proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    pub port: u16,
    pub lb: LoadBalancer,
    /// Only endpoints that are ready; a replica that is starting, failing or draining is absent.
    pub endpoints: Vec<Endpoint>,
    /// Tried in order; empty: every request goes to all endpoints.
    #[serde(default)]
    pub routes: Vec<crate::route::HttpRoute>,
}

/// Everything a proxy needs to route, at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Increases with every change; proxies acknowledge the version they applied.
    pub version: u64,
    pub services: Vec<Service>,
}

impl Snapshot {
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.iter().find(|s| &s.key == key)
    }
}
