//! Starting and stopping a proxy. Every listener is bound eagerly (a taken port is an error
//! before anything runs) and reported; the data plane runs on its own runtime, while control
//! work (the control-plane stream, the app prober, the admin listener) runs on another thread.
//! So does what a proxy exports when asked to ([`Exports`]): spans are batched on the tracing
//! SDK's thread and sent from the control runtime; access-log lines are written by their own
//! thread.
//!
//! Shutdown: tell the control plane we are draining (peers stop picking us), stop accepting,
//! let in-flight requests finish up to the drain timeout, then exit.

use crate::admin::Admin;
use crate::inbound::{self, AppHealth, Inbound};
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::server::{self, Drain};
use crate::settings::{Exports, Mode, Settings};
use crate::table::RouteTable;
use arc_swap::ArcSwap;
use http::HeaderValue;
use serde::Serialize;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The addresses a proxy actually listens on.
#[derive(Clone, Debug, Serialize)]
pub struct Bound {
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub admin: SocketAddr,
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
}

/// State shared by the data plane, the control stream and the admin listener.
pub struct Shared {
    pub settings: Settings,
    pub bound: Bound,
    pub table: Arc<ArcSwap<RouteTable>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<AppHealth>,
    pub has_snapshot: AtomicBool,
    /// Set the first time the proxy is ready; from then on only what can change while it
    /// serves (drain, app, certificate, snapshot) makes it not ready.
    pub started: AtomicBool,
    /// The proxy's mTLS credentials, once the CA has signed them.
    pub tls: Arc<crate::identity::Slot>,
    /// How the inbound listener authenticates peers.
    pub inbound_tls: Arc<server::InboundTls>,
    /// Who this proxy talked to.
    pub edges: Arc<crate::edges::Edges>,
    /// The sidecar's pool to its app, for metrics (set when the inbound side starts).
    pub app_pool: Arc<std::sync::OnceLock<Arc<crate::app_pool::AppPool>>>,
    /// What the proxy enforces on traffic it receives (compiled per snapshot).
    pub security: Arc<crate::security::Security>,
    /// Istio's standard metrics and the metadata exchange.
    pub observe: Arc<crate::observe::Observe>,
    /// Cancelled to ask for shutdown (signal, admin `/shutdown`, or the embedding program).
    pub shutdown: CancellationToken,
    pub drain: Drain,
}

