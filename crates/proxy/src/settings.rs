//! What a proxy is told when it starts: who it is, where it listens, where its control plane is.

use model::{Identity, Labels};
use std::net::SocketAddr;
use std::time::Duration;

/// How long shutdown waits for in-flight requests before closing what is left.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown begins, HTTP/1 connections keep being served this long (answering with
/// `Connection: close`) so that a request already on the wire is answered, not reset.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How often a sidecar checks that its app accepts connections.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The role a proxy plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Next to one app replica: outbound for the app's calls, inbound in front of the app.
    Sidecar,
    /// The mesh's edge: routes by Host to any service, ignoring the port clients used.
    Ingress,
    /// A sidecar for a short-lived client (`weft exec`): outbound only, never an endpoint.
    Client,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sidecar => "sidecar",
            Mode::Ingress => "ingress",
            Mode::Client => "client",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub service: String,
    pub namespace: String,
    /// The namespace a bare service name (`http://hello/`) resolves in.
    pub default_namespace: String,
    pub workload: String,
    pub instance: String,
    pub labels: Labels,
    pub identity: Identity,
    /// Where the control plane's gRPC server is.
    pub control: SocketAddr,
    /// Listener addresses; port 0 picks a free port. `None`: no such listener.
    pub outbound: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The local app (sidecar mode).
    pub app: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub drain_grace: Duration,
    pub probe_interval: Duration,
    /// Data-plane worker threads (control work runs on its own thread).
    pub workers: usize,
    /// The one-time token for the mesh CA. `Some`: the proxy gets a certificate and speaks
    /// mTLS to its peers (and not at all before it has one); `None`: plaintext.
    pub join_token: Option<String>,
}
