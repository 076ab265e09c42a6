//! `weft proxy`: one sidecar, ingress or client proxy.

use super::{parse_duration, parse_label};
use model::Identity;
use proxy::{settings, Mode, Settings};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Sidecar,
    Ingress,
    Client,
}

#[derive(clap::Args)]
pub struct ProxyArgs {
    #[arg(long, value_enum, default_value = "sidecar")]
    mode: ModeArg,
    /// The control plane's gRPC address (IP:PORT, or HOST:PORT resolved once at start, as a
    /// Kubernetes Service's name); several replicas of it (sharing one store) as ADDR,ADDR…:
    /// the proxy uses one and moves to the next when it is lost
    #[arg(long, value_delimiter = ',', required = true, num_args = 1.., value_parser = parse_control)]
    control: Vec<SocketAddr>,
    #[arg(long)]
    service: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(long, default_value = "")]
    workload: String,
    #[arg(long, default_value = "")]
    instance: String,
    /// KEY=VALUE, repeatable
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// SPIFFE ID (default: spiffe://cluster.local/ns/NAMESPACE/sa/SERVICE)
    #[arg(long)]
    identity: Option<String>,
    /// The local app (sidecar mode)
    #[arg(long)]
    app: Option<SocketAddr>,
    /// A file the app's supervisor keeps the app's process id in (`weft up` writes one at
    /// every start of the app): the app is ready only once that process, one of its process
    /// group, or a helper started after it listens on --app, never while a process that was
    /// there first holds that port
    #[arg(long, value_name = "PATH")]
    app_pid_file: Option<std::path::PathBuf>,
    /// What the app speaks: http (HTTP/1.1), http2 or grpc (h2c), tcp
    #[arg(long, default_value = "http", value_parser = parse_protocol)]
    app_protocol: model::Protocol,
    /// A local client port: listen on ADDRESS and tunnel each connection to the service
    /// NAME:PORT, as `CONNECT NAME:PORT` would (repeatable; sidecars only)
    #[arg(long = "tcp-port", value_name = "NAME:PORT@ADDRESS")]
    tcp_ports: Vec<proxy::settings::TcpPort>,
    /// Where the app listens for the service port PORT (repeatable): tunnels to PORT end
    /// there; once any is given, tunnels to ports not listed are refused (404)
    #[arg(long = "app-port", value_name = "PORT=ADDRESS", value_parser = parse_app_port)]
    app_ports: Vec<(u16, SocketAddr)>,
    /// Transparent interception: the listener the pod's capture rules send the app's outbound
    /// TCP connections to (sidecars only); each is routed by its original destination
    #[arg(long, value_name = "ADDRESS")]
    capture_outbound: Option<SocketAddr>,
    /// Mark the proxy's own outbound connections with this SO_MARK, so that the pod's capture
    /// rules let them through (needs CAP_NET_ADMIN)
    #[arg(long, value_name = "MARK")]
    socket_mark: Option<u32>,
    /// The address the control plane and peers reach this proxy at, for listeners bound to an
    /// unspecified address (0.0.0.0): in a pod, the pod's IP (injection sets WEFT_POD_IP)
    #[arg(long, value_name = "IP", env = "WEFT_POD_IP")]
    advertise: Option<std::net::IpAddr>,
    #[arg(long)]
    inbound: Option<SocketAddr>,
    #[arg(long)]
    outbound: Option<SocketAddr>,
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: SocketAddr,
    /// Namespace a bare service name resolves in (default: the proxy's own; `default` for ingress)
    #[arg(long)]
    default_namespace: Option<String>,
    /// How long shutdown waits for in-flight requests [default: 10s]
    #[arg(long, value_parser = parse_duration)]
    drain_timeout: Option<Duration>,
    /// How long HTTP/1 connections keep being served after shutdown begins [default: 500ms]
    #[arg(long, value_parser = parse_duration)]
    drain_grace: Option<Duration>,
    /// How often a sidecar checks an app that is not ready [default: 500ms]
    #[arg(long, value_parser = parse_duration)]
    probe_interval: Option<Duration>,
    /// Data-plane worker threads
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// A file holding the one-time join token the mesh CA signs this proxy's certificate
    /// against (`weft up` passes it in the environment variable WEFT_JOIN_TOKEN instead). A
    /// proxy of a mesh that runs mTLS does not serve without one.
    #[arg(long, value_name = "PATH")]
    join_token_file: Option<std::path::PathBuf>,
    /// A file holding the mesh's roots (PEM; `GET /ca/bundle` of the control plane's API): the
    /// control plane's certificate must chain to one of them. Needed with a join token (`weft
    /// up` passes them in the environment variable WEFT_TRUST_ANCHORS instead)
    #[arg(long, value_name = "PATH")]
    trust_anchors_file: Option<std::path::PathBuf>,
    /// Keep the last snapshot applied and the proxy's certificate, key and renewal token in
    /// this directory (created with mode 0700; refused when others may enter it), and start
    /// from them: a proxy restarted while its control plane is down serves its last routes at
    /// once, and with a certificate still valid it needs no new join token
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    exports: ExportArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Listener limits and timeouts: `weft proxy` takes them, and `weft up` passes them on to its
/// proxies. Defaults are Envoy's and nginx's (see docs/robustness.md).
#[derive(clap::Args, Clone, Default)]
pub struct LimitArgs {
    /// Connections the proxy serves at once, across its listeners; more are answered 503 and
    /// closed [default: ¾ of the file-descriptor limit, at most 50000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections one listener serves at once [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections_per_listener: Option<usize>,
    /// A connection that sends nothing this long after it opens is closed [default: 10s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub first_byte_timeout: Option<Duration>,
    /// A keep-alive connection with no traffic this long is closed [default: 1h]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// A request body that pauses this long is answered 408 [default: 60s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub body_idle_timeout: Option<Duration>,
    /// A request whose body is not all in this long after its head is answered 408
    /// [default: 300s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Option<Duration>,
    /// Request headers whose name has an underscore: allow, reject-request (400) or drop-header
    /// [default: reject-request at the ingress, allow on sidecars]
    #[arg(long, value_name = "ACTION", value_parser = parse_underscores)]
    pub headers_with_underscores: Option<proxy::limits::Underscores>,
    /// Bytes of a request body kept, as it streams, so that a retry or a mirror can send it
    /// again (chunked or not); a longer body streams on once and is neither retried nor
    /// mirrored (counted in weft_replays_skipped_total, flagged RS). A number of bytes, or with
    /// KiB / MiB [default: 64KiB]
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_buffered_body: Option<u64>,
}