impl Shared {
    /// Why this proxy should not receive traffic as an endpoint (nor route any), if it should
    /// not. Until its first snapshot it knows neither routes nor the policies it must enforce on
    /// what it receives, so it is not ready without one. `/ready` says the same.
    pub fn not_ready_reason(&self) -> Option<Cow<'static, str>> {
        let why = if self.drain.is_draining() {
            "draining"
        } else if !self.has_snapshot.load(Ordering::Acquire) {
            "no snapshot from the control plane yet"
        } else if self.settings.join_token.is_some() && self.tls.get().is_none() {
            "no certificate from the mesh CA yet"
        } else if self.settings.mode == Mode::Sidecar && !self.health.is_ready() {
            "app is not accepting connections"
        } else if let Some(uri) = self.starting_without_jwks() {
            return Some(format!("JWKS {uri} not fetched yet").into());
        } else {
            self.started.store(true, Ordering::Release);
            return None;
        };
        Some(why.into())
    }

    /// While the proxy starts (it has never been ready), a JWKS its JWT rules need and has not
    /// fetched yet holds it back, so that valid tokens are not refused right after it says
    /// ready (Istio's control plane inlines the keys in the config for the same reason). A
    /// JWKS that a later snapshot brings does not take a serving proxy out of rotation.
    fn starting_without_jwks(&self) -> Option<String> {
        if self.settings.mode == Mode::Client || self.started.load(Ordering::Acquire) {
            return None;
        }
        self.security.pending_jwks()
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
    let outbound = settings.outbound.map(|a| bind(a, "outbound")).transpose()?;
    let inbound = settings.inbound.map(|a| bind(a, "inbound")).transpose()?;
    let admin = bind(settings.admin, "admin")?;
    let local = |l: &std::net::TcpListener| l.local_addr().ok();
    let bound = Bound {
        inbound: inbound.as_ref().and_then(local),
        outbound: outbound.as_ref().and_then(local),
        admin: local(&admin).unwrap_or(settings.admin),
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
    let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let app_pool = Arc::new(std::sync::OnceLock::new());
    metrics
        .registry
        .register_collector(Box::new(crate::metrics::StateCollector {
            table: table.clone(),
            app_pool: app_pool.clone(),
        }));
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
    let health = Arc::new(AppHealth::default());
    let jwks_settled = health.clone();
    let security = Arc::new(crate::security::Security::new(
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
    ));
    let tls: Arc<crate::identity::Slot> = Arc::default();
    let edges: Arc<crate::edges::Edges> = Arc::default();
    let inbound_tls = Arc::new(server::InboundTls::new(
        settings.join_token.as_ref().map(|_| tls.clone()),
        metrics.clone(),
        edges.clone(),
        settings.identity.0.clone(),
    ));
    let shared = Arc::new(Shared {
        bound,
        table,
        app_pool,
        metrics,
        health,
        has_snapshot: AtomicBool::new(false),
        started: AtomicBool::new(false),
        tls,
        inbound_tls,
        edges,
        security,
        observe,
        shutdown: shutdown.clone(),
        drain: drain.clone(),
        settings,
    });

    let done = CancellationToken::new();
    let control_thread = {
        let (shared, done) = (shared.clone(), done.clone());
        std::thread::Builder::new()
            .name("weft-control".into())
            .spawn(move || {
                control_rt.block_on(control_work(shared, admin, signals, done));
            })
            .map_err(RunError::Runtime)?
    };

    let workers = shared.settings.workers.max(1);
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

    let result = data_rt.block_on(data_plane(shared.clone(), outbound, inbound));
    // The last spans go out while the control runtime (which does the export's I/O) still runs.
    if let Some(t) = &shared.observe.tracer {
        t.shutdown();
    }
    done.cancel();
    let _ = control_thread.join();
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
    shared: Arc<Shared>,
    admin: std::net::TcpListener,
    signals: bool,
    done: CancellationToken,
) {
    if signals {
        tokio::spawn(cancel_on_signal(shared.shutdown.clone()));
    }
    if let (Mode::Sidecar, Some(app)) = (shared.settings.mode, shared.settings.app) {
        tokio::spawn(inbound::probe_app(
            app,
            shared.health.clone(),
            shared.metrics.clone(),
            shared.settings.probe_interval,
        ));
    }
    if let Some(token) = shared.settings.join_token.clone() {
        let s = shared.clone();
        tokio::spawn(crate::identity::run(
            shared.settings.control,
            shared.settings.identity.clone(),
            token,
            shared.tls.clone(),
            shared.metrics.clone(),
            move || s.health.changed.notify_one(),
        ));
    }
    tokio::spawn(crate::discovery::run(shared.clone()));
    match tokio::net::TcpListener::from_std(admin) {
        Ok(admin) => {
            let admin_drain = Drain::new(Duration::ZERO);
            let handler = Arc::new(Admin {
                shared: shared.clone(),
            });
            tokio::spawn(server::serve(
                admin,
                handler,
                admin_drain,
                TaskTracker::new(),
            ));
        }
        Err(e) => tracing::error!(error = %e, "admin listener unusable"),
    }
    done.cancelled().await;
}

async fn data_plane(
    shared: Arc<Shared>,
    outbound: Option<std::net::TcpListener>,
    inbound: Option<std::net::TcpListener>,
) -> Result<(), RunError> {
    let tracker = TaskTracker::new();
    let s = &shared.settings;
    let from_std = |l: std::net::TcpListener, what| {
        let addr = l.local_addr().unwrap_or(s.admin);
        tokio::net::TcpListener::from_std(l).map_err(|source| RunError::Bind { addr, what, source })
    };
    if let Some(l) = outbound {
        let handler = Arc::new(Outbound {
            table: shared.table.clone(),
            mode: s.mode,
            namespace: s.default_namespace.clone(),
            client_id: HeaderValue::from_str(&s.identity.0)
                .unwrap_or(HeaderValue::from_static("unknown")),
            metrics: shared.metrics.clone(),
            drain: shared.drain.clone(),
            security: (s.mode == Mode::Ingress).then(|| shared.security.clone()),
            observe: shared.observe.clone(),
            peers: Arc::new(crate::outbound::Peers {
                tls: s.join_token.as_ref().map(|_| shared.tls.clone()),
                metrics: shared.metrics.clone(),
                edges: shared.edges.clone(),
                identity: s.identity.0.clone(),
            }),
        });
        tracker.spawn(server::serve(
            from_std(l, "outbound")?,
            handler,
            shared.drain.clone(),
            tracker.clone(),
        ));
    }
    if let (Some(l), Some(app)) = (inbound, s.app) {
        let mut handler = Inbound::new(
            app,
            &s.instance,
            shared.health.clone(),
            shared.metrics.clone(),
            shared.drain.clone(),
        );
        handler.authenticated = s.join_token.is_some();
        handler.security = Some(shared.security.clone());
        let _ = shared.app_pool.set(handler.pool.clone());
        handler.observe = Some((
            shared.observe.clone(),
            crate::telemetry::DestinationService::new(&model::ServiceKey::new(
                &s.service,
                &s.namespace,
            )),
        ));
        tracker.spawn(server::serve_with(
            from_std(l, "inbound")?,
            Arc::new(handler),
            shared.drain.clone(),
            tracker.clone(),
            Some(shared.inbound_tls.clone()),
        ));
    }

    shared.shutdown.cancelled().await;
    tracing::info!(instance = %s.instance, "draining");
    shared.drain.start();
    shared.health.changed.notify_one();
    tracker.close();
    if tokio::time::timeout(s.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?s.drain_timeout, "drain timed out; closing the remaining connections");
    }
    Ok(())
}
