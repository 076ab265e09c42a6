//! End-user authentication: a layer that requires a valid `Authorization: Bearer` JWT (RS256 or
//! ES256, signed by a key of a JWKS, from the expected issuer and for the expected audience),
//! puts its [`Claims`] in the request's extensions and answers 401 with a `WWW-Authenticate`
//! header (RFC 6750) otherwise. Routes marked public pass without a token.
//!
//! The JWKS is given ([`Jwks::from_json`]) or fetched from a URL ([`Jwks::remote`]) with the
//! SDK's client (through the sidecar in the mesh), refreshed periodically and re-fetched when a
//! token names a key it does not have (key rotation), at most once per
//! [`DEFAULT_MIN_REFETCH`].
//!
//! The mesh's RequestAuthentication can check the same tokens at the sidecar; checking in the
//! app as well gives the handler the claims and keeps the app safe when called around the mesh.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::FromRequestParts;
use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::client::Client;

/// The signature algorithms accepted: what identity providers sign end-user tokens with.
pub const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
/// How often a remote JWKS is fetched again (Istio's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`
/// default is 20 minutes; keys rotate rarely, and an unknown key triggers a fetch anyway).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);
/// The least time between two fetches, so tokens naming unknown keys can't hammer the issuer.
pub const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(10);
/// How soon a failed fetch is tried again.
pub const FAILED_FETCH_RETRY: Duration = Duration::from_secs(5);
/// The least time between two fetches after one failed, when a token names a key not held.
pub const REFETCH_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// A JWKS larger than this is not one.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("signature algorithm not allowed")]
    Algorithm,
    #[error("signed by an unknown key")]
    UnknownKey,
    #[error("token expired")]
    Expired,
    #[error("invalid issuer")]
    Issuer,
    #[error("invalid audience")]
    Audience,
    #[error("invalid token")]
    Invalid,
}

/// Errors reading a JWKS.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("JWKS: {0}")]
    Parse(#[from] serde_json::Error),
}

/// A verified token's claims, as the handler sees them (an axum extractor; 401 without them).
#[derive(Clone, Debug, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// `sub`: who the token is about.
    pub fn subject(&self) -> Option<&str> {
        self.0.get("sub").and_then(Value::as_str)
    }

    pub fn get(&self, claim: &str) -> Option<&Value> {
        self.0.get(claim)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Claims {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .ok_or(StatusCode::UNAUTHORIZED)
    }
}

/// A usable key of a JWKS.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys tokens are checked against.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<JwksInner>,
}

struct JwksInner {
    keys: ArcSwap<Vec<Key>>,
    remote: Option<Remote>,
}

struct Remote {
    url: String,
    client: Client,
    min_refetch: Duration,
    /// Held while fetching: when the set was last fetched, and whether that worked.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("keys", &self.inner.keys.load().len())
            .field("url", &self.inner.remote.as_ref().map(|r| &r.url))
            .finish()
    }
}

impl Jwks {
    /// A fixed key set (RSA keys and P-256 EC keys are used; others are skipped).
    pub fn from_set(set: &JwkSet) -> Jwks {
        Jwks {
            inner: Arc::new(JwksInner {
                keys: ArcSwap::from_pointee(usable(set)),
                remote: None,
            }),
        }
    }

    /// A fixed key set from its JSON (`{"keys": [...]}`).
    pub fn from_json(json: &str) -> Result<Jwks, JwksError> {
        Ok(Jwks::from_set(&serde_json::from_str(json)?))
    }

    /// The key set at `url` (an `http://` URL, fetched with `client`), fetched now in the
    /// background and every `refresh`; must be called inside the tokio runtime. The refreshing
    /// stops when the last clone of the returned value is dropped.
    pub fn remote(url: impl Into<String>, client: Client, refresh: Duration) -> Jwks {
        Jwks::remote_with(url, client, refresh, DEFAULT_MIN_REFETCH)
    }

