//! Starting and stopping a proxy. Every listener is bound eagerly (a taken port is an error
//! before anything runs) and reported; the data plane runs on its own runtime, while control
//! work (the control-plane stream, the app prober, the admin listener) runs on another thread.
//! So does what a proxy exports when asked to ([`Exports`]): spans are batched on the tracing
//! SDK's thread and sent from the control runtime; access-log lines are written by their own
//! thread.
//!
//! Shutdown: tell the control plane we are draining (peers stop picking us), stop accepting,
//! let in-flight requests finish up to the drain timeout, then exit.
//!
//! With a state directory, the credentials kept there are installed before anything is served
//! (when they are still valid and this proxy's), and the snapshot kept there is the first the
//! control stream applies ([`crate::persist`]).

use crate::admin::Admin;
use crate::control_link::ControlLink;
use crate::discovery::Discovery;
use crate::inbound::{self, AppHealth, Inbound};
use crate::metrics::Metrics;
use crate::outbound::{Forward, Peers};
use crate::readiness::Readiness;
use crate::server::{self, Drain};
use crate::settings::{Exports, Mode, Settings};
use crate::state::{ProxyState, StateHandle};
use crate::tls::InboundTls;
use api::pb;
use http::HeaderValue;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long an exiting proxy waits for its state directory's last writes (a snapshot of a
/// large mesh is a few megabytes; a disk that takes longer is not worth holding the exit for).
const PERSIST_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses a proxy actually listens on.
#[derive(Clone, Debug, Serialize)]
pub struct Bound {
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The capture listener of transparent interception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_outbound: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr} ({what} listener): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("tracing: {0}")]
    Tracing(#[from] crate::trace::TraceError),
    #[error("cannot start the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("a proxy with a join token needs the mesh's trust anchors to verify its control plane (--trust-anchors-file, or {})", model::names::TRUST_ANCHORS_ENV)]
    NoTrustAnchors,
    #[error("the mesh's trust anchors: {0}")]
    TrustAnchors(crate::tls::TlsError),
    #[error("--state-dir: {0}")]
    StateDir(#[from] crate::persist::PersistError),
}

/// How this proxy reaches its control plane: TLS when it is in the mesh CA's (it has a join
/// token, or credentials kept from its last run, whose trust bundle then stands in for trust
/// anchors it was not given).
fn control_link(
    settings: &Settings,
    slot: &Arc<crate::identity::Slot>,
    kept: Option<&crate::persist::Restored>,
) -> Result<ControlLink, RunError> {
    if settings.join_token.is_none() && kept.is_none() {
        return Ok(ControlLink::plaintext(settings.control).with_replicas(&settings.control_more));
    }
    let kept_bundle = kept.map(|k| {
        k.credentials
            .bundle()
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect::<String>()
    });
    let anchors = settings
        .trust_anchors
        .as_deref()
        .or(kept_bundle.as_deref())
        .ok_or(RunError::NoTrustAnchors)?;
    ControlLink::tls(settings.control, anchors, &settings.identity, slot.clone())
        .map(|l| l.with_replicas(&settings.control_more))
        .map_err(RunError::TrustAnchors)
}

/// A running proxy's parts, as `run` wires them together: the data plane, the control stream
/// and the admin listener each get the handles they need.
struct Proxy {
    settings: Arc<Settings>,
    bound: Bound,
    state: StateHandle,
    metrics: Arc<Metrics>,
    health: Arc<AppHealth>,
    readiness: Arc<Readiness>,
    /// The proxy's mTLS credentials, once the CA has signed them.
    tls: Arc<crate::identity::Slot>,
    /// The proxy speaks mTLS (it has a join token or kept credentials), and nothing before it
    /// has a certificate.
    mtls: bool,
    /// The state directory, if the proxy keeps one.
    persist: Option<Arc<crate::persist::Persist>>,
    /// The renewal token kept with the credentials restored at start.
    kept_token: Option<String>,
    /// The control plane, and how to reach it.
    control: Arc<ControlLink>,
    /// The proxy's connection caps: its own (data-plane listeners count against it) and each
    /// listener's.
    caps: Arc<crate::overload::Caps>,
    /// HTTP/2 floods seen, by kind.
    floods: Arc<crate::guard::Floods>,
    /// How the inbound listener authenticates peers.
    inbound_tls: Arc<InboundTls>,
    /// Who this proxy talked to.
    edges: Arc<crate::edges::Edges>,
    /// The sidecar's pool to its app, for metrics (set when the inbound side starts).
    app_pool: Arc<std::sync::OnceLock<Arc<crate::app_pool::AppPool>>>,
    /// Istio's standard metrics and the metadata exchange.
    observe: Arc<crate::observe::Observe>,
    /// Cancelled to ask for shutdown (signal, admin `/shutdown`, or the embedding program).
    shutdown: CancellationToken,
    drain: Drain,
    /// Hosts asked for on demand: the outbound side asks, the control stream carries them.
    on_demand: Arc<crate::on_demand::OnDemand>,
}

impl Proxy {
    /// The control stream's handles; `security` compiles each snapshot's rules.
    fn discovery(&self, security: crate::security::Compiler) -> Discovery {
        let s = &self.settings;
        Discovery {
            control: self.control.clone(),
            hello: hello(s, &self.bound),
            mode: s.mode,
            namespace: s.namespace.clone(),
            labels: s.labels.clone(),
            ingress_port: (s.mode == Mode::Ingress)
                .then(|| self.bound.outbound.map_or(0, |a| a.port())),
            state: self.state.clone(),
            security,
            tls: self.tls.clone(),
            inbound_tls: self.inbound_tls.clone(),
            readiness: self.readiness.clone(),
            metrics: self.metrics.clone(),
            drain: self.drain.clone(),
            persist: self.persist.clone(),
            on_demand: self.on_demand.clone(),
        }
    }

    /// The listener `name`'s limits; `total`: the cap it counts against besides its own.
    fn listener(
        &self,
        name: &'static str,
        total: Option<Arc<crate::overload::ConnCap>>,
    ) -> server::Listener {
        use crate::limits::Underscores;
        let limits = &self.settings.limits;
        let underscores = match (name, limits.underscores) {
            // Only the proxy's own readers use the admin listener.
            ("admin", _) => Underscores::Allow,
            (_, Some(u)) => u,
            // Envoy's advice for an edge: some upstreams read `x_user` as `x-user`.
            ("ingress", None) => Underscores::RejectRequest,
            (_, None) => Underscores::Allow,
        };
        server::Listener {
            name,
            limits: Arc::new(limits.clone()),
            underscores,
            cap: self.caps.listener(name),
            total,
            floods: self.floods.clone(),
            tls: None,
            redirected: None,
        }
    }

    fn admin(&self) -> Admin {
        Admin {
            settings: self.settings.clone(),
            readiness: self.readiness.clone(),
            state: self.state.clone(),
            tls: self.tls.clone(),
            mtls: self.mtls,
            edges: self.edges.clone(),
            metrics: self.metrics.clone(),
            observe: self.observe.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// The outbound (or ingress) handler's parts, with first step `resolve`.
    fn forward<R>(&self, resolve: R) -> Forward<R> {
        let s = &self.settings;
        Forward {
            resolve,
            state: self.state.clone(),
            client_id: HeaderValue::from_str(&s.identity.0)
                .unwrap_or(HeaderValue::from_static("unknown")),
            metrics: self.metrics.clone(),
            drain: self.drain.clone(),
            observe: self.observe.clone(),
            peers: Arc::new(Peers {
                tls: self.mtls.then(|| self.tls.clone()),
                metrics: self.metrics.clone(),
                edges: self.edges.clone(),
                identity: s.identity.0.clone(),
            }),
            max_buffered_body: s.limits.max_buffered_body,
            tunnel_idle: s.limits.idle_timeout,
            on_demand: self.on_demand.clone(),
        }
    }
}

/// The credentials kept in the state directory, if they are there, this proxy's and valid now;
/// otherwise `None`, and why is logged.
fn restore_credentials(
    persist: &crate::persist::Persist,
    settings: &Settings,
) -> Option<crate::persist::Restored> {
    let path = persist.credentials_path();
    let saved = match persist.load_credentials() {
        Ok(saved) => saved?,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the kept credentials cannot be read; ignoring them");
            return None;
        }
    };
    match saved.restore(&settings.identity) {
        Ok(kept) => {
            let (_, expires) = kept.credentials.validity();
            tracing::info!(path = %path.display(), identity = %settings.identity, ?expires, "using the certificate kept from the last run");
            Some(kept)
        }
        Err(why) => {
            tracing::warn!(path = %path.display(), "the kept credentials are not usable ({why}); ignoring them");
            None
        }
    }
}

/// How this proxy introduces itself to the control plane.
fn hello(s: &Settings, b: &Bound) -> pb::Hello {
    // A listener on 0.0.0.0 is reached at the advertised address (the pod's IP).
    let reachable = |a: SocketAddr| match s.advertise {
        Some(ip) if a.ip().is_unspecified() => SocketAddr::new(ip, a.port()),
        _ => a,
    };
    let addr = |a: Option<SocketAddr>| a.map(|a| reachable(a).to_string()).unwrap_or_default();
    pb::Hello {
        service: s.service.clone(),
        namespace: s.namespace.clone(),
        workload: s.workload.clone(),
        instance: s.instance.clone(),
        labels: s.labels.clone().into_iter().collect(),
        inbound: addr(b.inbound),
        outbound: addr(b.outbound),
        admin: reachable(b.admin).to_string(),
        app: addr(s.app),
        mode: s.mode.as_str().to_string(),
        identity: s.identity.0.clone(),
        pid: std::process::id(),
        // Filled in per stream (`discovery::hello`).
        asked: Vec::new(),
        asks: true,
    }
}

fn bind(addr: SocketAddr, what: &'static str) -> Result<std::net::TcpListener, RunError> {
    let err = |source| RunError::Bind { addr, what, source };
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

/// Runs a proxy until `shutdown` is cancelled (or SIGTERM/SIGINT when `signals`), then drains.
/// `on_bound` is called once every listener is bound, before any traffic is served.
pub fn run(
    settings: Settings,
    shutdown: CancellationToken,
    signals: bool,
    on_bound: impl FnOnce(&Bound),
) -> Result<(), RunError> {
    run_with(settings, Exports::default(), shutdown, signals, on_bound)
}

/// [`run`], exporting spans and access logs as `exports` says.
pub fn run_with(
    settings: Settings,
    exports: Exports,
    shutdown: CancellationToken,
    signals: bool,
    on_bound: impl FnOnce(&Bound),
) -> Result<(), RunError> {
    let tls: Arc<crate::identity::Slot> = Arc::default();
    let persist = match &settings.state_dir {
        Some(dir) => Some(crate::persist::Persist::open(dir)?),
        None => None,
    };
    let kept = persist
        .as_deref()
        .and_then(|p| restore_credentials(p, &settings));
    let control = Arc::new(control_link(&settings, &tls, kept.as_ref())?);
    let mtls = settings.join_token.is_some() || kept.is_some();
    let kept_token = kept.and_then(|k| {
        tls.install(k.credentials, k.generation);
        k.renewal_token
    });
    // Connections are file descriptors: take all the kernel allows, and cap below it.
    let nofile = crate::limits::raise_nofile();
    let names: &[&'static str] = match settings.mode {
        Mode::Sidecar => &["outbound", "inbound"],
        Mode::Ingress => &["ingress"],
        Mode::Client => &["outbound"],
    };
    let caps = crate::overload::Caps::new(
        settings.limits.connections_total(nofile),
        settings.limits.max_connections_per_listener,
        names,
    );
    let floods: Arc<crate::guard::Floods> = Arc::default();
    let outbound = settings.outbound.map(|a| bind(a, "outbound")).transpose()?;
    let capture = settings
        .capture_outbound
        .filter(|_| settings.mode == Mode::Sidecar)
        .map(|a| bind(a, "capture"))
        .transpose()?;
    if let Some(mark) = settings.socket_mark {
        crate::io::set_socket_mark(mark);
    }
    let inbound = settings.inbound.map(|a| bind(a, "inbound")).transpose()?;
    let admin = bind(settings.admin, "admin")?;
    let tcp_ports = settings
        .tcp_ports
        .iter()
        .map(|t| Ok((t.target.clone(), bind(t.listen, "local client port")?)))
        .collect::<Result<Vec<_>, RunError>>()?;
    if capture.is_some() {
        // In a pod: the listeners its capture rules hand connections to, and every listener's
        // replies let through.
        for l in [&capture, &inbound].into_iter().flatten() {
            crate::io::prepare_listener(l, true);
        }
        for l in outbound.iter().chain([&admin]) {
            crate::io::prepare_listener(l, false);
        }
    }
    let local = |l: &std::net::TcpListener| l.local_addr().ok();
    let bound = Bound {
        inbound: inbound.as_ref().and_then(local),
        outbound: outbound.as_ref().and_then(local),
        admin: local(&admin).unwrap_or(settings.admin),
        capture_outbound: capture.as_ref().and_then(local),
    };
    on_bound(&bound);

    let drain = Drain::new(settings.drain_grace);
    // Control work: its own thread and runtime, so it never steals data-plane time.
    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let mut observe = crate::observe::Observe::new(
        &settings.workload,
        &settings.namespace,
        &settings.labels,
        &settings.identity,
    );
    let mut metrics = Metrics::with_telemetry(&observe.telemetry);
    let authz_stats = crate::authz::AuthzStats::register(&mut metrics.registry);
    let health = Arc::new(AppHealth::default());
    let jwks_settled = health.clone();
    let security = crate::security::Compiler::new(
        &settings.namespace,
        &settings.labels,
        crate::tls::trust_domain_of(&settings.identity).unwrap_or(model::names::TRUST_DOMAIN),
        authz_stats,
        // JWKS hosts named by mesh service names are fetched through our own outbound side.
        crate::jwt::JwksStore::with_proxy(
            control_rt.handle().clone(),
            crate::jwt::JwksSettings::default(),
            bound.outbound,
        )
        // A starting proxy waits for its JWKS: it reports its readiness again once it has it.
        .on_settled(move || jwks_settled.changed.notify_one()),
    );
    let state = StateHandle::new(ProxyState::empty(security.empty()));
    let app_pool = Arc::new(std::sync::OnceLock::new());
    metrics
        .registry
        .register_collector(Box::new(crate::metrics::StateCollector {
            state: state.clone(),
            app_pool: app_pool.clone(),
        }));
    metrics
        .registry
        .register_collector(Box::new(crate::overload::OverloadCollector {
            caps: caps.clone(),
            floods: floods.clone(),
        }));
    if let Some(dropped) = exports.log_dropped.clone() {
        metrics
            .registry
            .register_collector(Box::new(crate::metrics::LogDroppedCollector(dropped)));
    }
    let metrics = Arc::new(metrics);
    observe.instance = settings.instance.clone();
    observe.app = settings.app;
    if let Some(t) = &exports.tracing {
        let origin = crate::trace::Origin {
            service: &settings.service,
            namespace: &settings.namespace,
            workload: &settings.workload,
            instance: &settings.instance,
        };
        observe.tracer = Some(crate::trace::Tracer::start(t, origin, control_rt.handle())?);
    }
    if let Some(format) = exports.access_log {
        let log = crate::access_log::AccessLog::stdout(format, metrics.access_log_dropped.clone())
            .map_err(RunError::AccessLog)?;
        observe.access_log = Some(Arc::new(log));
    }
    let observe = Arc::new(observe);
    let edges: Arc<crate::edges::Edges> = Arc::default();
    let readiness = Arc::new(Readiness::new(
        settings.mode,
        mtls,
        state.clone(),
        tls.clone(),
        health.clone(),
        drain.clone(),
    ));
    let inbound_tls = Arc::new(InboundTls::new(
        mtls.then(|| tls.clone()),
        state.clone(),
        metrics.clone(),
        edges.clone(),
        settings.identity.0.clone(),
    ));
    let proxy = Arc::new(Proxy {
        settings: Arc::new(settings),
        bound,
        state,
        metrics,
        health,
        readiness,
        tls,
        mtls,
        persist,
        kept_token,
        control,
        caps,
        floods,
        inbound_tls,
        edges,
        app_pool,
        observe,
        shutdown: shutdown.clone(),
        drain: drain.clone(),
        on_demand: Default::default(),
    });
    let discovery = proxy.discovery(security);

    let done = CancellationToken::new();
    let control_thread = {
        let (proxy, done) = (proxy.clone(), done.clone());
        std::thread::Builder::new()
            .name("weft-control".into())
            .spawn(move || {
                control_rt.block_on(control_work(proxy, discovery, admin, signals, done));
            })
            .map_err(RunError::Runtime)?
    };

    let workers = proxy.settings.workers.max(1);
    let data_rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    }
    .enable_all()
    .thread_name("weft-data")
    .build()
    .map_err(RunError::Runtime)?;

    let result = data_rt.block_on(data_plane(
        proxy.clone(),
        outbound,
        capture,
        inbound,
        tcp_ports,
    ));
    // The last spans go out while the control runtime (which does the export's I/O) still runs.
    if let Some(t) = &proxy.observe.tracer {
        t.shutdown();
    }
    done.cancel();
    let _ = control_thread.join();
    // What was handed to the state directory's writer is on disk before the process ends.
    if let Some(p) = &proxy.persist {
        if !p.flush(PERSIST_FLUSH_TIMEOUT) {
            tracing::warn!(dir = %p.dir().display(), "the state directory was not written in time");
        }
    }
    data_rt.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received; draining");
    token.cancel();
}

async fn control_work(
    proxy: Arc<Proxy>,
    discovery: Discovery,
    admin: std::net::TcpListener,
    signals: bool,
    done: CancellationToken,
) {
    let s = &proxy.settings;
    if signals {
        tokio::spawn(cancel_on_signal(proxy.shutdown.clone()));
    }
    if let (Mode::Sidecar, Some(app)) = (s.mode, s.app) {
        tokio::spawn(inbound::probe_app(
            app,
            s.app_pid_file.clone(),
            proxy.health.clone(),
            proxy.metrics.clone(),
            s.probe_interval,
        ));
    }
    // Kept credentials renew with the token kept with them (the join token standing by); new
    // ones come with the join token.
    let (token, fallback) = match proxy.kept_token.clone() {
        Some(kept) => (Some(kept), s.join_token.clone()),
        None => (s.join_token.clone(), None),
    };
    match token {
        Some(token) if proxy.mtls => {
            let health = proxy.health.clone();
            tokio::spawn(crate::identity::run(
                proxy.control.clone(),
                s.identity.clone(),
                token,
                fallback,
                proxy.tls.clone(),
                proxy.metrics.clone(),
                proxy.persist.clone(),
                move || health.changed.notify_one(),
            ));
        }
        _ if proxy.mtls => {
            let expires = proxy.tls.get().map(|c| c.validity().1);
            tracing::warn!(?expires, "the kept certificate came with no renewal token and there is no join token: it will not be renewed");
            if let Some(na) = expires {
                let at = na.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                proxy.metrics.cert_expiry.set(at.as_secs() as i64);
            }
        }
        _ => {}
    }
    tokio::spawn(crate::discovery::run(Arc::new(discovery)));
    match tokio::net::TcpListener::from_std(admin) {
        Ok(admin) => {
            let admin_drain = Drain::new(Duration::ZERO);
            tokio::spawn(server::serve(
                admin,
                Arc::new(proxy.admin()),
                admin_drain,
                TaskTracker::new(),
                Arc::new(proxy.listener("admin", None)),
            ));
        }
        Err(e) => tracing::error!(error = %e, "admin listener unusable"),
    }
    done.cancelled().await;
}

async fn data_plane(
    proxy: Arc<Proxy>,
    outbound: Option<std::net::TcpListener>,
    capture: Option<std::net::TcpListener>,
    inbound: Option<std::net::TcpListener>,
    tcp_ports: Vec<(String, std::net::TcpListener)>,
) -> Result<(), RunError> {
    let tracker = TaskTracker::new();
    let s = &proxy.settings;
    let from_std = |l: std::net::TcpListener, what| {
        let addr = l.local_addr().unwrap_or(s.admin);
        tokio::net::TcpListener::from_std(l).map_err(|source| RunError::Bind { addr, what, source })
    };
    let namespace = s.default_namespace.clone();
    if s.mode == Mode::Ingress {
        if let Some(l) = outbound {
            let l = from_std(l, "outbound")?;
            let handler = Arc::new(proxy.forward(crate::ingress::Ingress { namespace }));
            let config = proxy.listener("ingress", Some(proxy.caps.total.clone()));
            let (drain, t) = (proxy.drain.clone(), tracker.clone());
            tracker.spawn(server::serve(l, handler, drain, t, Arc::new(config)));
        }
    } else if outbound.is_some() || capture.is_some() || !tcp_ports.is_empty() {
        // The outbound side, whichever of its listeners this proxy has.
        let handler = Arc::new(proxy.forward(crate::outbound::Sidecar {
            namespace: namespace.clone(),
        }));
        // Local client ports: tunnels for clients that use no proxy.
        for (target, l) in tcp_ports {
            let l = from_std(l, "local client port")?;
            let (fwd, ns) = (handler.clone(), namespace.clone());
            tracker.spawn(crate::outbound::tunnel::serve_local(l, fwd, target, ns));
        }
        let config = Arc::new(proxy.listener("outbound", Some(proxy.caps.total.clone())));
        // Transparent interception: the app's captured connections, by their original
        // destination.
        if let Some(c) = capture {
            let c = from_std(c, "capture")?;
            let (fwd, d, t) = (handler.clone(), proxy.drain.clone(), tracker.clone());
            tracker.spawn(crate::capture::serve(c, fwd, d, t, config.clone()));
        }
        if let Some(l) = outbound {
            let l = from_std(l, "outbound")?;
            let (drain, t) = (proxy.drain.clone(), tracker.clone());
            tracker.spawn(server::serve(l, handler, drain, t, config));
        }
    }
    if let (Some(l), Some(app)) = (inbound, s.app) {
        let mut handler = Inbound::new(
            app,
            &s.instance,
            proxy.health.clone(),
            proxy.metrics.clone(),
            proxy.drain.clone(),
        );
        handler.set_app_protocol(s.app_protocol);
        handler.authenticated = proxy.mtls;
        handler.state = Some(proxy.state.clone());
        let _ = proxy.app_pool.set(handler.pool.clone());
        let own = model::ServiceKey::new(&s.service, &s.namespace);
        handler.observe = Some((
            proxy.observe.clone(),
            crate::telemetry::DestinationService::new(&own),
        ));
        handler.own = Some(own);
        handler.tunnel_idle = s.limits.idle_timeout;
        handler.app_ports = s.app_ports.clone().into();
        let mut config = proxy.listener("inbound", Some(proxy.caps.total.clone()));
        config.tls = Some(proxy.inbound_tls.clone());
        let handler = Arc::new(handler);
        // In a pod, the capture rules send clients outside the mesh here too.
        if s.capture_outbound.is_some() {
            config.redirected = Some(handler.clone());
        }
        tracker.spawn(server::serve(
            from_std(l, "inbound")?,
            handler,
            proxy.drain.clone(),
            tracker.clone(),
            Arc::new(config),
        ));
    }

    proxy.shutdown.cancelled().await;
    tracing::info!(instance = %s.instance, "draining");
    proxy.drain.start();
    proxy.health.changed.notify_one();
    tracker.close();
    if tokio::time::timeout(s.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?s.drain_timeout, "drain timed out; closing the remaining connections");
    }
    Ok(())
}
