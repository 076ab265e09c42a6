//! Local mode (`weft up`): the whole mesh as processes on 127.0.0.1 — the control plane in this
//! process, an ingress gateway, and for every replica its sidecar proxy and its app.
//!
//! Start order: control plane → Prometheus (with `--prometheus`) → ingress → for each replica,
//! sidecar then app (the app needs the sidecar's outbound address for `HTTP_PROXY`). The mesh is
//! ready when any request it can route will be routed: every replica is an endpoint in a
//! snapshot every proxy (the ingress, every sidecar) has applied, every proxy runs the latest
//! snapshot, the ingress has its certificate, and Prometheus (when it runs) answers `/-/ready`.
//!
//! Ports: the proxies bind port 0 and report what they got; an app's `PORT` is drawn below the
//! ephemeral range (see [`crate::launch`]). The one port checked before anything starts is the
//! ingress's, which the mesh file fixes.
//!
//! Supervision ([`crate::supervise`]): a process that exits is restarted with exponential
//! backoff and reported. A job (a workload whose `restartPolicy` is `OnFailure` or `Never`)
//! runs once: its app starts once its sidecar is ready for it, and once the app has finished
//! for good its sidecar is drained and stopped (its pod removed) and the registry marks the
//! replica `completed` or `failed`, which nothing waits for.
//!
//! Live changes: the Mesh document is part of the configuration in force, so a `--watch`ed
//! edit to it reaches the registry like any other; [`crate::reconcile`] then starts, stops and
//! replaces replicas until the processes match it.
//!
//! Stop order (Ctrl-C / SIGTERM): the ingress drains first (its in-flight requests still need the
//! sidecars), then the sidecars (their in-flight requests still need the apps), then the apps,
//! then Prometheus (an observer outlives what it observes: it records the drain, and stops
//! scraping each proxy as the proxy disconnects and leaves the targets file).
//! Each gets SIGTERM and the drain timeout before SIGKILL. Children run in their own process
//! group so a terminal's Ctrl-C reaches only `weft up`, which then stops them in order.

use crate::launch::{app_port, AppLaunch, Launch, ProxyLaunch, ProxyMode};
use crate::meshes::{self, MeshRecord};
use crate::pods::{self, Network, PodError};
use crate::prometheus::{self, PrometheusError, PrometheusOptions};
use crate::supervise::{Proc, Stage};
use control::ca::Ca;
use control::status;
use control::{ControlError, ControlPlane, Registry};
use model::{Identity, MeshSpec, RestartPolicy, ServiceSpec, WorkloadSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long `weft up` waits for every replica to become ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The ingress gateway's identity, as Istio's (so policies written for it select it unchanged).
pub use control::hosts::{INGRESS_NAME, INGRESS_NAMESPACE};

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
    /// Environment every app gets before its workload's own `env` (which wins): the OTLP
    /// collector the proxies export to, so that apps built on the SDK send their spans there too.
    pub app_env: Vec<(String, String)>,
    /// Serve the web dashboard on this address too (`--dashboard`); it is always under the
    /// API's `/dashboard/`.
    pub dashboard: Option<SocketAddr>,
}

impl UpOptions {
    /// The trust domain of the mesh's identities: its CA's, or the default without one.
    pub fn trust_domain(&self) -> &str {
        self.ca
            .as_ref()
            .map_or(model::names::TRUST_DOMAIN, |ca| &ca.config().trust_domain)
    }

    /// A proxy's access-log format: its service's annotation, else the mesh-wide format.
    fn access_log(&self, service: Option<&ServiceSpec>) -> Option<String> {
        let annotated = service.and_then(|svc| {
            let (key, value) = ACCESS_LOG_ANNOTATIONS
                .iter()
                .find_map(|k| svc.annotations.get(*k).map(|v| (*k, v.trim())))?;
            if matches!(value, "json" | "apache") {
                Some(value.to_string())
            } else {
                crate::output::line(format!(
                    "weft: service {}: annotation {key}: {value:?} is not json or apache; ignored",
                    svc.name
                ));
                None
            }
        });
        annotated.or_else(|| self.access_log.clone())
    }
}

