//! Header propagation: the mesh's headers an incoming request carries (request id, trace
//! context, end user) and its deadline, kept while the request is served so that every outgoing
//! request made for it carries them on.
//!
//! [`PropagateLayer`] captures a [`Propagated`] from each request, puts it in the request's
//! extensions and runs the handler inside a task-local scope holding it; the SDK's
//! [`crate::client::Client`] reads it from there (or from an outgoing request's extensions) and
//! copies the headers onto what it sends. A task spawned by a handler leaves the scope: carry it
//! along with [`Propagated::scope`].
//!
//! The deadline is the earliest of what the caller asked for (`grpc-timeout` in gRPC's format,
//! else `x-request-timeout` in milliseconds) and the layer's own [`PropagateLayer::timeout`]
//! (the app's budget for one request), counted from when the request arrived.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName};
use http::Request;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

/// The header naming the end user, unless the app names another (set from a verified token, e.g.
/// by a RequestAuthentication's `outputClaimToHeaders` at the edge).
pub const DEFAULT_END_USER_HEADER: HeaderName = HeaderName::from_static("x-weft-end-user");
/// A caller's deadline in milliseconds (the HTTP counterpart of `grpc-timeout`); the SDK's client
/// sends the time left in it.
pub const REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");
/// gRPC's deadline header: digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The mesh's headers, copied as they came: the request id, W3C and B3 trace context and
/// Lightstep's. (The trace context is rewritten to the app's own span by [`crate::trace`] when
/// a span is active.)
pub const HEADERS: [HeaderName; 10] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("b3"),
    HeaderName::from_static("x-b3-traceid"),
    HeaderName::from_static("x-b3-spanid"),
    HeaderName::from_static("x-b3-parentspanid"),
    HeaderName::from_static("x-b3-sampled"),
    HeaderName::from_static("x-b3-flags"),
    HeaderName::from_static("x-ot-span-context"),
];

tokio::task_local! {
    static CURRENT: Propagated;
}

/// What a request hands on to the requests made while serving it.
#[derive(Clone, Debug, Default)]
pub struct Propagated {
    headers: HeaderMap,
    deadline: Option<Instant>,
}

impl Propagated {
    /// The propagated headers of `incoming` (with `end_user` as the end-user header) and its
    /// deadline, counted from `arrived`.
    pub fn from_headers(incoming: &HeaderMap, end_user: &HeaderName, arrived: Instant) -> Self {
        let mut headers = HeaderMap::new();
        for name in HEADERS.iter().chain([end_user]) {
            for value in incoming.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let deadline = incoming_timeout(incoming).map(|t| arrived + t);
        Propagated { headers, deadline }
    }

    /// The one in scope on this task, if a [`PropagateLayer`] (or [`Propagated::scope`]) set one.
    pub fn current() -> Option<Propagated> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `f` with `self` as [`Propagated::current`]: for work a handler spawns.
    pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }

    /// The headers to send on.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// When the request being served must be answered by, if anyone said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The same, with the deadline moved to `deadline` if that is earlier.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// Copies the headers onto `outgoing`, leaving those it already has.
    pub fn apply(&self, outgoing: &mut HeaderMap) {
        for name in self.headers.keys() {
            if !outgoing.contains_key(name) {
                for value in self.headers.get_all(name) {
                    outgoing.append(name.clone(), value.clone());
                }
            }
        }
    }
}

/// The caller's budget: `grpc-timeout`, else `x-request-timeout`. Malformed values are ignored.
pub fn incoming_timeout(h: &HeaderMap) -> Option<Duration> {
    let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    get(&GRPC_TIMEOUT).and_then(parse_grpc_timeout).or_else(|| {
        let ms = get(&REQUEST_TIMEOUT)?;
        ms.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| ms.parse().ok().map(Duration::from_millis))
            .flatten()
    })
}

/// `grpc-timeout`: at most 8 digits and a unit.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `d` in `grpc-timeout`'s format (milliseconds, rounded up so that a deadline is never
/// shortened to zero).
pub fn grpc_timeout_value(d: Duration) -> String {
    format!("{}m", d.as_micros().div_ceil(1000).min(99_999_999))
}

/// Captures each request's [`Propagated`] for the handler and the SDK's client.
///
/// ```
/// use app::propagate::{PropagateLayer, Propagated};
/// use axum::{routing::get, Router};
/// use std::time::Duration;
///
/// async fn handler() -> String {
///     // The client does this itself; shown here for what it sees.
///     let p = Propagated::current().unwrap_or_default();
///     format!("{:?}", p.headers().get("x-request-id"))
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(handler))
///     .layer(PropagateLayer::new().timeout(Duration::from_secs(5)));
/// ```
#[derive(Clone, Debug)]
pub struct PropagateLayer {
    end_user: HeaderName,
    timeout: Option<Duration>,
}

impl Default for PropagateLayer {
    fn default() -> Self {
        PropagateLayer {
            end_user: DEFAULT_END_USER_HEADER,
            timeout: None,
        }
    }
}

impl PropagateLayer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The end-user header to pass on (default `x-weft-end-user`).
    pub fn end_user_header(mut self, name: HeaderName) -> Self {
        self.end_user = name;
        self
    }

    /// The app's own budget for a request: outgoing calls get at most what is left of it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<S> tower::Layer<S> for PropagateLayer {
    type Service = Propagate<S>;

    fn layer(&self, inner: S) -> Propagate<S> {
        Propagate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`PropagateLayer`] makes.
#[derive(Clone, Debug)]
pub struct Propagate<S> {
    inner: S,
    layer: PropagateLayer,
}

impl<S, B> tower::Service<Request<B>> for Propagate<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Propagated, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let now = Instant::now();
        let mut p = Propagated::from_headers(req.headers(), &self.layer.end_user, now);
        if let Some(t) = self.layer.timeout {
            p = p.with_deadline(now + t);
        }
        req.extensions_mut().insert(p.clone());
        CURRENT.scope(p, self.inner.call(req))
    }
}
