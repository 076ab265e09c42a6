//! Request bodies as retries and mirrors see them. A request that may be sent again (its route
//! retries, or a mirror drew it) keeps a copy of its body while the body streams to the first
//! attempt, whatever its framing (`Content-Length` or chunked), up to the proxy's buffer limit
//! ([`crate::limits::Limits::max_buffered_body`], Envoy's `per_request_buffer_limit_bytes`). A body that ends within
//! the limit can be sent again; one that outgrows it goes on streaming, once, and its copy is
//! dropped. Nothing waits for the body before the first byte goes upstream.

use crate::body::{self, Body, RequestBody, Watched};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::watch;

/// Why a body could not be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unreplayable {
    /// No copy was kept: nothing (no retry policy, no mirror) asked for one.
    NotKept,
    /// The body outgrew the buffer limit.
    TooLarge,
    /// The body had not all arrived when it was needed again (Envoy skips such retries too).
    Incomplete,
}

/// What a kept copy came to, once known.
pub(super) enum Kept {
    Whole(Bytes, Option<HeaderMap>),
    TooLarge,
}

/// How a request's body can be sent again.
pub(super) enum Replay {
    /// No body: any number of empty copies.
    Empty,
    /// Streams once; no copy is kept.
    Once,
    /// A copy is being kept as the body streams ([`Tee`]); `None` until it ends or outgrows
    /// the limit. The sender's drop before either means the body never ended.
    Kept(watch::Receiver<Option<Kept>>),
}

impl Replay {
    /// Whether a copy can be had now (and so later).
    pub fn check(&self) -> Result<(), Unreplayable> {
        match self {
            Replay::Empty => Ok(()),
            Replay::Once => Err(Unreplayable::NotKept),
            Replay::Kept(rx) => match &*rx.borrow() {
                Some(Kept::Whole(..)) => Ok(()),
                Some(Kept::TooLarge) => Err(Unreplayable::TooLarge),
                None => Err(Unreplayable::Incomplete),
            },
        }
    }

    /// Whether a copy may still be had: the body is kept and has not outgrown the limit.
    pub fn may_replay(&self) -> bool {
        match self {
            Replay::Empty => true,
            Replay::Once => false,
            Replay::Kept(rx) => !matches!(&*rx.borrow(), Some(Kept::TooLarge)),
        }
    }

    /// A copy for one more send.
    pub fn copy(&self) -> Result<Body, Unreplayable> {
        match self {
            Replay::Empty => Ok(body::empty()),
            Replay::Once => Err(Unreplayable::NotKept),
            Replay::Kept(rx) => match &*rx.borrow() {
                Some(Kept::Whole(data, trailers)) => Ok(body::boxed(Copied {
                    data: (!data.is_empty()).then(|| data.clone()),
                    trailers: trailers.clone(),
                })),
                Some(Kept::TooLarge) => Err(Unreplayable::TooLarge),
                None => Err(Unreplayable::Incomplete),
            },
        }
    }

    /// A copy once the body has ended (for a mirror, which sends when the original has all
    /// arrived).
    pub async fn copy_when_whole(&self) -> Result<Body, Unreplayable> {
        if let Replay::Kept(rx) = self {
            let mut rx = rx.clone();
            if rx.wait_for(Option::is_some).await.is_err() {
                return Err(Unreplayable::Incomplete);
            }
        }
        self.copy()
    }

    /// A handle on the same copy, for a task that outlives the request's own.
    pub fn share(&self) -> Replay {
        match self {
            Replay::Empty => Replay::Empty,
            Replay::Once => Replay::Once,
            Replay::Kept(rx) => Replay::Kept(rx.clone()),
        }
    }
}

/// The body for the first attempt, and how it can be sent again: a copy is kept (up to
/// `limit` bytes) when `keep`, i.e. when a retry policy or a mirror may need it.
pub(super) fn prepare(b: RequestBody, keep: bool, limit: u64) -> (Body, Replay) {
    use http_body::Body as _;
    if b.is_end_stream() {
        return (body::empty(), Replay::Empty);
    }
    if !keep {
        return (b.boxed(), Replay::Once);
    }
    // A body that announces more than the limit is never kept: it is known at once.
    if b.size_hint().lower() > limit {
        let (_, rx) = watch::channel(Some(Kept::TooLarge));
        return (b.boxed(), Replay::Kept(rx));
    }
    let (tee, replay) = tee(b, limit);
    (body::boxed(tee), replay)
}

/// `b`, keeping a copy of up to `limit` bytes as it streams.
fn tee<B>(b: B, limit: u64) -> (Watched<B, Tee>, Replay) {
    let (tx, rx) = watch::channel(None);
    let tee = Tee {
        chunks: Vec::new(),
        trailers: None,
        size: 0,
        limit,
        tx: Some(tx),
    };
    (Watched::new(b, tee), Replay::Kept(rx))
}

/// Watches the client's body on its way to the first attempt, keeping a copy of what passes
/// until the body ends (the copy is then published) or outgrows the limit (the copy is dropped).
struct Tee {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: u64,
    limit: u64,
    /// `None` once the outcome is published.
    tx: Option<watch::Sender<Option<Kept>>>,
}

impl Tee {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        if self.tx.is_none() {
            return;
        }
        if let Some(d) = frame.data_ref() {
            self.size += d.len() as u64;
            if self.size > self.limit {
                self.chunks = Vec::new();
                if let Some(tx) = self.tx.take() {
                    tx.send_replace(Some(Kept::TooLarge));
                }
                return;
            }
            if !d.is_empty() {
                self.chunks.push(d.clone());
            }
        } else if let Some(t) = frame.trailers_ref() {
            self.trailers = Some(t.clone());
        }
    }

    /// The body ended: publishes the copy (one chunk is taken as it is, without a copy).
    fn finish(&mut self) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        let chunks = std::mem::take(&mut self.chunks);
        let data = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(self.size as usize);
                for c in &chunks {
                    all.extend_from_slice(c);
                }
                all.into()
            }
        };
        tx.send_replace(Some(Kept::Whole(data, self.trailers.take())));
    }
}

impl body::Watch for Tee {
    fn frame(&mut self, frame: &Frame<Bytes>, last: bool) {
        self.keep(frame);
        // Published before the last frame goes on, so the copy is there by the time the
        // upstream can have answered the whole request.
        if last {
            self.finish();
        }
    }

    fn ended(&mut self, broke_off: bool) {
        if broke_off {
            // Dropping the sender says the body never ended.
            self.tx = None;
        } else {
            self.finish();
        }
    }
}

/// A kept body sent again: its bytes, then its trailers.
struct Copied {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Copied {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(d) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Flags an answer `RS` (a retry or a mirrored copy it was due was skipped: its body could not
/// be sent again), unless the proxy already flagged it otherwise.
pub(super) fn mark_skipped(rsp: &mut Response<Body>) {
    if crate::flags::of(rsp).is_none() {
        rsp.headers_mut().insert(
            crate::flags::FLAG_HEADER,
            HeaderValue::from_static(crate::flags::Flag::ReplaySkipped.as_str()),
        );
    }
}

/// A request with `parts`' head and `body`.
pub(super) fn clone_request(parts: &http::request::Parts, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// An empty head, left behind when a request's own head is moved out.
pub(super) fn empty_parts() -> http::request::Parts {
    Request::new(()).into_parts().0
}

#[cfg(test)]
mod tests;
