//! The command line: flags per subcommand and the glue that calls the library crates.

mod apply;
mod bench;
mod ca;
mod canary;
mod capture;
mod check;
mod dashboard;
mod doctor;
mod edges;
mod exec;
mod fleet_sim;
mod get;
mod host;
mod identity;
mod inject;
mod install;
mod live;
mod load;
mod proxy_cmd;
mod routes;
mod stat;
mod status;
mod tap;
mod text;
mod top;
mod up;

pub use proxy_cmd::{run as run_proxy, ProxyArgs};

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "weft",
    version = local::launch::VERSION,
    about = "A service mesh: sidecar proxy, control plane and CLI"
)]
pub struct Cli {
    /// Talk to the mesh of this saved context (`weft context add`) instead of a mesh running
    /// on this machine
    #[arg(long, global = true, env = "WEFT_CONTEXT")]
    context: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole mesh on 127.0.0.1 until Ctrl-C (no file: the built-in demo)
    Up(up::UpArgs),
    /// Run the control plane alone
    Control(up::ControlArgs),
    /// Hosts of a mesh: bootstrap tokens, joining a machine, the joined hosts
    #[command(subcommand)]
    Host(host::HostCmd),
    /// Meshes whose control plane runs elsewhere: save one (its API and admin credential), list
    #[command(subcommand)]
    Context(host::ContextCmd),
    /// Run one proxy (started by `weft up` for every replica and for the ingress)
    Proxy(Box<proxy_cmd::ProxyArgs>),
    /// Show what runs where in the running mesh
    Status(status::StatusArgs),
    /// Run a command as a client of the running mesh, under a service's identity
    Exec(exec::ExecArgs),
    /// Create or replace resources in the running mesh (by kind, namespace and name)
    Apply(apply::ApplyArgs),
    /// Remove resources from the running mesh
    Delete(apply::ApplyArgs),
    /// Show the resources in force: `weft get [KIND [NAME]]`
    Get(apply::GetArgs),
    /// Validate configuration files offline; non-zero on errors
    Check(check::CheckArgs),
    /// List what weft left on this host that no running mesh owns (pods' network namespaces,
    /// bridges); `--clean` removes it
    Doctor(doctor::DoctorArgs),
    /// The route table a proxy runs for a service
    Routes(routes::RoutesArgs),
    /// The certificate chain, SPIFFE identity and expiry a proxy of a service holds
    Identity(identity::IdentityArgs),
    /// Rotate the running mesh's root CA without downtime (rotate, then retire)
    Ca(ca::CaArgs),
    /// Who talks to whom: client and server identities, and whether each edge is mTLS
    Edges(edges::EdgesArgs),
    /// Kubernetes manifests with weft's sidecar and capture init container added to every
    /// workload (as `istioctl kube-inject` / `linkerd inject`)
    Inject(inject::InjectArgs),
    /// Print the manifests that install weft's control plane on a Kubernetes cluster
    Install(install::InstallArgs),
    /// Install the capture rules (iptables) in this network namespace: what an injected pod's
    /// init container runs
    Capture(capture::CaptureArgs),
    /// Print the URL of the running mesh's web dashboard (the service graph, golden metrics,
    /// live tap, routes, resources, identities and rollouts); opens nothing
    Dashboard(dashboard::DashboardArgs),
    /// Success rate, RPS, latency percentiles, meshed and mTLS share per service or workload
    Stat(stat::StatArgs),
    /// A live stream of the requests a service handles (or, with --to, sends)
    Tap(tap::TapArgs),
    /// The busiest paths of a service, live (a terminal view)
    Top(top::TopArgs),
    /// Progressive rollouts run by the control plane: start, status, pause, resume, abort,
    /// promote
    #[command(subcommand)]
    Canary(canary::CanaryCmd),
    /// Generate HTTP load: fixed rate (coordinated-omission corrected) or max throughput
    Load(load::LoadArgs),
    /// Benchmark: direct vs weft's two-hop path vs Envoy's, interleaved rounds, medians
    Bench(bench::BenchArgs),
    /// Simulate a fleet of proxies against control-plane replicas over etcd: how long a change
    /// takes to reach every proxy, what the control plane and etcd spend
    FleetSim(fleet_sim::FleetSimArgs),
    /// Demo applications
    #[command(subcommand)]
    Demo(DemoCmd),
}

