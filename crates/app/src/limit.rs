//! A concurrency limit that sheds load: at most [`LimitLayer::new`]'s `max` requests are served
//! at once, up to [`LimitLayer::queue`] more wait (each at most [`LimitLayer::queue_timeout`]),
//! and the rest are answered at once with 503 and `Retry-After` — where tower's
//! `ConcurrencyLimit` would queue them without bound. A 503 is what the mesh's retry policies
//! and outlier detection understand: the caller's sidecar tries another replica.
//!
//! The limit is shared by every service the layer wraps (all the routes of a `Router`).

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What `Retry-After` says unless told otherwise: a second is long enough for a burst to pass.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Sheds requests beyond `max` in flight and `queue` waiting.
///
/// ```
/// use app::limit::LimitLayer;
/// use axum::{routing::get, Router};
/// use std::time::Duration;
///
/// let app: Router = Router::new()
///     .route("/search", get(|| async { "results" }))
///     // 64 at once, 16 more may wait up to 100 ms; the rest get 503 + Retry-After.
///     .layer(LimitLayer::new(64).queue(16).queue_timeout(Duration::from_millis(100)));
/// ```
#[derive(Clone, Debug)]
pub struct LimitLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    permits: Arc<Semaphore>,
    max: usize,
    queue: usize,
    queue_timeout: Option<Duration>,
    retry_after: Duration,
    waiting: AtomicUsize,
}

impl LimitLayer {
    /// At most `max` requests at once, none waiting.
    pub fn new(max: usize) -> LimitLayer {
        LimitLayer {
            shared: Arc::new(Shared {
                permits: Arc::new(Semaphore::new(max)),
                max,
                queue: 0,
                queue_timeout: None,
                retry_after: DEFAULT_RETRY_AFTER,
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        let shared =
            Arc::get_mut(&mut self.shared).expect("a LimitLayer is configured before it is cloned");
        f(shared);
        self
    }

    /// Up to `n` requests wait for a slot instead of being shed.
    pub fn queue(self, n: usize) -> Self {
        self.edit(|s| s.queue = n)
    }

    /// The longest a request waits in the queue before it is shed.
    pub fn queue_timeout(self, d: Duration) -> Self {
        self.edit(|s| s.queue_timeout = Some(d))
    }

    /// What `Retry-After` says (whole seconds, rounded up).
    pub fn retry_after(self, d: Duration) -> Self {
        self.edit(|s| s.retry_after = d)
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.shared.max - self.shared.permits.available_permits()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }
}

impl Shared {
    /// A slot now, after a wait in the queue, or `None`: shed.
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let _leave = Leave(&self.waiting);
        let wait = self.permits.clone().acquire_owned();
        match self.queue_timeout {
            Some(t) => tokio::time::timeout(t, wait).await.ok()?.ok(),
            None => wait.await.ok(),
        }
    }

    fn shed<B: Default>(&self) -> Response<B> {
        let secs = self.retry_after.as_millis().div_ceil(1000).max(1) as u64;
        let mut r = Response::new(B::default());
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        r
    }
}

/// Leaves the queue however the wait ends.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`LimitLayer`] makes.
#[derive(Clone, Debug)]
pub struct Limit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, RB> tower::Service<Request<B>> for Limit<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service polled ready goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let Some(_permit) = shared.acquire().await else {
                return Ok(shared.shed());
            };
            inner.call(req).await
        })
    }
}
