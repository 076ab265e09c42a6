//! The HTTP/2 client of a peer connection, driven on `h2` directly: the task that handles a
//! request opens its stream, sends the body and waits for the answer itself, and the answer's
//! HEADERS frame wakes that task. One task per connection reads and writes the socket; there is
//! no task, channel or callback per request between them (hyper's client spawns one task per
//! request and hands each request and answer over channels).
//!
//! A `CONNECT` stream (a tunnel, an upgraded connection) is handed back as a [`Stream`]: bytes
//! both ways on the HTTP/2 stream, end of stream as a half-close.

use crate::body::{Body, BoxError};
use bytes::{Buf, Bytes};
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::{header, Method, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often a connection with streams open is pinged, to notice a peer that is gone without a
/// FIN (an idle one is not: its peer's idle timeout may close it).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is given up.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a request on a peer connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream could not be opened: the request never left this proxy.
    #[error("request not sent: {0}")]
    NotSent(h2::Error),
    /// The stream or the connection failed after the request was sent.
    #[error("{0}")]
    H2(h2::Error),
    /// The client's request body failed while it was being sent (the stream was reset).
    #[error("request body: {0}")]
    Body(#[source] BoxError),
}

impl Error {
    /// True when the peer did not start processing the request: it never left, the peer
    /// refused the stream, or the peer's graceful GOAWAY (a proxy that drains) left the stream
    /// out — `h2` fails a stream with the peer's GOAWAY (`NO_ERROR`) only when its id is above
    /// the GOAWAY's last stream id, which the peer promises it has not processed (RFC 9113
    /// §6.8); streams it kept end normally or, cut short, with a broken pipe.
    pub fn never_processed(&self) -> bool {
        match self {
            Error::NotSent(_) => true,
            Error::H2(e) => {
                e.reason() == Some(Reason::REFUSED_STREAM)
                    || (e.is_go_away() && e.is_remote() && e.reason() == Some(Reason::NO_ERROR))
            }
            Error::Body(_) => false,
        }
    }
}

/// The sending half of a peer connection; cheap to clone, one clone per request.
#[derive(Clone)]
pub struct Sender {
    tx: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// Streams open now (an answer or a `CONNECT` stream not yet dropped).
    open: Arc<AtomicUsize>,
}

/// Settings of a peer connection.
pub struct Settings {
    pub stream_window: u32,
    pub connection_window: u32,
    /// Ping interval while streams are open ([`KEEPALIVE_INTERVAL`]).
    pub keepalive: Duration,
}

/// One open stream in its connection's count, until dropped.
struct Opened(Arc<AtomicUsize>);

impl Opened {
    fn new(open: &Arc<AtomicUsize>) -> Opened {
        open.fetch_add(1, Ordering::Relaxed);
        Opened(open.clone())
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs the HTTP/2 handshake over `io` and spawns the task that drives the connection.
pub async fn handshake<IO>(io: IO, settings: Settings) -> Result<Sender, h2::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut conn) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(16 * 1024)
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let mut ping = conn.ping_pong();
    let (flag, streams) = (closed.clone(), open.clone());
    let interval = settings.keepalive;
    tokio::spawn(async move {
        let keepalive = async {
            let Some(ping) = ping.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(interval).await;
                if streams.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                match tokio::time::timeout(KEEPALIVE_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("keepalive ping: {e}"),
                    Err(_) => return format!("no answer to a ping in {KEEPALIVE_TIMEOUT:?}"),
                }
            }
        };
        tokio::select! {
            r = &mut conn => if let Err(e) = r {
                tracing::debug!(error = %e, "peer connection closed");
            },
            why = keepalive => tracing::debug!(%why, "peer connection given up"),
        }
        flag.store(true, Ordering::Release);
    });
    Ok(Sender { tx, closed, open })
}

