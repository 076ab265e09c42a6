//! weft up's supervisor: starts the control plane in-process, apps, sidecars, the ingress and
//! Prometheus from typed launch descriptions, supervises and stops them in order; mesh records
//! under $WEFT_HOME.
//!
//! Layout:
//! - `up` ([`up()`]): `weft up`: the start order, the wait until the mesh is ready, the stop
//!   order.
//! - [`launch`]: typed launch descriptions ([`ProxyLaunch`] for a `weft proxy`, an app's
//!   command, port and environment) and how a process is spawned. The ports: proxies bind
//!   port 0 and report what they got; an app's port is drawn below the kernel's ephemeral
//!   range and checked free, as the app binds it only later.
//! - `supervise`: restarts with backoff, and stopping a group of processes, or one (SIGTERM,
//!   then SIGKILL after the drain timeout).
//! - `reconcile`: live changes to the Mesh document (`--watch`): replicas started, drained and
//!   replaced one at a time until the processes match the declared services.
//! - [`output`]: `weft up`'s stderr: children's lines and its own, written from one thread
//!   through a bounded queue, dropped (and counted) rather than waited for.
//! - [`pods`]: transparent interception: the mesh's bridge, a network namespace per replica,
//!   its capture rules and hosts file, and the cleanup of what a dead `weft up` left.
//! - [`host`]: `weft host join`: a host of a mesh run from its control plane's API: the replicas
//!   placed on it and their sidecars, joined with a bootstrap token.
//! - [`meshes`]: the directory where running meshes record their addresses, so the CLI finds them.
//! - [`prometheus`]: `weft up --prometheus`: Prometheus's config and the scrape targets it
//!   discovers (every proxy's admin `/metrics`), kept up to date from the registry.

pub mod api_call;
pub mod host;
pub mod launch;
pub mod meshes;
pub mod output;
pub mod pods;
pub mod prometheus;
mod reconcile;
mod supervise;
mod up;

pub use launch::{ProxyLaunch, ProxyMode, JOIN_TOKEN_ENV};
pub use up::{
    up, UpError, UpOptions, ACCESS_LOG_ANNOTATIONS, DEFAULT_READY_TIMEOUT, INGRESS_NAME,
    INGRESS_NAMESPACE,
};
