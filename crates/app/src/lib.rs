//! weft's SDK for application code: the tower layers and helpers a Rust service in the mesh
//! uses for what only the app can do — end-user authentication, RED metrics, spans of its own,
//! passing the mesh's headers on, protecting itself and its callees — while the mesh does the
//! rest (mTLS, retries, timeouts, outlier detection, proxy metrics and spans, authorization).
//! `docs/app-sdk.md` says which is which.
//!
//! Layout:
//! - [`propagate`]: the mesh's headers and the deadline of the request being served.
//! - [`client`]: the HTTP client that sends them on; never retries behind a sidecar.
//! - [`trace`]: OpenTelemetry server spans and trace-context propagation; OTLP export.
//! - [`metrics`]: Prometheus RED metrics and the `/metrics` route.
//! - [`auth`]: end-user JWT authentication against a JWKS.
//! - [`breaker`]: a circuit breaker for calls to a dependency.
//! - [`limit`]: a concurrency limit that sheds (503 + `Retry-After`) instead of queueing.
//! - [`batch`]: a batching worker with a bounded queue.
//! - [`health`]: `/healthz` and `/readyz` with dependency checks.
//! - [`shutdown`]: graceful shutdown on SIGTERM/SIGINT.

pub mod auth;
pub mod batch;
pub mod breaker;
pub mod client;
pub mod health;
pub mod limit;
pub mod metrics;
pub mod propagate;
pub mod shutdown;
pub mod trace;

#[cfg(test)]
mod testing;
