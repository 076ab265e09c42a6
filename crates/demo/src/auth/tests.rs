//! The auth service: keys, tokens checked with an independent verifier (jsonwebtoken reading
//! the served JWKS), request parsing, and the HTTP endpoints on a real listener.

use super::*;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use std::net::SocketAddr;

fn issuer() -> Issuer {
    Issuer::generate(AuthOptions::default()).expect("key")
}

fn ask(sub: &str, groups: &[&str]) -> TokenRequest {
    TokenRequest {
        sub: sub.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..TokenRequest::default()
    }
}

/// Verifies `token` with the key the JWKS names, as a relying party would.
fn verify(jwks: &[u8], token: &str, issuer: &str, aud: Option<&str>) -> Value {
    let set: JwkSet = serde_json::from_slice(jwks).expect("JWKS");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("kid");
    let jwk = set.find(&kid).expect("the JWKS has the token's kid");
    let key = DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    match aud {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .expect("the token verifies")
        .claims
}

#[test]
fn the_jwks_publishes_one_es256_key_named_by_its_thumbprint() {
    let i = issuer();
    let doc: Value = serde_json::from_slice(i.jwks()).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(
        (&k["kty"], &k["crv"], &k["alg"], &k["use"]),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig")
        )
    );
    assert_eq!(k["kid"], i.kid());
    // 32-byte coordinates, base64url without padding.
    for c in ["x", "y"] {
        let raw = URL_SAFE_NO_PAD.decode(k[c].as_str().unwrap()).unwrap();
        assert_eq!(raw.len(), 32, "{c}");
    }
    assert!(k.get("d").is_none(), "no private part");
    // RFC 7638 thumbprint, recomputed here.
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        k["x"].as_str().unwrap(),
        k["y"].as_str().unwrap()
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    assert_eq!(i.kid(), URL_SAFE_NO_PAD.encode(digest.as_ref()));
    // Each start makes its own key.
    assert_ne!(issuer().kid(), i.kid());
}

#[test]
fn tokens_carry_the_asked_claims_and_verify_with_the_jwks() {
    let i = issuer();
    let t = i.issue(&ask("alice", &["admin", "dev"]), 1_000).unwrap();
    assert_eq!(t.expires_in, 3600);
    assert_eq!(
        t.claims,
        Claims {
            iss: "weft-auth".into(),
            sub: "alice".into(),
            groups: vec!["admin".into(), "dev".into()],
            aud: None,
            iat: 1_000,
            exp: 4_600,
        }
    );
    let fresh = i.issue(&ask("alice", &["admin", "dev"]), now()).unwrap();
    let claims = verify(i.jwks(), &fresh.token, "weft-auth", None);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["groups"], json!(["admin", "dev"]));
    assert!(claims.get("aud").is_none());
    let header = jsonwebtoken::decode_header(&fresh.token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(i.kid()));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
}

#[test]
fn issuer_audience_and_lifetimes_are_configurable() {
    let i = Issuer::generate(AuthOptions {
        issuer: "https://auth.example".into(),
        audience: Some("httpbin".into()),
        default_ttl: Duration::from_secs(60),
        max_ttl: Duration::from_secs(600),
    })
    .unwrap();
    let t = i.issue(&ask("bob", &[]), now()).unwrap();
    assert_eq!(t.expires_in, 60);
    let claims = verify(i.jwks(), &t.token, "https://auth.example", Some("httpbin"));
    assert_eq!(claims["aud"], "httpbin");
    assert_eq!(claims["groups"], json!([]));
    // A request's own audience wins over the configured one.
    let own = TokenRequest {
        aud: Some("other".into()),
        ttl: Some(Duration::from_secs(600)),
        ..ask("bob", &[])
    };
    let t = i.issue(&own, now()).unwrap();
    assert_eq!(
        (t.claims.aud.as_deref(), t.expires_in),
        (Some("other"), 600)
    );
    let too_long = TokenRequest {
        ttl: Some(Duration::from_secs(601)),
        ..ask("bob", &[])
    };
    assert!(matches!(
        i.issue(&too_long, now()),
        Err(TokenError::TtlTooLong { .. })
    ));
    // Sub-second lifetimes round up to one second.
    let short = TokenRequest {
        ttl: Some(Duration::from_millis(10)),
        ..ask("bob", &[])
    };
    assert_eq!(i.issue(&short, now()).unwrap().expires_in, 1);
}