#[derive(Subcommand)]
enum DemoCmd {
    /// The echo service (hello/slow): answers with what it received
    Echo(EchoArgs),
    /// A token issuer: GET /.well-known/jwks.json, GET|POST /token?sub=alice&groups=admin
    Auth(AuthArgs),
    /// A TCP echo service: sends every byte back, closes after the client's half-close
    TcpEcho(TcpEchoArgs),
    /// One of the shop's services (state in SQLite under --data, or --memory)
    Shop(ShopArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ShopService {
    Frontend,
    Auth,
    Inventory,
    Payment,
    Product,
    User,
    Order,
}

#[derive(clap::Args)]
struct ShopArgs {
    #[arg(value_enum)]
    service: ShopService,
    /// Where the service keeps its SQLite file (SERVICE.db) [default: $WEFT_HOME/shop-data
    /// when WEFT_HOME is set, as under `weft up`, else ./shop-data]
    #[arg(long, env = "WEFT_SHOP_DATA", conflicts_with = "memory")]
    data: Option<std::path::PathBuf>,
    /// Keep the state in memory (lost on exit)
    #[arg(long)]
    memory: bool,
    /// Where to listen (127.0.0.1:PORT); `weft up` sets PORT
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// This replica's name (the order service's leases)
    #[arg(long, env = "WEFT_INSTANCE", default_value = "local")]
    instance: String,
    /// payment: the share of charges declined (503, nothing charged), 0 to 1
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// payment: added before every charge is answered
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    delay: Duration,
    /// order: the inventory service's URL
    #[arg(long, default_value = "http://inventory")]
    inventory: String,
    /// order: the payment service's URL
    #[arg(long, default_value = "http://payment")]
    payment: String,
    /// order, frontend: the product service's URL
    #[arg(long, default_value = "http://product")]
    product: String,
    /// auth: the user service's URL
    #[arg(long, default_value = "http://user")]
    user: String,
    /// frontend: the auth service's URL
    #[arg(long, default_value = "http://auth")]
    auth: String,
    /// frontend: the order service's URL
    #[arg(long, default_value = "http://order")]
    order: String,
    /// auth: the `aud` of the tokens it signs
    #[arg(long, default_value = "shop")]
    audience: String,
    /// inventory: the stock of every product at the first start [default: the catalog's]
    #[arg(long)]
    stock: Option<u32>,
    /// order: check end users' tokens against this JWKS URL (the user is the token's subject)
    #[arg(long)]
    jwks: Option<String>,
    /// order: with --jwks, the tokens' issuer; auth: the issuer it signs as
    #[arg(long, default_value = demo::auth::DEFAULT_ISSUER)]
    issuer: String,
}

#[derive(clap::Args)]
struct TcpEchoArgs {
    /// Where to listen (127.0.0.1:PORT); `weft up` sets PORT
    #[arg(long, env = "PORT", default_value_t = 9000)]
    port: u16,
}

#[derive(clap::Args)]
struct AuthArgs {
    /// `iss` of the tokens it signs
    #[arg(long, default_value = demo::auth::DEFAULT_ISSUER)]
    issuer: String,
    /// `aud` of tokens whose request names none (default: no `aud`)
    #[arg(long)]
    audience: Option<String>,
    /// Lifetime of tokens whose request names none
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    ttl: Duration,
    /// The longest lifetime a request may ask for
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    max_ttl: Duration,
    /// Where to listen (127.0.0.1:PORT); `weft up` sets PORT
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
}

#[derive(clap::Args)]
struct EchoArgs {
    #[arg(long, default_value = "echo")]
    service: String,
    #[arg(long, default_value = "v1")]
    version: String,
    /// Added to every response
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    delay: Duration,
    /// Fraction of requests (0..1) answered with --fail-status
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    #[arg(long, default_value_t = 500)]
    fail_status: u16,
    /// Where to listen (ADDRESS:PORT); `weft up` sets PORT
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// The address to listen on: 127.0.0.1 (its sidecar, or clients on this machine), or
    /// 0.0.0.0 in a pod reached from other pods without a sidecar
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    #[arg(long, env = "WEFT_INSTANCE", default_value = "local")]
    instance: String,
    /// Worker threads (a demo app is small; one keeps it cheap and its latency steady)
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    demo::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration (e.g. 250ms, 1s, 2m)"))
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// The log writer's dropped-lines counter, set once in `main`.
static LOG_DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

pub fn set_log_dropped(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPPED.set(counter);
}

/// The log writer's dropped-lines counter, for a proxy's metrics.
pub fn log_dropped() -> Option<proxy::LogDropped> {
    let counter = LOG_DROPPED.get()?.clone();
    Some(proxy::LogDropped(std::sync::Arc::new(move || {
        counter.dropped_lines() as u64
    })))
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

impl Cli {
    /// Commands whose output is for the user, not logs.
    pub fn is_quiet(&self) -> bool {
        matches!(
            self.cmd,
            Cmd::Exec(_)
                | Cmd::Status(_)
                | Cmd::Load(_)
                | Cmd::Check(_)
                | Cmd::Routes(_)
                | Cmd::Identity(_)
                | Cmd::Ca(_)
                | Cmd::Edges(_)
                | Cmd::Dashboard(_)
                | Cmd::Inject(_)
                | Cmd::Install(_)
                | Cmd::Capture(_)
                | Cmd::Stat(_)
                | Cmd::Tap(_)
                | Cmd::Top(_)
                | Cmd::Apply(_)
                | Cmd::Delete(_)
                | Cmd::Get(_)
                | Cmd::FleetSim(_)
        )
    }
}

/// Runs a subcommand; the result is the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Some(c) = &cli.context {
        // Every lookup of the mesh to talk to (`local::meshes::find`) uses it.
        local::meshes::choose_context(c);
    }
    match cli.cmd {
        Cmd::Context(c) => host::context(c),
        Cmd::Up(a) => up::up(a),
        Cmd::Control(a) => up::control(a),
        Cmd::Host(c) => host::run(c),
        Cmd::Proxy(a) => proxy_cmd::run(*a),
        Cmd::Status(a) => status::run(a),
        Cmd::Exec(a) => exec::run(a),
        Cmd::Load(a) => load::run(a),
        Cmd::Check(a) => check::run(a),
        Cmd::Doctor(a) => doctor::run(a),
        Cmd::Apply(a) => apply::apply(a, false),
        Cmd::Delete(a) => apply::apply(a, true),
        Cmd::Get(a) => apply::get(a),
        Cmd::Routes(a) => routes::run(a),
        Cmd::Identity(a) => identity::run(a),
        Cmd::Ca(a) => ca::run(a),
        Cmd::Edges(a) => edges::run(a),
        Cmd::Dashboard(a) => dashboard::run(a),
        Cmd::Inject(a) => inject::run(a),
        Cmd::Install(a) => install::run(a),
        Cmd::Capture(a) => capture::run(a),
        Cmd::Stat(a) => stat::run(a),
        Cmd::Tap(a) => tap::run(a),
        Cmd::Top(a) => top::run(a),
        Cmd::Canary(c) => canary::run(c),
        Cmd::Bench(a) => bench::run(a),
        Cmd::FleetSim(a) => fleet_sim::run(a),
        Cmd::Demo(DemoCmd::Echo(a)) => echo(a),
        Cmd::Demo(DemoCmd::Auth(a)) => auth(a),
        Cmd::Demo(DemoCmd::TcpEcho(a)) => tcp_echo(a),
        Cmd::Demo(DemoCmd::Shop(a)) => shop(a),
    }
}

fn shop(a: ShopArgs) -> anyhow::Result<i32> {
    use demo::shop::run::Service;
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.fail_rate),
        "--fail-rate {} is not between 0 and 1",
        a.fail_rate
    );
    let service = match a.service {
        ShopService::Frontend => Service::Frontend,
        ShopService::Auth => Service::Auth,
        ShopService::Inventory => Service::Inventory,
        ShopService::Payment => Service::Payment,
        ShopService::Product => Service::Product,
        ShopService::User => Service::User,
        ShopService::Order => Service::Order,
    };
    let opts = demo::shop::run::ShopOptions {
        service,
        data: (!a.memory).then(|| {
            a.data
                .unwrap_or_else(|| match std::env::var_os("WEFT_HOME") {
                    Some(home) => std::path::PathBuf::from(home).join("shop-data"),
                    None => "shop-data".into(),
                })
        }),
        switches: demo::shop::payment::Switches {
            fail_rate: a.fail_rate,
            delay: a.delay,
        },
        peers: demo::shop::http::Peers {
            inventory: a.inventory,
            payment: a.payment,
            product: a.product,
            user: a.user,
            auth: a.auth,
            order: a.order,
        },
        instance: a.instance,
        jwks: a.jwks,
        issuer: a.issuer,
        audience: Some(a.audience),
        stock: a.stock,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], a.port));
        let listener = listen(addr).await?;
        // Spans to the collector the mesh exports to (`weft up --otlp-endpoint` passes it on).
        let otlp = app::trace::Otlp::from_env(service.name())?;
        let stop = app::shutdown::Shutdown::on_signals()?;
        let served = demo::shop::run::run(opts, listener, stop).await;
        if let Some(otlp) = otlp {
            otlp.shutdown().await;
        }
        served?;
        Ok(0)
    })
}

