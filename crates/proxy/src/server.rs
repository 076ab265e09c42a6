//! The accept loop every listener shares: HTTP/1.1 and HTTP/2 (prior knowledge) on one port,
//! one task per connection, and graceful drain. An inbound listener authenticates each
//! connection first (`tls::accept`) and hands its handler the verified peer.
//!
//! Drain: the listener stops accepting at once; open connections keep being served for
//! `grace` (HTTP/1 responses then say `Connection: close`, so clients stop reusing them and a
//! request already on the wire is answered rather than reset), then get a graceful shutdown
//! (HTTP/2 GOAWAY; HTTP/1 closes after the response in progress). In-flight requests finish.

use crate::body::{Body, BodyTimeouts, RequestBody};
use crate::guard::{Floods, Guarded};
use crate::limits::{Limits, Underscores};
use crate::overload::{ConnCap, ConnPermit, SHED_RESPONSE};
use crate::tls::{Accepted, InboundTls};
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Concurrent streams a peer may open on one HTTP/2 connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 2048;
/// The whole-body deadline of a gRPC request: a year, in effect none (a stream lasts as long as
/// its call); the body's idle timeout still applies.
const GRPC_BODY_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);
/// A connection closed for an HTTP/2 flood gets this long to take its GOAWAY.
const FLOOD_LINGER: Duration = Duration::from_secs(1);
/// Accept errors (out of file descriptors, …) back off from this …
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// … doubling up to this, instead of spinning.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How one listener serves: its limits, and the caps its connections count against.
pub struct Listener {
    /// `outbound`, `inbound`, `ingress` or `admin` (log field and metric label).
    pub name: &'static str,
    pub limits: Arc<Limits>,
    pub underscores: Underscores,
    /// This listener's connections.
    pub cap: Arc<ConnCap>,
    /// The proxy's connections (`None`: outside it, as the admin listener is).
    pub total: Option<Arc<ConnCap>>,
    pub floods: Arc<Floods>,
    /// Inbound listeners: the handshake the port's mode asks for (`tls::accept`); `None`:
    /// plaintext.
    pub tls: Option<Arc<InboundTls>>,
    /// Inbound listeners of a pod (transparent interception): who serves the connections its
    /// capture rules sent here for a port whose app speaks opaque TCP.
    pub redirected: Option<Arc<dyn Redirected>>,
}

/// Serves connections a pod's capture rules redirected to an inbound listener, when they are
/// for a port whose app speaks opaque TCP (they are not HTTP, nor a peer's mTLS).
pub trait Redirected: Send + Sync + 'static {
    /// The future serving `stream` (from `peer`, for the app's `port`), or the stream back
    /// when it is to be served as any other connection.
    #[allow(clippy::result_large_err)]
    fn opaque(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        port: u16,
    ) -> Result<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>, TcpStream>;
}

impl Listener {
    /// A slot on this listener and in the proxy, or `None` at either cap.
    pub(crate) fn admit(&self) -> Option<(ConnPermit, Option<ConnPermit>)> {
        let own = self.cap.try_take()?;
        match &self.total {
            None => Some((own, None)),
            Some(total) => total.try_take().map(|t| (own, Some(t))),
        }
    }

    fn body_timeouts(&self) -> BodyTimeouts {
        BodyTimeouts {
            idle: self.limits.body_idle_timeout,
            total: self.limits.request_timeout,
        }
    }
}

/// Serves one request from the connection's `peer`. Implemented by the inbound, outbound and
/// admin sides.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<RequestBody>,
        peer: Arc<PeerInfo>,
    ) -> impl Future<Output = http::Response<Body>> + Send + 'static;
}

/// The one drain signal every listener and connection of a proxy listens to.
#[derive(Clone)]
pub struct Drain {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
    pub grace: Duration,
}

