//! Mesh → app: the inbound side of a sidecar. Requests from peer proxies (HTTP/2) and from
//! plain clients (HTTP/1.1 or HTTP/2) are forwarded to the local app over a keep-alive HTTP/1.1
//! pool, or over one h2c connection when the app's port speaks `http2` or `grpc`
//! ([`Inbound::set_app_protocol`]). The sidecar also watches whether its app accepts
//! connections and reports that as its readiness, so the control plane takes a dead app's
//! replica out of every balancer.

use crate::app_pool::{AppError, AppLimits, AppPool};
use crate::body::Body;
use crate::body::RequestBody;
use crate::flags::{self, Flag};
use crate::headers::{finish_response, strip_hop_by_hop, CLIENT_ID_HEADER};
use crate::metrics::{Direction, Metrics};
use crate::server::{Drain, Handler, PeerInfo};
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The header the inbound side adds, naming the replica whose sidecar the request went through.
pub const INBOUND_HEADER: &str = "x-weft-inbound";
const INBOUND: http::HeaderName = http::HeaderName::from_static(INBOUND_HEADER);
/// How often a ready app is checked (see [`probe_app`]).
pub const READY_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long the app gets to accept a connection.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the local app accepts connections, and who wants to hear when that changes.
#[derive(Default)]
pub struct AppHealth {
    ready: AtomicBool,
    /// Why it is not ready when the reason is not the usual one (another process holds its
    /// port); read when health is reported, never on the request path.
    why: std::sync::Mutex<Option<String>>,
    /// Wakes the control-plane stream to report the change.
    pub changed: Notify,
    /// Wakes the prober to watch for the app's return.
    went_down: Notify,
}

impl AppHealth {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set(&self, ready: bool) {
        let had_why = self.set_why(None);
        if self.ready.swap(ready, Ordering::AcqRel) != ready {
            self.changed.notify_one();
            if !ready {
                self.went_down.notify_one();
            }
        } else if had_why {
            self.changed.notify_one();
        }
    }

    /// Not ready, for the reason `why` (said as is in its health).
    pub fn set_not_ready_because(&self, why: String) {
        let changed = self.set_why(Some(why));
        if self.ready.swap(false, Ordering::AcqRel) || changed {
            self.changed.notify_one();
        }
    }

    /// Why it is not ready, when [`AppHealth::set_not_ready_because`] said.
    pub fn why(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether that changed the reason.
    fn set_why(&self, why: Option<String>) -> bool {
        let mut held = self.why.lock().unwrap_or_else(|p| p.into_inner());
        if *held == why {
            return false;
        }
        *held = why;
        true
    }
}

pub struct Inbound {
    app: SocketAddr,
    pub pool: Arc<AppPool>,
    instance: HeaderValue,
    pub health: Arc<AppHealth>,
    metrics: Arc<Metrics>,
    drain: Drain,
    /// The mesh runs mTLS: the client identity the app sees is the one the handshake proved
    /// (a plaintext caller's claim is dropped). Without it the client sidecar's header stands.
    pub authenticated: bool,
    /// The state in force, for its JWT and authorization checks; `None`: none.
    pub state: Option<crate::state::StateHandle>,
    /// Istio metrics (`reporter="destination"`) for requests to this service.
    pub observe: Option<(
        Arc<crate::observe::Observe>,
        crate::telemetry::DestinationService,
    )>,
    /// The service this sidecar serves (for its spans' name).
    pub own: Option<model::ServiceKey>,
    /// A `CONNECT` tunnel that carries nothing this long is closed ([`crate::tunnel`]).
    pub tunnel_idle: Duration,
    /// The app's address for each service port a tunnel may name; empty: `app` for any.
    pub app_ports: Arc<[(u16, SocketAddr)]>,
}

impl Inbound {
    /// Speaks `protocol` to the app: HTTP/2 (h2c) for `http2` and `grpc`, HTTP/1.1 otherwise.
    pub fn set_app_protocol(&mut self, protocol: model::Protocol) {
        self.pool = AppPool::for_protocol(self.app, protocol);
    }
}

impl Inbound {
    pub fn new(
        app: SocketAddr,
        instance: &str,
        health: Arc<AppHealth>,
        metrics: Arc<Metrics>,
        drain: Drain,
    ) -> Self {
        Inbound {
            pool: AppPool::new(app),
            app,
            instance: HeaderValue::from_str(instance)
                .unwrap_or(HeaderValue::from_static("unknown")),
            health,
            metrics,
            drain,
            authenticated: false,
            state: None,
            observe: None,
            own: None,
            tunnel_idle: crate::limits::DEFAULT_IDLE_TIMEOUT,
            app_ports: Arc::new([]),
        }
    }

