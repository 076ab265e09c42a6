//! The one body type every proxied request and response is converted to, and the body a
//! listener hands its handler ([`RequestBody`]: the client's body under the read timeouts).

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body of any origin (an incoming stream, or bytes the proxy made).
pub type Body = BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body with our data type.
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// What a [`Watched`] body tells as its frames go by.
pub trait Watch {
    /// `frame` went by; `last`: the body ended with it.
    fn frame(&mut self, frame: &Frame<Bytes>, last: bool);
    /// The body ended after its last frame went by (`broke_off: false`), or failed.
    fn ended(&mut self, broke_off: bool);
}

/// A body passed on as it is, frame by frame, while its [`Watch`] sees each frame and the end
/// (a copy kept for a retry, a gRPC status read from the trailers, the bytes an access-log
/// line counts).
pub struct Watched<B, W> {
    inner: B,
    pub watch: W,
}

impl<B, W> Watched<B, W> {
    pub fn new(inner: B, watch: W) -> Self {
        Watched { inner, watch }
    }
}

impl<B, W> http_body::Body for Watched<B, W>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    W: Watch + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let last = this.inner.is_end_stream();
                this.watch.frame(frame, last);
            }
            Poll::Ready(None) => this.watch.ended(false),
            Poll::Ready(Some(Err(_))) => this.watch.ended(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body from upstream, boxed.
pub fn incoming(b: hyper::body::Incoming) -> Body {
    boxed(b)
}

/// How long a client may take with its request body.
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeouts {
    /// Longest wait for the next piece of the body.
    pub idle: Duration,
    /// The whole request must have arrived this long after its head.
    pub total: Duration,
}

/// The client was too slow with its request body ([`BodyTimeouts`]).
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body for {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Whether `e` (or what caused it) is a [`BodyTimeout`].
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<BodyTimeout>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// A client's request body as the listener received it: its frames, a first frame possibly
/// read ahead (a chunked body's first chunk is checked before anything is forwarded), under
/// [`BodyTimeouts`]. The timer exists only once the body has had to wait.
pub struct RequestBody {
    inner: hyper::body::Incoming,
    first: Option<Frame<Bytes>>,
    timeouts: BodyTimeouts,
    /// When the whole body must be in.
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last set.
    progressed: bool,
    /// Set when a timeout ended the body ([`RequestBody::watch`]).
    timed_out: Option<Arc<AtomicBool>>,
}

impl RequestBody {
    pub fn new(inner: hyper::body::Incoming, timeouts: BodyTimeouts) -> RequestBody {
        RequestBody {
            inner,
            first: None,
            timeouts,
            deadline: Instant::now() + timeouts.total,
            timer: None,
            progressed: false,
            timed_out: None,
        }
    }

    /// A flag set if a timeout ends this body: the listener answers 408 then, whatever the
    /// upstream send made of the error.
    pub fn watch(&mut self) -> Arc<AtomicBool> {
        self.timed_out
            .get_or_insert_with(|| Arc::new(AtomicBool::new(false)))
            .clone()
    }

    /// Reads the first frame now and keeps it for the handler; an error (a malformed chunk,
    /// the client's silence) is returned instead.
    pub async fn read_ahead(&mut self) -> Result<(), BoxError> {
        if self.first.is_some() || http_body::Body::is_end_stream(&self.inner) {
            return Ok(());
        }
        match self.frame().await {
            Some(Ok(f)) => {
                self.first = Some(f);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Boxed, for the upstream request.
    pub fn boxed(self) -> Body {
        boxed(self)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let next = (Instant::now() + this.timeouts.idle).min(this.deadline);
                let timer = match &mut this.timer {
                    Some(t) => {
                        if std::mem::take(&mut this.progressed) {
                            t.as_mut().reset(next);
                        }
                        t
                    }
                    None => {
                        this.progressed = false;
                        this.timer.insert(Box::pin(tokio::time::sleep_until(next)))
                    }
                };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let waited = if timer.deadline() >= this.deadline {
                            this.timeouts.total
                        } else {
                            this.timeouts.idle
                        };
                        if let Some(flag) = &this.timed_out {
                            flag.store(true, Ordering::Release);
                        }
                        Poll::Ready(Some(Err(BodyTimeout(waited).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.inner.size_hint();
        let Some(n) = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map(|d| d.len() as u64)
        else {
            return hint;
        };
        let mut out = SizeHint::new();
        if let Some(u) = hint.upper() {
            out.set_upper(u + n);
        }
        out.set_lower(hint.lower() + n);
        out
    }
}
