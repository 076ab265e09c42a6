//! The `auth` demo service behind `weft demo auth`: a token issuer for the mesh's JWT scenario.
//!
//! At start it makes an ES256 (P-256) key with ring; the key lives only in this process, so a
//! restart rotates it (proxies fetch the new JWKS when they meet its unknown `kid`). Several
//! replicas would each have their own key: run one. ([`Issuer::open`] keeps the key in a file
//! instead, as the shop's auth service does.)
//!
//! - `GET /.well-known/jwks.json`: the public key (`kid` is its RFC 7638 thumbprint), what a
//!   RequestAuthentication's `jwksUri` points at.
//! - `GET /token?sub=alice&groups=admin,dev&aud=httpbin&ttl=1h` or `POST /token` with the same
//!   fields as a form or a JSON object (`groups` a list or a comma-separated string): a signed
//!   JWT with `iss` (the service's issuer, `weft-auth` by default), `sub`, `groups`, `aud` (when
//!   asked for or configured), `iat` and `exp`, answered as
//!   `{"access_token", "token_type": "Bearer", "expires_in", "claims"}`; `format=raw` answers with
//!   the bare token instead (for `TOKEN=$(curl …)`).
//! - `/healthz`, `/readyz` (503 once draining).
//!
//! Like echo, it depends on no other weft crate: an ordinary app the mesh carries.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::parse_duration;

/// The issuer tokens carry unless told otherwise.
pub const DEFAULT_ISSUER: &str = "weft-auth";
/// Where the public keys are served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The largest `POST /token` body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest `sub` or group name accepted.
const MAX_NAME_LEN: usize = 256;

/// What the issuer puts in tokens.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` when a request names none; `None`: no `aud` unless asked for.
    pub audience: Option<String>,
    /// Lifetime when a request names none.
    pub default_ttl: Duration,
    /// The longest lifetime a request may ask for.
    pub max_ttl: Duration,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            issuer: DEFAULT_ISSUER.into(),
            audience: None,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("generating the signing key: {0}")]
    KeyGen(String),
    #[error("the signing key {0}: {1}")]
    Key(String, String),
}

/// Why a token request was refused (a 400 that says so).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("`sub` is required")]
    NoSubject,
    #[error("`{0}` is longer than {MAX_NAME_LEN} bytes")]
    TooLong(&'static str),
    #[error("invalid ttl {0:?}: a duration like 30s, 15m or 1h")]
    BadTtl(String),
    #[error("ttl {asked:?} is longer than the {max:?} this issuer allows")]
    TtlTooLong { asked: Duration, max: Duration },
    #[error("the body is not valid {0}")]
    BadBody(&'static str),
    #[error("`{0}` must be a string")]
    NotAString(&'static str),
    #[error("signing the token: {0}")]
    Sign(String),
}

/// What a client asks a token for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub sub: String,
    pub groups: Vec<String>,
    pub aud: Option<String>,
    pub ttl: Option<Duration>,
    /// `format=raw`: the bare token, not JSON.
    pub raw: bool,
}

impl TokenRequest {
    /// Applies `name=value` pairs (a query string or a form body); later pairs win, `groups`
    /// accumulate (`groups=a,b&groups=c`).
    fn apply_pairs<'a>(
        &mut self,
        pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    ) -> Result<(), TokenError> {
        for (k, v) in pairs {
            self.apply(&k, Value::String(v.into_owned()))?;
        }
        Ok(())
    }

    /// Applies a JSON object's fields; `groups` may be a list.
    fn apply_json(&mut self, body: &[u8]) -> Result<(), TokenError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| TokenError::BadBody("JSON"))?;
        let Value::Object(fields) = v else {
            return Err(TokenError::BadBody("JSON (an object)"));
        };
        for (k, v) in fields {
            self.apply(&k, v)?;
        }
        Ok(())
    }

    fn apply(&mut self, key: &str, value: Value) -> Result<(), TokenError> {
        let text = |name: &'static str, v: Value| match v {
            Value::String(s) => Ok(s),
            Value::Number(n) if name == "ttl" => Ok(format!("{n}s")),
            _ => Err(TokenError::NotAString(name)),
        };
        match key {
            "sub" => self.sub = text("sub", value)?.trim().to_string(),
            "aud" => {
                let aud = text("aud", value)?.trim().to_string();
                self.aud = (!aud.is_empty()).then_some(aud);
            }
            "ttl" => {
                let ttl = text("ttl", value)?;
                match parse_duration(&ttl) {
                    Some(d) if !d.is_zero() => self.ttl = Some(d),
                    _ => return Err(TokenError::BadTtl(ttl)),
                }
            }
            "format" => self.raw = text("format", value)? == "raw",
            "groups" => {
                let items = match value {
                    Value::Array(list) => list
                        .into_iter()
                        .map(|g| text("groups", g))
                        .collect::<Result<Vec<_>, _>>()?,
                    v => vec![text("groups", v)?],
                };
                for item in items {
                    self.groups.extend(
                        item.split(',')
                            .map(str::trim)
                            .filter(|g| !g.is_empty())
                            .map(str::to_string),
                    );
                }
            }
            // Unknown fields are ignored, as OAuth servers do.
            _ => {}
        }
        Ok(())
    }
}