impl Drain {
    pub fn new(grace: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            flag: Arc::new(AtomicBool::new(false)),
            grace,
        }
    }

    pub fn start(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Cheap enough for every response: one atomic load.
    pub fn is_draining(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub async fn started(&self) {
        self.token.cancelled().await
    }
}

/// The HTTP server every listener runs, with `limits` on request heads and HTTP/2 streams.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer bounds the request head: past it, 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(limits.max_header_bytes as u32)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    b
}

/// What the accepting listener knows about a connection's peer; the handler gets it with every
/// request of the connection (see [`Handler::handle`]).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The peer's verified SPIFFE identity (mTLS), `None` for plaintext.
    pub identity: Option<model::Identity>,
    /// `identity` as a header value, made once per connection.
    pub identity_header: Option<http::HeaderValue>,
    /// A connection the pod's capture rules sent here: the service (`NAME.NAMESPACE:PORT`)
    /// whose virtual IP it was for, which routes its requests whose Host names no service.
    pub captured: Option<Arc<str>>,
}

impl PeerInfo {
    pub(crate) fn new(addr: SocketAddr, identity: Option<model::Identity>) -> Self {
        let identity_header = identity
            .as_ref()
            .and_then(|i| http::HeaderValue::from_str(&i.0).ok());
        PeerInfo {
            addr,
            identity,
            identity_header,
            captured: None,
        }
    }
}