/// A size in bytes: `65536`, `64KiB` (or `64k`), `1MiB` (or `1m`).
fn parse_protocol(s: &str) -> Result<model::Protocol, String> {
    model::Protocol::parse(s).ok_or_else(|| format!("`{s}` is not one of http, http2, grpc, tcp"))
}

/// `IP:PORT`, or `HOST:PORT` resolved now (its first address).
fn parse_control(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("`{s}` is not IP:PORT and HOST:PORT does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// `PORT=ADDRESS`, as `--app-port` takes it.
fn parse_app_port(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not PORT=ADDRESS"))?;
    let port = port
        .parse()
        .map_err(|e| format!("`{port}` is not a port: {e}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not an address: {e}"))?;
    Ok((port, addr))
}

pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let times: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "{s:?}: expected a number of bytes, e.g. 65536, 64KiB, 1MiB"
            ))
        }
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(times))
        .ok_or_else(|| format!("{s:?}: expected a number of bytes, e.g. 65536, 64KiB, 1MiB"))
}

fn parse_underscores(s: &str) -> Result<proxy::limits::Underscores, String> {
    proxy::limits::Underscores::parse(s)
        .ok_or_else(|| format!("{s:?}: expected allow, reject-request or drop-header"))
}

impl LimitArgs {
    /// The proxy's limits: the defaults, with what was given.
    pub fn limits(&self) -> proxy::limits::Limits {
        let mut l = proxy::limits::Limits {
            max_connections: self.max_connections,
            underscores: self.headers_with_underscores,
            ..Default::default()
        };
        if let Some(n) = self.max_connections_per_listener {
            l.max_connections_per_listener = n;
        }
        if let Some(d) = self.first_byte_timeout {
            l.first_byte_timeout = d;
        }
        if let Some(d) = self.idle_timeout {
            l.idle_timeout = d;
        }
        if let Some(d) = self.body_idle_timeout {
            l.body_idle_timeout = d;
        }
        if let Some(d) = self.request_timeout {
            l.request_timeout = d;
        }
        if let Some(n) = self.max_buffered_body {
            l.max_buffered_body = n;
        }
        l
    }

