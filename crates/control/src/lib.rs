//! weft's control plane.
//!
//! Layout:
//! - [`registry`]: the declared mesh plus every connected proxy (where it listens, whether it is
//!   ready, which snapshot version it acked); builds the snapshot proxies route from.
//! - [`snapshot`]: the snapshot builder: the declared mesh and the ready sidecars → a snapshot.
//! - [`push`]: the gRPC `Discovery` stream: hello, snapshots out, acks/health/drain in.
//! - [`view`]: each proxy's snapshot, narrowed to its Istio Sidecar's egress hosts, built and
//!   encoded once per distinct view.
//! - [`http_api`]: the JSON API the CLI reads (`/status`, `/snapshot`).
//! - [`status`]: the `weft status` document.
//! - [`store`]: the resources in force behind a backend (in memory), and the one way they
//!   change: validated as a whole, then handed to the registry.
//! - [`server`]: starts the control plane (push server + HTTP API) on bound listeners.
//! - [`watch`]: the watched configuration files behind `--watch`.
//! - [`hosts`]: hosts joining the mesh: bootstrap tokens, host credentials, placement;
//!   `hosts_api`: their `/hosts/…` calls.
//! - [`etcd`]: etcd as the store of several control-plane replicas: resources, registrations,
//!   the sealed CA root.
//! - [`canary`]: the canary controller: progressive rollouts (`kind: Canary`) moved step by
//!   step on the proxies' metrics, with rollback; `GET /canaries`, `POST /canaries/…`.
//! - [`dashboard`]: the web dashboard under `/dashboard/`: its pages (vendored, no build step)
//!   and the JSON they read, sampled from the proxies' admin endpoints while someone looks.
//! - [`kubernetes`]: what the control plane may read and write in a cluster (its RBAC) and the
//!   manifests `weft install --kubernetes` prints.
//! - [`webhook`]: the admission webhook that injects pods as the API server creates them.
//! - [`route_table`]: a service's route table as text (`weft routes`, the dashboard).
//! - [`scrape_targets`]: which proxies Prometheus scrapes (`GET /prometheus/targets`).
//! - [`ca`]: the mesh CA: roots, intermediates, join tokens, signing proxies' CSRs.
//! - `join`: `POST /join`, join tokens for proxies the CLI starts.
//! - `ca_api`: `POST /ca/{prepare,activate,retire}`, root rotation without downtime.

pub mod ca;
mod ca_api;
pub mod canary;
pub mod dashboard;
pub mod etcd;
pub mod hosts;
mod hosts_api;
pub mod http_api;
mod join;
pub mod kubernetes;
pub mod listener;
pub mod proxy_admin;
pub mod push;
pub mod registry;
pub mod route_table;
pub mod scrape_targets;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod view;
pub mod watch;
pub mod webhook;

pub use registry::Registry;
pub use server::{ControlError, ControlPlane, Listen};
