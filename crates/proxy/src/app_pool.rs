//! Keep-alive HTTP/1.1 connections from a sidecar to its local app: a lock-free queue of idle
//! connections. A connection goes back to the queue when the response body it carried has been
//! read to the end; one whose body was abandoned is closed. The hot path takes no lock.
//!
//! A connection has no task of its own: the request that holds it drives its reads and writes
//! (and the response body, while it streams, does), so the app's answer wakes that request's
//! task directly instead of a connection task that then hands the answer over.
//!
//! The connections are capped ([`AppLimits`]: 256 by default, or the service's DestinationRule
//! `connectionPool.tcp.maxConnections`): past the cap a request waits for a connection to come
//! back, at most [`QUEUE_TIMEOUT`] and with at most `http1MaxPendingRequests` others (1,024 by
//! default) waiting; beyond either it is answered 503 with flag `UO`.
//!
//! An app that speaks HTTP/2 (its port's protocol is `http2` or `grpc`) gets one multiplexed
//! h2c connection (HTTP/2 over plaintext, prior knowledge) instead: every request is a stream on
//! it, bodies and trailers stream both ways, and a closed connection is replaced by the next
//! request.

use crate::body::{self, Body};
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Idle connections kept at most.
const MAX_IDLE: usize = 256;
/// Connections to the app at most, unless the service's traffic policy says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Requests that may wait for a connection at once, unless the traffic policy says otherwise.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// How long a request waits for a connection to the app.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many connections the pool opens to the app, and how many requests may wait for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppLimits {
    pub max_connections: usize,
    pub max_pending: usize,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

impl AppLimits {
    /// The limits an Istio `connectionPool` sets (`tcp.maxConnections`,
    /// `http.http1MaxPendingRequests`), the defaults for what it leaves out.
    pub fn from_pool(pool: Option<&model::ConnectionPool>) -> AppLimits {
        let d = AppLimits::default();
        let Some(pool) = pool else {
            return d;
        };
        AppLimits {
            max_connections: pool
                .max_connections
                .map_or(d.max_connections, |n| (n as usize).max(1)),
            max_pending: pool
                .max_pending_requests
                .map_or(d.max_pending, |n| n as usize),
        }
    }
}
/// How long the app gets to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// An app response whose `Content-Length` is at most this is read whole before it goes on, so
/// the peer gets its head and body in one write (HEADERS and DATA frames together) instead of
/// one write each, and the connection is back in the pool at once. Larger or chunked bodies
/// stream.
const READ_WHOLE: u64 = 16 * 1024;

/// A body's bytes; one frame (the usual case) is taken as it is, without a copy.
async fn read_whole(mut b: Incoming) -> Result<Bytes, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut more = bytes::BytesMut::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut b).await {
        // A body with a Content-Length has no trailers: every frame is data.
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if let Some(f) = first.take() {
            more.extend_from_slice(&f);
        }
        if more.is_empty() {
            first = Some(data);
        } else {
            more.extend_from_slice(&data);
        }
    }
    Ok(first.unwrap_or_else(|| more.freeze()))
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The app did not accept a connection: nothing reached it.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// Every connection to the app is busy and the queue is full, or the wait was too long.
    #[error("{0}")]
    Overflow(String),
}

/// The pool's count of open connections, shared with each connection's [`Slot`].
#[derive(Default)]
struct Open {
    connections: AtomicUsize,
    waiting: AtomicUsize,
    /// Wakes a waiting request: a connection came back or closed.
    freed: Notify,
}

/// One open connection's place in the count; freed when the connection is dropped.
struct Slot(Arc<Open>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        if self.0.waiting.load(Ordering::Acquire) > 0 {
            self.0.freed.notify_one();
        }
    }
}

/// The HTTP/1.1 connection to the app itself (its reads, writes and state).
type AppIo = http1::Connection<TokioIo<TcpStream>, Body>;

/// A connection to the app and its slot.
struct Conn {
    sender: http1::SendRequest<Body>,
    /// Polled by whichever request holds the connection; `None` once it has ended. Boxed: the
    /// connection's state is several hundred bytes, and a `Conn` moves in and out of the idle
    /// queue and the request's future with every request.
    io: Option<Box<AppIo>>,
    _slot: Slot,
}

/// Runs `fut` while driving the connection `io` in the same task: `fut` waits on what the
/// connection does (writing the request, reading the answer) and the connection on the socket.
async fn driven<F: Future>(io: &mut Option<Box<AppIo>>, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        drive(io, cx);
        fut.as_mut().poll(cx)
    })
    .await
}