/// Accepts connections on `listener` until the drain starts; connection tasks are tracked by
/// `tracker` so that shutdown can wait for them. Each connection must send its first byte
/// within the first-byte timeout, counts against the listener's and the proxy's caps (past
/// either it gets 503 and is closed), and gets TCP keepalive.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    drain: Drain,
    tracker: TaskTracker,
    config: Arc<Listener>,
) {
    let builder = Arc::new(builder(&config.limits));
    let own = listener.local_addr().ok();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.started() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = ACCEPT_BACKOFF_MIN;
                x
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning, and say
                // so once per back-off rather than per attempt.
                if backoff == ACCEPT_BACKOFF_MIN {
                    tracing::warn!(listener = config.name, error = %e, "accept failed; backing off");
                }
                tokio::select! {
                    _ = drain.started() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Some(permits) = config.admit() else {
            shed(stream, config.tls.is_none());
            continue;
        };
        let _ = stream.set_nodelay(true);
        crate::limits::keepalive(&stream);
        let mut stream = stream;
        if let Some(r) = &config.redirected {
            let dst = own.and_then(|own| crate::io::original_dst(&stream, own));
            if let Some(port) = dst.map(|d| d.port()) {
                match r.clone().opaque(stream, peer, port) {
                    Ok(serve) => {
                        tracker.spawn(async move {
                            let _permits = permits;
                            serve.await
                        });
                        continue;
                    }
                    Err(s) => stream = s,
                }
            }
        }
        let (builder, handler, drain, config) = (
            builder.clone(),
            handler.clone(),
            drain.clone(),
            config.clone(),
        );
        tracker.spawn(async move {
            let _permits = permits;
            // A connection that never speaks holds a slot for nothing.
            let mut first = [0u8; 1];
            let limit = config.limits.first_byte_timeout;
            match tokio::time::timeout(limit, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            match &config.tls {
                None => {
                    let info = PeerInfo::new(peer, None);
                    serve_connection(stream, info, builder, handler, drain, None, &config).await
                }
                Some(tls) => match tls.accept(stream, peer, drain.started()).await {
                    None => {}
                    Some(Accepted::Plain {
                        stream,
                        until_strict,
                    }) => {
                        let info = PeerInfo::new(peer, None);
                        let until_strict = Some(until_strict);
                        serve_connection(
                            stream,
                            info,
                            builder,
                            handler,
                            drain,
                            until_strict,
                            &config,
                        )
                        .await
                    }
                    Some(Accepted::Mtls { stream, identity }) => {
                        let info = PeerInfo::new(peer, identity);
                        // Peers speak HTTP/2 here: let h2 coalesce the frames of many
                        // streams per write, and send what it wrote by the flush as one.
                        let io = crate::io::Unvectored(crate::io::Corked::new(*stream));
                        serve_connection(io, info, builder, handler, drain, None, &config).await
                    }
                },
            }
        });
    }
}

/// A connection past a cap: a 503 if the socket takes it at once (plaintext), then closed.
fn shed(stream: TcpStream, plaintext: bool) {
    if plaintext {
        let _ = stream.try_write(SHED_RESPONSE);
    }
}

/// Serves HTTP on one connection until it closes, the drain ends it, it idles past the idle
/// timeout or floods (or, for a plaintext connection given `until_strict`, until its port
/// turns STRICT). Every request is checked ([`crate::validate`]) before its handler sees it.
pub(crate) async fn serve_connection<H, IO>(
    io: IO,
    info: PeerInfo,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Arc<H>,
    drain: Drain,
    until_strict: Option<tokio::sync::watch::Receiver<bool>>,
    config: &Listener,
) where
    H: Handler,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.addr;
    let info = Arc::new(info);
    let (io, activity) = Guarded::new(io, config.floods.clone());
    let (timeouts, underscores) = (config.body_timeouts(), config.underscores);
    // The connection's peer goes to the handler as an argument, not as a request extension
    // (which would cost two allocations per request).
    let svc = service_fn(move |req: Request<Incoming>| {
        let (handler, info) = (handler.clone(), info.clone());
        // Boxed once: a request's future holds kilobytes of state, and hyper and tokio move
        // the future they are given (into the connection's slot, into a task and out of it);
        // moving a pointer instead is what keeps memcpy off the profile.
        let fut = Box::pin(async move {
            let grpc = crate::grpc::is_grpc(req.headers());
            // A gRPC request body lasts as long as its call (a client or bidi stream may run for
            // hours): only the idle timeout applies to it, as Istio's sidecars set no request
            // timeout.
            let timeouts = match grpc {
                true => BodyTimeouts {
                    total: GRPC_BODY_DEADLINE,
                    ..timeouts
                },
                false => timeouts,
            };
            let mut req = req.map(|b| RequestBody::new(b, timeouts));
            let timed_out =
                (!http_body::Body::is_end_stream(req.body())).then(|| req.body_mut().watch());
            // The listener's own refusals reach a gRPC client as gRPC statuses too.
            let as_grpc = |mut rsp| {
                if grpc {
                    crate::grpc::answer(&mut rsp);
                }
                rsp
            };
            if let Err(rsp) = crate::validate::request(&mut req, underscores).await {
                return as_grpc(rsp);
            }
            let rsp = handler.handle(req, info).await;
            match timed_out {
                Some(t) if t.load(std::sync::atomic::Ordering::Acquire) => {
                    as_grpc(crate::validate::closing(crate::flags::respond(
                        crate::flags::Flag::StreamIdleTimeout,
                        "the client sent its request body too slowly",
                    )))
                }
                _ => rsp,
            }
        });
        async move { Ok::<_, Infallible>(fut.await) }
    });
    // With upgrades: an HTTP/1.1 `CONNECT` becomes a tunnel (`crate::tunnel`).
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let strict = async {
        match until_strict {
            Some(mut rx) => {
                let _ = rx.wait_for(|s| *s).await;
            }
            None => std::future::pending().await,
        }
    };
    let idle_limit = config.limits.idle_timeout;
    let idle = async {
        loop {
            let idle_for = activity.idle_for();
            if idle_for >= idle_limit {
                return;
            }
            tokio::time::sleep(idle_limit - idle_for).await;
        }
    };
    let flooded = activity.flood_seen();
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.started() => {}
        _ = strict => {
            tracing::info!(%peer, "closing a plaintext connection: the port is STRICT now");
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            return;
        }
        _ = idle => {
            tracing::debug!(%peer, listener = config.name, "closing an idle connection");
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            return;
        }
        _ = flooded => {
            let _ = tokio::time::timeout(FLOOD_LINGER, conn.as_mut()).await;
            return;
        }
    }
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep(drain.grace) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
