//! End-user authentication: Istio RequestAuthentication `jwtRules`, checked with the
//! `jsonwebtoken` crate (no signature code of our own).
//!
//! [`JwtAuthenticator::compile`] gathers the rules whose scope selects one workload, once per
//! snapshot; keys come from the inline `jwks` (parsed there) or from `jwksUri` through a
//! long-lived [`JwksStore`] (see [`jwks`]). Per request, [`JwtAuthenticator::authenticate`]:
//! - finds a token where the rules look (`fromHeaders` name + prefix, `fromParams`,
//!   `fromCookies`; by default `Authorization: Bearer …` and `?access_token=`);
//! - no token: `Ok(None)` — the request passes, and authorization may still require a
//!   principal;
//! - a token: checked against the rule whose `issuer` equals its `iss`: signature (RS256/384/512,
//!   PS256/384/512, ES256/384, EdDSA as the key allows; `none` and HS* refused), `exp` / `nbf`
//!   with [`LEEWAY_SECS`], `aud` when the rule lists audiences. Valid: a [`VerifiedJwt`] and the
//!   request is rewritten (token header removed unless `forwardOriginalToken`, payload and claim
//!   headers set); invalid: a [`JwtError`] saying why, answered with [`unauthorized_response`].
//!
//! Headers the rules output are removed from every request first, so a client cannot pose as a
//! verified token by sending them itself.

pub mod jwks;

pub use jwks::{JwksError, JwksSettings, JwksStore, KeySet, RemoteJwks};

use crate::body::{self, Body};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use model::security::{JwtRule, SecuritySpec};
use model::Labels;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Clock skew allowed on `exp` and `nbf`, as Envoy's `jwt_authn` (60 s).
pub const LEEWAY_SECS: u64 = 60;

/// The body of a 401, as Envoy's `jwt_authn` writes it.
pub const UNAUTHORIZED_BODY: &str = "Jwt verification fails";

/// A token that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedJwt {
    pub issuer: String,
    /// `sub`; empty when the token has none.
    pub subject: String,
    /// `iss/sub`, as Istio's `requestPrincipals` and `request.auth.principal` read it.
    pub principal: String,
    /// `aud`, as a list.
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The whole payload.
    pub claims: Value,
}

/// Why a token was refused. Every variant is a 401, never a 500.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("the token is not signed (alg: none)")]
    AlgNone,
    #[error("the token's algorithm {0} is not accepted (RS256/384/512, PS256/384/512, ES256/384, EdDSA are)")]
    UnsupportedAlg(Box<str>),
    #[error("the token's issuer {0:?} is not one this workload accepts")]
    WrongIssuer(Box<str>),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token's signature does not verify with the keys of its issuer")]
    BadSignature,
    #[error("the JWKS of issuer {issuer} has no key {kid:?} (a refresh was requested)")]
    UnknownKid { issuer: Box<str>, kid: Box<str> },
    #[error("the token's audiences are not among those issuer {0} is accepted for")]
    WrongAudience(Box<str>),
    #[error(
        "the keys of issuer {0} are not available (JWKS not fetched yet, unreachable or invalid)"
    )]
    JwksUnavailable(Box<str>),
}

/// A `jwtRules` entry that cannot be used as written; it fails closed (tokens of its issuer
/// get [`JwtError::JwksUnavailable`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtConfigError {
    #[error("RequestAuthentication {policy}: jwtRules[{rule}] (issuer {issuer}): jwks: {error}")]
    Jwks {
        policy: String,
        rule: usize,
        issuer: String,
        error: JwksError,
    },
    #[error("RequestAuthentication {policy}: jwtRules[{rule}] (issuer {issuer}): neither jwks nor jwksUri is set")]
    NoKeys {
        policy: String,
        rule: usize,
        issuer: String,
    },
    #[error("RequestAuthentication {policy}: jwtRules[{rule}] (issuer {issuer}): bad header name {header:?}")]
    HeaderName {
        policy: String,
        rule: usize,
        issuer: String,
        header: String,
    },
}

/// 401 with `www-authenticate: Bearer realm="REALM", error="invalid_token"` and Envoy's body.
/// `realm` is what the client asked for (Envoy puts the request URL there).
pub fn unauthorized_response(realm: &str) -> Response<Body> {
    let realm: String = realm
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    let challenge = format!("Bearer realm=\"{realm}\", error=\"invalid_token\"");
    let mut rsp = Response::new(body::full(UNAUTHORIZED_BODY));
    *rsp.status_mut() = StatusCode::UNAUTHORIZED;
    let h = rsp.headers_mut();
    h.insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\"")),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    rsp
}

