//! Local mode (`weft up`): the whole mesh as processes on 127.0.0.1 — the control plane in this
//! process, an ingress gateway, and for every replica its sidecar proxy and its app.
//!
//! Start order: control plane → Prometheus (with `--prometheus`) → ingress → for each replica,
//! sidecar then app (the app needs the sidecar's outbound address for `HTTP_PROXY`). The mesh is
//! ready when any request it can route will be routed: every replica is an endpoint in a
//! snapshot every proxy (the ingress, every sidecar) has applied, every proxy runs the latest
//! snapshot, the ingress has its certificate, and Prometheus (when it runs) answers `/-/ready`.
//!
//! Supervision: a process that exits is restarted with exponential backoff and reported.
//!
//! Stop order (Ctrl-C / SIGTERM): the ingress drains first (its in-flight requests still need the
//! sidecars), then the sidecars (their in-flight requests still need the apps), then the apps,
//! then Prometheus (an observer outlives what it observes: it records the drain, and stops
//! scraping each proxy as the proxy disconnects and leaves the targets file).
//! Each gets SIGTERM and the drain timeout before SIGKILL. Children run in their own process
//! group so a terminal's Ctrl-C reaches only `weft up`, which then stops them in order.

use crate::meshes::{self, MeshRecord};
use crate::prometheus::{self, PrometheusError, PrometheusOptions};
use control::ca::Ca;
use control::status;
use control::{ControlError, ControlPlane, Registry};
use model::{Identity, MeshSpec, ServiceSpec, WorkloadSpec};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long `weft up` waits for every replica to become ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Restart backoff for a crashed process: first delay, cap, and how long a process must have
/// run for the backoff to start over.
const RESTART_MIN: Duration = Duration::from_millis(200);
const RESTART_MAX: Duration = Duration::from_secs(10);
const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);
/// The ingress gateway's identity, as Istio's (so policies written for it select it unchanged).
/// The environment variable a proxy finds its one-time join token in.
pub const JOIN_TOKEN_ENV: &str = "WEFT_JOIN_TOKEN";

pub const INGRESS_NAMESPACE: &str = "istio-system";
pub const INGRESS_NAME: &str = "istio-ingressgateway";

#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The weft executable (for proxies and for commands whose first word is `weft`).
    pub exe: PathBuf,
    pub ready_timeout: Duration,
    pub drain_timeout: Duration,
    /// Files and directories to watch for routing changes (`--watch`); empty: none.
    pub watch: Vec<PathBuf>,
    /// The mesh CA; every proxy gets a join token for it and runs mTLS. `None`: plaintext.
    pub ca: Option<Arc<Ca>>,
    /// Run Prometheus beside the mesh, scraping every proxy (`--prometheus`).
    pub prometheus: Option<PrometheusOptions>,
    /// `weft proxy` flags every proxy gets (tracing: `--otlp-endpoint URL`…).
    pub proxy_flags: Vec<String>,
    /// Every proxy's access-log format (`json` or `apache`); a service's [`ACCESS_LOG_ANNOTATIONS`]
    /// name another (or turn it on) for its sidecars. `None`: off.
    pub access_log: Option<String>,
}

impl UpOptions {
    /// The trust domain of the mesh's identities: its CA's, or the default without one.
    pub fn trust_domain(&self) -> &str {
        self.ca
            .as_ref()
            .map_or(model::names::TRUST_DOMAIN, |ca| &ca.config().trust_domain)
    }
}

/// The service annotations that turn a workload's access log on (`json` or `apache`): weft's
/// own and Linkerd's.
pub const ACCESS_LOG_ANNOTATIONS: [&str; 2] =
    ["weft.dev/access-log", "config.linkerd.io/access-log"];

