//! What a proxy is told when it starts: who it is, where it listens, where its control plane is.

use model::{Identity, Labels};
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// More replicas of the same control plane (sharing its store), tried in turn when the
    /// one in use is lost.
    pub control_more: Vec<SocketAddr>,
    /// Listener addresses; port 0 picks a free port. `None`: no such listener.
    pub outbound: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The local app (sidecar mode).
    pub app: Option<SocketAddr>,
    /// A file where the app's supervisor keeps the app's process id (`--app-pid-file`): the
    /// app is ready only when it (a process of its group, a helper started after it) holds
    /// the listener on `app` ([`crate::app_owner`]). `None`: accepting connections is enough.
    pub app_pid_file: Option<PathBuf>,
    /// What the app speaks on that address (`--app-protocol`): HTTP/1.1 unless `http2` or
    /// `grpc` (h2c) or `tcp` (a byte stream).
    pub app_protocol: model::Protocol,
    /// Local client ports (`--tcp-port`): each listens on its address and tunnels every
    /// connection to its service as a `CONNECT` would (sidecar mode).
    pub tcp_ports: Vec<TcpPort>,
    /// Where the app listens for each port of its service (`--app-port`), for tunnels to a
    /// port other than the first; empty: every tunnel goes to `app`.
    pub app_ports: Vec<(u16, SocketAddr)>,
    /// Transparent interception (`--capture-outbound`): where the pod's capture rules send
    /// its app's outbound TCP connections; the original destination picks the service.
    pub capture_outbound: Option<SocketAddr>,
    /// `SO_MARK` of the proxy's own outbound connections (`--socket-mark`), which the pod's
    /// capture rules let through; `None`: unmarked.
    pub socket_mark: Option<u32>,
    /// The address the control plane and peers reach this proxy at, for its listeners bound to
    /// an unspecified address (a pod's IP); `None`: the bound addresses as they are.
    pub advertise: Option<std::net::IpAddr>,
    pub drain_timeout: Duration,
    pub drain_grace: Duration,
    pub probe_interval: Duration,
    /// Data-plane worker threads (control work runs on its own thread).
    pub workers: usize,
    /// The one-time token for the mesh CA. `Some`: the proxy gets a certificate and speaks
    /// mTLS to its peers (and not at all before it has one); `None`: plaintext.
    pub join_token: Option<String>,
    /// The mesh's roots (PEM) the control plane's certificate must chain to; needed with a
    /// join token (the control plane of a mesh with a CA speaks TLS only).
    pub trust_anchors: Option<String>,
    /// Limits and timeouts of every listener.
    pub limits: crate::limits::Limits,
    /// The credential the admin listener asks of `POST /shutdown` and `GET /tap`
    /// (`Authorization: Bearer`); `None`: both are refused.
    pub admin_token: Option<String>,
    /// Where the proxy keeps the last snapshot it applied and its credentials (`--state-dir`),
    /// and starts from them when they are there: a proxy restarted while its control plane is
    /// away serves at once, without a new join token. `None`: nothing is kept.
    pub state_dir: Option<PathBuf>,
    /// The app's own probes, asked on the admin listener's `/app-health/…` paths (an injected
    /// Kubernetes pod's, from `WEFT_APP_PROBERS`); empty: none.
    pub app_probers: crate::app_health::Probers,
}

/// A local client port: connections to `listen` are tunnelled to the service `target`
/// (`NAME:PORT`, any name the service answers to), for clients that use no proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpPort {
    pub target: String,
    pub listen: SocketAddr,
}

impl std::str::FromStr for TcpPort {
    type Err = String;

    /// `NAME:PORT@ADDRESS`, as `--tcp-port` takes it.
    fn from_str(s: &str) -> Result<TcpPort, String> {
        let (target, listen) = s
            .rsplit_once('@')
            .ok_or_else(|| format!("`{s}` is not NAME:PORT@ADDRESS"))?;
        let port_ok = target
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("`{target}` is not NAME:PORT"));
        }
        let listen = listen
            .parse()
            .map_err(|e| format!("`{listen}` is not an address: {e}"))?;
        Ok(TcpPort {
            target: target.to_string(),
            listen,
        })
    }
}

/// Spans go out in batches at least this often, so a trace shows up in its viewer about a
/// second after its request (the OpenTelemetry default is 5 s; a laptop mesh is watched live).
pub const DEFAULT_TRACE_EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Root spans sampled when no parent decided: all of them. `weft up` runs meshes for people
/// watching their requests; a busy fleet passes a lower rate (Istio's default is 1%).
pub const DEFAULT_TRACE_SAMPLING: f64 = 1.0;

/// What a proxy exports besides its metrics: spans and access logs. Both are off by default
/// and then cost the data path nothing.
#[derive(Clone, Debug, Default)]
pub struct Exports {
    pub tracing: Option<Tracing>,
    pub access_log: Option<AccessLogFormat>,
    /// How many log lines the process's log writer dropped (it drops rather than wait for a
    /// slow reader), for `weft_log_lines_dropped`.
    pub log_dropped: Option<LogDropped>,
}

/// Reads a log writer's dropped-lines counter.
#[derive(Clone)]
pub struct LogDropped(pub std::sync::Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for LogDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogDropped({})", (self.0)())
    }
}

/// Where and how spans are exported (OTLP).
#[derive(Clone, Debug)]
pub struct Tracing {
    /// The collector: `http://HOST:4317` for gRPC; for HTTP either the full URL or a base
    /// (`http://HOST:4318`) that `/v1/traces` is appended to.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// The share (0..=1) of new traces sampled; requests that arrive with a sampling decision
    /// keep it.
    pub sampling: f64,
    /// How often batches of spans are sent.
    pub export_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (the collector's port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (the collector's port 4318).
    HttpProtobuf,
}

/// The access log's line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line with the fields of Envoy's default format.
    Json,
    /// Apache Common Log Format.
    Apache,
}

impl AccessLogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Json => "json",
            AccessLogFormat::Apache => "apache",
        }
    }

    /// `json` or `apache`, as in Linkerd's `config.linkerd.io/access-log` annotation.
    pub fn parse(s: &str) -> Option<AccessLogFormat> {
        match s.trim() {
            "json" => Some(AccessLogFormat::Json),
            "apache" => Some(AccessLogFormat::Apache),
            _ => None,
        }
    }
}