/// Where a token may be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    /// The header's value after `prefix` (compared case-insensitively, as an auth scheme is).
    Header {
        name: HeaderName,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

impl Location {
    /// The token here, if any.
    fn find<'r>(&self, uri: &'r Uri, headers: &'r HeaderMap) -> Option<std::borrow::Cow<'r, str>> {
        use std::borrow::Cow;
        match self {
            Location::Header { name, prefix } => headers.get_all(name).iter().find_map(|v| {
                let v = v.to_str().ok()?.trim();
                let rest = if prefix.is_empty() {
                    v
                } else {
                    let head = v.get(..prefix.len())?;
                    head.eq_ignore_ascii_case(prefix)
                        .then(|| &v[prefix.len()..])?
                };
                let token = rest.trim();
                (!token.is_empty()).then_some(Cow::Borrowed(token))
            }),
            Location::Param(name) => {
                let q = uri.query()?;
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, v)| k == name && !v.is_empty())
                    .map(|(_, v)| Cow::Owned(v.into_owned()))
            }
            Location::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| Cow::Borrowed(v.trim_matches('"'))),
        }
    }
}

/// Where a rule's keys come from.
#[derive(Debug)]
enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
    /// Misconfigured: fails closed.
    Unavailable,
}

#[derive(Debug)]
struct CompiledRule {
    issuer: String,
    audiences: Vec<String>,
    locations: Vec<Location>,
    forward_original_token: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    keys: Keys,
}

/// The JWT rules of one workload, compiled. Immutable; build one per snapshot.
#[derive(Debug, Default)]
pub struct JwtAuthenticator {
    rules: Vec<CompiledRule>,
    /// Every rule's locations, once each, in rule order.
    locations: Vec<Location>,
    /// Headers the rules set: removed from requests before anything else.
    output_headers: Vec<HeaderName>,
    errors: Vec<JwtConfigError>,
}

/// The three parts of a token, the header and payload decoded (not verified).
struct Parsed<'t> {
    alg: Algorithm,
    kid: Option<String>,
    payload_b64: &'t str,
    payload: Value,
}

/// Base64url, with or without padding (producers differ).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl JwtAuthenticator {
    /// Compiles the RequestAuthentications selecting the workload (most specific scope first,
    /// so a workload's rule for an issuer wins over a namespace's or the mesh's). Never fails:
    /// unusable rules are listed in [`JwtAuthenticator::errors`] and fail closed.
    pub fn compile(
        spec: &SecuritySpec,
        namespace: &str,
        labels: &Labels,
        store: &JwksStore,
    ) -> Self {
        let mut applicable: Vec<_> = spec
            .request_authns
            .iter()
            .filter(|r| r.scope.selects(namespace, labels))
            .collect();
        applicable.sort_by_key(|r| std::cmp::Reverse(r.scope.specificity()));
        let mut auth = JwtAuthenticator::default();
        for ra in applicable {
            for (i, rule) in ra.rules.iter().enumerate() {
                if auth.rules.iter().any(|r| r.issuer == rule.issuer) {
                    continue;
                }
                match compile_rule(rule, store) {
                    Ok((compiled, error)) => {
                        if let Some(e) = error {
                            auth.errors.push(e.into_config(&ra.name, i, &rule.issuer));
                        }
                        auth.rules.push(compiled);
                    }
                    Err(e) => auth.errors.push(e.into_config(&ra.name, i, &rule.issuer)),
                }
            }
        }
        for r in &auth.rules {
            for l in &r.locations {
                if !auth.locations.contains(l) {
                    auth.locations.push(l.clone());
                }
            }
            let outputs = r
                .payload_header
                .iter()
                .chain(r.claim_headers.iter().map(|(h, _)| h));
            for h in outputs {
                if !auth.output_headers.contains(h) {
                    auth.output_headers.push(h.clone());
                }
            }
        }
        auth
    }

    /// No rule applies: every request passes unauthenticated.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rules that could not be compiled as written.
    pub fn errors(&self) -> &[JwtConfigError] {
        &self.errors
    }

    /// The remote key sets this authenticator reads (to wait for their first fetch).
    pub fn remotes(&self) -> impl Iterator<Item = &Arc<RemoteJwks>> {
        self.rules.iter().filter_map(|r| match &r.keys {
            Keys::Remote(k) => Some(k),
            _ => None,
        })
    }

    /// [`JwtAuthenticator::authenticate`] on a whole request.
    pub fn authenticate_request<B>(
        &self,
        req: &mut Request<B>,
    ) -> Result<Option<VerifiedJwt>, JwtError> {
        if self.rules.is_empty() {
            return Ok(None);
        }
        let uri = std::mem::take(req.uri_mut());
        let result = self.authenticate(&uri, req.headers_mut());
        *req.uri_mut() = uri;
        result
    }

    /// Finds and checks the request's token (see the module doc). On success the headers are
    /// rewritten as the rule says.
    pub fn authenticate(
        &self,
        uri: &Uri,
        headers: &mut HeaderMap,
    ) -> Result<Option<VerifiedJwt>, JwtError> {
        for h in &self.output_headers {
            headers.remove(h);
        }
        // Every token present must be valid (as Envoy); the first one names the principal.
        let mut found: Vec<(&Location, String)> = Vec::new();
        for l in &self.locations {
            if let Some(t) = l.find(uri, headers) {
                if !found.iter().any(|(_, seen)| *seen == t) {
                    found.push((l, t.into_owned()));
                }
            }
        }
        let mut first = None;
        let mut outputs: Vec<(HeaderName, HeaderValue)> = Vec::new();
        let mut strip: Vec<&HeaderName> = Vec::new();
        for (location, token) in &found {
            let parsed = parse(token)?;
            let iss = parsed
                .payload
                .get("iss")
                .and_then(Value::as_str)
                .ok_or(JwtError::Malformed("the token has no `iss` claim"))?;
            let rule = self
                .rules
                .iter()
                .find(|r| r.issuer == iss && r.locations.contains(location))
                .ok_or_else(|| JwtError::WrongIssuer(iss.into()))?;
            let jwt = rule.verify(token, &parsed)?;
            if !rule.forward_original_token {
                // As Envoy: the header goes; query parameters and cookies stay as they are.
                if let Location::Header { name, .. } = location {
                    strip.push(name);
                }
            }
            if let Some(h) = &rule.payload_header {
                if let Ok(v) = HeaderValue::from_str(parsed.payload_b64) {
                    outputs.push((h.clone(), v));
                }
            }
            for (h, claim) in &rule.claim_headers {
                if let Some(v) = claim_header_value(&jwt.claims, claim) {
                    outputs.push((h.clone(), v));
                }
            }
            first.get_or_insert(jwt);
        }
        for name in strip {
            headers.remove(name);
        }
        for (name, value) in outputs {
            headers.insert(name, value);
        }
        Ok(first)
    }
}