/// The payload of every token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    pub iat: u64,
    pub exp: u64,
}

/// A signed token and what it says.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
    pub expires_in: u64,
}

/// The signing key and the JWKS that publishes it.
pub struct Issuer {
    opts: AuthOptions,
    kid: String,
    key: EncodingKey,
    jwks: Bytes,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.opts.issuer)
            .field("kid", &self.kid)
            .finish()
    }
}

impl Issuer {
    /// Makes a fresh ES256 key.
    pub fn generate(opts: AuthOptions) -> Result<Issuer, AuthError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| AuthError::KeyGen(e.to_string()))?;
        Issuer::from_pkcs8(opts, pkcs8.as_ref())
    }

    /// Signs with the ES256 key at `path` (PKCS#8 DER), made and written there (mode 0600) at
    /// the first start: tokens outlive a restart of the issuer, and replicas sharing the file
    /// share the key.
    pub fn open(opts: AuthOptions, path: &std::path::Path) -> Result<Issuer, AuthError> {
        let io = |e: std::io::Error| AuthError::Key(path.display().to_string(), e.to_string());
        match std::fs::read(path) {
            Ok(der) => Issuer::from_pkcs8(opts, &der)
                .map_err(|e| AuthError::Key(path.display().to_string(), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|e| AuthError::KeyGen(e.to_string()))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                // Written aside and renamed: a crash never leaves half a key.
                let tmp = path.with_extension("tmp");
                {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)
                        .map_err(io)?;
                    f.write_all(pkcs8.as_ref()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                }
                std::fs::rename(&tmp, path).map_err(io)?;
                Issuer::from_pkcs8(opts, pkcs8.as_ref())
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Signs with the ES256 (P-256) key `pkcs8` (PKCS#8 DER).
    pub fn from_pkcs8(opts: AuthOptions, pkcs8: &[u8]) -> Result<Issuer, AuthError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| AuthError::KeyGen(format!("not a P-256 PKCS#8 key: {e}")))?;
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(AuthError::KeyGen("unexpected public key encoding".into()));
        }
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..]),
        );
        // RFC 7638: SHA-256 of the required members, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref());
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid, "x": x, "y": y,
        }]});
        Ok(Issuer {
            opts,
            key: EncodingKey::from_ec_der(pkcs8),
            jwks: Bytes::from(jwks.to_string()),
            kid,
        })
    }

    /// What tokens carry unless asked otherwise.
    pub fn options(&self) -> &AuthOptions {
        &self.opts
    }

    pub fn issuer(&self) -> &str {
        &self.opts.issuer
    }

    /// The key id every token's header names.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document (JSON).
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    /// Signs a token for `req`, valid from `now` (seconds since the epoch).
    pub fn issue(&self, req: &TokenRequest, now: u64) -> Result<Issued, TokenError> {
        if req.sub.is_empty() {
            return Err(TokenError::NoSubject);
        }
        if req.sub.len() > MAX_NAME_LEN {
            return Err(TokenError::TooLong("sub"));
        }
        if req.groups.iter().any(|g| g.len() > MAX_NAME_LEN) {
            return Err(TokenError::TooLong("groups"));
        }
        let ttl = req.ttl.unwrap_or(self.opts.default_ttl);
        if ttl > self.opts.max_ttl {
            return Err(TokenError::TtlTooLong {
                asked: ttl,
                max: self.opts.max_ttl,
            });
        }
        // Whole seconds, at least one.
        let expires_in = ttl.as_secs().max(1);
        let claims = Claims {
            iss: self.opts.issuer.clone(),
            sub: req.sub.clone(),
            groups: req.groups.clone(),
            aud: req.aud.clone().or_else(|| self.opts.audience.clone()),
            iat: now,
            exp: now + expires_in,
        };
        let header = Header {
            kid: Some(self.kid.clone()),
            ..Header::new(Algorithm::ES256)
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(Issued {
            token,
            claims,
            expires_in,
        })
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests finish,
/// and returns.
pub async fn serve_auth(
    listener: TcpListener,
    issuer: Arc<Issuer>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, issuer = %issuer.issuer(), kid = %issuer.kid(), "auth listening");
    }
    let stop = shutdown.clone();
    crate::server::serve(listener, shutdown, "auth", move |req| {
        let (issuer, stop) = (issuer.clone(), stop.clone());
        async move { handle(&issuer, &stop, req).await }
    })
    .await
}