    /// The same flags again, for the proxies `weft up` starts.
    pub fn flags(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut flag = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                a.extend([format!("--{name}"), v]);
            }
        };
        let ms = |d: Option<Duration>| d.map(|d| format!("{}ms", d.as_millis()));
        flag(
            "max-connections",
            self.max_connections.map(|n| n.to_string()),
        );
        flag(
            "max-connections-per-listener",
            self.max_connections_per_listener.map(|n| n.to_string()),
        );
        flag("first-byte-timeout", ms(self.first_byte_timeout));
        flag("idle-timeout", ms(self.idle_timeout));
        flag("body-idle-timeout", ms(self.body_idle_timeout));
        flag("request-timeout", ms(self.request_timeout));
        flag(
            "headers-with-underscores",
            self.headers_with_underscores
                .map(|u| u.as_str().to_string()),
        );
        flag(
            "max-buffered-body",
            self.max_buffered_body.map(|n| n.to_string()),
        );
        a
    }
}

/// Spans and access logs: `weft proxy` takes them, and `weft up` passes them on to its proxies.
#[derive(clap::Args, Clone, Default)]
pub struct ExportArgs {
    /// Export spans over OTLP to this collector: http://HOST:4317 for gRPC, http://HOST:4318 (or
    /// the full …/v1/traces URL) for HTTP/protobuf
    #[arg(long, value_name = "URL", value_parser = parse_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// The OTLP transport [default: grpc]
    #[arg(long, value_enum, requires = "otlp_endpoint")]
    pub otlp_protocol: Option<OtlpProtocolArg>,
    /// The share of new traces sampled, 0 to 1; requests that arrive with a sampling decision
    /// keep it [default: 1]
    #[arg(long, value_name = "RATE", value_parser = parse_sampling, requires = "otlp_endpoint")]
    pub trace_sampling: Option<f64>,
    /// Log every request on stdout: `json` (Envoy's fields) or `apache` (Common Log Format)
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub access_log: Option<AccessLogArg>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OtlpProtocolArg {
    Grpc,
    Http,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AccessLogArg {
    Json,
    Apache,
}

impl AccessLogArg {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogArg::Json => "json",
            AccessLogArg::Apache => "apache",
        }
    }
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    match s.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "{s:?} is not an http:// URL (e.g. http://127.0.0.1:4317)"
        )),
    }
}

fn parse_sampling(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a rate between 0 and 1 (e.g. 0.01)")),
    }
}

impl ExportArgs {
    /// What the proxy exports.
    pub fn exports(&self) -> proxy::Exports {
        proxy::Exports {
            tracing: self
                .otlp_endpoint
                .as_ref()
                .map(|endpoint| settings::Tracing {
                    endpoint: endpoint.clone(),
                    protocol: match self.otlp_protocol {
                        Some(OtlpProtocolArg::Http) => settings::OtlpProtocol::HttpProtobuf,
                        Some(OtlpProtocolArg::Grpc) | None => settings::OtlpProtocol::Grpc,
                    },
                    sampling: self
                        .trace_sampling
                        .unwrap_or(settings::DEFAULT_TRACE_SAMPLING),
                    export_interval: settings::DEFAULT_TRACE_EXPORT_INTERVAL,
                }),
            access_log: self.access_log.map(|f| match f {
                AccessLogArg::Json => settings::AccessLogFormat::Json,
                AccessLogArg::Apache => settings::AccessLogFormat::Apache,
            }),
            log_dropped: None,
        }
    }

    /// The OTLP collector as the OpenTelemetry SDKs read it (`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`), for the apps `weft up` starts: their spans join the
    /// proxies' in one trace.
    pub fn app_env(&self) -> Vec<(String, String)> {
        let Some(e) = &self.otlp_endpoint else {
            return Vec::new();
        };
        let protocol = match self.otlp_protocol {
            Some(OtlpProtocolArg::Http) => "http/protobuf",
            Some(OtlpProtocolArg::Grpc) | None => "grpc",
        };
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), e.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        ]
    }

    /// The tracing flags again, for the proxies `weft up` starts.
    pub fn tracing_flags(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(e) = &self.otlp_endpoint {
            a.extend(["--otlp-endpoint".to_string(), e.clone()]);
        }
        if let Some(p) = self.otlp_protocol {
            let p = match p {
                OtlpProtocolArg::Grpc => "grpc",
                OtlpProtocolArg::Http => "http",
            };
            a.extend(["--otlp-protocol".to_string(), p.to_string()]);
        }
        if let Some(r) = self.trace_sampling {
            a.extend(["--trace-sampling".to_string(), r.to_string()]);
        }
        a
    }
}