/// A compile problem of one rule, before it is given its policy's name.
enum RuleProblem {
    Jwks(JwksError),
    NoKeys,
    HeaderName(String),
}

impl RuleProblem {
    fn into_config(self, policy: &str, rule: usize, issuer: &str) -> JwtConfigError {
        let (policy, issuer) = (policy.to_string(), issuer.to_string());
        match self {
            RuleProblem::Jwks(error) => JwtConfigError::Jwks {
                policy,
                rule,
                issuer,
                error,
            },
            RuleProblem::NoKeys => JwtConfigError::NoKeys {
                policy,
                rule,
                issuer,
            },
            RuleProblem::HeaderName(header) => JwtConfigError::HeaderName {
                policy,
                rule,
                issuer,
                header,
            },
        }
    }
}

/// A rule (with its keys unavailable when they are the problem), or why it cannot be used at
/// all.
fn compile_rule(
    rule: &JwtRule,
    store: &JwksStore,
) -> Result<(CompiledRule, Option<RuleProblem>), RuleProblem> {
    let header = |h: &str| {
        model::valid::header_name(h.trim()).map_err(|_| RuleProblem::HeaderName(h.to_string()))
    };
    let mut locations = Vec::new();
    for (name, prefix) in &rule.from_headers {
        locations.push(Location::Header {
            name: header(name)?,
            prefix: prefix.clone(),
        });
    }
    locations.extend(rule.from_params.iter().cloned().map(Location::Param));
    locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
    if locations.is_empty() {
        locations.push(Location::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".to_string(),
        });
        locations.push(Location::Param("access_token".to_string()));
    }
    let payload_header = rule
        .output_payload_to_header
        .as_deref()
        .map(header)
        .transpose()?;
    let claim_headers = rule
        .output_claim_to_headers
        .iter()
        .map(|(h, claim)| Ok((header(h)?, claim.clone())))
        .collect::<Result<_, RuleProblem>>()?;
    let (keys, problem) = match (&rule.jwks, &rule.jwks_uri) {
        // Inline wins over the URI, as in Istio.
        (Some(json), _) => match jwks::parse_key_set(json) {
            Ok(k) => (Keys::Inline(Arc::new(k)), None),
            Err(e) => (Keys::Unavailable, Some(RuleProblem::Jwks(e))),
        },
        (None, Some(uri)) if !uri.starts_with("http://") => (
            Keys::Unavailable,
            Some(RuleProblem::Jwks(JwksError::UnsupportedUri(uri.clone()))),
        ),
        (None, Some(uri)) => {
            let timeout = rule.timeout_ms.map(Duration::from_millis);
            (Keys::Remote(store.remote(uri, timeout)), None)
        }
        (None, None) => (Keys::Unavailable, Some(RuleProblem::NoKeys)),
    };
    let compiled = CompiledRule {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        locations,
        forward_original_token: rule.forward_original_token,
        payload_header,
        claim_headers,
        keys,
    };
    Ok((compiled, problem))
}