/// Answers one request.
pub(crate) async fn handle<B>(
    issuer: &Issuer,
    shutdown: &CancellationToken,
    req: Request<B>,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let read_only = [Method::GET, Method::HEAD];
    match parts.uri.path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shutdown.is_cancelled() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        JWKS_PATH if read_only.contains(&parts.method) => {
            let mut rsp = respond(StatusCode::OK, "application/json", issuer.jwks.clone());
            rsp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
            rsp
        }
        JWKS_PATH => not_allowed("GET, HEAD"),
        "/token" if parts.method == Method::GET || parts.method == Method::POST => {
            let mut ask = TokenRequest::default();
            let query = parts.uri.query().unwrap_or_default();
            if let Err(e) = ask.apply_pairs(form_urlencoded::parse(query.as_bytes())) {
                return error(StatusCode::BAD_REQUEST, &e.to_string());
            }
            if parts.method == Method::POST {
                let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))
                    }
                };
                let json = parts
                    .headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
                let applied = if json {
                    ask.apply_json(&body)
                } else {
                    ask.apply_pairs(form_urlencoded::parse(&body))
                };
                if let Err(e) = applied {
                    return error(StatusCode::BAD_REQUEST, &e.to_string());
                }
            }
            match issuer.issue(&ask, now()) {
                Ok(t) => {
                    info!(sub = %t.claims.sub, groups = ?t.claims.groups, exp = t.claims.exp, "token issued");
                    if ask.raw {
                        return text(StatusCode::OK, format!("{}\n", t.token));
                    }
                    let body = json!({
                        "access_token": t.token,
                        "token_type": "Bearer",
                        "expires_in": t.expires_in,
                        "claims": t.claims,
                    });
                    respond(StatusCode::OK, "application/json", body.to_string() + "\n")
                }
                Err(e @ TokenError::Sign(_)) => {
                    warn!(error = %e, "token not issued");
                    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        "/token" => not_allowed("GET, POST"),
        path => error(
            StatusCode::NOT_FOUND,
            &format!("no {path} here: try GET {JWKS_PATH} or GET /token?sub=alice&groups=admin"),
        ),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, "text/plain", body)
}

fn error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        json!({ "error": why }).to_string() + "\n",
    )
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut rsp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    rsp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    rsp
}

#[cfg(test)]
mod tests;
