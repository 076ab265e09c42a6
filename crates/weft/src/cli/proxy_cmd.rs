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
    /// The control plane's gRPC address
    #[arg(long)]
    control: SocketAddr,
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
        control: a.control,
        outbound: a.outbound,
        inbound: if mode == Mode::Sidecar {
            a.inbound
        } else {
            None
        },
        admin: a.admin,
        app: a.app,
        drain_timeout: a.drain_timeout.unwrap_or(settings::DEFAULT_DRAIN_TIMEOUT),
        drain_grace: a.drain_grace.unwrap_or(settings::DEFAULT_DRAIN_GRACE),
        probe_interval: a.probe_interval.unwrap_or(settings::DEFAULT_PROBE_INTERVAL),
        workers: a.workers,
        // From the environment, not a flag: argv is visible to every user in `ps`.
        join_token: std::env::var(control::local::JOIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    proxy::run(s, Default::default(), true, |bound| {
        // The first stdout line tells whoever started us where we listen.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string(bound).unwrap_or_default());
        let _ = out.flush();
    })?;
    Ok(0)
}