/// The service annotations that turn a workload's access log on (`json` or `apache`): weft's
/// own and Linkerd's.
pub const ACCESS_LOG_ANNOTATIONS: [&str; 2] =
    ["weft.dev/access-log", "config.linkerd.io/access-log"];

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("mesh {0:?} is already running (pid {1}); stop it first or give this one another metadata.name")]
    AlreadyRunning(String, u32),
    #[error("ingress: cannot listen on {0}: {1}")]
    IngressPort(SocketAddr, std::io::Error),
    #[error("cannot prepare the mesh's run directory {}: {source}", path.display())]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// A proxy refused the mesh's snapshot: it will not run it, however long one waits.
    #[error("the mesh cannot become ready: a proxy refused its snapshot:\n{pending}")]
    Refused { pending: String },
    #[error("interrupted while starting")]
    Interrupted,
    #[error(transparent)]
    Pods(#[from] PodError),
    /// A pod's sidecar did not get ready for its app (registered, with a snapshot and its
    /// certificate) in time; the app was not started.
    #[error("{instance}: its sidecar was not ready within {timeout:?} ({reason}); the app was not started")]
    SidecarNotReady {
        instance: String,
        timeout: Duration,
        reason: String,
    },
}

/// The mesh's processes, by the order they stop in.
pub(crate) struct Stages {
    ingress: Stage,
    pub sidecars: Stage,
    pub apps: Stage,
    prometheus: Stage,
}

impl Stages {
    fn new(drain_timeout: Duration) -> Stages {
        Stages {
            ingress: Stage::new(drain_timeout),
            sidecars: Stage::new(drain_timeout),
            apps: Stage::new(drain_timeout),
            prometheus: Stage::new(drain_timeout),
        }
    }

    /// Stops them in order: the ingress, the sidecars, the apps, Prometheus.
    async fn stop(&mut self) {
        self.ingress.stop().await;
        self.sidecars.stop().await;
        self.apps.stop().await;
        self.prometheus.stop().await;
    }
}