#[test]
fn bad_requests_say_why() {
    let i = issuer();
    assert_eq!(
        i.issue(&ask("", &[]), now()).unwrap_err(),
        TokenError::NoSubject
    );
    assert_eq!(
        i.issue(&ask(&"x".repeat(300), &[]), now()).unwrap_err(),
        TokenError::TooLong("sub")
    );
    let mut r = TokenRequest::default();
    let pairs = form_urlencoded::parse(b"ttl=forever");
    assert_eq!(
        r.apply_pairs(pairs),
        Err(TokenError::BadTtl("forever".into()))
    );
    assert_eq!(
        r.apply_pairs(form_urlencoded::parse(b"ttl=0s")),
        Err(TokenError::BadTtl("0s".into()))
    );
    assert_eq!(
        r.apply_json(b"[1]"),
        Err(TokenError::BadBody("JSON (an object)"))
    );
    assert_eq!(r.apply_json(b"{"), Err(TokenError::BadBody("JSON")));
    assert_eq!(
        r.apply_json(br#"{"sub": 7}"#),
        Err(TokenError::NotAString("sub"))
    );
}

#[test]
fn requests_read_queries_forms_and_json() {
    let mut r = TokenRequest::default();
    r.apply_pairs(form_urlencoded::parse(
        b"sub=alice&groups=admin,%20dev&groups=ops&ttl=15m&aud=httpbin&format=raw&scope=x",
    ))
    .unwrap();
    assert_eq!(
        r,
        TokenRequest {
            sub: "alice".into(),
            groups: vec!["admin".into(), "dev".into(), "ops".into()],
            aud: Some("httpbin".into()),
            ttl: Some(Duration::from_secs(900)),
            raw: true,
        }
    );
    let mut r = TokenRequest::default();
    r.apply_json(br#"{"sub": "bob", "groups": ["admin", "a,b"], "ttl": 30, "aud": ""}"#)
        .unwrap();
    assert_eq!(r.sub, "bob");
    assert_eq!(r.groups, ["admin", "a", "b"]);
    assert_eq!(r.ttl, Some(Duration::from_secs(30)));
    assert_eq!(r.aud, None);
    let mut r = TokenRequest::default();
    r.apply_json(br#"{"sub": "carol", "groups": "admin,dev"}"#)
        .unwrap();
    assert_eq!(r.groups, ["admin", "dev"]);
}

// ---------------------------------------------------------------------------------------------
// Over HTTP

struct Server {
    addr: SocketAddr,
    jwks: Bytes,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = Arc::new(issuer());
    let jwks = Bytes::copy_from_slice(issuer.jwks());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_auth(listener, issuer, shutdown.clone()));
    Server {
        addr,
        jwks,
        shutdown,
        task,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

async fn send(req: Request<Full<Bytes>>) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let rsp = client.request(req).await.expect("request");
    let (parts, body) = rsp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(s: &Server, path: &str) -> Reply {
    send(
        Request::get(format!("http://{}{path}", s.addr))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

async fn post(s: &Server, path: &str, content_type: &str, body: &'static str) -> Reply {
    send(
        Request::post(format!("http://{}{path}", s.addr))
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn serves_the_jwks_and_health() {
    let s = start().await;
    let r = get(&s, "/.well-known/jwks.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[CONTENT_TYPE], "application/json");
    assert_eq!(r.body, s.jwks);
    assert_eq!(get(&s, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(&s, "/readyz").await.status, StatusCode::OK);
    let r = get(&s, "/nothing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].as_str().unwrap().contains("/token"));
    let r = post(&s, "/.well-known/jwks.json", "text/plain", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[ALLOW], "GET, HEAD");
}

#[tokio::test]
async fn issues_tokens_by_get_and_post() {
    let s = start().await;
    let r = get(&s, "/token?sub=alice&groups=admin,dev&ttl=1h").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3600);
    assert_eq!(j["claims"]["groups"], json!(["admin", "dev"]));
    let claims = verify(
        &s.jwks,
        j["access_token"].as_str().unwrap(),
        "weft-auth",
        None,
    );
    assert_eq!(claims, j["claims"]);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );

    let r = post(
        &s,
        "/token",
        "application/x-www-form-urlencoded",
        "sub=bob&groups=dev&aud=httpbin",
    )
    .await;
    let j = r.json();
    let claims = verify(
        &s.jwks,
        j["access_token"].as_str().unwrap(),
        "weft-auth",
        Some("httpbin"),
    );
    assert_eq!(
        (&claims["sub"], &claims["aud"]),
        (&json!("bob"), &json!("httpbin"))
    );

    let r = post(
        &s,
        "/token?format=raw",
        "application/json",
        r#"{"sub": "carol", "groups": ["admin"], "ttl": "5m"}"#,
    )
    .await;
    assert_eq!(r.headers[CONTENT_TYPE], "text/plain");
    let token = std::str::from_utf8(&r.body).unwrap();
    assert!(token.ends_with('\n'));
    let claims = verify(&s.jwks, token.trim_end(), "weft-auth", None);
    assert_eq!(claims["groups"], json!(["admin"]));
}

#[tokio::test]
async fn refuses_bad_token_requests_with_400() {
    let s = start().await;
    for path in [
        "/token",
        "/token?sub=alice&ttl=soon",
        "/token?sub=alice&ttl=48h",
    ] {
        let r = get(&s, path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
    }
    let r = post(&s, "/token", "application/json", "{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(
        Request::delete(format!("http://{}/token", s.addr))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[ALLOW], "GET, POST");
}

#[tokio::test]
async fn stops_on_shutdown() {
    let s = start().await;
    assert_eq!(get(&s, "/healthz").await.status, StatusCode::OK);
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("drains")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}

#[tokio::test]
async fn readyz_says_no_while_draining() {
    let i = issuer();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let req = Request::get("/readyz").body(Empty::<Bytes>::new()).unwrap();
    let rsp = handle(&i, &shutdown, req).await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn a_key_kept_in_a_file_signs_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/auth-key.der");
    let first = Issuer::open(AuthOptions::default(), &path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key is the owner's only");
    let again = Issuer::open(AuthOptions::default(), &path).unwrap();
    assert_eq!(first.kid(), again.kid());
    assert_eq!(first.jwks(), again.jwks());
    // A token signed before the restart verifies against the JWKS served after it.
    let ask = TokenRequest {
        sub: "alice".into(),
        ..TokenRequest::default()
    };
    let t = first.issue(&ask, now()).unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(again.jwks()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&t.token, &key, &v).unwrap();
    assert_eq!(claims.claims["sub"], "alice");
    // Not a key: an error that names the file.
    std::fs::write(&path, b"not a key").unwrap();
    let e = Issuer::open(AuthOptions::default(), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("auth-key.der"), "{e}");
}
