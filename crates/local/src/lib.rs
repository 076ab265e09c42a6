//! weft up's supervisor: starts the control plane in-process, apps, sidecars, the ingress and
//! Prometheus from typed launch descriptions, supervises and stops them in order; mesh records
//! under $WEFT_HOME.
//!
//! Layout:
//! - [`up`]: `weft up`: runs a whole mesh as local processes, waits until it is ready, and
//!   stops it in order.
//! - [`meshes`]: the directory where running meshes record their addresses, so the CLI finds them.
//! - [`prometheus`]: `weft up --prometheus`: Prometheus's config and the scrape targets it
//!   discovers (every proxy's admin `/metrics`), kept up to date from the registry.

pub mod meshes;
pub mod prometheus;
mod up;

pub use up::{
    up, UpError, UpOptions, ACCESS_LOG_ANNOTATIONS, DEFAULT_READY_TIMEOUT, INGRESS_NAME,
    INGRESS_NAMESPACE, JOIN_TOKEN_ENV,
};