    async fn forward(
        &self,
        req: Request<RequestBody>,
        peer: &PeerInfo,
        limits: AppLimits,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // HTTP/2's :authority becomes the Host header (one from an HTTP/1 caller stays).
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, a);
        }
        parts.headers.insert(INBOUND, self.instance.clone());
        if self.authenticated {
            match peer.identity_header.clone() {
                Some(id) => {
                    parts.headers.insert(crate::headers::CLIENT_ID, id);
                }
                None => {
                    parts.headers.remove(CLIENT_ID_HEADER);
                }
            }
        }
        if let Some(up) = parts.extensions.remove::<crate::upgrade::Upgrading>() {
            // An upgrade is HTTP/1.1's: replayed in origin form on a connection of its own.
            parts.uri = match parts.uri.path_and_query() {
                Some(p) => Uri::from(p.clone()),
                None => Uri::from_static("/"),
            };
            parts.version = Version::HTTP_11;
            let drain = &self.drain;
            return crate::upgrade::to_app(self.app, parts, up, self.tunnel_idle, drain).await;
        }
        if self.pool.is_http2() {
            // HTTP/2 names the service in `:authority` (and needs a `:scheme`), not in Host.
            parts.uri = app_uri_h2(&parts.uri, parts.headers.remove(header::HOST));
            parts.version = Version::HTTP_2;
        } else {
            // Origin form (`/path?query`) on the wire to the app; the Host header names the
            // service.
            parts.uri = match parts.uri.path_and_query() {
                Some(p) => Uri::from(p.clone()),
                None => Uri::from_static("/"),
            };
            parts.version = Version::HTTP_11;
        }
        let req = Request::from_parts(parts, body.boxed());
        match self.pool.send(req, limits).await {
            Ok(rsp) => rsp,
            Err(AppError::Connect(_)) => {
                // Tell the control plane at once; the prober will notice when the app is back.
                self.health.set(false);
                flags::respond(
                    Flag::UpstreamConnectFailure,
                    format!("app at {} refused the connection", self.app),
                )
            }
            Err(AppError::Overflow(why)) => flags::respond(Flag::Overflow, why),
            Err(AppError::Http(e)) if crate::body::timed_out(&e) => crate::validate::closing(
                flags::respond(Flag::StreamIdleTimeout, format!("the request body: {e}")),
            ),
            Err(e) => flags::respond(
                Flag::UpstreamConnectionTermination,
                format!("app at {}: {e}", self.app),
            ),
        }
    }
}

impl Inbound {
    /// A `CONNECT` tunnel to the app ([`crate::tunnel::accept`]).
    async fn tunnel(&self, req: Request<RequestBody>, info: &PeerInfo) -> Response<Body> {
        let port = req.uri().authority().and_then(|a| a.port_u16());
        let app = match (self.app_ports.is_empty(), port) {
            (true, _) => self.app,
            (false, Some(p)) => match self.app_ports.iter().find(|(sp, _)| *sp == p) {
                Some((_, a)) => *a,
                None => return no_port(p),
            },
            (false, None) => return no_port(0),
        };
        let state = self.state.as_ref().map(|s| s.load_full());
        let cx = crate::tunnel::Accept {
            app,
            port,
            security: state.as_ref().map(|s| &s.security),
            health: &self.health,
            idle: self.tunnel_idle,
            drain: &self.drain,
            observe: self.observe.as_ref(),
        };
        let rsp = crate::tunnel::accept(cx, req, info).await;
        self.metrics.answered(Direction::inbound, &rsp);
        rsp
    }
}

impl crate::server::Redirected for Inbound {
    fn opaque(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        port: u16,
    ) -> Result<
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        tokio::net::TcpStream,
    > {
        let Some(state) = &self.state else {
            return Err(stream);
        };
        let state = state.load_full();
        let opaque = self.own.as_ref().and_then(|own| {
            let protocol = state.routes.snapshot.service(own)?.protocol_of(port)?;
            (!protocol.is_http()).then_some(())
        });
        if opaque.is_none() {
            return Err(stream);
        }
        let app = match self.app_ports.iter().find(|(p, _)| *p == port) {
            Some((_, a)) => *a,
            None if self.app_ports.is_empty() => self.app,
            None => return Err(stream),
        };
        Ok(Box::pin(async move {
            // A redirected connection never carries a peer's mTLS (peers call the inbound
            // port itself): under STRICT it is refused.
            if self.authenticated && state.security.mode == model::security::MtlsMode::Strict {
                tracing::info!(%peer, port, "plaintext connection refused: the port is STRICT");
                return;
            }
            let info = PeerInfo::new(peer, None);
            let cx = crate::tunnel::Accept {
                app,
                port: Some(port),
                security: Some(&state.security),
                health: &self.health,
                idle: self.tunnel_idle,
                drain: &self.drain,
                observe: self.observe.as_ref(),
            };
            crate::tunnel::accept_captured(cx, stream, &info).await;
        }))
    }
}

