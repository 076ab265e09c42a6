//! The accept loop every listener shares: HTTP/1.1 and HTTP/2 (prior knowledge) on one port,
//! one task per connection, and graceful drain.
//!
//! Drain: the listener stops accepting at once; open connections keep being served for
//! `grace` (HTTP/1 responses then say `Connection: close`, so clients stop reusing them and a
//! request already on the wire is answered rather than reset), then get a graceful shutdown
//! (HTTP/2 GOAWAY; HTTP/1 closes after the response in progress). In-flight requests finish.

use crate::body::Body;
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

/// Serves one request. Implemented by the inbound, outbound and admin sides.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
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

/// Accepts connections on `listener` until the drain starts; connection tasks are tracked by
/// `tracker` so that shutdown can wait for them.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    drain: Drain,
    tracker: TaskTracker,
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
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let fut = handler.clone().handle(req, peer);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = drain.started() => {}
            }
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tokio::time::sleep(drain.grace) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
}