/// A demo app's listener, with an error that names the address.
async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

fn auth(a: AuthArgs) -> anyhow::Result<i32> {
    let issuer = demo::auth::Issuer::generate(demo::auth::AuthOptions {
        issuer: a.issuer,
        audience: a.audience,
        default_ttl: a.ttl,
        max_ttl: a.max_ttl,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], a.port));
        let listener = listen(addr).await?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        demo::auth::serve_auth(listener, std::sync::Arc::new(issuer), shutdown).await?;
        Ok(0)
    })
}

fn tcp_echo(a: TcpEchoArgs) -> anyhow::Result<i32> {
    // One thread, like the HTTP echo: the app stays cheap and its cost steady in benchmarks.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], a.port));
        let listener = listen(addr).await?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        demo::serve_tcp_echo(listener, shutdown).await?;
        Ok(0)
    })
}

fn echo(a: EchoArgs) -> anyhow::Result<i32> {
    let rt = if a.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.workers)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let addr = SocketAddr::from((a.address, a.port));
        let listener = listen(addr).await?;
        let opts = demo::EchoOptions {
            service: a.service,
            version: a.version,
            instance: a.instance,
            delay: a.delay,
            fail_rate: a.fail_rate,
            fail_status: a.fail_status,
            proxy: demo::proxy_from_env(),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        demo::serve_echo(listener, opts, shutdown).await?;
        Ok(0)
    })
}

