//! JSON Web Key Sets: parsed once into verification keys ([`KeySet`]), and for `jwksUri`s
//! fetched, cached and refreshed off the request path ([`JwksStore`], [`RemoteJwks`]).
//!
//! Each remote URI has one background task, owned by the [`RemoteJwks`] handle that
//! authenticators share: it fetches at start, then every [`JwksSettings::refresh_interval`],
//! sooner when a request met an unknown `kid` (at most once per
//! [`JwksSettings::min_refresh_interval`]), and after a failure with a doubling backoff. A failed
//! fetch keeps the last good keys (served stale while the JWKS host is down). Requests only
//! read an `ArcSwap`. When the last handle drops (no snapshot needs the URI any more) the task
//! stops.
//!
//! A `jwksUri` may name a mesh service (`http://auth.default.svc.cluster.local/…`,
//! `http://auth/…`): a store given the proxy's own outbound listener
//! ([`JwksStore::with_proxy`]) sends those fetches there in absolute form, as an app sends its
//! requests through `HTTP_PROXY`, so they are routed, balanced and mTLS'd like any other call.
//! IP literals and `localhost` are always fetched directly.

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often keys are fetched again when all is well (Envoy's `remote_jwks` caches for 5 min).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The least time between two fetches of one URI, however many unknown `kid`s arrive: a client
/// with made-up key ids must not turn the proxy into a load generator against the JWKS host.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// The first retry after a failed fetch; doubled on each further failure, up to the refresh
/// interval.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The first retry while a JWKS has never been fetched: a proxy starting up usually asks before
/// the JWKS host is routable, and waits for the keys before it calls itself ready. Doubled on
/// each failure, up to the retry interval.
pub const FIRST_FETCH_RETRY: Duration = Duration::from_millis(100);
/// How long a JWKS that was never fetched holds a starting proxy back (see
/// [`RemoteJwks::settled`]): past it the proxy serves without the keys (tokens of that issuer are
/// refused) rather than never becoming ready over one unreachable JWKS host.
pub const DEFAULT_FIRST_FETCH_PATIENCE: Duration = Duration::from_secs(10);
/// How long one fetch may take when the rule sets no `timeout` (Istio's JWTRule default).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document accepted; real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a JWKS could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not JSON: {0}")]
    NotJson(String),
    #[error("the JWKS has no `keys` list")]
    NoKeysList,
    #[error("the JWKS has no usable signing key (RSA, EC P-256/P-384 or Ed25519)")]
    NoUsableKey,
    #[error("{0} is not an http:// URI (https JWKS fetching is not supported yet)")]
    UnsupportedUri(String),
    #[error("fetching {uri}: {why}")]
    Fetch { uri: String, why: String },
    #[error("fetching {uri}: status {status}")]
    Status { uri: String, status: u16 },
    #[error("fetching {uri}: timed out after {timeout:?}")]
    Timeout { uri: String, timeout: Duration },
}

impl From<model::jwks::Invalid> for JwksError {
    fn from(e: model::jwks::Invalid) -> Self {
        use model::jwks::Invalid;
        match e {
            Invalid::NotJson(e) => JwksError::NotJson(e),
            Invalid::NoKeysList => JwksError::NoKeysList,
            Invalid::NoUsableKey(_) => JwksError::NoUsableKey,
        }
    }
}

/// The usable signing keys of a JWKS, parsed as `weft check` and the control plane check an
/// inline `jwks` (`model::jwks`).
pub use model::jwks::KeySet;

/// [`KeySet::parse`] with the proxy's error.
pub(crate) fn parse_key_set(json: &str) -> Result<KeySet, JwksError> {
    Ok(KeySet::parse(json)?)
}

/// Timing of [`RemoteJwks`] refreshes.
#[derive(Clone, Copy, Debug)]
pub struct JwksSettings {
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
    pub retry_interval: Duration,
    pub first_fetch_patience: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            first_fetch_patience: DEFAULT_FIRST_FETCH_PATIENCE,
        }
    }
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<String, JwksError>> + Send>>;

/// Gets a JWKS document (HTTP in the proxy, a stub in tests).
pub(crate) trait Fetch: Send + Sync + 'static {
    fn fetch(&self, uri: &str, timeout: Duration) -> FetchFuture;
}

/// Plain HTTP/1.1 GET: with hyper's pooled client, or through the mesh proxy for hosts that
/// name services.
struct HttpFetch {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// The proxy's own outbound listener, for hosts that are not IP literals or `localhost`.
    proxy: Option<SocketAddr>,
}

/// Whether a fetch of `host` goes to the mesh proxy rather than straight to the host: names go
/// through it (the mesh resolves them), IP literals and `localhost` do not.
pub(crate) fn via_mesh(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    host.parse::<IpAddr>().is_err()
        && !host.eq_ignore_ascii_case("localhost")
        && !host.to_ascii_lowercase().ends_with(".localhost")
}

