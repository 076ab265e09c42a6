//! The routing state one proxy serves from: every service it can call and their endpoints.
//! A snapshot is immutable; the control plane builds a new one for every change and the proxy
//! swaps it in whole.

use crate::names::{Identity, ServiceKey};
use crate::policy::{SubsetPolicy, TrafficPolicy};
use crate::security::SecuritySpec;
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
    /// Power of two choices over in-flight requests (Istio's recommended `LEAST_REQUEST`).
    LeastRequest,
    /// Uniformly at random.
    Random,
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
    /// Connection routes (tunnels, TCP), tried in order; empty: every connection goes to all
    /// endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<crate::route::TcpRoute>,
    /// The service's traffic policy (DestinationRule, ServiceProfile, annotations).
    #[serde(default, skip_serializing_if = "TrafficPolicy::is_empty")]
    pub policy: TrafficPolicy,
    /// Subsets with their own policy (already merged over `policy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<SubsetPolicy>,
    /// The address its clients' captured connections are sent to (transparent interception);
    /// names resolve to it inside every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<std::net::Ipv4Addr>,
    /// Every port with what it carries (empty: `port`, HTTP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::mesh::PortSpec>,
}

impl Service {
    /// What `port` carries (HTTP when the service does not say).
    pub fn protocol_of(&self, port: u16) -> Option<crate::mesh::Protocol> {
        if self.ports.is_empty() {
            return (port == self.port).then_some(crate::mesh::Protocol::Http);
        }
        self.ports
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.protocol)
    }
}

/// Routes for requests entering the mesh through the ingress gateway with one of `hosts` as
/// their Host (Istio Gateway + VirtualService `gateways`, Gateway API HTTPRoute with a Gateway
/// parent). `*.example.com` matches one or more leading labels; `*` matches any host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHost {
    /// Where it came from, for `weft routes` and logs.
    pub name: String,
    pub hosts: Vec<String>,
    pub routes: Vec<crate::route::HttpRoute>,
}

/// Everything a proxy needs to route, at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Increases with every change; proxies acknowledge the version they applied.
    pub version: u64,
    pub services: Vec<Service>,
    /// Host-based routes the ingress gateway tries before falling back to service names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<VirtualHost>,
    /// Every security policy of the mesh; each proxy applies those whose scope selects it.
    #[serde(default = "SecuritySpec::new")]
    pub security: SecuritySpec,
    /// What sidecars do with captured traffic to addresses that are no service.
    #[serde(default)]
    pub outbound_policy: crate::mesh::OutboundPolicy,
    /// Istio Sidecar resources' outbound policies, for the workloads they select.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_policies: Vec<crate::mesh::ScopedOutboundPolicy>,
    /// Istio Sidecar resources' egress hosts: the control plane sends each proxy the services
    /// its Sidecar admits ([`Snapshot::scoped`]). Not sent to proxies: what one receives is
    /// already filtered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<crate::egress::ScopedEgress>,
    /// How proxies no Sidecar narrows are scoped (the Mesh file's `spec.scope`). Not sent to
    /// proxies.
    #[serde(default, skip_serializing_if = "is_whole")]
    pub scope: crate::egress::MeshScope,
    /// The services each service declares it calls (`dependsOn`). Not sent to proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declared: Vec<crate::egress::Declared>,
    /// What a proxy receives: it is told about some services only and may ask its control
    /// plane for another when a request names one it lacks (`spec.scope: observed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

fn is_whole(s: &crate::egress::MeshScope) -> bool {
    *s == crate::egress::MeshScope::Whole
}

impl Snapshot {
    /// Whether `other` says the same as this one, whatever their versions: a new snapshot is
    /// only sent to proxies when it differs. Every field is compared (a field added to
    /// `Snapshot` must be added here, which the destructuring enforces).
    pub fn same_content(&self, other: &Snapshot) -> bool {
        let Snapshot {
            version: _,
            services,
            gateway,
            security,
            outbound_policy,
            outbound_policies,
            egress,
            scope,
            declared,
            on_demand,
        } = self;
        services == &other.services
            && gateway == &other.gateway
            && security == &other.security
            && outbound_policy == &other.outbound_policy
            && outbound_policies == &other.outbound_policies
            && egress == &other.egress
            && scope == &other.scope
            && declared == &other.declared
            && on_demand == &other.on_demand
    }

    /// What a proxy told about only the services at `indices` (ascending, from
    /// [`crate::egress::visible`]) receives: those services, the gateway's routes if it is the
    /// ingress (`gateway`), every security and outbound policy (each proxy applies those that
    /// select it), and no egress scopes or declarations (they are the control plane's
    /// business); `on_demand`: it may ask for more.
    pub fn scoped(&self, indices: &[usize], gateway: bool, on_demand: bool) -> Snapshot {
        Snapshot {
            version: self.version,
            services: indices
                .iter()
                .filter_map(|&i| self.services.get(i).cloned())
                .collect(),
            gateway: if gateway {
                self.gateway.clone()
            } else {
                Vec::new()
            },
            security: self.security.clone(),
            outbound_policy: self.outbound_policy,
            outbound_policies: self.outbound_policies.clone(),
            egress: Vec::new(),
            scope: Default::default(),
            declared: Vec::new(),
            on_demand,
        }
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.iter().find(|s| &s.key == key)
    }
}