/// The `--access-log` flag of a proxy: its service's annotation, else the mesh-wide format.
fn access_log_args(opts: &UpOptions, service: Option<&ServiceSpec>) -> Vec<String> {
    let annotated = service.and_then(|svc| {
        let (key, value) = ACCESS_LOG_ANNOTATIONS
            .iter()
            .find_map(|k| svc.annotations.get(*k).map(|v| (*k, v.trim())))?;
        if matches!(value, "json" | "apache") {
            Some(value.to_string())
        } else {
            eprintln!(
                "weft: service {}: annotation {key}: {value:?} is not json or apache; ignored",
                svc.name
            );
            None
        }
    });
    match annotated.or_else(|| opts.access_log.clone()) {
        Some(f) => vec!["--access-log".into(), f],
        None => Vec::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("mesh {0:?} is already running (pid {1}); stop it first or give this one another metadata.name")]
    AlreadyRunning(String, u32),
    #[error("ingress: cannot listen on {0}: {1}")]
    IngressPort(SocketAddr, std::io::Error),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Record(#[from] meshes::FindError),
    #[error(transparent)]
    Prometheus(#[from] PrometheusError),
    #[error("{what}: cannot start {program:?}: {source}")]
    Spawn {
        what: String,
        program: String,
        source: std::io::Error,
    },
    #[error("{0}: the proxy did not report its addresses: {1}")]
    ProxyStart(String, String),
    #[error("the mesh did not become ready within {timeout:?}:\n{pending}")]
    NotReady { timeout: Duration, pending: String },
    #[error("interrupted while starting")]
    Interrupted,
}

/// A command to run (again, on restart).
#[derive(Clone)]
struct Launch {
    what: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// A proxy that asks the CA for its certificate: each start gets a fresh one-time token.
    join: Option<(Arc<Ca>, Identity)>,
    /// Inherited environment variables to remove (`HTTP_PROXY` for an app outside the mesh).
    unset: &'static [&'static str],
}

impl Launch {
    fn spawn(&self) -> Result<Child, UpError> {
        let mut cmd = Command::new(&self.argv[0]);
        for k in self.unset {
            cmd.env_remove(k);
        }
        cmd.args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some((ca, identity)) = &self.join {
            // In the environment, not argv: other users cannot read it from `ps`.
            cmd.env(JOIN_TOKEN_ENV, ca.join_token(identity));
        }
        // SAFETY: the closure runs in the forked child before exec and makes one
        // async-signal-safe system call (prctl). It is needed because the children sit in their
        // own process group: if `weft up` itself is killed (SIGKILL, OOM), nothing else would
        // stop them, and they would keep the mesh's ports. With PDEATHSIG they get SIGTERM
        // and drain. (The signal follows the spawning thread; `weft up` spawns from its
        // runtime's worker threads, which live as long as it does.)
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|source| UpError::Spawn {
            what: self.what.clone(),
            program: self.argv[0].clone(),
            source,
        })?;
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(err, self.what.clone()));
        }
        Ok(child)
    }
}

/// Copies a child's output to our stderr, each line prefixed with the child's name.
async fn forward(out: impl AsyncRead + Unpin, what: String) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{what}] {line}");
    }
}

/// Runs `launch` until `stop`, restarting it with backoff when it exits.
async fn supervise(launch: Launch, first: Child, stop: CancellationToken, drain_timeout: Duration) {
    let mut child = first;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, launch.what.clone()));
    }
    let mut backoff = RESTART_MIN;
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                if stop.is_cancelled() {
                    return;
                }
                if started.elapsed() >= RESTART_RESET_AFTER {
                    backoff = RESTART_MIN;
                }
                restarts += 1;
                eprintln!(
                    "weft: {} exited ({}); restarting in {:?} (restart {restarts})",
                    launch.what,
                    describe(status),
                    backoff
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(RESTART_MAX);
                match launch.spawn() {
                    Ok(mut c) => {
                        if let Some(out) = c.stdout.take() {
                            tokio::spawn(forward(out, launch.what.clone()));
                        }
                        child = c;
                    }
                    Err(e) => {
                        eprintln!("weft: {e}");
                        // Keep the old (exited) child; the next loop waits on it at once.
                    }
                }
            }
            _ = stop.cancelled() => {
                terminate(&mut child, drain_timeout + Duration::from_secs(2)).await;
                return;
            }
        }
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

/// SIGTERM, then SIGKILL if the process outlives `deadline`.
async fn terminate(child: &mut Child, deadline: Duration) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(deadline, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Starts a proxy and reads the addresses it bound (its first stdout line, JSON).
async fn start_proxy(launch: &Launch) -> Result<(Child, serde_json::Value), UpError> {
    let mut child = launch.spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| UpError::ProxyStart(launch.what.clone(), "no stdout".into()))?;
    let mut lines = BufReader::new(out).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
    let line = match first {
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) => {
            let status = child.wait().await;
            return Err(UpError::ProxyStart(
                launch.what.clone(),
                format!("it exited ({})", describe(status)),
            ));
        }
        Ok(Err(e)) => return Err(UpError::ProxyStart(launch.what.clone(), e.to_string())),
        Err(_) => return Err(UpError::ProxyStart(launch.what.clone(), "timed out".into())),
    };
    let bound: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| UpError::ProxyStart(launch.what.clone(), format!("{e}: {line:?}")))?;
    let what = launch.what.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{what}] {line}");
        }
    });
    Ok((child, bound))
}