/// One GET in absolute form (`GET http://auth/.well-known/jwks.json HTTP/1.1`) on a fresh
/// connection to the mesh proxy. Fetches are minutes apart, so no pool is kept.
async fn get_via_proxy(
    proxy: SocketAddr,
    uri: http::Uri,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let authority = uri
        .authority()
        .ok_or_else(|| "the URI has no host".to_string())?
        .as_str()
        .to_string();
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connecting to the mesh proxy at {proxy}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("mesh proxy at {proxy}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "JWKS fetch connection to the mesh proxy ended");
        }
    });
    let req = http::Request::get(uri)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    send.send_request(req)
        .await
        .map_err(|e| format!("through the mesh proxy at {proxy}: {e}"))
}

impl Fetch for HttpFetch {
    fn fetch(&self, uri: &str, timeout: Duration) -> FetchFuture {
        let client = self.client.clone();
        let proxy = self.proxy;
        let uri = uri.to_string();
        Box::pin(async move {
            let fetch_err = |why: String| JwksError::Fetch {
                uri: uri.clone(),
                why,
            };
            let parsed: http::Uri = uri.parse().map_err(|e| fetch_err(format!("{e}")))?;
            if parsed.scheme_str() != Some("http") {
                return Err(JwksError::UnsupportedUri(uri.clone()));
            }
            let through = proxy.filter(|_| parsed.host().is_some_and(via_mesh));
            let work = async {
                let rsp = match through {
                    Some(proxy) => get_via_proxy(proxy, parsed).await.map_err(fetch_err)?,
                    None => client
                        .get(parsed)
                        .await
                        .map_err(|e| fetch_err(e.to_string()))?,
                };
                let status = rsp.status();
                if !status.is_success() {
                    return Err(JwksError::Status {
                        uri: uri.clone(),
                        status: status.as_u16(),
                    });
                }
                let body = Limited::new(rsp.into_body(), MAX_JWKS_BYTES)
                    .collect()
                    .await
                    .map_err(|e| fetch_err(e.to_string()))?
                    .to_bytes();
                String::from_utf8(body.to_vec())
                    .map_err(|_| fetch_err("the body is not UTF-8".into()))
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(JwksError::Timeout {
                    uri: uri.clone(),
                    timeout,
                }),
            }
        })
    }
}

/// What a [`RemoteJwks`] and its task share.
struct Shared {
    keys: ArcSwapOption<KeySet>,
    /// A request asked for a refresh (unknown `kid`).
    wake: Notify,
    /// Counts successful fetches, so callers can wait for the first.
    fetched: watch::Sender<u64>,
    /// Fetched once, or given up on for readiness (see [`RemoteJwks::settled`]).
    settled: std::sync::atomic::AtomicBool,
}

/// Called when a [`RemoteJwks`] settles (a proxy reports its readiness again).
pub type OnSettled = Arc<dyn Fn() + Send + Sync>;

/// The keys of one `jwksUri`, kept fresh by a background task that lives as long as this
/// handle.
pub struct RemoteJwks {
    uri: String,
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("uri", &self.uri)
            .finish()
    }
}

impl RemoteJwks {
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The last keys fetched; `None` before the first successful fetch.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.shared.keys.load_full()
    }

    /// Asks for an early refresh (a token named a `kid` we do not know). Cheap and lock-free;
    /// the task rate-limits.
    pub fn refresh(&self) {
        self.shared.wake.notify_one();
    }

    /// Whether this JWKS no longer holds a starting proxy back: its keys were fetched once, or
    /// it could not be had for [`JwksSettings::first_fetch_patience`].
    pub fn settled(&self) -> bool {
        self.shared
            .settled
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many fetches have succeeded.
    pub fn fetch_count(&self) -> u64 {
        *self.shared.fetched.borrow()
    }

    /// Resolves once at least `n` fetches have succeeded.
    pub async fn fetched(&self, n: u64) {
        let mut rx = self.shared.fetched.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

/// Hands out one [`RemoteJwks`] per URI, shared by every authenticator compiled while it is
/// alive, so a new snapshot does not fetch keys again. Lives as long as the proxy; its tasks run
/// on the runtime given at creation (the control runtime, off the data path).
pub struct JwksStore {
    handle: Handle,
    settings: JwksSettings,
    fetcher: Arc<dyn Fetch>,
    by_uri: Mutex<HashMap<String, Weak<RemoteJwks>>>,
    on_settled: Option<OnSettled>,
}

impl std::fmt::Debug for JwksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksStore")
            .field("settings", &self.settings)
            .finish()
    }
}

impl JwksStore {
    /// A store fetching over HTTP with the default timing, straight to every host.
    pub fn new(handle: Handle) -> Self {
        Self::with_settings(handle, JwksSettings::default())
    }

    /// A store fetching straight to every host.
    pub fn with_settings(handle: Handle, settings: JwksSettings) -> Self {
        Self::with_proxy(handle, settings, None)
    }