/// 404 `NR`: a tunnel to a port the service does not have.
fn no_port(port: u16) -> Response<Body> {
    flags::respond(
        Flag::NoRoute,
        format!("the service has no port {port} to tunnel to"),
    )
}

/// `http://AUTHORITY/path?query`: the request's target as an HTTP/2 app gets it.
fn app_uri_h2(uri: &Uri, host: Option<HeaderValue>) -> Uri {
    let authority = uri
        .authority()
        .cloned()
        .or_else(|| host.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok()))
        .unwrap_or(http::uri::Authority::from_static("localhost"));
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or(http::uri::PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

impl Handler for Inbound {
    async fn handle(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
        info: Arc<PeerInfo>,
    ) -> Response<Body> {
        if req.method() == http::Method::CONNECT && !crate::upgrade::restore(&mut req) {
            return self.tunnel(req, &info).await;
        }
        let peer = info.addr;
        let version = req.version();
        // Continues the request's trace: the new span's context goes on to the app.
        let mut started = match &self.observe {
            Some((o, _)) => o.start(&mut req, crate::trace::Side::Inbound, peer),
            None => crate::observe::Started::of(&req, crate::tap::Tap::idle()),
        };
        let verified = info.identity.as_ref();
        let source = self.observe.as_ref().map(|(o, _)| {
            o.telemetry.peer_from_header(
                req.headers()
                    .get(crate::telemetry::PEER_HEADER)
                    .map(|v| v.as_bytes()),
                verified.map(|i| i.0.as_str()),
            )
        });
        req.headers_mut().remove(crate::telemetry::PEER_HEADER);
        // One state for the whole request.
        let (checked, limits) = match &self.state {
            Some(state) => {
                let state = state.load();
                // Named as Istio names a server's spans: `HOST:PORT/*` of its own service.
                if let (Some(span), Some(own)) = (&mut started.span, &self.own) {
                    if let Some(svc) = state.routes.service(own) {
                        span.rename(&svc.operation);
                    }
                }
                let checked = state.security.check(&mut req, &info).map(|_| ());
                (checked, state.app_limits)
            }
            None => (Ok(()), AppLimits::default()),
        };
        let mut rsp = match checked {
            Ok(()) => self.forward(req, &info, limits).await,
            Err(rsp) => *rsp,
        };
        // A gRPC client gets the proxy's own answers as gRPC statuses.
        if started.protocol == crate::telemetry::Protocol::Grpc {
            crate::grpc::answer(&mut rsp);
        }
        if let (Some((o, service)), Some(source)) = (&self.observe, &source) {
            o.destination(started, source, service, verified.is_some(), &mut rsp);
        }
        finish_response(&mut rsp, version, &self.drain);
        self.metrics.answered(Direction::inbound, &rsp);
        rsp
    }
}

/// Watches whether the app accepts TCP connections (and, given `pid_file`, whether what
/// accepts them is the app: [`crate::app_owner`]). While it is not ready the app is checked
/// every `interval`, so a (re)started app gets traffic quickly; while it is ready, only every
/// [`READY_PROBE_INTERVAL`]: traffic itself reports a dead app at once (a refused connection
/// flips readiness), and an idle sidecar should cost nothing.
pub async fn probe_app(
    app: SocketAddr,
    pid_file: Option<std::path::PathBuf>,
    health: Arc<AppHealth>,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    use crate::app_owner::Holder;
    let mut member = None;
    loop {
        let accepts = matches!(
            tokio::time::timeout(APP_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(app)).await,
            Ok(Ok(_))
        );
        let holder = match (&pid_file, accepts) {
            (Some(file), true) => {
                let file = file.clone();
                let check = tokio::task::spawn_blocking(move || {
                    let holder = crate::app_owner::holder(app, &file, &mut member);
                    (holder, member)
                });
                let (holder, found) = check.await.unwrap_or((Holder::App, None));
                member = found;
                holder
            }
            _ => Holder::App,
        };
        let ok = accepts && holder == Holder::App;
        // Worded without "ready": scripts wait for `weft up`'s ready line, often on its
        // output and its log together.
        match (ok, health.is_ready(), &holder) {
            (true, false, _) => tracing::info!(%app, "app accepts connections"),
            (false, true, Holder::App) => {
                tracing::info!(%app, "app stopped accepting connections")
            }
            _ => {}
        }
        match holder {
            Holder::Other(why) => {
                if health.why().as_ref() != Some(&why) {
                    tracing::warn!(%app, "{why}");
                }
                health.set_not_ready_because(why);
            }
            _ => health.set(ok),
        }
        metrics.app_ready.set(ok as i64);
        let wait = if ok { READY_PROBE_INTERVAL } else { interval };
        // A refused connection on the data path wakes the prober early.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = health.went_down.notified() => {}
        }
    }
}
