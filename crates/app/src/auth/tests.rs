use super::*;
use crate::client::Sidecar;
use crate::testing::{serve, text};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const RSA_PEM: &str = include_str!("test-rsa.pem");
const RSA_N: &str = include_str!("test-rsa.n");

/// A signing key and its public JWK.
struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn es256(kid: &'static str) -> Signer {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref(); // 0x04 || x || y
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    Signer {
        kid,
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
                    "kid": kid, "alg": "ES256", "use": "sig"}),
    }
}

fn rs256(kid: &'static str) -> Signer {
    Signer {
        kid,
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
        jwk: json!({"kty": "RSA", "n": RSA_N.trim(), "e": "AQAB", "kid": kid, "alg": "RS256"}),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Signer {
    fn sign(&self, claims: Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    /// A token for alice from `weft-auth` to `shop`, valid for an hour.
    fn good(&self) -> String {
        self.sign(json!({"iss": "weft-auth", "aud": "shop", "sub": "alice", "exp": now() + 3600}))
    }
}

fn set(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A service whose `/me` answers with the token's subject and `/catalog` is public.
async fn shop(jwks: Jwks) -> SocketAddr {
    let app = Router::new()
        .route(
            "/me",
            get(|c: Claims| async move { c.subject().unwrap_or_default().to_string() }),
        )
        .route("/catalog", get(|| async { "catalog" }))
        .route("/static/app.js", get(|| async { "js" }))
        .layer(
            JwtLayer::new(jwks)
                .issuer("weft-auth")
                .audience("shop")
                .public("/catalog")
                .public("/static/*"),
        );
    serve(app).await
}

/// Status, `WWW-Authenticate` and body of a GET with an optional token.
async fn call(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let client = Client::builder().sidecar(Sidecar::None).build();
    let mut req = Request::new(Default::default());
    *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
    }
    let r = client.request(req).await.unwrap();
    let challenge = r
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), challenge, text(r).await)
}

#[tokio::test]
async fn valid_tokens_of_both_algorithms_reach_the_handler_with_their_claims() {
    let (ec, rsa) = (es256("ec-1"), rs256("rsa-1"));
    let addr = shop(Jwks::from_json(&set(&[&ec, &rsa])).unwrap()).await;
    for signer in [&ec, &rsa] {
        let (status, _, body) = call(addr, "/me", Some(&signer.good())).await;
        assert_eq!((status, body.as_str()), (200, "alice"), "{:?}", signer.alg);
    }
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_challenge() {
    let ec = es256("ec-1");
    let stranger = es256("ec-1"); // same kid, another key: a forged signature
    let addr = shop(Jwks::from_json(&set(&[&ec])).unwrap()).await;
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": "weft-auth", "aud": "shop", "exp": now() + 60}),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let (status, challenge, _) = call(addr, "/me", None).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"));
    for (token, why) in [
        (
            ec.sign(json!({"iss": "other", "aud": "shop", "exp": now() + 60})),
            "invalid issuer",
        ),
        (
            ec.sign(json!({"iss": "weft-auth", "aud": "bank", "exp": now() + 60})),
            "invalid audience",
        ),
        (
            ec.sign(json!({"iss": "weft-auth", "exp": now() + 60})),
            "invalid audience",
        ),
        (
            ec.sign(json!({"iss": "weft-auth", "aud": "shop", "exp": now() - 3600})),
            "token expired",
        ),
        (
            ec.sign(json!({"iss": "weft-auth", "aud": "shop"})),
            "invalid token",
        ),
        (stranger.good(), "invalid token"),
        (es256("ec-2").good(), "signed by an unknown key"),
        (hs256, "signature algorithm not allowed"),
        ("not.a.token".to_string(), "malformed token"),
    ] {
        let (status, challenge, _) = call(addr, "/me", Some(&token)).await;
        assert_eq!(status, 401, "{why}");
        assert_eq!(
            challenge,
            format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
        );
    }
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let addr = shop(Jwks::from_json(&set(&[&es256("k")])).unwrap()).await;
    assert_eq!(call(addr, "/catalog", None).await.0, 200);
    assert_eq!(call(addr, "/static/app.js", Some("garbage")).await.0, 200);
    assert_eq!(call(addr, "/catalog/x", None).await.0, 401);
}

/// A JWKS endpoint serving what `keys` holds, counting fetches.
async fn issuer(keys: Arc<Mutex<String>>) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let count = fetches.clone();
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            let body = keys.lock().unwrap().clone();
            async move { body }
        }),
    );
    let addr = serve(app).await;
    (format!("http://{addr}/.well-known/jwks.json"), fetches)
}

#[tokio::test]
async fn a_remote_jwks_is_fetched_and_refetched_when_the_key_rotates() {
    let (old, new) = (rs256("2024"), es256("2025"));
    let keys = Arc::new(Mutex::new(set(&[&old])));
    let (url, fetches) = issuer(keys.clone()).await;
    let client = Client::builder().sidecar(Sidecar::None).build();
    let jwks = Jwks::remote_with(url, client, DEFAULT_REFRESH, Duration::ZERO);
    let addr = shop(jwks.clone()).await;
    while jwks.is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(call(addr, "/me", Some(&old.good())).await.0, 200);
    assert_eq!(jwks.len(), 1);

    // The issuer rotates: a token with the new key's kid makes the layer fetch again.
    *keys.lock().unwrap() = set(&[&old, &new]);
    let before = fetches.load(Ordering::SeqCst);
    assert_eq!(call(addr, "/me", Some(&new.good())).await.0, 200);
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
    assert_eq!(jwks.len(), 2);
}

#[tokio::test]
async fn unknown_keys_do_not_hammer_the_issuer() {
    let known = es256("known");
    let (url, fetches) = issuer(Arc::new(Mutex::new(set(&[&known])))).await;
    let client = Client::builder().sidecar(Sidecar::None).build();
    let addr = shop(Jwks::remote(url, client, DEFAULT_REFRESH)).await;
    // The first request waits for the first fetch (the one under way, or its own).
    assert_eq!(call(addr, "/me", Some(&known.good())).await.0, 200);
    for _ in 0..5 {
        assert_eq!(
            call(addr, "/me", Some(&es256("unknown").good())).await.0,
            401
        );
    }
    // The first fetch, and none since: within DEFAULT_MIN_REFETCH.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_jwks_rejects_tokens() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let client = Client::builder().sidecar(Sidecar::None).build();
    let layer = JwtLayer::new(Jwks::remote(url, client, DEFAULT_REFRESH));
    let err = layer.verify(&es256("k").good()).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey), "{err}");
}