    /// A store that sends fetches of hosts that name services (not IP literals, not
    /// `localhost`) through `proxy`, the proxy's own outbound listener (a sidecar's outbound
    /// port, the ingress's gateway port), in absolute form as an `HTTP_PROXY` client does; so a
    /// `jwksUri` of `http://auth.default.svc.cluster.local/.well-known/jwks.json` reaches the
    /// mesh's `auth` service wherever it runs. `None`: every fetch is direct, as
    /// [`JwksStore::with_settings`]. An unspecified address (`0.0.0.0:P`, `[::]:P`) is reached on
    /// loopback.
    pub fn with_proxy(handle: Handle, settings: JwksSettings, proxy: Option<SocketAddr>) -> Self {
        let proxy = proxy.map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(match a.ip() {
                    IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                    IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                });
            }
            a
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self::with_fetcher(handle, settings, Arc::new(HttpFetch { client, proxy }))
    }

    pub(crate) fn with_fetcher(
        handle: Handle,
        settings: JwksSettings,
        fetcher: Arc<dyn Fetch>,
    ) -> Self {
        JwksStore {
            handle,
            settings,
            fetcher,
            by_uri: Mutex::new(HashMap::new()),
            on_settled: None,
        }
    }

    /// Calls `f` whenever one of the store's JWKS settles.
    pub fn on_settled(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_settled = Some(Arc::new(f));
        self
    }

    /// The keys of `uri`, starting its fetch task if no one holds it yet. `timeout` bounds each
    /// fetch (the first caller's value holds while the task lives).
    pub fn remote(&self, uri: &str, timeout: Option<Duration>) -> Arc<RemoteJwks> {
        let mut by_uri = self.by_uri.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = by_uri.get(uri).and_then(Weak::upgrade) {
            return r;
        }
        by_uri.retain(|_, w| w.strong_count() > 0);
        let shared = Arc::new(Shared {
            keys: ArcSwapOption::empty(),
            wake: Notify::new(),
            fetched: watch::Sender::new(0),
            settled: std::sync::atomic::AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        let task = Refresher {
            uri: uri.to_string(),
            timeout: timeout.unwrap_or(DEFAULT_FETCH_TIMEOUT),
            settings: self.settings,
            fetcher: self.fetcher.clone(),
            shared: shared.clone(),
            on_settled: self.on_settled.clone(),
        };
        self.handle.spawn(task.run(stop.clone()));
        let remote = Arc::new(RemoteJwks {
            uri: uri.to_string(),
            shared,
            _stop: stop.drop_guard(),
        });
        by_uri.insert(uri.to_string(), Arc::downgrade(&remote));
        remote
    }
}

/// The background task of one [`RemoteJwks`].
struct Refresher {
    uri: String,
    timeout: Duration,
    settings: JwksSettings,
    fetcher: Arc<dyn Fetch>,
    shared: Arc<Shared>,
    on_settled: Option<OnSettled>,
}

impl Refresher {
    fn settle(&self) {
        let was = self
            .shared
            .settled
            .swap(true, std::sync::atomic::Ordering::AcqRel);
        if let (false, Some(f)) = (was, &self.on_settled) {
            f();
        }
    }

    async fn run(self, stop: CancellationToken) {
        let s = self.settings;
        let born = Instant::now();
        let mut backoff = FIRST_FETCH_RETRY.min(s.retry_interval);
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.fetcher.fetch(&self.uri, self.timeout) => r,
            };
            // Refreshes asked for before or during this fetch are answered by it.
            let _ = self.shared.wake.notified().now_or_never();
            let wait = match result.and_then(|body| parse_key_set(&body)) {
                Ok(keys) => {
                    tracing::debug!(uri = %self.uri, keys = keys.len(), "JWKS fetched");
                    self.shared.keys.store(Some(Arc::new(keys)));
                    self.shared.fetched.send_modify(|c| *c += 1);
                    self.settle();
                    backoff = s.retry_interval;
                    s.refresh_interval
                }
                Err(e) => {
                    let stale = self.shared.keys.load().is_some();
                    tracing::warn!(
                        uri = %self.uri,
                        error = %e,
                        retry_in = ?backoff,
                        serving_stale_keys = stale,
                        "JWKS fetch failed"
                    );
                    if !stale && born.elapsed() >= s.first_fetch_patience {
                        tracing::warn!(uri = %self.uri, waited = ?born.elapsed(), "JWKS still not fetched; serving without it (its tokens are refused)");
                        self.settle();
                    }
                    let wait = backoff;
                    // While a starting proxy waits for the keys, retries stay within the retry
                    // interval; after that they back off up to the refresh interval.
                    let cap = if self
                        .shared
                        .settled
                        .load(std::sync::atomic::Ordering::Acquire)
                    {
                        s.refresh_interval
                    } else {
                        s.retry_interval
                    };
                    backoff = (backoff * 2).min(cap);
                    wait
                }
            };
            let next = started + wait;
            let earliest = started + s.min_refresh_interval;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = async {
                    self.shared.wake.notified().await;
                    tokio::time::sleep_until(earliest.min(next)).await;
                } => {}
            }
        }
    }
}