    /// [`Jwks::remote`] with another least time between fetches.
    pub fn remote_with(
        url: impl Into<String>,
        client: Client,
        refresh: Duration,
        min_refetch: Duration,
    ) -> Jwks {
        let jwks = Jwks {
            inner: Arc::new(JwksInner {
                keys: ArcSwap::from_pointee(Vec::new()),
                remote: Some(Remote {
                    url: url.into(),
                    client,
                    min_refetch,
                    last: tokio::sync::Mutex::new(None),
                }),
            }),
        };
        tokio::spawn(refresh_loop(Arc::downgrade(&jwks.inner), refresh));
        jwks
    }

    /// The number of usable keys held now.
    pub fn len(&self) -> usize {
        self.inner.keys.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for a token's `kid` and `alg`; a remote set is fetched again once if it has none.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let find = || {
            self.inner
                .keys
                .load()
                .iter()
                .find(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
                .map(|k| k.key.clone())
        };
        if let Some(k) = find() {
            return Some(k);
        }
        self.inner.fetch().await.ok()?;
        find()
    }
}

impl JwksInner {
    /// Fetches the set unless one was fetched within `min_refetch`.
    async fn fetch(&self) -> Result<(), JwksError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let mut last = remote.last.lock().await;
        match *last {
            Some((t, true)) if t.elapsed() < remote.min_refetch => return Ok(()),
            // The last fetch failed (the issuer not reachable yet, as while a mesh starts): the
            // token waits for one more try, soon, rather than being refused for a key the
            // issuer has.
            Some((t, false)) => {
                let gap = remote.min_refetch.min(REFETCH_AFTER_FAILURE);
                tokio::time::sleep(gap.saturating_sub(t.elapsed())).await;
            }
            _ => {}
        }
        let result = remote.get().await;
        *last = Some((Instant::now(), result.is_ok()));
        let set = result?;
        self.keys.store(Arc::new(usable(&set)));
        Ok(())
    }
}

impl Remote {
    async fn get(&self) -> Result<JwkSet, JwksError> {
        let err = |reason: String| JwksError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let r = self
            .client
            .get(&self.url)
            .await
            .map_err(|e| err(e.to_string()))?;
        if r.status() != StatusCode::OK {
            return Err(err(format!("status {}", r.status())));
        }
        let body = Limited::new(r.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?
            .to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }
}

async fn refresh_loop(jwks: Weak<JwksInner>, refresh: Duration) {
    loop {
        let Some(inner) = jwks.upgrade() else { return };
        let wait = match inner.fetch().await {
            Ok(()) => refresh,
            Err(e) => {
                tracing::warn!(error = %e, "fetching JWKS failed");
                FAILED_FETCH_RETRY.min(refresh)
            }
        };
        drop(inner);
        tokio::time::sleep(wait).await;
    }
}

/// The keys of `set` this layer can verify with: RSA ones for RS256, P-256 ones for ES256.
fn usable(set: &JwkSet) -> Vec<Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => return None,
            };
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key: DecodingKey::from_jwk(jwk).ok()?,
            })
        })
        .collect()
}

/// Requires a valid end-user token on every route but the public ones.
///
/// ```
/// use app::auth::{Claims, JwtLayer, Jwks};
/// use axum::{routing::get, Router};
///
/// async fn me(claims: Claims) -> String {
///     claims.subject().unwrap_or("nobody").to_string()
/// }
///
/// # fn build(jwks_json: &str) -> Result<Router, app::auth::JwksError> {
/// // In a service: Jwks::remote("http://auth/.well-known/jwks.json", Client::new(), DEFAULT_REFRESH)
/// let jwks = Jwks::from_json(jwks_json)?;
/// let app = Router::new()
///     .route("/me", get(me))
///     .route("/catalog", get(|| async { "public" }))
///     .layer(
///         JwtLayer::new(jwks)
///             .issuer("weft-auth")
///             .audience("shop")
///             .public("/catalog")
///             .public("/static/*"),
///     );
/// # Ok(app) }
/// ```
#[derive(Clone, Debug)]
pub struct JwtLayer {
    auth: Arc<Authenticator>,
}