impl Sender {
    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until a stream may be opened (the peer's concurrent-stream limit).
    pub async fn ready(&mut self) -> Result<(), h2::Error> {
        poll_fn(|cx| self.tx.poll_ready(cx)).await
    }

    /// Sends `req` and waits for the answer's head; the answer's body streams from the peer.
    pub async fn send_request(&mut self, req: Request<Body>) -> Result<Response<Body>, Error> {
        let (head, body) = prepare(req);
        let eos = body.is_end_stream();
        let (answer, tx) = self.tx.send_request(head, eos).map_err(Error::NotSent)?;
        let opened = Opened::new(&self.open);
        let rsp = if eos {
            answer.await.map_err(Error::H2)?
        } else {
            let mut pipe = Box::pin(pipe(body, tx));
            let mut answer = answer;
            let mut piped = false;
            let rsp = poll_fn(|cx| {
                if !piped {
                    if let Poll::Ready(r) = pipe.as_mut().poll(cx) {
                        piped = true;
                        // The client's body failed: the stream is reset, nothing will answer.
                        // A stream error shows in the answer too, so that one is awaited.
                        if let Err(e @ Error::Body(_)) = r {
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                Pin::new(&mut answer).poll(cx).map_err(Error::H2)
            })
            .await?;
            if !piped {
                // Answered before the whole body was sent (an early answer to an upload): the
                // rest still goes, unless the peer resets the stream.
                tokio::spawn(async move {
                    let _ = pipe.await;
                });
            }
            rsp
        };
        Ok(RecvBody::answer(rsp, opened))
    }

    /// Opens a `CONNECT` stream with `req`; on a 2xx answer the stream carries bytes both ways.
    pub async fn connect(
        &mut self,
        req: Request<Body>,
    ) -> Result<(Response<Body>, Option<Stream>), Error> {
        let (head, _) = prepare(req);
        let (answer, tx) = self.tx.send_request(head, false).map_err(Error::NotSent)?;
        let opened = Opened::new(&self.open);
        let rsp = answer.await.map_err(Error::H2)?;
        if rsp.status().is_success() {
            let (parts, rx) = rsp.into_parts();
            let stream = Stream {
                tx,
                rx,
                pending: Bytes::new(),
                _opened: opened,
            };
            Ok((
                Response::from_parts(parts, crate::body::empty()),
                Some(stream),
            ))
        } else {
            Ok((RecvBody::answer(rsp, opened), None))
        }
    }
}

/// The head `h2` sends (hop-by-hop headers dropped: HTTP/2 forbids them and `h2` would refuse
/// the request; a known length stated), and the body.
fn prepare(req: Request<Body>) -> (Request<()>, Body) {
    let (mut parts, body) = req.into_parts();
    let h = &mut parts.headers;
    crate::headers::strip_hop_by_hop(h);
    if parts.method != Method::CONNECT {
        if let Some(len) = body.size_hint().exact() {
            let payload = !matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
            );
            if (len != 0 || payload) && !h.contains_key(header::CONTENT_LENGTH) {
                h.insert(header::CONTENT_LENGTH, len.into());
            }
        }
    }
    (Request::from_parts(parts, ()), body)
}

/// Sends `body` on `tx` as the peer's flow control allows, then its trailers or end of stream.
async fn pipe(mut body: Body, mut tx: SendStream<Bytes>) -> Result<(), Error> {
    loop {
        // Wait for room before taking the next piece, so a slow peer slows the client.
        tx.reserve_capacity(1);
        if tx.capacity() == 0 {
            loop {
                match poll_fn(|cx| tx.poll_capacity(cx)).await {
                    Some(Ok(0)) => continue,
                    Some(Ok(_)) => break,
                    Some(Err(e)) => return Err(Error::H2(e)),
                    // The stream was closed by the peer.
                    None => return Err(Error::H2(h2::Error::from(Reason::CANCEL))),
                }
            }
        }
        let frame = poll_fn(|cx| {
            // A peer that resets the stream (it answered early, or gave up) ends the upload.
            if let Poll::Ready(r) = tx.poll_reset(cx) {
                return Poll::Ready(Err(match r {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                }));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await
        .map_err(Error::H2)?;
        match frame {
            None => return tx.send_data(Bytes::new(), true).map_err(Error::H2),
            Some(Err(e)) => {
                tx.send_reset(Reason::CANCEL);
                return Err(Error::Body(e));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let eos = body.is_end_stream();
                    tx.send_data(data, eos).map_err(Error::H2)?;
                    if eos {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return tx.send_trailers(trailers).map_err(Error::H2);
                    }
                }
            },
        }
    }
}

/// An answer's body as it arrives: DATA frames (their flow-control credit given back as each
/// is taken), then the trailers.
struct RecvBody {
    rx: RecvStream,
    data_done: bool,
    length: Option<u64>,
    _opened: Opened,
}

impl RecvBody {
    /// The answer with its body boxed; the body's length as its head declares it.
    fn answer(rsp: Response<RecvStream>, opened: Opened) -> Response<Body> {
        let length = crate::headers::content_length(rsp.headers());
        rsp.map(|rx| {
            crate::body::boxed(RecvBody {
                rx,
                data_done: false,
                length,
                _opened: opened,
            })
        })
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.rx.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.rx.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.rx.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The bytes of an accepted `CONNECT` stream, as a socket: reads take the peer's DATA frames,
/// writes send DATA frames as flow control allows, shutdown ends the stream (a half-close).
pub struct Stream {
    tx: SendStream<Bytes>,
    rx: RecvStream,
    /// What the last DATA frame held beyond the reader's buffer.
    pending: Bytes,
    _opened: Opened,
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("connection error"))
    } else {
        io::Error::other(e)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // An empty DATA frame is no end of stream: wait for one with bytes (or the end).
        while this.pending.is_empty() {
            match ready!(this.rx.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.rx.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.tx.reserve_capacity(buf.len());
        let sent = match ready!(this.tx.poll_capacity(cx)) {
            Some(Ok(n)) => {
                let n = n.min(buf.len());
                this.tx
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .ok()
                    .map(|()| n)
            }
            _ => None,
        };
        if let Some(n) = sent {
            return Poll::Ready(Ok(n));
        }
        // The stream is gone: say why.
        Poll::Ready(Err(match ready!(this.tx.poll_reset(cx)) {
            Ok(Reason::NO_ERROR | Reason::CANCEL | Reason::STREAM_CLOSED) => {
                io::ErrorKind::BrokenPipe.into()
            }
            Ok(reason) => io_error(reason.into()),
            Err(e) => io_error(e),
        }))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.tx.send_data(Bytes::new(), true) {
            Ok(()) => Poll::Ready(Ok(())),
            // Already ended (a second shutdown, or the peer reset it): nothing left to end.
            Err(e) if !e.is_io() => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests;
