//! Keep-alive HTTP/1.1 connections from a sidecar to its local app: a lock-free queue of idle
//! connections. A connection goes back to the queue when the response body it carried has been
//! read to the end; one whose body was abandoned is closed. The hot path takes no lock.

use crate::body::{self, Body};
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle connections kept at most; more than this many concurrent requests open extra
/// connections that close after use.
const MAX_IDLE: usize = 256;
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

fn content_length<B>(rsp: &Response<B>) -> Option<u64> {
    rsp.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The app did not accept a connection: nothing reached it.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

pub struct AppPool {
    addr: SocketAddr,
    idle: ArrayQueue<http1::SendRequest<Body>>,
}

impl AppPool {
    /// Idle keep-alive connections to the app now.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(AppPool {
            addr,
            idle: ArrayQueue::new(MAX_IDLE),
        })
    }

    /// Sends `req` to the app on an idle connection, or a new one.
    pub async fn send(self: &Arc<Self>, req: Request<Body>) -> Result<Response<Body>, AppError> {
        let mut req = req;
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(s) => (s, true),
                // Boxed: the connect and handshake state would otherwise sit in every
                // request's future.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(rsp) if content_length(&rsp).is_some_and(|n| n <= READ_WHOLE) => {
                    let (parts, b) = rsp.into_parts();
                    let whole = read_whole(b).await?;
                    self.give_back(sender);
                    return Ok(Response::from_parts(parts, body::full(whole)));
                }
                Ok(rsp) => {
                    let pool = self.clone();
                    return Ok(rsp.map(|b| {
                        body::boxed(PooledBody {
                            inner: b,
                            back: Some((sender, pool)),
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

    async fn checkout(&self) -> Option<http1::SendRequest<Body>> {
        while let Some(mut s) = self.idle.pop() {
            if !s.is_closed() && s.ready().await.is_ok() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self) -> Result<http1::SendRequest<Body>, AppError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| AppError::Connect(std::io::ErrorKind::TimedOut.into()))?
            .map_err(AppError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn give_back(&self, s: http1::SendRequest<Body>) {
        // A full queue drops the connection, which closes it.
        let _ = self.idle.push(s);
    }
}

/// A response body that returns its connection to the pool once read to the end.
struct PooledBody {
    inner: Incoming,
    back: Option<(http1::SendRequest<Body>, Arc<AppPool>)>,
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