/// The lowest port [`app_port`] hands out: above the well-known and most registered services.
const APP_PORT_MIN: u16 = 10_000;

/// A port for an app to listen on. The app binds it some time after it was chosen, so it must
/// not be one the kernel hands out by itself meanwhile (to another listener on port 0, or as
/// the local port of an outgoing connection, which took an app's port when meshes started
/// together): it is drawn below the ephemeral range (`net.ipv4.ip_local_port_range`), at random
/// so that meshes starting together draw different ones, and checked free. Where the
/// ephemeral range leaves no room below it, the kernel picks one.
fn app_port() -> std::io::Result<u16> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > APP_PORT_MIN + 1_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..64 {
            let port = rng.gen_range(APP_PORT_MIN..ephemeral_low);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn proxy_args(
    opts: &UpOptions,
    control: SocketAddr,
    mode: &str,
    svc: (&str, &str),
    workload: &str,
    instance: &str,
    labels: &model::Labels,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        opts.exe.display().to_string(),
        "proxy".into(),
        "--mode".into(),
        mode.into(),
        "--control".into(),
        control.to_string(),
        "--service".into(),
        svc.0.into(),
        "--namespace".into(),
        svc.1.into(),
        "--workload".into(),
        workload.into(),
        "--instance".into(),
        instance.into(),
        "--drain-timeout".into(),
        format!("{}ms", opts.drain_timeout.as_millis()),
    ];
    for (k, v) in labels {
        a.push("--label".into());
        a.push(format!("{k}={v}"));
    }
    a.extend(opts.proxy_flags.iter().cloned());
    a
}

