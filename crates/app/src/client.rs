//! The HTTP client for calls to other services: pooled keep-alive connections (hyper-util's
//! client), connect and request timeouts, the request's deadline passed on, and the mesh's
//! headers and trace context added from the request being served ([`crate::propagate`],
//! [`crate::trace`]).
//!
//! **It does not retry when a sidecar is in the path.** The mesh's sidecar already retries each
//! call per its route's policy (attempts, per-try timeout, retry budget); an app retrying on top
//! multiplies the attempts (3 × 3 = 9 under load) and defeats the budget. So the client sends
//! every request once, unless the app opted in with [`ClientBuilder::retry`] *and* the client
//! knows no sidecar is there ([`Sidecar::None`]). It knows from the environment the mesh gives
//! an app ([`Sidecar::from_env`]): `HTTP_PROXY`/`http_proxy` set means requests go through that
//! sidecar; otherwise `WEFT_SERVICE` set means the app runs in the mesh with its traffic
//! captured transparently; neither means no sidecar. [`ClientBuilder::sidecar`] overrides it.
//!
//! Deadlines: a request's timeout is the least of the client's [`ClientBuilder::timeout`] and the
//! time left of the request being served ([`crate::propagate::Propagated::deadline`], from the
//! incoming `grpc-timeout` or `x-request-timeout` and the app's own budget); an expired deadline
//! fails at once without sending. The outgoing request carries what it was given as
//! `x-request-timeout` (milliseconds), and as `grpc-timeout` too when it is gRPC. The timeout
//! covers the response head; the body is read by the caller.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::propagate::{grpc_timeout_value, Propagated, GRPC_TIMEOUT, REQUEST_TIMEOUT};

/// Connecting to a local sidecar or a peer takes milliseconds; seconds mean it is gone.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A call with no deadline of its own still ends (Envoy's default route timeout, for the same
/// reason: a route without a timeout of its own waits forever).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Idle connections are closed before the peer's usual keep-alive timeout (60 s and up).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per destination: enough for bursts, few enough to stay cheap.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 32;

/// A request body: buffered, so a retry can send it again.
pub type Body = Full<Bytes>;

/// Where requests go, and so whether this client may retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sidecar {
    /// Through this outbound proxy (the sidecar named by `HTTP_PROXY`), which routes by `Host`
    /// and retries per policy.
    Proxy(SocketAddr),
    /// Straight to the destination, but captured by a sidecar on the way (transparent
    /// interception), which retries per policy.
    Transparent,
    /// Straight to the destination with no sidecar: the only case an opted-in retry runs.
    None,
}

impl Sidecar {
    /// `HTTP_PROXY`/`http_proxy` → [`Sidecar::Proxy`]; else `WEFT_SERVICE` →
    /// [`Sidecar::Transparent`]; else [`Sidecar::None`].
    pub fn from_env() -> Sidecar {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        if let Some(addr) = var("http_proxy")
            .or_else(|| var("HTTP_PROXY"))
            .and_then(|v| parse_proxy(&v))
        {
            return Sidecar::Proxy(addr);
        }
        match var("WEFT_SERVICE") {
            Some(_) => Sidecar::Transparent,
            None => Sidecar::None,
        }
    }
}

/// `http://127.0.0.1:4140`, `127.0.0.1:4140` or `localhost:4140`.
pub fn parse_proxy(value: &str) -> Option<SocketAddr> {
    let value = value.trim();
    let authority = value.strip_prefix("http://").unwrap_or(value);
    let authority = authority.split('/').next()?;
    authority
        .parse()
        .ok()
        .or_else(|| authority.to_socket_addrs().ok()?.next())
}

/// An app's own retries, for calls that no sidecar retries: idempotent methods only, on
/// connection failures and 502/503/504, within the call's deadline.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    /// The pause before each retry.
    pub backoff: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the request's deadline has passed")]
    DeadlineExceeded,
    #[error("invalid uri {0:?}")]
    Uri(String),
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
}

impl ClientError {
    /// Could not connect (refused, unreachable, connect timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Request(e) if e.is_connect())
    }
}

/// Settings for a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    sidecar: Option<Sidecar>,
    no_proxy: Vec<String>,
    retry: Option<Retry>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            sidecar: None,
            no_proxy: Vec::new(),
            retry: None,
        }
    }
}

impl ClientBuilder {
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The longest a call waits for its response head (a propagated deadline may shorten it).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.pool_idle_timeout = d;
        self
    }

    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// Where requests go (default: [`Sidecar::from_env`], with `NO_PROXY`'s hosts sent direct).
    pub fn sidecar(mut self, sidecar: Sidecar) -> Self {
        self.sidecar = Some(sidecar);
        self
    }

    /// Opts in to the client's own retries; ignored (with a warning) unless the client goes
    /// to its destinations with no sidecar ([`Sidecar::None`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    pub fn build(self) -> Client {
        let sidecar = match self.sidecar {
            Some(s) => s,
            None => {
                let var = |n: &str| std::env::var(n).unwrap_or_default();
                let no_proxy = format!("{},{}", var("no_proxy"), var("NO_PROXY"));
                let mut this = self.clone();
                this.no_proxy = no_proxy
                    .split(',')
                    .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect();
                this.sidecar = Some(Sidecar::from_env());
                return this.build();
            }
        };
        let retry = match (self.retry, &sidecar) {
            (Some(r), Sidecar::None) => Some(r),
            (Some(_), s) => {
                tracing::warn!(sidecar = ?s, "client retries off: the sidecar retries these calls");
                None
            }
            (None, _) => None,
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        let connector = Connector {
            http,
            proxy: match sidecar {
                Sidecar::Proxy(addr) => Some(addr),
                _ => None,
            },
            no_proxy: self.no_proxy.into(),
        };
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(connector);
        Client {
            inner,
            timeout: self.timeout,
            retry,
            sidecar,
        }
    }
}

