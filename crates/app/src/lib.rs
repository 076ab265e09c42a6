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
//!
//! A service wired with all of it:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use app::auth::{self, Claims, JwtLayer};
//! use app::client::Client;
//! use app::health::Health;
//! use app::limit::LimitLayer;
//! use app::metrics::{self, Metrics};
//! use app::propagate::PropagateLayer;
//! use app::shutdown::{self, Shutdown};
//! use app::trace::{Otlp, TraceLayer};
//! use axum::extract::State;
//! use axum::routing::get;
//! use axum::Router;
//! use http::StatusCode;
//! use prometheus_client::registry::Registry;
//! use tower::ServiceBuilder;
//! use tower_http::timeout::TimeoutLayer;
//!
//! /// The app's budget for one request.
//! const BUDGET: Duration = Duration::from_secs(5);
//!
//! async fn stock(State(client): State<Client>, who: Claims) -> Result<String, StatusCode> {
//!     // Through the sidecar, carrying the request id, trace context, end user and what is
//!     // left of the deadline; sent once (the sidecar retries per the mesh's policy).
//!     let r = client
//!         .get("http://inventory/stock/42")
//!         .await
//!         .map_err(|_| StatusCode::BAD_GATEWAY)?;
//!     Ok(format!("{}: {}", who.subject().unwrap_or("?"), r.status()))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let otlp = Otlp::from_env("orders")?; // None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
//!     let client = Client::new(); // HTTP_PROXY: the sidecar
//!     let jwks = auth::Jwks::remote(
//!         "http://auth/.well-known/jwks.json",
//!         client.clone(),
//!         auth::DEFAULT_REFRESH,
//!     );
//!     let mut registry = Registry::default();
//!     let metrics = Metrics::new(&mut registry);
//!     let health = Health::new();
//!     let app = Router::new()
//!         .route("/stock", get(stock))
//!         .with_state(client)
//!         .layer(
//!             ServiceBuilder::new()
//!                 // The mesh's headers and the deadline, for the calls handlers make.
//!                 .layer(PropagateLayer::new().timeout(BUDGET))
//!                 // A server span, child of the caller's (and of its sidecar's).
//!                 .layer(TraceLayer::global())
//!                 // RED metrics by route; 401s, 503s and 504s below are counted.
//!                 .layer(metrics.layer())
//!                 // The budget enforced.
//!                 .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, BUDGET))
//!                 // Shed beyond 128 at once and 32 waiting: 503 + Retry-After.
//!                 .layer(LimitLayer::new(128).queue(32))
//!                 // 401 without a valid end-user token.
//!                 .layer(JwtLayer::new(jwks).issuer("weft-auth").audience("shop")),
//!         )
//!         // Probes and scrapes: no token, not counted.
//!         .merge(health.router())
//!         .merge(metrics::router(Arc::new(registry)));
//!     let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
//!     let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
//!     let signals = Shutdown::on_signals()?;
//!     shutdown::serve(listener, app, health, signals, shutdown::DEFAULT_GRACE).await?;
//!     if let Some(otlp) = otlp {
//!         otlp.shutdown().await;
//!     }
//!     Ok(())
//! }
//! ```

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