/// Runs the mesh until `shutdown` is cancelled; `on_ready` is told the status once it is ready.
pub async fn up(
    spec: MeshSpec,
    store: config::Store,
    opts: UpOptions,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&status::Status),
) -> Result<(), UpError> {
    if let Ok(m) = meshes::find(Some(&spec.name)) {
        return Err(UpError::AlreadyRunning(m.name, m.pid));
    }
    // A clear error before anything starts, rather than a crash-looping ingress.
    drop(
        std::net::TcpListener::bind(spec.ingress)
            .map_err(|e| UpError::IngressPort(spec.ingress, e))?,
    );
    let prom = opts
        .prometheus
        .as_ref()
        .map(|p| prometheus::prepare(&spec.name, p, &opts.exe))
        .transpose()?;

    let registry = Registry::new(spec.clone());
    registry.set_runs_ingress(true);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let control = ControlPlane::start(registry.clone(), store, any, any, opts.ca.clone()).await?;
    if !opts.watch.is_empty() {
        control.watch(opts.watch.clone());
    }
    let _record = meshes::record(&MeshRecord {
        name: spec.name.clone(),
        pid: std::process::id(),
        control: control.grpc.to_string(),
        api: control.api.to_string(),
        ingress: spec.ingress.to_string(),
    })?;

    let stops = [
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    ];
    let [ingress_stop, sidecar_stop, app_stop, prom_stop] = &stops;
    let mut ingress_tasks = JoinSet::new();
    let mut sidecar_tasks = JoinSet::new();
    let mut app_tasks = JoinSet::new();
    let mut prom_tasks = JoinSet::new();

    let started = match &prom {
        Some(setup) => start_prometheus(
            setup,
            &registry,
            &control,
            &opts,
            &mut prom_tasks,
            prom_stop,
        ),
        None => Ok(()),
    };
    let started = match started {
        Ok(()) => {
            start_all(
                &spec,
                &opts,
                control.grpc,
                (&mut ingress_tasks, &mut sidecar_tasks, &mut app_tasks),
                (ingress_stop, sidecar_stop, app_stop),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let prom_addr = prom.as_ref().map(|p| p.listen);
    let result = match started {
        Ok(()) => {
            tokio::select! {
                r = wait_ready(&registry, &control, prom_addr, opts.ready_timeout) => r,
                _ = shutdown.cancelled() => Err(UpError::Interrupted),
            }
        }
        Err(e) => Err(e),
    };
    if result.is_ok() {
        on_ready(&status::build(&registry, control.grpc, control.api));
        shutdown.cancelled().await;
        eprintln!(
            "weft: stopping mesh {}: draining the ingress, then sidecars, then apps{}",
            spec.name,
            if prom.is_some() {
                ", then Prometheus"
            } else {
                ""
            }
        );
    }

    ingress_stop.cancel();
    while ingress_tasks.join_next().await.is_some() {}
    sidecar_stop.cancel();
    while sidecar_tasks.join_next().await.is_some() {}
    app_stop.cancel();
    while app_tasks.join_next().await.is_some() {}
    prom_stop.cancel();
    while prom_tasks.join_next().await.is_some() {}
    if let Some(setup) = &prom {
        // The TSDB lives as long as the mesh; the config stays for whoever wants to read it.
        let _ = std::fs::remove_dir_all(&setup.data);
    }
    control.shutdown.cancel();
    result
}

/// Starts Prometheus (supervised like every other process) and the task that keeps its targets
/// file listing the registry's proxies; the mesh reports its URL from now on.
fn start_prometheus(
    setup: &prometheus::Setup,
    registry: &Arc<Registry>,
    control: &ControlPlane,
    opts: &UpOptions,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<(), UpError> {
    tokio::spawn(prometheus::keep_targets(
        registry.clone(),
        setup.targets.clone(),
        registry.spec().name,
        control.shutdown.clone(),
    ));
    let launch = Launch {
        what: "prometheus".into(),
        argv: setup.argv(),
        env: vec![],
        join: None,
        unset: &[],
    };
    let child = launch.spawn()?;
    tasks.spawn(supervise(launch, child, stop.clone(), opts.drain_timeout));
    registry.set_prometheus(Some(setup.url()));
    Ok(())
}

type Tasks<'a> = (
    &'a mut JoinSet<()>,
    &'a mut JoinSet<()>,
    &'a mut JoinSet<()>,
);

async fn start_all(
    spec: &MeshSpec,
    opts: &UpOptions,
    control: SocketAddr,
    tasks: Tasks<'_>,
    stops: (&CancellationToken, &CancellationToken, &CancellationToken),
) -> Result<(), UpError> {
    let (ingress_tasks, sidecar_tasks, app_tasks) = tasks;
    let ingress_labels: model::Labels = [
        ("istio".to_string(), "ingressgateway".to_string()),
        ("app".to_string(), INGRESS_NAME.to_string()),
    ]
    .into();
    let mut argv = proxy_args(
        opts,
        control,
        "ingress",
        (INGRESS_NAME, INGRESS_NAMESPACE),
        INGRESS_NAME,
        "ingress-0",
        &ingress_labels,
    );
    let ingress_identity =
        Identity::spiffe_in(opts.trust_domain(), INGRESS_NAMESPACE, INGRESS_NAME);
    argv.extend([
        "--outbound".into(),
        spec.ingress.to_string(),
        "--identity".into(),
        ingress_identity.0.clone(),
    ]);
    argv.extend(access_log_args(opts, None));
    let launch = Launch {
        what: "ingress".into(),
        argv,
        env: vec![],
        join: opts.ca.clone().map(|ca| (ca, ingress_identity)),
        unset: &[],
    };
    let (child, _) = start_proxy(&launch).await?;
    ingress_tasks.spawn(supervise(
        launch,
        child,
        stops.0.clone(),
        opts.drain_timeout,
    ));

    for svc in &spec.services {
        for w in &svc.workloads {
            for i in 0..w.replicas {
                start_replica(opts, control, svc, w, i, sidecar_tasks, app_tasks, stops).await?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn start_replica(
    opts: &UpOptions,
    control: SocketAddr,
    svc: &ServiceSpec,
    w: &WorkloadSpec,
    i: u32,
    sidecar_tasks: &mut JoinSet<()>,
    app_tasks: &mut JoinSet<()>,
    stops: (&CancellationToken, &CancellationToken, &CancellationToken),
) -> Result<(), UpError> {
    let instance = w.instance_name(i);
    let port = app_port().map_err(|e| UpError::Spawn {
        what: instance.clone(),
        program: "port allocation".into(),
        source: e,
    })?;
    if !w.sidecar {
        return start_unmeshed(opts, svc, w, instance, port, app_tasks, stops.2);
    }
    let app = SocketAddr::from(([127, 0, 0, 1], port));
    let mut argv = proxy_args(
        opts,
        control,
        "sidecar",
        (&svc.name, &svc.namespace),
        &w.name,
        &instance,
        &w.labels,
    );
    argv.extend([
        "--app".into(),
        app.to_string(),
        "--inbound".into(),
        "127.0.0.1:0".into(),
        "--outbound".into(),
        "127.0.0.1:0".into(),
        "--identity".into(),
        svc.identity_in(opts.trust_domain()).0,
    ]);
    argv.extend(access_log_args(opts, Some(svc)));
    let mut launch = Launch {
        what: format!("{instance} proxy"),
        argv,
        env: vec![],
        join: opts
            .ca
            .clone()
            .map(|ca| (ca, svc.identity_in(opts.trust_domain()))),
        unset: &[],
    };
    let (child, bound) = start_proxy(&launch).await?;
    let field = |k: &str| {
        bound
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (inbound, outbound, admin) = (field("inbound"), field("outbound"), field("admin"));
    // Restarts reuse the same addresses, so the app's HTTP_PROXY and peers' routes stay valid.
    for (flag, v) in [
        ("--inbound", &inbound),
        ("--outbound", &outbound),
        ("--admin", &admin),
    ] {
        if let Some(pos) = launch.argv.iter().position(|a| a == flag) {
            launch.argv[pos + 1] = v.clone();
        } else {
            launch.argv.extend([flag.to_string(), v.clone()]);
        }
    }
    sidecar_tasks.spawn(supervise(
        launch,
        child,
        stops.1.clone(),
        opts.drain_timeout,
    ));

    let mut argv = w.command.clone();
    if argv[0] == "weft" {
        argv[0] = opts.exe.display().to_string();
    }
    let proxy_url = format!("http://{outbound}");
    let mut env = vec![
        ("PORT".to_string(), port.to_string()),
        ("HTTP_PROXY".into(), proxy_url.clone()),
        ("http_proxy".into(), proxy_url),
        ("NO_PROXY".into(), "localhost,127.0.0.1,::1".into()),
        ("no_proxy".into(), "localhost,127.0.0.1,::1".into()),
        ("WEFT_SERVICE".into(), svc.name.clone()),
        ("WEFT_NAMESPACE".into(), svc.namespace.clone()),
        ("WEFT_WORKLOAD".into(), w.name.clone()),
        ("WEFT_INSTANCE".into(), instance.clone()),
    ];
    env.extend(w.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let launch = Launch {
        what: instance,
        argv,
        env,
        join: None,
        unset: &[],
    };
    let child = launch.spawn()?;
    app_tasks.spawn(supervise(
        launch,
        child,
        stops.2.clone(),
        opts.drain_timeout,
    ));
    Ok(())
}

/// Starts a replica of a workload declared with `sidecar: false`: only its app, as a client
/// outside the mesh (Istio's `legacy` namespace). It gets `PORT` but no `HTTP_PROXY` (an
/// inherited one is removed), so it calls services in plaintext and no proxy registers it as
/// an endpoint.
fn start_unmeshed(
    opts: &UpOptions,
    svc: &ServiceSpec,
    w: &WorkloadSpec,
    instance: String,
    port: u16,
    app_tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<(), UpError> {
    let mut argv = w.command.clone();
    if argv[0] == "weft" {
        argv[0] = opts.exe.display().to_string();
    }
    let mut env = vec![
        ("PORT".to_string(), port.to_string()),
        ("WEFT_SERVICE".into(), svc.name.clone()),
        ("WEFT_NAMESPACE".into(), svc.namespace.clone()),
        ("WEFT_WORKLOAD".into(), w.name.clone()),
        ("WEFT_INSTANCE".into(), instance.clone()),
    ];
    env.extend(w.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let launch = Launch {
        what: instance,
        argv,
        env,
        join: None,
        unset: &["HTTP_PROXY", "http_proxy"],
    };
    let child = launch.spawn()?;
    app_tasks.spawn(supervise(launch, child, stop.clone(), opts.drain_timeout));
    Ok(())
}

/// Waits until the mesh routes whatever it can route: every declared replica is ready (an
/// endpoint in a snapshot every live proxy has applied), every proxy runs the latest snapshot
/// (the routes in force), the ingress is registered and ready (with its certificate, when the
/// mesh runs mTLS), and Prometheus (when `prometheus` is its address) answers `/-/ready`.
async fn wait_ready(
    registry: &Arc<Registry>,
    control: &ControlPlane,
    prometheus: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(), UpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut generation = registry.watch_generation();
    let mut prometheus_ready = prometheus.is_none();
    loop {
        if let (false, Some(addr)) = (prometheus_ready, prometheus) {
            prometheus_ready = prometheus::ready(addr).await;
        }
        let st = status::build(registry, control.grpc, control.api);
        let pending =
            st.pending
                .iter()
                .map(|p| format!("  {p}"))
                .chain(prometheus.filter(|_| !prometheus_ready).map(|addr| {
                    format!("  prometheus: http://{addr}/-/ready does not answer 200 yet")
                }))
                .collect::<Vec<_>>();
        if pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            _ = generation.changed() => {}
            // Only Prometheus is polled; everything else wakes the generation watch.
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(UpError::NotReady { timeout, pending: pending.join("\n") });
            }
        }
    }
}