pub fn run(a: ProxyArgs) -> anyhow::Result<i32> {
    let mode = match a.mode {
        ModeArg::Sidecar => Mode::Sidecar,
        ModeArg::Ingress => Mode::Ingress,
        ModeArg::Client => Mode::Client,
    };
    if mode == Mode::Sidecar && (a.app.is_none() || a.inbound.is_none()) {
        anyhow::bail!("a sidecar needs --app and --inbound");
    }
    let resolve_ns = a.default_namespace.clone().unwrap_or_else(|| match mode {
        Mode::Ingress => model::names::DEFAULT_NAMESPACE.to_string(),
        _ => a.namespace.clone(),
    });
    // From a file or the environment, never a flag: argv is visible to every user in `ps`.
    let join_token = match &a.join_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--join-token-file {}: {e}", path.display()))?;
            Some(token.trim().to_string()).filter(|t| !t.is_empty())
        }
        None => std::env::var(local::JOIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let trust_anchors = match &a.trust_anchors_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--trust-anchors-file {}: {e}", path.display()))?,
        ),
        None => std::env::var(model::names::TRUST_ANCHORS_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty()),
    };
    let s = Settings {
        mode,
        identity: Identity(
            a.identity
                .unwrap_or_else(|| Identity::spiffe(&a.namespace, &a.service).0),
        ),
        service: a.service,
        namespace: a.namespace,
        default_namespace: resolve_ns,
        workload: a.workload,
        instance: a.instance,
        labels: a.labels.into_iter().collect(),
        control: a.control[0],
        control_more: a.control[1..].to_vec(),
        outbound: a.outbound,
        inbound: if mode == Mode::Sidecar {
            a.inbound
        } else {
            None
        },
        admin: a.admin,
        app: a.app,
        app_pid_file: a.app_pid_file,
        app_protocol: a.app_protocol,
        tcp_ports: if mode == Mode::Sidecar {
            a.tcp_ports
        } else {
            Vec::new()
        },
        app_ports: a.app_ports,
        capture_outbound: a.capture_outbound,
        socket_mark: a.socket_mark,
        advertise: a.advertise,
        drain_timeout: a.drain_timeout.unwrap_or(settings::DEFAULT_DRAIN_TIMEOUT),
        drain_grace: a.drain_grace.unwrap_or(settings::DEFAULT_DRAIN_GRACE),
        probe_interval: a.probe_interval.unwrap_or(settings::DEFAULT_PROBE_INTERVAL),
        workers: a.workers,
        join_token,
        trust_anchors,
        limits: a.limits.limits(),
        // From the environment, like the join token.
        admin_token: std::env::var(model::names::ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty()),
        state_dir: a.state_dir,
        app_probers: match std::env::var(proxy::app_health::ENV) {
            Ok(json) if !json.trim().is_empty() => {
                proxy::app_health::parse(&json).map_err(|e| anyhow::anyhow!(e))?
            }
            _ => Default::default(),
        },
    };
    let mut exports = a.exports.exports();
    exports.log_dropped = super::log_dropped();
    proxy::run_with(s, exports, Default::default(), true, |bound| {
        // The first stdout line tells whoever started us where we listen.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string(bound).unwrap_or_default());
        let _ = out.flush();
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    //! `weft up` describes its proxies with [`local::ProxyLaunch`]; its command line must parse
    //! with this parser into the same settings.

    use super::*;
    use clap::Parser;
    use local::{ProxyLaunch, ProxyMode};
    use std::path::Path;

    fn parse(launch: &ProxyLaunch) -> ProxyArgs {
        let argv = launch.argv(Path::new("/usr/bin/weft"));
        let cli = match super::super::Cli::try_parse_from(&argv) {
            Ok(cli) => cli,
            Err(e) => panic!("{argv:?}: {e}"),
        };
        match cli.cmd {
            super::super::Cmd::Proxy(a) => *a,
            _ => panic!("{argv:?} is not `weft proxy`"),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_body_buffer_limit_parses_and_is_passed_on() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_bytes("2m"), Ok(2 * 1024 * 1024));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999MiB").is_err());
        let limits = LimitArgs {
            max_buffered_body: Some(1024),
            ..Default::default()
        };
        assert_eq!(limits.flags(), ["--max-buffered-body", "1024"]);
        assert_eq!(limits.limits().max_buffered_body, 1024);
        assert_eq!(
            LimitArgs::default().limits().max_buffered_body,
            proxy::limits::DEFAULT_MAX_BUFFERED_BODY
        );
    }

    #[test]
    fn a_sidecar_launch_parses_into_its_flags() {
        let launch = ProxyLaunch {
            mode: ProxyMode::Sidecar,
            control: addr("127.0.0.1:15010"),
            control_more: Vec::new(),
            service: "backend".into(),
            namespace: "shop".into(),
            workload: "backend-v2".into(),
            instance: "backend-v2-1".into(),
            labels: [
                ("app".to_string(), "backend".to_string()),
                ("version".to_string(), "v2".to_string()),
            ]
            .into(),
            identity: Identity("spiffe://example.org/ns/shop/sa/backend".into()),
            app: Some(addr("127.0.0.1:12345")),
            inbound: Some(addr("127.0.0.1:41000")),
            outbound: Some(addr("127.0.0.1:41001")),
            admin: Some(addr("127.0.0.1:41002")),
            drain_timeout: Duration::from_millis(2500),
            access_log: Some("apache".into()),
            app_protocol: model::Protocol::Http,
            extra_flags: vec![
                "--otlp-endpoint".into(),
                "http://127.0.0.1:4317".into(),
                "--trace-sampling".into(),
                "0.5".into(),
            ],
            state_dir: Some("/run/user/1000/weft/run/shop/proxies/backend-v2-1.shop.1".into()),
            app_pid_file: Some("/run/user/1000/weft/run/shop/apps/backend-v2-1.shop.1.pid".into()),
        };
        let a = parse(&launch);
        assert!(matches!(a.mode, ModeArg::Sidecar));
        assert_eq!(a.control, [launch.control]);
        assert_eq!(a.service, "backend");
        assert_eq!(a.namespace, "shop");
        assert_eq!(a.workload, "backend-v2");
        assert_eq!(a.instance, "backend-v2-1");
        assert_eq!(
            a.labels,
            [
                ("app".to_string(), "backend".to_string()),
                ("version".to_string(), "v2".to_string())
            ]
        );
        assert_eq!(a.identity.as_deref(), Some(launch.identity.0.as_str()));
        assert_eq!(a.app, launch.app);
        assert_eq!(a.inbound, launch.inbound);
        assert_eq!(a.outbound, launch.outbound);
        assert_eq!(Some(a.admin), launch.admin);
        assert_eq!(a.drain_timeout, Some(launch.drain_timeout));
        assert!(matches!(a.exports.access_log, Some(AccessLogArg::Apache)));
        assert_eq!(
            a.exports.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(a.exports.trace_sampling, Some(0.5));
        assert_eq!(a.state_dir, launch.state_dir);
        assert_eq!(a.app_pid_file, launch.app_pid_file);
    }

    #[test]
    fn an_ingress_launch_parses_into_its_flags() {
        let launch = ProxyLaunch {
            mode: ProxyMode::Ingress,
            control: addr("127.0.0.1:15010"),
            control_more: Vec::new(),
            service: local::INGRESS_NAME.into(),
            namespace: local::INGRESS_NAMESPACE.into(),
            workload: local::INGRESS_NAME.into(),
            instance: "ingress-0".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            identity: Identity::spiffe(local::INGRESS_NAMESPACE, local::INGRESS_NAME),
            app: None,
            inbound: None,
            outbound: Some(addr("127.0.0.1:8080")),
            admin: None,
            drain_timeout: Duration::from_secs(10),
            access_log: None,
            app_protocol: model::Protocol::Http,
            extra_flags: Vec::new(),
            state_dir: None,
            app_pid_file: None,
        };
        let a = parse(&launch);
        assert!(matches!(a.mode, ModeArg::Ingress));
        assert_eq!(a.service, local::INGRESS_NAME);
        assert_eq!(a.namespace, local::INGRESS_NAMESPACE);
        assert_eq!(a.workload, local::INGRESS_NAME);
        assert_eq!(a.instance, "ingress-0");
        assert_eq!(
            a.labels,
            [("istio".to_string(), "ingressgateway".to_string())]
        );
        assert_eq!(a.identity.as_deref(), Some(launch.identity.0.as_str()));
        assert_eq!(a.app, None);
        assert_eq!(a.inbound, None);
        assert_eq!(a.outbound, Some(addr("127.0.0.1:8080")));
        // No --admin: the proxy's default, a free port.
        assert_eq!(a.admin, addr("127.0.0.1:0"));
        assert_eq!(a.drain_timeout, Some(Duration::from_secs(10)));
        assert!(a.exports.access_log.is_none());
        assert!(a.exports.otlp_endpoint.is_none());
        assert_eq!(a.state_dir, None);
        assert_eq!(a.app_pid_file, None);
    }

    #[test]
    fn the_control_plane_may_be_named() {
        assert_eq!(
            parse_control("127.0.0.1:15010").unwrap(),
            "127.0.0.1:15010".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(parse_control("localhost:15010").unwrap().port(), 15010);
        assert!(parse_control("no-such-host.invalid:1").is_err());
        assert!(parse_control("localhost").is_err());
    }
}
