//! weft's own mesh types — what a mesh *is*, independent of any YAML dialect or wire format.
//!
//! Layout:
//! - [`mesh`]: the declared mesh (services, workloads, replicas) as `weft up` runs it.
//! - [`snapshot`]: the immutable routing state a proxy serves from.
//! - [`names`]: host/authority parsing and the service-name forms a client may use.

pub mod mesh;
pub mod names;
pub mod snapshot;

pub use mesh::{MeshSpec, ServiceSpec, WorkloadSpec};
pub use names::{Authority, Identity, ServiceKey};
pub use snapshot::{Endpoint, LoadBalancer, Service, Snapshot};

/// Labels as Kubernetes has them: ordered so that output and hashing are stable.
pub type Labels = std::collections::BTreeMap<String, String>;