/// Splits and decodes a token without verifying it; refuses `none` and HS* up front.
fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("a JWT has three dot-separated parts"));
    };
    let json = |part: &str, what: &'static str| -> Result<Value, JwtError> {
        let bytes = B64.decode(part).map_err(|_| JwtError::Malformed(what))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what))?;
        v.is_object().then_some(v).ok_or(JwtError::Malformed(what))
    };
    let header = json(h, "the header is not base64url-encoded JSON")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed("the header has no `alg`"))?;
    let alg = match alg {
        a if a.eq_ignore_ascii_case("none") => return Err(JwtError::AlgNone),
        "HS256" | "HS384" | "HS512" => return Err(JwtError::UnsupportedAlg(alg.into())),
        a => a
            .parse::<Algorithm>()
            .map_err(|_| JwtError::UnsupportedAlg(a.into()))?,
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed("`kid` is not a string")),
    };
    let payload = json(p, "the payload is not base64url-encoded JSON")?;
    for claim in ["exp", "nbf"] {
        if payload.get(claim).is_some_and(|v| !v.is_u64()) {
            return Err(JwtError::Malformed("`exp` and `nbf` must be whole seconds"));
        }
    }
    Ok(Parsed {
        alg,
        kid,
        payload_b64: p,
        payload,
    })
}

impl CompiledRule {
    fn verify(&self, token: &str, parsed: &Parsed<'_>) -> Result<VerifiedJwt, JwtError> {
        let unavailable = || JwtError::JwksUnavailable(self.issuer.as_str().into());
        let keys = match &self.keys {
            Keys::Inline(k) => k.clone(),
            Keys::Remote(r) => r.keys().ok_or_else(unavailable)?,
            Keys::Unavailable => return Err(unavailable()),
        };
        if let Some(kid) = &parsed.kid {
            if !keys.has_kid(kid) {
                if let Keys::Remote(r) = &self.keys {
                    r.refresh();
                }
                return Err(JwtError::UnknownKid {
                    issuer: self.issuer.as_str().into(),
                    kid: kid.as_str().into(),
                });
            }
        }
        let mut validation = Validation::new(parsed.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[&self.issuer]);
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            validation.set_required_spec_claims(&["aud"]);
        }
        // With a `kid`, only that key; without, every key that fits the algorithm (as Envoy).
        let candidates = keys.keys.iter().filter(|k| {
            k.fits(parsed.alg)
                && parsed
                    .kid
                    .as_ref()
                    .is_none_or(|kid| k.kid.as_ref() == Some(kid))
        });
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.decoding, &validation) {
                Ok(data) => return Ok(verified(&self.issuer, data.claims)),
                Err(e) => match e.kind() {
                    // This key did not verify it; another may.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::Crypto(_) => continue,
                    ErrorKind::ExpiredSignature => return Err(JwtError::Expired),
                    ErrorKind::ImmatureSignature => return Err(JwtError::NotYetValid),
                    ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
                        return Err(JwtError::WrongAudience(self.issuer.as_str().into()))
                    }
                    ErrorKind::InvalidIssuer => {
                        return Err(JwtError::WrongIssuer(self.issuer.as_str().into()))
                    }
                    _ => return Err(JwtError::Malformed("the token does not decode")),
                },
            }
        }
        Err(JwtError::BadSignature)
    }
}

fn verified(issuer: &str, claims: Value) -> VerifiedJwt {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let presenter = claims
        .get("azp")
        .and_then(Value::as_str)
        .map(str::to_string);
    VerifiedJwt {
        issuer: issuer.to_string(),
        principal: format!("{issuer}/{subject}"),
        subject,
        audiences,
        presenter,
        claims,
    }
}

/// A claim as a header value: strings as they are, numbers and booleans in JSON form; other
/// types are not copied (as Istio). A name not found at the top level is tried as a
/// `.`-separated path into nested objects.
fn claim_header_value(claims: &Value, claim: &str) -> Option<HeaderValue> {
    let v = claims
        .get(claim)
        .or_else(|| claim.split('.').try_fold(claims, |v, k| v.get(k)))?;
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests;
