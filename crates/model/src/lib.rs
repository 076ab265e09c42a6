//! weft's own mesh types — what a mesh *is*, independent of any YAML dialect or wire format.
//!
//! Layout:
//! - [`mesh`]: the declared mesh (services, workloads, replicas) as `weft up` runs it.
//! - [`snapshot`]: the immutable routing state a proxy serves from.
//! - [`names`]: host/authority parsing and the service-name forms a client may use.
//! - [`route`]: HTTP routes — matches, weighted destinations, filters — in one shape for every API.
//! - [`policy`]: per-service traffic policies — balancing, limits, ejection, retry budgets.
//! - [`security`]: mTLS modes, authorization policies and JWT rules, with their scopes.
//! - [`egress`]: which services a workload's proxy is told about (Istio Sidecar `egress.hosts`).
//! - [`tap`]: one request as a proxy's live tap reports it.
//! - [`canary`]: progressive rollouts (`kind: Canary`) and the state the controller keeps.
//! - [`credential`]: checking the admin credential (`Authorization: Bearer`).
//! - [`valid`]: the value checks `config`, the control plane and the proxy share (header names
//!   and values, URIs, regexes, numeric ranges, whole routes, policies and JWT rules), and
//!   [`jwks`]: the JWKS key sets they verify tokens with.

pub mod canary;
pub mod credential;
pub mod egress;
pub mod jwks;
pub mod mesh;
pub mod names;
pub mod policy;
pub mod route;
pub mod security;
pub mod snapshot;
pub mod tap;
pub mod valid;

pub use egress::{EgressHost, ScopedEgress};
pub use mesh::{
    Capture, Interception, MeshSpec, OutboundPolicy, Placement, PortSpec, Protocol, RestartPolicy,
    ScopedOutboundPolicy, ServiceRoutes, ServiceSpec, ServiceTcpRoutes, WorkloadSpec,
};
pub use names::{Authority, Identity, ServiceKey};
pub use policy::{
    ConnectionPool, FailureAccrual, HashOn, OutlierDetection, RetryBudget, ServicePolicy,
    SubsetPolicy, TrafficPolicy,
};
pub use route::{
    Cors, Destination, DirectResponse, Fault, HeaderEdits, HeaderMatch, HttpRoute, Mirror,
    PathMatch, PathRewrite, QueryMatch, Redirect, ResponseClass, RetryOn, RetryPolicy, Rewrite,
    RouteMatch, StringMatch, TcpDestination, TcpMatch, TcpRoute,
};
pub use snapshot::{Endpoint, LoadBalancer, Service, Snapshot, VirtualHost};

/// Labels as Kubernetes has them: ordered so that output and hashing are stable.
pub type Labels = std::collections::BTreeMap<String, String>;