/// Lets the connection make progress; forgets it once it has ended.
fn drive(io: &mut Option<Box<AppIo>>, cx: &mut Context<'_>) {
    if let Some(c) = io.as_mut() {
        if Pin::new(&mut **c).poll(cx).is_ready() {
            *io = None;
        }
    }
}

pub struct AppPool {
    addr: SocketAddr,
    idle: ArrayQueue<Conn>,
    open: Arc<Open>,
    /// `Some`: the app speaks HTTP/2 and every request goes over this connection.
    h2: Option<H2>,
}

/// The one h2c connection to an HTTP/2 app: read without a lock by every request, replaced
/// (under `connecting`, so that only one request dials) once it has closed.
#[derive(Default)]
struct H2 {
    sender: arc_swap::ArcSwapOption<http2::SendRequest<Body>>,
    connecting: tokio::sync::Mutex<()>,
}

impl AppPool {
    /// Idle keep-alive connections to the app now.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// A pool of HTTP/1.1 connections to the app at `addr`.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(AppPool {
            addr,
            idle: ArrayQueue::new(MAX_IDLE),
            open: Arc::default(),
            h2: None,
        })
    }

    /// The pool for an app whose port speaks `protocol`: h2c for `http2` and `grpc`, HTTP/1.1
    /// otherwise.
    pub fn for_protocol(addr: SocketAddr, protocol: model::Protocol) -> Arc<Self> {
        let h2 = matches!(protocol, model::Protocol::Http2 | model::Protocol::Grpc);
        Arc::new(AppPool {
            addr,
            idle: ArrayQueue::new(MAX_IDLE),
            open: Arc::default(),
            h2: h2.then(H2::default),
        })
    }

    /// Whether requests go to the app over HTTP/2.
    pub fn is_http2(&self) -> bool {
        self.h2.is_some()
    }

    /// Connections open to the app now.
    pub fn open(&self) -> usize {
        self.open.connections.load(Ordering::Relaxed)
    }

    /// A slot for one more connection, if `limits` allow it.
    fn try_slot(&self, limits: AppLimits) -> Option<Slot> {
        let open = &self.open.connections;
        let mut n = open.load(Ordering::Relaxed);
        loop {
            if n >= limits.max_connections {
                return None;
            }
            match open.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Slot(self.open.clone())),
                Err(now) => n = now,
            }
        }
    }

    /// An idle connection, or a new one within `limits`, or — at the cap — the first that comes
    /// back within [`QUEUE_TIMEOUT`]; `(connection, reused)`.
    async fn get(&self, limits: AppLimits) -> Result<(Conn, bool), AppError> {
        if let Some(c) = self.checkout().await {
            return Ok((c, true));
        }
        if let Some(slot) = self.try_slot(limits) {
            // Boxed: the connect and handshake state would otherwise sit in every request's
            // future.
            return Ok((Box::pin(self.connect(slot)).await?, false));
        }
        let waiting = &self.open.waiting;
        if waiting.fetch_add(1, Ordering::AcqRel) >= limits.max_pending {
            waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AppError::Overflow(format!(
                "all {} connections to the app are busy and {} requests wait already",
                limits.max_connections, limits.max_pending
            )));
        }
        let waited = tokio::time::timeout(QUEUE_TIMEOUT, async {
            loop {
                let freed = self.open.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if let Some(c) = self.checkout().await {
                    return Ok((c, true));
                }
                if let Some(slot) = self.try_slot(limits) {
                    return Ok((Box::pin(self.connect(slot)).await?, false));
                }
                freed.await;
            }
        })
        .await;
        waiting.fetch_sub(1, Ordering::AcqRel);
        waited.unwrap_or_else(|_| {
            Err(AppError::Overflow(format!(
                "no connection to the app came free within {QUEUE_TIMEOUT:?} ({} open)",
                limits.max_connections
            )))
        })
    }

    /// Sends `req` to the app on an idle connection, or a new one within `limits`.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
        limits: AppLimits,
    ) -> Result<Response<Body>, AppError> {
        if let Some(h2) = &self.h2 {
            return self.send_h2(h2, req).await;
        }
        let mut req = req;
        loop {
            let (mut conn, reused) = self.get(limits).await?;
            let Conn { sender, io, .. } = &mut conn;
            match driven(io, sender.try_send_request(req)).await {
                Ok(rsp)
                    if crate::headers::content_length(rsp.headers())
                        .is_some_and(|n| n <= READ_WHOLE) =>
                {
                    let (parts, b) = rsp.into_parts();
                    let whole = driven(io, read_whole(b)).await?;
                    self.give_back(conn);
                    return Ok(Response::from_parts(parts, body::full(whole)));
                }
                Ok(rsp) => {
                    let pool = self.clone();
                    return Ok(rsp.map(|b| {
                        body::boxed(PooledBody {
                            inner: b,
                            back: Some((conn, pool)),
                        })
                    }));
                }
                // An idle connection the app had just closed: the request was never written,
                // so it goes again on a fresh connection.
                Err(mut e) if reused && e.message().is_some() => {
                    req = e.take_message().expect("checked above");
                }
                Err(e) => return Err(AppError::Http(e.into_error())),
            }
        }
    }

    /// Sends `req` as a stream of the app's HTTP/2 connection, dialling it first when there is
    /// none (or it closed). A request the closing connection never took goes on a new one.
    async fn send_h2(&self, h2: &H2, req: Request<Body>) -> Result<Response<Body>, AppError> {
        let mut req = req;
        for _ in 0..2 {
            let shared = self.h2_sender(h2).await?;
            let mut sender = (*shared).clone();
            match sender.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp.map(body::incoming)),
                Err(mut e) => match e.take_message() {
                    Some(r) => {
                        // Forgotten unless another request has replaced it already.
                        h2.sender.compare_and_swap(&Some(shared), None);
                        req = r;
                    }
                    None => return Err(AppError::Http(e.into_error())),
                },
            }
        }
        Err(AppError::Connect(
            std::io::ErrorKind::ConnectionReset.into(),
        ))
    }

    /// A ready sender on the app's HTTP/2 connection.
    async fn h2_sender(&self, h2: &H2) -> Result<Arc<http2::SendRequest<Body>>, AppError> {
        let usable = |s: Option<Arc<http2::SendRequest<Body>>>| s.filter(|s| !s.is_closed());
        if let Some(s) = usable(h2.sender.load_full()) {
            return Ok(s);
        }
        let _one = h2.connecting.lock().await;
        if let Some(s) = usable(h2.sender.load_full()) {
            return Ok(s);
        }
        let stream = self.dial().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake(TokioIo::new(stream))
            .await?;
        let slot = self.try_slot(AppLimits {
            max_connections: usize::MAX,
            ..AppLimits::default()
        });
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
        });
        let sender = Arc::new(sender);
        h2.sender.store(Some(sender.clone()));
        Ok(sender)
    }

    async fn checkout(&self) -> Option<Conn> {
        while let Some(mut c) = self.idle.pop() {
            let Conn { sender, io, .. } = &mut c;
            if !sender.is_closed() && driven(io, sender.ready()).await.is_ok() {
                return Some(c);
            }
        }
        None
    }

    /// A new TCP connection to the app (no delay, keepalive), within [`CONNECT_TIMEOUT`].
    async fn dial(&self) -> Result<TcpStream, AppError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| AppError::Connect(std::io::ErrorKind::TimedOut.into()))?
            .map_err(AppError::Connect)?;
        let _ = stream.set_nodelay(true);
        crate::limits::keepalive(&stream);
        Ok(stream)
    }

    async fn connect(&self, slot: Slot) -> Result<Conn, AppError> {
        let stream = self.dial().await?;
        let (sender, io) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            io: Some(Box::new(io)),
            _slot: slot,
        })
    }

    fn give_back(&self, c: Conn) {
        if c.io.is_none() {
            return;
        }
        // A full queue drops the connection, which closes it (and frees its slot).
        if self.idle.push(c).is_ok() && self.open.waiting.load(Ordering::Acquire) > 0 {
            self.open.freed.notify_one();
        }
    }
}

/// A response body that returns its connection to the pool once read to the end.
struct PooledBody {
    inner: Incoming,
    back: Option<(Conn, Arc<AppPool>)>,
}

impl PooledBody {
    fn done(&mut self) {
        if let Some((s, pool)) = self.back.take() {
            pool.give_back(s);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some((conn, _)) = self.back.as_mut() {
            drive(&mut conn.io, cx);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.done(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.done(),
            Some(Err(_)) => self.back = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Only a fully read response leaves the connection ready for the next request.
        if self.inner.is_end_stream() {
            self.done();
        }
    }
}

#[cfg(test)]
mod tests;
