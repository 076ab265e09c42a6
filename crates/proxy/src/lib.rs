//! weft's data plane: one proxy binary that runs as a workload's sidecar, as the mesh's ingress
//! gateway, or as a short-lived client proxy for `weft exec`.
//!
//! Layout — one file per phase of a request:
//! - [`settings`]: what a proxy is told at start (who it is, where to listen, its control plane).
//! - [`run`]: binds every listener eagerly, starts the runtimes, and drains on shutdown.
//! - [`discovery`]: the control-plane stream: receives snapshots, compiles and swaps them in,
//!   acks them, reports health.
//! - [`on_demand`]: hosts a snapshot lacks, asked for on the control stream while their
//!   requests wait (`spec.scope: observed`).
//! - [`state`]: one snapshot compiled for this proxy (routes, security, mTLS mode) behind one
//!   swap; every request reads it through one load.
//! - [`readiness`]: whether the proxy should receive traffic, and why not.
//! - [`table`]: a snapshot's services, balancers and routes as requests look them up.
//! - [`route`]: route matching and weighted destinations.
//! - [`filters`]: route filters: header edits, rewrites, redirects, CORS, fixed answers.
//! - [`policy`]: traffic policies: limits (503 UO), retry budgets, outlier ejection, failure accrual.
//! - [`balance`]: endpoint state and the choice of endpoint (peak-EWMA P2C, least request,
//!   random, round robin, consistent hash).
//! - [`upstream`]: pooled, multiplexed HTTP/2 connections to peer proxies (mTLS or plaintext).
//! - [`tls`]: mTLS: the proxy's key, certificate and trust bundle, verifiers, PERMISSIVE
//!   sniffing, and both handshakes (an inbound listener's accept, the connect to a peer).
//! - [`identity`]: getting the certificate from the mesh CA with a join token, and renewing it.
//! - [`outbound`]: app → mesh: the request path as named steps (resolve, local answers, fault,
//!   admission, header edits, mirrors, retries), one file each.
//! - [`ingress`]: the gateway's first step (JWT, authorization, virtual hosts), then the
//!   outbound path.
//! - [`inbound`]: mesh → app: forward to the local app.
//! - [`app_owner`]: whether what listens on the app's address is the app, not another process.
//! - [`tunnel`]: `CONNECT` tunnels: the destination side, and splicing byte streams.
//! - [`upgrade`]: HTTP/1.1 upgrades (WebSocket) carried between proxies and replayed to the app.
//! - [`jwt`]: end-user JWT authentication (Istio RequestAuthentication), JWKS fetching.
//! - [`authz`]: inbound authorization (Istio AuthorizationPolicy, Linkerd Server policy).
//! - [`app_pool`]: the lock-free keep-alive HTTP/1.1 pool to the local app, or its one h2c
//!   connection when the app speaks HTTP/2 or gRPC.
//! - [`server`]: the accept loop shared by every listener, with graceful drain.
//! - [`security`]: what the inbound side enforces per snapshot: mTLS mode, JWT, authorization.
//! - [`observe`]: Istio's standard metrics on the request path (metadata exchange, both reporters).
//! - [`trace`]: trace-context propagation (W3C, B3) and spans exported over OTLP.
//! - [`access_log`]: one line per request (JSON or Apache) on stdout, off the request path.
//! - [`tap`]: live request events for `weft tap` / `weft top` (free when nobody watches).
//! - [`edges`]: who talks to whom (identities, mTLS or not), per connection.
//! - [`admin`]: `/ready`, `/live`, `/config`, `/metrics`, `/shutdown`.
//! - [`flags`]: the closed set of response flags for responses the proxy makes itself.
//! - [`grpc`]: gRPC's status as the outcome of a call, `grpc-timeout`, gRPC answers.
//! - [`headers`]: what every hop does alike: weft's header names, request ids, hop-by-hop headers.
//! - [`metrics`]: the proxy's Prometheus metrics.
//! - [`persist`]: the state directory: the last snapshot applied and the credentials, kept
//!   so that a proxy restarted without its control plane serves from them.
//! - [`telemetry`]: Istio's standard metrics (lock-free recorder) and the `x-weft-peer` exchange.

pub mod access_log;
pub mod admin;
pub mod app_health;
pub mod app_owner;
pub mod app_pool;
pub mod authz;
pub mod balance;
pub mod body;
pub mod capture;
pub mod control_link;
pub mod discovery;
pub mod edges;
pub mod filters;
pub mod flags;
pub mod grpc;
pub mod guard;
pub mod headers;
pub mod identity;
pub mod inbound;
pub mod ingress;
pub mod io;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod on_demand;
pub mod outbound;
pub mod overload;
pub mod persist;
pub mod policy;
pub mod readiness;
pub mod route;
pub mod run;
pub mod security;
pub mod server;
pub mod settings;
pub mod sni;
pub mod state;
pub mod table;
pub mod tap;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;
pub mod validate;

pub use run::{run, run_with, Bound};
pub use settings::{Exports, LogDropped, Mode, Settings};
