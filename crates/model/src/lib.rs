//! weft's own mesh types — what a mesh *is*, independent of any YAML dialect or wire format.
//!
//! Layout:
//! - [`mesh`]: the declared mesh (services, workloads, replicas) as `weft up` runs it.
//! - [`snapshot`]: the immutable routing state a proxy serves from.
//! - [`names`]: host/authority parsing and the service-name forms a client may use.
//! - [`route`]: HTTP routes — matches and weighted destinations — in one shape for every API.

pub mod mesh;
pub mod names;
pub mod route;
pub mod snapshot;

pub use mesh::{MeshSpec, ServiceRoutes, ServiceSpec, WorkloadSpec};
pub use names::{Authority, Identity, ServiceKey};
pub use route::{
    Destination, Fault, HeaderMatch, HttpRoute, PathMatch, QueryMatch, RetryOn, RetryPolicy,
    RouteMatch, StringMatch,
};
pub use snapshot::{Endpoint, LoadBalancer, Service, Snapshot};

/// Labels as Kubernetes has them: ordered so that output and hashing are stable.
pub type Labels = std::collections::BTreeMap<String, String>;