pub use proxy::run::cancel_on_signal as on_signal;

/// The mesh the files declare (none: the built-in demo), and the resources they hold.
/// What `weft up` runs with no files: the shop (the same as examples/shop).
pub const BUILT_IN: [(&str, &str); 4] = [
    (
        "mesh.yaml",
        include_str!("../../../../examples/shop/mesh.yaml"),
    ),
    (
        "gateway.yaml",
        include_str!("../../../../examples/shop/gateway.yaml"),
    ),
    (
        "security.yaml",
        include_str!("../../../../examples/shop/security.yaml"),
    ),
    (
        "resilience.yaml",
        include_str!("../../../../examples/shop/resilience.yaml"),
    ),
];

pub fn load_mesh(files: &[PathBuf]) -> anyhow::Result<(model::MeshSpec, config::Store)> {
    let store = if files.is_empty() {
        BUILT_IN
            .iter()
            .fold(config::Store::default(), |store, (name, text)| {
                let path = std::path::Path::new("<built-in shop>").join(name);
                store.applied(config::resources(&path, text))
            })
    } else {
        config::read_store(files)
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?
    };
    let loaded = store
        .load()
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    for d in &loaded.unsupported {
        eprintln!("weft: warning: {d}");
    }
    // A rejected resource is left out and the mesh starts without it.
    for d in &loaded.rejected {
        eprintln!("weft: error: {d}");
    }
    if !loaded.rejected.is_empty() {
        eprintln!(
            "weft: {} error(s): the resources they name are rejected; the rest applies",
            loaded.rejected.len()
        );
    }
    let mesh = loaded
        .mesh
        .ok_or_else(|| anyhow::anyhow!("no `kind: Mesh` document in {files:?}"))?;
    Ok((mesh, store))
}