#[derive(Clone, Debug)]
struct Authenticator {
    jwks: Jwks,
    validation: Validation,
    /// Exact paths, or prefixes (given with a trailing `*`).
    public: Vec<Public>,
}

#[derive(Clone, Debug)]
enum Public {
    Exact(String),
    Prefix(String),
}

impl JwtLayer {
    /// Tokens signed by a key of `jwks`, not expired (60 s leeway), any issuer and audience
    /// until [`JwtLayer::issuer`] and [`JwtLayer::audience`] say.
    pub fn new(jwks: Jwks) -> JwtLayer {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        JwtLayer {
            auth: Arc::new(Authenticator {
                jwks,
                validation,
                public: Vec::new(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Authenticator)) -> Self {
        f(Arc::make_mut(&mut self.auth));
        self
    }

    /// Accepts tokens whose `iss` is `issuer` (may be given more than once).
    pub fn issuer(self, issuer: &str) -> Self {
        self.edit(|a| {
            let mut iss = a.validation.iss.take().unwrap_or_default();
            iss.insert(issuer.to_string());
            a.validation.iss = Some(iss);
            a.validation.required_spec_claims.insert("iss".into());
        })
    }

    /// Accepts tokens whose `aud` names `audience` (may be given more than once).
    pub fn audience(self, audience: &str) -> Self {
        self.edit(|a| {
            let mut aud = a.validation.aud.take().unwrap_or_default();
            aud.insert(audience.to_string());
            a.validation.aud = Some(aud);
            a.validation.validate_aud = true;
            a.validation.required_spec_claims.insert("aud".into());
        })
    }

    /// A route that needs no token: an exact path, or a prefix written with a trailing `*`.
    pub fn public(self, path: &str) -> Self {
        let p = match path.strip_suffix('*') {
            Some(prefix) => Public::Prefix(prefix.to_string()),
            None => Public::Exact(path.to_string()),
        };
        self.edit(|a| a.public.push(p))
    }

    /// Checks a bearer token (what the layer does with each request).
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.auth.verify(token).await
    }
}

impl Authenticator {
    fn is_public(&self, path: &str) -> bool {
        self.public.iter().any(|p| match p {
            Public::Exact(e) => path == e,
            Public::Prefix(pre) => path.starts_with(pre.as_str()),
        })
    }

    async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Algorithm);
        }
        let key = self
            .jwks
            .key(header.kid.as_deref(), header.alg)
            .await
            .ok_or(AuthError::UnknownKey)?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            Ok(data) => Ok(Claims(data.claims)),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AuthError::Expired,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::Issuer,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::Audience,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidSignature => {
                    AuthError::Invalid
                }
                _ => AuthError::Malformed,
            }),
        }
    }
}

/// The bearer token of `Authorization`, if that is what it holds.
fn bearer(h: &http::HeaderMap) -> Option<&str> {
    let v = h.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// 401 with the RFC 6750 challenge: bare when no token came, `invalid_token` otherwise.
fn unauthorized<B: Default>(e: &AuthError) -> Response<B> {
    let challenge = match e {
        AuthError::Missing => HeaderValue::from_static("Bearer"),
        e => HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{e}\""
        ))
        .expect("fixed ASCII messages"),
    };
    let mut r = Response::new(B::default());
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    r
}

impl<S> tower::Layer<S> for JwtLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`JwtLayer`] makes.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B, RB> tower::Service<Request<B>> for Authenticated<S>
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if self.auth.is_public(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        // The service polled ready goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let claims = match bearer(req.headers()) {
                None => Err(AuthError::Missing),
                Some(token) => auth.verify(token).await,
            };
            match claims {
                Ok(c) => {
                    req.extensions_mut().insert(c);
                    inner.call(req).await
                }
                Err(e) => Ok(unauthorized(&e)),
            }
        })
    }
}
