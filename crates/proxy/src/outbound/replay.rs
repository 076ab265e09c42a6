//! Request bodies as retries and mirrors see them: none, small and held (sent any number of
//! times), or streaming (sent once, never retried).

use crate::body::RequestBody;
use crate::body::{self, Body};
use crate::flags::{self, Flag};
use http::{Request, Response};

/// Request bodies up to this size are buffered so that a retry or a mirror can resend them
/// (Linkerd's limit); bigger ones stream and are never retried.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// A request body as the retry and mirror logic see it.
pub(super) enum ReqBody {
    /// No body: the request can be sent any number of times.
    Empty,
    /// A small body read in full (≤ [`MAX_BUFFERED_BODY`]): it can be sent again too.
    Buffered(bytes::Bytes),
    /// Anything else streams through once.
    Streaming(RequestBody),
}

impl ReqBody {
    pub fn replayable(&self) -> bool {
        !matches!(self, ReqBody::Streaming(_))
    }

    /// A copy for one more send, when the body allows it.
    pub fn copy(&self) -> Option<Body> {
        match self {
            ReqBody::Empty => Some(body::empty()),
            ReqBody::Buffered(b) => Some(body::full(b.clone())),
            ReqBody::Streaming(_) => None,
        }
    }
}

/// Reads a small body in full when it will be needed again (`keep`).
pub(super) async fn prepare(b: RequestBody, keep: bool) -> Result<ReqBody, Response<Body>> {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    if b.is_end_stream() {
        return Ok(ReqBody::Empty);
    }
    let small = b
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_BUFFERED_BODY);
    if !(keep && small) {
        return Ok(ReqBody::Streaming(b));
    }
    match b.collect().await {
        Ok(c) => Ok(ReqBody::Buffered(c.to_bytes())),
        Err(e) => Err(flags::respond(
            Flag::BadRequest,
            format!("reading the request body: {e}"),
        )),
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
