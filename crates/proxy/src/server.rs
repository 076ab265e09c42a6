//! The accept loop every listener shares: HTTP/1.1 and HTTP/2 (prior knowledge) on one port,
//! one task per connection, and graceful drain. An inbound listener authenticates each
//! connection first (`tls::accept`) and hands its handler the verified peer.
//!
//! Drain: the listener stops accepting at once; open connections keep being served for
//! `grace` (HTTP/1 responses then say `Connection: close`, so clients stop reusing them and a
//! request already on the wire is answered rather than reset), then get a graceful shutdown
//! (HTTP/2 GOAWAY; HTTP/1 closes after the response in progress). In-flight requests finish.

use crate::body::Body;
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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A slow client gets this long to send a request head (slowloris defence).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Envoy's default header-count limit.
pub const MAX_HEADERS: usize = 100;
/// Concurrent streams a peer may open on one HTTP/2 connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 2048;

/// Serves one request from the connection's `peer`. Implemented by the inbound, outbound and
/// admin sides.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
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

pub fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
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
}

impl PeerInfo {
    fn new(addr: SocketAddr, identity: Option<model::Identity>) -> Self {
        let identity_header = identity
            .as_ref()
            .and_then(|i| http::HeaderValue::from_str(&i.0).ok());
        PeerInfo {
            addr,
            identity,
            identity_header,
        }
    }
}

/// Accepts connections on `listener` until the drain starts; connection tasks are tracked by
/// `tracker` so that shutdown can wait for them. Plaintext; see [`serve_with`].
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    drain: Drain,
    tracker: TaskTracker,
) {
    serve_with(listener, handler, drain, tracker, None).await
}

/// [`serve`], authenticating each connection with `tls` (inbound listeners: the handshake the
/// port's mode asks for, `tls::accept`); `None`: plaintext.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    drain: Drain,
    tracker: TaskTracker,
    tls: Option<Arc<InboundTls>>,
) {
    let builder = Arc::new(builder());
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.started() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (builder, handler, drain) = (builder.clone(), handler.clone(), drain.clone());
        match &tls {
            None => {
                let info = PeerInfo::new(peer, None);
                tracker.spawn(serve_connection(
                    stream, info, builder, handler, drain, None,
                ));
            }
            Some(tls) => {
                let tls = tls.clone();
                tracker.spawn(async move {
                    match tls.accept(stream, peer, drain.started()).await {
                        None => {}
                        Some(Accepted::Plain {
                            stream,
                            until_strict,
                        }) => {
                            let info = PeerInfo::new(peer, None);
                            let until_strict = Some(until_strict);
                            serve_connection(stream, info, builder, handler, drain, until_strict)
                                .await
                        }
                        Some(Accepted::Mtls { stream, identity }) => {
                            let info = PeerInfo::new(peer, identity);
                            // Peers speak HTTP/2 here: let h2 coalesce the frames of many
                            // streams per write.
                            let io = crate::io::Unvectored(*stream);
                            serve_connection(io, info, builder, handler, drain, None).await
                        }
                    }
                });
            }
        }
    }
}

/// Serves HTTP on one connection until it closes or the drain ends it (or, for a plaintext
/// connection given `until_strict`, until its port turns STRICT).
async fn serve_connection<H, IO>(
    io: IO,
    info: PeerInfo,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Arc<H>,
    drain: Drain,
    until_strict: Option<tokio::sync::watch::Receiver<bool>>,
) where
    H: Handler,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.addr;
    let info = Arc::new(info);
    // The connection's peer goes to the handler as an argument, not as a request extension
    // (which would cost two allocations per request).
    let svc = service_fn(move |req: Request<Incoming>| {
        // Boxed once: a request's future holds kilobytes of state, and hyper and tokio move
        // the future they are given (into the connection's slot, into a task and out of it);
        // moving a pointer instead is what keeps memcpy off the profile.
        let fut = Box::pin(handler.clone().handle(req, info.clone()));
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let strict = async {
        match until_strict {
            Some(mut rx) => {
                let _ = rx.wait_for(|s| *s).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.started() => {}
        _ = strict => {
            tracing::info!(%peer, "closing a plaintext connection: the port is STRICT now");
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
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