/// The client: cheap to clone (clones share the pool).
///
/// ```no_run
/// use app::client::Client;
///
/// # async fn handler() -> Result<(), app::client::ClientError> {
/// // Built once at start and shared; inside a handler under PropagateLayer/TraceLayer the call
/// // carries the request id, trace context, end user and deadline of the request being served.
/// let client = Client::new();
/// let response = client.get("http://inventory:8080/stock/42").await?;
/// assert!(response.status().is_success());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<Connector, Body>,
    timeout: Duration,
    retry: Option<Retry>,
    sidecar: Sidecar,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A client with the defaults and its route from the environment.
    pub fn new() -> Client {
        ClientBuilder::default().build()
    }

    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Where its requests go.
    pub fn sidecar(&self) -> &Sidecar {
        &self.sidecar
    }

    /// Whether it retries (opted in, and no sidecar).
    pub fn retries(&self) -> bool {
        self.retry.is_some()
    }

    /// GET `uri`.
    pub async fn get(&self, uri: &str) -> Result<Response<Incoming>, ClientError> {
        let uri: Uri = uri.parse().map_err(|_| ClientError::Uri(uri.to_string()))?;
        let mut req = Request::new(Body::default());
        *req.uri_mut() = uri;
        self.request(req).await
    }

    /// Sends `req` (an absolute `http://` URI) with the propagated headers, trace context and
    /// deadline of the request being served: from a [`Propagated`] in `req`'s extensions, else
    /// the task's ([`Propagated::current`]).
    pub async fn request(&self, mut req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        let propagated = req
            .extensions()
            .get::<Propagated>()
            .cloned()
            .or_else(Propagated::current);
        let mut timeout = self.timeout;
        if let Some(p) = &propagated {
            p.apply(req.headers_mut());
            if let Some(deadline) = p.deadline() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::DeadlineExceeded);
                }
                timeout = timeout.min(left);
            }
        }
        crate::trace::inject_current(req.headers_mut());
        set_deadline_headers(&mut req, timeout);
        let deadline = Instant::now() + timeout;
        let retry = self.retry.filter(|_| is_idempotent(req.method()));
        let mut retries_left = retry.map_or(0, |r| r.retries);
        loop {
            let attempt = if retries_left > 0 {
                Some(copy(&req))
            } else {
                None
            };
            let sent = tokio::time::timeout_at(deadline, self.inner.request(req)).await;
            let result = match sent {
                Err(_) => return Err(ClientError::Timeout(timeout)),
                Ok(r) => r.map_err(ClientError::from),
            };
            let again = match &result {
                Ok(r) => matches!(
                    r.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ),
                Err(e) => e.is_connect(),
            };
            let (Some(next), Some(retry), true) = (attempt, retry, again) else {
                return result;
            };
            if Instant::now() + retry.backoff >= deadline {
                return result;
            }
            tokio::time::sleep(retry.backoff).await;
            retries_left -= 1;
            req = next;
        }
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn copy(req: &Request<Body>) -> Request<Body> {
    let mut c = Request::new(req.body().clone());
    *c.method_mut() = req.method().clone();
    *c.uri_mut() = req.uri().clone();
    *c.version_mut() = req.version();
    *c.headers_mut() = req.headers().clone();
    c
}

/// The callee's budget: `timeout`, or less if the caller already said less.
fn set_deadline_headers(req: &mut Request<Body>, timeout: Duration) {
    let h = req.headers_mut();
    let ms = timeout.as_micros().div_ceil(1000);
    let current = h
        .get(REQUEST_TIMEOUT)
        .and_then(|v| v.to_str().ok()?.parse::<u128>().ok());
    if current.is_none_or(|c| c > ms) {
        h.insert(REQUEST_TIMEOUT, HeaderValue::from(ms as u64));
    }
    let grpc = h
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let current = h
            .get(GRPC_TIMEOUT)
            .and_then(|v| crate::propagate::parse_grpc_timeout(v.to_str().ok()?));
        if current.is_none_or(|c| c > timeout) {
            let v = HeaderValue::from_str(&grpc_timeout_value(timeout)).expect("digits and m");
            h.insert(GRPC_TIMEOUT, v);
        }
    }
}

impl tower::Service<Request<Body>> for Client {
    type Response = Response<Incoming>;
    type Error = ClientError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, ClientError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.request(req).await })
    }
}

/// Connects to the sidecar for every destination (the request goes in origin form with its
/// `Host`, which the sidecar routes by), or to the destination itself.
#[derive(Clone, Debug)]
struct Connector {
    http: HttpConnector,
    proxy: Option<SocketAddr>,
    /// Hosts reached directly even with a sidecar (`NO_PROXY`: exact names or domain suffixes).
    no_proxy: Arc<[String]>,
}

impl Connector {
    fn bypass(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.no_proxy.iter().any(|n| {
            n == "*"
                || host.eq_ignore_ascii_case(n)
                || (host.len() > n.len()
                    && host.to_ascii_lowercase().ends_with(n.as_str())
                    && host.as_bytes()[host.len() - n.len() - 1] == b'.')
        })
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = match self.proxy {
            Some(proxy) if !self.bypass(uri.host().unwrap_or_default()) => {
                Uri::try_from(format!("http://{proxy}/")).expect("a socket address is a valid uri")
            }
            _ => uri,
        };
        let connecting = self.http.call(target);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}