/// Runs the mesh until `shutdown` is cancelled; `on_ready` is told the status once it is ready.
/// How long the last lines of output may take to reach stderr when the mesh stops.
const OUTPUT_FLUSH: Duration = Duration::from_secs(2);

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
    // What `weft up`s that died (SIGKILL, a crash) left on the host: their pods and bridges.
    for line in pods::clean_dead(&meshes::home()) {
        crate::output::line(line);
    }
    let transparent = spec.interception == model::Interception::Transparent;
    if transparent {
        pods::check_privileges()?;
        pods::check_tools()?;
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
    // The sidecars' state directories live here for this run; a previous run's (a `weft up`
    // that was killed) are not this one's to start from.
    let run_dir = meshes::run_dir(&spec.name);
    reset_run_dir(&run_dir).map_err(|source| UpError::RunDir {
        path: run_dir.clone(),
        source,
    })?;

    let registry = Registry::new(spec.clone());
    registry.set_runs_ingress(true);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    // Dropped (pods and bridge removed) only after every process of the mesh has stopped.
    let network = match transparent {
        true => Some(Network::create(&spec.name, &meshes::home())?),
        false => None,
    };
    // Pods reach the control plane at the bridge's address; the API stays on loopback.
    let grpc = network
        .as_ref()
        .map_or(any, |n| SocketAddr::from((n.gateway(), 0)));
    // The operator's credential for the control plane's API, in WEFT_HOME for the CLI.
    let token = meshes::new_admin_token();
    let control = ControlPlane::start_with(
        registry.clone(),
        Arc::new(control::store::Memory::new(store)),
        control::Listen { grpc, api: any },
        opts.ca.clone(),
        Some(token.clone()),
    )
    .await?;
    if !opts.watch.is_empty() {
        control.watch(opts.watch.clone());
    }
    let dashboard = match opts.dashboard {
        Some(addr) => Some(control.serve_dashboard(addr).await?),
        None => None,
    };
    let _record = meshes::record(
        &MeshRecord {
            name: spec.name.clone(),
            pid: std::process::id(),
            control: control.grpc.to_string(),
            api: control.api.to_string(),
            ingress: spec.ingress.to_string(),
            token_file: None,
            ca_file: None,
            dashboard: dashboard.map(|d| d.to_string()),
        },
        Some(&token),
    )?;

    let mut stages = Stages::new(opts.drain_timeout);
    let starter = Starter {
        opts: &opts,
        control: control.grpc,
        admin_token: token.as_str().into(),
        tcp_services: TcpService::of(&registry.spec().services),
        registry: registry.clone(),
        network: network.clone(),
        runs: Default::default(),
        run_dir: run_dir.clone(),
    };
    starter.publish_pods();
    let started = async {
        if let Some(setup) = &prom {
            start_prometheus(setup, &registry, &control, &token, &mut stages.prometheus)?;
        }
        starter.start_all(&spec, &mut stages).await
    };
    let mut replicas = Vec::new();
    let result = match started.await {
        Ok(started) => {
            replicas = started;
            if let Some(net) = &network {
                crate::output::line(format!(
                    "weft: mesh {}: created on this host: {}",
                    spec.name,
                    net.describe()
                ));
            }
            let prom_addr = prom.as_ref().map(|p| p.listen);
            tokio::select! {
                r = wait_ready(&registry, &control, prom_addr, opts.ready_timeout) => r,
                _ = shutdown.cancelled() => Err(UpError::Interrupted),
            }
        }
        Err(e) => Err(e),
    };
    if result.is_ok() {
        on_ready(&status::build(&registry, control.grpc, control.api));
        crate::reconcile::Reconciler {
            starter: &starter,
            registry: &registry,
            stages: &mut stages,
            applied: spec.clone(),
            replicas,
        }
        .run(&shutdown)
        .await;
        crate::output::line(format!(
            "weft: stopping mesh {}: draining the ingress, then sidecars, then apps{}",
            spec.name,
            if prom.is_some() {
                ", then Prometheus"
            } else {
                ""
            }
        ));
    }

    stages.stop().await;
    if let Some(net) = &network {
        net.teardown();
        crate::output::line(format!(
            "weft: mesh {}: removed its bridge {} and its network namespaces",
            spec.name, net.bridge
        ));
    }
    if let Some(setup) = &prom {
        // The TSDB lives as long as the mesh; the config stays for whoever wants to read it.
        let _ = std::fs::remove_dir_all(&setup.data);
    }
    // Every process has stopped: nothing reads or writes the proxies' state any more.
    let _ = std::fs::remove_dir_all(&run_dir);
    control.shutdown.cancel();
    crate::output::flush(OUTPUT_FLUSH);
    result
}

/// Starts Prometheus (supervised like every other process), which asks the control plane's
/// API for its targets with the admin credential `token`, and the task that keeps
/// `targets.json` listing the registry's proxies; the mesh reports its URL from now on.
fn start_prometheus(
    setup: &prometheus::Setup,
    registry: &Arc<Registry>,
    control: &ControlPlane,
    token: &str,
    stage: &mut Stage,
) -> Result<(), UpError> {
    setup.write_config(control.api, token)?;
    tokio::spawn(prometheus::keep_targets(
        registry.clone(),
        setup.targets.clone(),
        registry.spec().name,
        control.shutdown.clone(),
    ));
    stage.start(Launch::Command {
        what: "prometheus".into(),
        argv: setup.argv(),
    })?;
    registry.set_prometheus(Some(setup.url()));
    Ok(())
}

/// Describes and starts the mesh's proxies and apps.
pub(crate) struct Starter<'a> {
    pub opts: &'a UpOptions,
    /// The control plane's gRPC address, which every proxy connects to.
    control: SocketAddr,
    /// The mesh's admin credential, which the proxies' `/tap` and `/shutdown` ask for.
    admin_token: Arc<str>,
    /// The mesh's TCP service ports (as `weft up` started), each of which every other
    /// workload with a sidecar gets a local client port for.
    tcp_services: Vec<TcpService>,
    registry: Arc<Registry>,
    /// The pods' network (transparent interception); `None`: every process on the host's.
    pub network: Option<Arc<Network>>,
    /// How many times each replica (service, namespace, instance) has been started: only the
    /// newest run of a job reports its outcome (one it replaces may finish meanwhile).
    runs: Arc<std::sync::Mutex<BTreeMap<ReplicaKey, u64>>>,
    /// The mesh's run directory ([`meshes::run_dir`]), where each sidecar keeps its state.
    run_dir: PathBuf,
}

/// A service port that is `protocol: tcp`, as a local client port reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TcpService {
    pub key: model::ServiceKey,
    pub port: u16,
}

impl TcpService {
    /// The ports of `services` that carry TCP, one each.
    pub(crate) fn of(services: &[model::ServiceSpec]) -> Vec<TcpService> {
        services
            .iter()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .filter(|p| p.protocol == model::Protocol::Tcp)
                    .map(|p| TcpService {
                        key: s.key(),
                        port: p.port,
                    })
            })
            .collect()
    }

    /// `WEFT_TCP_<SERVICE>_<PORT>`: the service's name upper-cased, `-` and `.` as `_`.
    pub(crate) fn env_name(&self) -> String {
        let name = model::mesh::env_word(&self.key.name);
        format!("WEFT_TCP_{name}_{}", self.port)
    }
}

impl Starter<'_> {
    /// Starts the ingress, then every replica (sidecar, then app).
    async fn start_all(
        &self,
        spec: &MeshSpec,
        stages: &mut Stages,
    ) -> Result<Vec<Replica>, UpError> {
        self.start_ingress(spec, &mut stages.ingress).await?;
        let mut replicas = Vec::new();
        for svc in &spec.services {
            for w in &svc.workloads {
                for i in 0..w.replicas {
                    replicas.push(self.start_replica(svc, w, i, stages).await?);
                }
            }
        }
        Ok(replicas)
    }

    /// Starts the ingress gateway. Its outbound address is the mesh's ingress, fixed; its admin
    /// port is a free one on every start.
    async fn start_ingress(&self, spec: &MeshSpec, stage: &mut Stage) -> Result<(), UpError> {
        let opts = self.opts;
        let labels = [
            ("istio".to_string(), "ingressgateway".to_string()),
            ("app".to_string(), INGRESS_NAME.to_string()),
        ]
        .into();
        let proxy = ProxyLaunch {
            mode: ProxyMode::Ingress,
            control: self.control,
            control_more: Vec::new(),
            service: INGRESS_NAME.into(),
            namespace: INGRESS_NAMESPACE.into(),
            workload: INGRESS_NAME.into(),
            instance: "ingress-0".into(),
            labels,
            identity: Identity::spiffe_in(opts.trust_domain(), INGRESS_NAMESPACE, INGRESS_NAME),
            app: None,
            inbound: None,
            outbound: Some(spec.ingress),
            admin: None,
            drain_timeout: opts.drain_timeout,
            access_log: opts.access_log(None),
            app_protocol: model::Protocol::Http,
            extra_flags: opts.proxy_flags.clone(),
            // The ingress starts from its control plane, which lives and dies with it.
            state_dir: None,
            app_pid_file: None,
        };
        let launch = self.proxy(proxy);
        let (child, _) = launch.start_proxy().await?;
        stage.supervise(launch, child);
        Ok(())
    }

    /// Starts replica `i` of workload `w` of `svc`: its sidecar, then its app (alone for a
    /// workload without a sidecar).
    pub async fn start_replica(
        &self,
        svc: &ServiceSpec,
        w: &WorkloadSpec,
        i: u32,
        stages: &mut Stages,
    ) -> Result<Replica, UpError> {
        // Run again (a change of its workload): no longer finished.
        let key = (svc.name.clone(), svc.namespace.clone(), w.instance_name(i));
        *lock(&self.runs).entry(key).or_default() += 1;
        self.registry
            .set_finished(&svc.name, &svc.namespace, &w.instance_name(i), None);
        if let Some(net) = &self.network {
            return self.start_pod_replica(net, svc, w, i, stages).await;
        }
        let opts = self.opts;
        let instance = w.instance_name(i);
        // Every port picked for this replica, leased until it is dropped.
        let mut leases = Vec::new();
        let mut pick = || {
            let lease = app_port().map_err(|e| UpError::Spawn {
                what: instance.clone(),
                program: "port allocation".into(),
                source: e,
            })?;
            let port = lease.port;
            leases.push(lease);
            Ok::<u16, UpError>(port)
        };
        let port = pick()?;
        // The first port is `PORT` (and `PORT_<NAME>` when named); each further one gets a
        // port of its own.
        let mut named_ports = Vec::new();
        // Service port → the app's port, for the sidecar's tunnels (`--app-port`).
        let mut app_ports = Vec::new();
        for (k, p) in svc.ports.iter().enumerate() {
            if k == 0 {
                app_ports.push((p.port, port));
            }
            let Some(env) = p.env_name() else { continue };
            let port = match k {
                0 => port,
                _ => pick()?,
            };
            if k > 0 {
                app_ports.push((p.port, port));
            }
            named_ports.push((env, port));
        }
        // A local client port per TCP service of the mesh (not its own): the sidecar listens
        // there and tunnels, for clients that honour no proxy.
        let (mut tcp_env, mut tcp_flags) = (Vec::new(), Vec::new());
        if w.sidecar {
            for (service_port, app) in &app_ports {
                tcp_flags.push("--app-port".to_string());
                tcp_flags.push(format!("{service_port}=127.0.0.1:{app}"));
            }
            for t in self.tcp_services.iter().filter(|t| t.key != svc.key()) {
                let port = pick()?;
                let listen = SocketAddr::from(([127, 0, 0, 1], port));
                tcp_env.push((t.env_name(), listen.to_string()));
                tcp_flags.push("--tcp-port".to_string());
                tcp_flags.push(format!("{}:{}@{listen}", t.key, t.port));
            }
        }
        let mut sidecar = None;
        let mut app = AppLaunch {
            command: w.command.clone(),
            port,
            named_ports,
            service: svc.name.clone(),
            namespace: svc.namespace.clone(),
            workload: w.name.clone(),
            instance: instance.clone(),
            proxy: None,
            env: self
                .opts
                .app_env
                .iter()
                .cloned()
                .chain(tcp_env)
                .chain(w.env.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            pid_file: w.sidecar.then(|| self.app_pid_file(svc, &instance)),
        };
        if w.sidecar {
            let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
            let state_dir = self.state_dir(svc, &instance);
            let mut proxy = ProxyLaunch {
                mode: ProxyMode::Sidecar,
                control: self.control,
                control_more: Vec::new(),
                service: svc.name.clone(),
                namespace: svc.namespace.clone(),
                workload: w.name.clone(),
                instance,
                labels: w.labels.clone(),
                identity: svc.identity_in(opts.trust_domain()),
                app: Some(SocketAddr::from(([127, 0, 0, 1], port))),
                inbound: Some(unbound),
                outbound: Some(unbound),
                admin: None,
                drain_timeout: opts.drain_timeout,
                access_log: opts.access_log(Some(svc)),
                app_protocol: svc.protocol(),
                extra_flags: opts.proxy_flags.iter().cloned().chain(tcp_flags).collect(),
                state_dir: Some(state_dir),
                app_pid_file: app.pid_file.clone(),
            };
            let (child, bound) = self.proxy(proxy.clone()).start_proxy().await?;
            let Some(outbound) = bound.outbound else {
                return Err(UpError::ProxyStart(
                    format!("{} proxy", proxy.instance),
                    "it reported no outbound address".into(),
                ));
            };
            // Restarts bind the same addresses, so the app's HTTP_PROXY and peers' routes stay
            // valid.
            proxy.keep_addresses(&bound);
            let pid = child.id();
            let proc = stages.sidecars.supervise(self.proxy(proxy), child);
            // A job runs once: its first requests must find a sidecar with routes (as in a
            // pod, below).
            if w.restart_policy != RestartPolicy::Always {
                if let Err(reason) = self.sidecar_started(pid).await {
                    proc.stop().await;
                    return Err(UpError::SidecarNotReady {
                        instance: app.instance,
                        timeout: opts.ready_timeout,
                        reason,
                    });
                }
            }
            sidecar = Some(proc);
            app.proxy = Some(outbound);
        }
        let instance = app.instance.clone();
        let started = stages.apps.start_with(
            Launch::App {
                app,
                exe: opts.exe.clone(),
                netns: None,
            },
            w.restart_policy,
        );
        let app = match started {
            Ok(app) => app,
            Err(e) => {
                if let Some(s) = &sidecar {
                    s.stop().await;
                }
                return Err(e);
            }
        };
        let mut replica = self.replica(svc, w, i, instance, sidecar, app, None);
        replica.ports = leases;
        Ok(replica)
    }

    /// A replica just started; for a job (a restart policy other than `Always`), the task that
    /// ends its sidecar (and removes its pod) once its app has finished for good, and then
    /// tells the registry.
    #[allow(clippy::too_many_arguments)]
    fn replica(
        &self,
        svc: &ServiceSpec,
        w: &WorkloadSpec,
        index: u32,
        instance: String,
        sidecar: Option<Proc>,
        app: Proc,
        pod: Option<PodHandle>,
    ) -> Replica {
        let replica = Replica {
            service: svc.key(),
            workload: w.name.clone(),
            index,
            instance,
            sidecar,
            app,
            pod,
            ports: Vec::new(),
            retired: CancellationToken::new(),
        };
        if w.restart_policy != RestartPolicy::Always {
            let (app, sidecar, pod) = (
                replica.app.clone(),
                replica.sidecar.clone(),
                replica.pod.clone(),
            );
            let retired = replica.retired.clone();
            let registry = self.registry.clone();
            let key = (
                svc.name.clone(),
                svc.namespace.clone(),
                replica.instance.clone(),
            );
            let runs = self.runs.clone();
            let run = lock(&runs).get(&key).copied();
            tokio::spawn(async move {
                let Some(outcome) = app.finished().await else {
                    return; // Stopped: a change of the mesh, or the mesh stopping.
                };
                if retired.is_cancelled() {
                    return;
                }
                // Its app is gone: nothing in flight needs the sidecar any more. It drains
                // (leaves the endpoints) and exits.
                if let Some(s) = &sidecar {
                    s.stop().await;
                }
                if let Some(pod) = &pod {
                    pod.remove();
                }
                // A replacement (a change of its workload) may run under its name by now.
                if !retired.is_cancelled() && lock(&runs).get(&key).copied() == run {
                    registry.set_finished(&key.0, &key.1, &key.2, Some(outcome));
                }
            });
        }
        replica
    }

    /// Starts replica `i` of workload `w` of `svc` in a pod of its own: the pod (namespace,
    /// address, hosts file, capture rules when it has a sidecar), then its sidecar, and once
    /// the sidecar is ready for it (as Istio's `holdApplicationUntilProxyStarts`), its app, which
    /// listens on the service's own ports and is told nothing about the mesh.
    async fn start_pod_replica(
        &self,
        net: &Arc<Network>,
        svc: &ServiceSpec,
        w: &WorkloadSpec,
        i: u32,
        stages: &mut Stages,
    ) -> Result<Replica, UpError> {
        let opts = self.opts;
        let instance = w.instance_name(i);
        let services = self.registry.spec().services;
        let pod = net.add_pod(svc, &instance, &services, w.sidecar.then_some(&svc.capture))?;
        let handle = PodHandle {
            network: net.clone(),
            registry: self.registry.clone(),
            name: pod.name.clone(),
        };
        self.publish_pods();
        let netns: Arc<str> = pod.name.as_str().into();
        let first = svc.ports.first().map_or(svc.port, |p| p.port);
        let named_ports = svc
            .ports
            .iter()
            .filter_map(|p| Some((p.env_name()?, p.port)))
            .collect();
        let app = AppLaunch {
            command: w.command.clone(),
            port: first,
            named_ports,
            service: svc.name.clone(),
            namespace: svc.namespace.clone(),
            workload: w.name.clone(),
            instance: instance.clone(),
            proxy: None,
            env: opts
                .app_env
                .iter()
                .cloned()
                .chain(w.env.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            pid_file: None,
        };
        let mut sidecar = None;
        if w.sidecar {
            let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
            let in_pod = |port| SocketAddr::from((pod.address, port));
            let mut flags = opts.proxy_flags.clone();
            flags.extend([
                "--capture-outbound".to_string(),
                local(pods::CAPTURE_PORT).to_string(),
                "--socket-mark".to_string(),
                pods::SOCKET_MARK.to_string(),
            ]);
            for p in &svc.ports {
                flags.push("--app-port".to_string());
                flags.push(format!("{}={}", p.port, local(p.port)));
            }
            let proxy = ProxyLaunch {
                mode: ProxyMode::Sidecar,
                control: self.control,
                control_more: Vec::new(),
                service: svc.name.clone(),
                namespace: svc.namespace.clone(),
                workload: w.name.clone(),
                instance: instance.clone(),
                labels: w.labels.clone(),
                identity: svc.identity_in(opts.trust_domain()),
                app: Some(local(first)),
                inbound: Some(in_pod(pods::INBOUND_PORT)),
                outbound: Some(local(pods::OUTBOUND_PORT)),
                admin: Some(in_pod(pods::ADMIN_PORT)),
                drain_timeout: opts.drain_timeout,
                access_log: opts.access_log(Some(svc)),
                app_protocol: svc.protocol(),
                extra_flags: flags,
                state_dir: Some(self.state_dir(svc, &instance)),
                // Its own network namespace: no other process takes its app's port.
                app_pid_file: None,
            };
            let launch = self.proxy_in(proxy, Some(netns.clone()));
            let (child, _) = match launch.start_proxy().await {
                Ok(started) => started,
                Err(e) => {
                    handle.remove();
                    return Err(e);
                }
            };
            let pid = child.id();
            let proc = stages.sidecars.supervise(launch, child);
            if let Err(reason) = self.sidecar_started(pid).await {
                proc.stop().await;
                handle.remove();
                return Err(UpError::SidecarNotReady {
                    instance,
                    timeout: opts.ready_timeout,
                    reason,
                });
            }
            sidecar = Some(proc);
        }
        let started = stages.apps.start_with(
            Launch::App {
                app,
                exe: opts.exe.clone(),
                netns: Some(netns),
            },
            w.restart_policy,
        );
        let app = match started {
            Ok(app) => app,
            Err(e) => {
                if let Some(s) = &sidecar {
                    s.stop().await;
                }
                handle.remove();
                return Err(e);
            }
        };
        Ok(self.replica(svc, w, i, instance, sidecar, app, Some(handle)))
    }

    /// Waits until the sidecar `pid` is ready for its app: registered, running a snapshot, and
    /// ready but for the app itself (which it checks, and which is not started yet). Why not,
    /// after the ready timeout.
    async fn sidecar_started(&self, pid: Option<u32>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.opts.ready_timeout;
        let mut generation = self.registry.watch_generation();
        loop {
            let rec = self
                .registry
                .proxies()
                .into_iter()
                .rev()
                .find(|p| Some(p.node.pid) == pid);
            let why = match &rec {
                None => "it did not register with the control plane".to_string(),
                Some(p) if p.acked == 0 => "it has no snapshot yet".to_string(),
                Some(p) if p.ready || p.reason == APP_NOT_ACCEPTING => return Ok(()),
                Some(p) if !p.reported => "it has not reported its health yet".to_string(),
                Some(p) => p.reason.clone(),
            };
            tokio::select! {
                _ = generation.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Err(why),
            }
        }
    }

    /// Tells the registry where the replicas run (`weft status`'s `pod`, `network`).
    pub fn publish_pods(&self) {
        if let Some(net) = &self.network {
            publish_pods(net, &self.registry);
        }
    }

    /// How a proxy is launched: by the weft executable, with a join token when there is a CA.
    fn proxy(&self, proxy: ProxyLaunch) -> Launch {
        self.proxy_in(proxy, None)
    }

    /// The state directory of the sidecar of `instance` of `svc` as it starts now: one per
    /// start of the replica (its run), so that the supervisor's restarts of that sidecar find
    /// what it kept, while a replacement (a rollout, which runs beside the one it replaces)
    /// starts afresh rather than share a directory with a live proxy.
    fn state_dir(&self, svc: &ServiceSpec, instance: &str) -> PathBuf {
        let run = self.run_of(svc, instance);
        self.run_dir
            .join("proxies")
            .join(format!("{instance}.{}.{run}", svc.namespace))
    }

    /// How many times `instance` of `svc` has been started, this start included.
    fn run_of(&self, svc: &ServiceSpec, instance: &str) -> u64 {
        let key = (
            svc.name.clone(),
            svc.namespace.clone(),
            instance.to_string(),
        );
        lock(&self.runs).get(&key).copied().unwrap_or(0)
    }

    /// Where `instance`'s app's process id is kept as it starts now (one file per run, as
    /// [`Starter::state_dir`]), for its sidecar to tell the app from another process on its
    /// port.
    fn app_pid_file(&self, svc: &ServiceSpec, instance: &str) -> PathBuf {
        let run = self.run_of(svc, instance);
        self.run_dir
            .join("apps")
            .join(format!("{instance}.{}.{run}.pid", svc.namespace))
    }

    /// [`Starter::proxy`], in network namespace `netns` (a pod).
    fn proxy_in(&self, proxy: ProxyLaunch, netns: Option<Arc<str>>) -> Launch {
        Launch::Proxy {
            proxy: Box::new(proxy),
            exe: self.opts.exe.clone(),
            ca: self
                .opts
                .ca
                .clone()
                .map(|c| c as Arc<dyn crate::launch::Credentials>),
            admin_token: self.admin_token.clone(),
            netns,
        }
    }
}

/// Empties `dir` (what a killed `weft up` of the same mesh left) and creates it, with its
/// parent, readable by this user alone: the proxies keep their keys there.
fn reset_run_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A replica by (service, namespace, instance), as the registry names it.
type ReplicaKey = (String, String, String);

/// `m`, even if a thread panicked holding it (plain data: keep using it).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a sidecar's health says while everything but its app is ready (the proxy's own
/// words): a pod's app starts once its sidecar says this or ready.
const APP_NOT_ACCEPTING: &str = "app is not accepting connections";

/// Tells `registry` the pods of `net` and their network.
fn publish_pods(net: &Network, registry: &Registry) {
    let mut pods = status::Pods {
        network: Some(status::Network {
            bridge: net.bridge.clone(),
            subnet: net.cidr(),
            gateway: net.gateway().to_string(),
        }),
        pods: Default::default(),
    };
    // Newest last: a replacement's pod wins over the one it replaces.
    for p in net.pods() {
        pods.pods.insert(
            (p.service, p.namespace, p.instance),
            status::Pod {
                name: p.name,
                address: p.address.to_string(),
            },
        );
    }
    registry.set_pods(pods);
}

/// A replica's pod, removed once its processes have stopped.
#[derive(Clone)]
pub(crate) struct PodHandle {
    network: Arc<Network>,
    registry: Arc<Registry>,
    pub name: String,
}

impl PodHandle {
    fn remove(&self) {
        self.network.remove_pod(&self.name);
        publish_pods(&self.network, &self.registry);
    }
}

/// One running replica: its sidecar (none for a workload without one) and its app.
pub(crate) struct Replica {
    pub service: model::ServiceKey,
    pub workload: String,
    pub index: u32,
    pub instance: String,
    pub sidecar: Option<Proc>,
    pub app: Proc,
    /// Its pod (transparent interception).
    pub pod: Option<PodHandle>,
    /// The ports picked for its app and sidecar (outside a pod), leased while it lives.
    ports: Vec<crate::launch::PortLease>,
    /// Cancelled once it is being stopped (replaced, removed): a job's app that finishes then
    /// is not reported as its replica's outcome.
    retired: CancellationToken,
}

impl Replica {
    /// Whether its app has finished for good (a job's, by its restart policy).
    pub fn finished(&self) -> bool {
        self.app.outcome().is_some()
    }

    /// Drains it: the sidecar first (it stops accepting, the control plane stops listing it,
    /// its in-flight requests finish — they still need the app), then the app. (A job's
    /// sidecar has stopped already once its app finished.)
    pub async fn stop(&self) {
        self.retired.cancel();
        if let Some(s) = &self.sidecar {
            s.stop().await;
        }
        self.app.stop().await;
        if let Some(pod) = &self.pod {
            pod.remove();
        }
    }
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
        if st.nacks.iter().any(|n| n.version >= st.version) {
            return Err(UpError::Refused {
                pending: pending.join("\n"),
            });
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

#[cfg(test)]
mod tests;
