use super::jwks::{Fetch, JwksError};
use super::*;
use http_body_util::BodyExt;
use jsonwebtoken::{EncodingKey, Header};
use model::security::{RequestAuthn, Scope};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;

const ISS: &str = "https://auth.example";
const OTHER_ISS: &str = "https://other.example";

// ---------------------------------------------------------------------------------------------
// Keys and tokens

/// RSA keys made once with openssl for these tests (ring cannot generate RSA keys; EC and
/// Ed25519 keys are generated per test).
const RSA_PEM: &str = include_str!("testdata/rsa.pem");
const OTHER_RSA_PEM: &str = include_str!("testdata/rsa-other.pem");

struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: &str, alg: Algorithm, pem: &str) -> TestKey {
    use rcgen::PublicKeyData;
    use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};
    use x509_parser::public_key::PublicKey;
    let pair = rcgen::KeyPair::from_pem(pem).unwrap();
    let spki = pair.subject_public_key_info();
    let (_, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let PublicKey::RSA(rsa) = info.parsed().unwrap() else {
        panic!("not an RSA key")
    };
    let strip = |b: &[u8]| b64(&b[b.iter().take_while(|x| **x == 0).count()..]);
    TestKey {
        kid: kid.into(),
        alg,
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "n": strip(rsa.modulus), "e": strip(rsa.exponent)}),
    }
}

fn ec_key(kid: &str, alg: Algorithm) -> TestKey {
    let (sig, crv) = match alg {
        Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256"),
        _ => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384"),
    };
    let pair = rcgen::KeyPair::generate_for(sig).unwrap();
    let point = pair.public_key_raw();
    let half = (point.len() - 1) / 2;
    TestKey {
        kid: kid.into(),
        alg,
        encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..])}),
    }
}

fn ed_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(pair.public_key_raw())}),
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a valid token from [`ISS`] for `alice`, with `extra` merged in (`null` removes).
fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISS, "sub": "alice", "exp": now() + 3600, "iat": now()});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let header = Header {
        kid: Some(key.kid.clone()),
        ..Header::new(key.alg)
    };
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Authenticators

fn rule(issuer: &str, keys: &str) -> JwtRule {
    JwtRule {
        issuer: issuer.into(),
        jwks: Some(keys.into()),
        ..Default::default()
    }
}

fn workload_scope() -> Scope {
    Scope::Workload {
        namespace: "foo".into(),
        labels: [("app".to_string(), "httpbin".to_string())].into(),
    }
}

fn spec_with(rules: Vec<JwtRule>) -> SecuritySpec {
    let mut s = SecuritySpec::new();
    s.request_authns = vec![RequestAuthn {
        name: "foo/jwt".into(),
        scope: workload_scope(),
        rules,
    }];
    s
}

fn labels() -> Labels {
    [("app".to_string(), "httpbin".to_string())].into()
}

fn store() -> JwksStore {
    JwksStore::new(Handle::current())
}

fn authenticator(rules: Vec<JwtRule>) -> JwtAuthenticator {
    let a = JwtAuthenticator::compile(&spec_with(rules), "foo", &labels(), &store());
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    a
}

fn bearer(token: &str) -> Request<()> {
    Request::builder()
        .uri("/headers")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

fn check(a: &JwtAuthenticator, token: &str) -> Result<Option<VerifiedJwt>, JwtError> {
    a.authenticate_request(&mut bearer(token))
}

// ---------------------------------------------------------------------------------------------
// Verification

#[tokio::test]
async fn every_accepted_algorithm_verifies() {
    let keys = [
        rsa_key("rs256", Algorithm::RS256, RSA_PEM),
        rsa_key("rs384", Algorithm::RS384, RSA_PEM),
        rsa_key("rs512", Algorithm::RS512, RSA_PEM),
        rsa_key("ps256", Algorithm::PS256, RSA_PEM),
        ec_key("es256", Algorithm::ES256),
        ec_key("es384", Algorithm::ES384),
        ed_key("ed"),
    ];
    let a = authenticator(vec![rule(ISS, &jwks(&keys.iter().collect::<Vec<_>>()))]);
    for key in &keys {
        let token = sign(
            key,
            &claims(json!({"aud": ["web", "api"], "azp": "frontend", "groups": ["dev"]})),
        );
        let jwt = check(&a, &token)
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.alg))
            .unwrap();
        assert_eq!(jwt.issuer, ISS);
        assert_eq!(jwt.subject, "alice");
        assert_eq!(jwt.principal, format!("{ISS}/alice"));
        assert_eq!(jwt.audiences, ["web", "api"]);
        assert_eq!(jwt.presenter.as_deref(), Some("frontend"));
        assert_eq!(jwt.claims["groups"], json!(["dev"]));
    }
}

#[tokio::test]
async fn without_a_kid_every_fitting_key_is_tried() {
    let (k1, k2) = (
        rsa_key("a", Algorithm::RS256, OTHER_RSA_PEM),
        rsa_key("b", Algorithm::RS256, RSA_PEM),
    );
    let a = authenticator(vec![rule(ISS, &jwks(&[&k1, &k2]))]);
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(json!({})),
        &k2.encoding,
    )
    .unwrap();
    assert!(check(&a, &token).unwrap().is_some());
}

#[tokio::test]
async fn no_token_passes() {
    let key = ec_key("k", Algorithm::ES256);
    let a = authenticator(vec![rule(ISS, &jwks(&[&key]))]);
    let mut req = Request::builder().uri("/").body(()).unwrap();
    assert_eq!(a.authenticate_request(&mut req), Ok(None));
    let mut basic = Request::builder()
        .uri("/")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(())
        .unwrap();
    assert_eq!(a.authenticate_request(&mut basic), Ok(None));
    assert!(JwtAuthenticator::default().is_empty());
}

#[tokio::test]
async fn every_failure_has_its_reason() {
    let key = rsa_key("k", Algorithm::RS256, RSA_PEM);
    let impostor = rsa_key("k", Algorithm::RS256, OTHER_RSA_PEM);
    let mut r = rule(ISS, &jwks(&[&key]));
    r.audiences = vec!["api".into(), "web".into()];
    let a = authenticator(vec![r]);
    let ok = claims(json!({"aud": "api"}));
    assert!(check(&a, &sign(&key, &ok)).unwrap().is_some());

    let cases: Vec<(String, JwtError)> = vec![
        (
            sign(&key, &claims(json!({"aud": "api", "exp": now() - 3600}))),
            JwtError::Expired,
        ),
        (
            sign(&key, &claims(json!({"aud": "api", "nbf": now() + 3600}))),
            JwtError::NotYetValid,
        ),
        (sign(&impostor, &ok), JwtError::BadSignature),
        (
            sign(&rsa_key("k2", Algorithm::RS256, RSA_PEM), &ok),
            JwtError::UnknownKid {
                issuer: ISS.into(),
                kid: "k2".into(),
            },
        ),
        (
            sign(&key, &claims(json!({"aud": "api", "iss": OTHER_ISS}))),
            JwtError::WrongIssuer(OTHER_ISS.into()),
        ),
        (
            sign(&key, &claims(json!({"aud": "other"}))),
            JwtError::WrongAudience(ISS.into()),
        ),
        (
            sign(&key, &claims(json!({"aud": ["x", "y"]}))),
            JwtError::WrongAudience(ISS.into()),
        ),
        (
            sign(&key, &claims(json!({}))),
            JwtError::WrongAudience(ISS.into()),
        ),
        (
            unsigned(json!({"alg": "none", "typ": "JWT"}), &ok),
            JwtError::AlgNone,
        ),
        (
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &ok,
                &EncodingKey::from_secret(b"s"),
            )
            .unwrap(),
            JwtError::UnsupportedAlg("HS256".into()),
        ),
        (
            unsigned(json!({"alg": "ES512"}), &ok),
            JwtError::UnsupportedAlg("ES512".into()),
        ),
        (
            "not-a-jwt".into(),
            JwtError::Malformed("a JWT has three dot-separated parts"),
        ),
        (
            "a.b.c.d".into(),
            JwtError::Malformed("a JWT has three dot-separated parts"),
        ),
        (
            "!!.e30.sig".into(),
            JwtError::Malformed("the header is not base64url-encoded JSON"),
        ),
        (
            sign(&key, &claims(json!({"aud": "api", "iss": null}))),
            JwtError::Malformed("the token has no `iss` claim"),
        ),
        (
            sign(&key, &claims(json!({"aud": "api", "exp": "tomorrow"}))),
            JwtError::Malformed("`exp` and `nbf` must be whole seconds"),
        ),
    ];
    for (token, want) in cases {
        assert_eq!(check(&a, &token), Err(want.clone()), "{want}");
    }
    // A tampered payload: the signature no longer verifies.
    let good = sign(&key, &ok);
    let parts: Vec<&str> = good.split('.').collect();
    let forged = claims(json!({"aud": "api", "sub": "admin"}));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(check(&a, &tampered), Err(JwtError::BadSignature));
}

#[tokio::test]
async fn times_have_a_leeway() {
    let key = ed_key("k");
    let a = authenticator(vec![rule(ISS, &jwks(&[&key]))]);
    let slightly_late = claims(json!({"exp": now() - 30}));
    assert!(check(&a, &sign(&key, &slightly_late)).unwrap().is_some());
    let slightly_early = claims(json!({"nbf": now() + 30}));
    assert!(check(&a, &sign(&key, &slightly_early)).unwrap().is_some());
    let no_exp = claims(json!({"exp": null}));
    assert!(
        check(&a, &sign(&key, &no_exp)).unwrap().is_some(),
        "exp is optional, as in Envoy"
    );
}

#[tokio::test]
async fn a_key_only_verifies_the_algorithm_it_allows() {
    let mut key = rsa_key("k", Algorithm::RS256, RSA_PEM);
    key.jwk["alg"] = json!("RS256");
    let a = authenticator(vec![rule(ISS, &jwks(&[&key]))]);
    assert!(check(&a, &sign(&key, &claims(json!({}))))
        .unwrap()
        .is_some());
    let ps = TestKey {
        alg: Algorithm::PS256,
        ..rsa_key("k", Algorithm::PS256, RSA_PEM)
    };
    assert_eq!(
        check(&a, &sign(&ps, &claims(json!({})))),
        Err(JwtError::BadSignature)
    );
    // An EC token against an RSA key of the same kid.
    let ec = ec_key("k", Algorithm::ES256);
    assert_eq!(
        check(&a, &sign(&ec, &claims(json!({})))),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn key_sets_skip_what_they_cannot_use() {
    let ed = ed_key("ed");
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AQ", "y": "AQ"},
        {"kty": "RSA", "kid": "odd-alg", "alg": "RSA-OAEP-9000", "n": "AQAB", "e": "AQAB"},
        {"kty": "weird"},
        ed.jwk,
    ]});
    let set = KeySet::parse(&doc.to_string()).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.has_kid("ed"));
    let err = |json: &str| super::jwks::parse_key_set(json).unwrap_err();
    assert!(matches!(err("{"), JwksError::NotJson(_)));
    assert_eq!(err("{}"), JwksError::NoKeysList);
    assert_eq!(
        err(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
        JwksError::NoUsableKey
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[tokio::test]
async fn misconfigured_rules_fail_closed_and_say_why() {
    let key = ec_key("k", Algorithm::ES256);
    let mut spec = spec_with(vec![
        rule(ISS, "{not json"),
        JwtRule {
            issuer: OTHER_ISS.into(),
            ..Default::default()
        },
        JwtRule {
            issuer: "https://tls.example".into(),
            jwks_uri: Some("https://tls.example/jwks".into()),
            ..Default::default()
        },
        JwtRule {
            issuer: "https://header.example".into(),
            jwks: Some(jwks(&[&key])),
            from_headers: vec![("bad header".into(), String::new())],
            ..Default::default()
        },
    ]);
    spec.request_authns[0].name = "foo/broken".into();
    let a = JwtAuthenticator::compile(&spec, "foo", &labels(), &store());
    let errors: Vec<String> = a.errors().iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].starts_with("RequestAuthentication foo/broken: jwtRules[0] (issuer https://auth.example): jwks: the JWKS is not JSON"), "{errors:?}");
    assert!(
        errors[1].ends_with("neither jwks nor jwksUri is set"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("https JWKS fetching is not supported"),
        "{errors:?}"
    );
    assert!(
        errors[3].contains("bad header name \"bad header\""),
        "{errors:?}"
    );
    let token = sign(&key, &claims(json!({})));
    assert_eq!(
        check(&a, &token),
        Err(JwtError::JwksUnavailable(ISS.into()))
    );
    let other = sign(&key, &claims(json!({"iss": OTHER_ISS})));
    assert_eq!(
        check(&a, &other),
        Err(JwtError::JwksUnavailable(OTHER_ISS.into()))
    );
}

#[tokio::test]
async fn scopes_select_rules_and_the_most_specific_wins() {
    let (workload_key, mesh_key) = (ec_key("w", Algorithm::ES256), ec_key("m", Algorithm::ES256));
    let mut s = SecuritySpec::new();
    s.request_authns = vec![
        RequestAuthn {
            name: "istio-system/mesh".into(),
            scope: Scope::Mesh,
            rules: vec![
                rule(ISS, &jwks(&[&mesh_key])),
                rule(OTHER_ISS, &jwks(&[&mesh_key])),
            ],
        },
        RequestAuthn {
            name: "foo/workload".into(),
            scope: workload_scope(),
            rules: vec![rule(ISS, &jwks(&[&workload_key]))],
        },
        RequestAuthn {
            name: "bar/elsewhere".into(),
            scope: Scope::Namespace("bar".into()),
            rules: vec![rule("https://bar.example", &jwks(&[&mesh_key]))],
        },
    ];
    let a = JwtAuthenticator::compile(&s, "foo", &labels(), &store());
    let token = |k: &TestKey, iss: &str| sign(k, &claims(json!({"iss": iss})));
    assert!(check(&a, &token(&workload_key, ISS)).unwrap().is_some());
    assert!(matches!(
        check(&a, &token(&mesh_key, ISS)),
        Err(JwtError::UnknownKid { .. })
    ));
    assert!(check(&a, &token(&mesh_key, OTHER_ISS)).unwrap().is_some());
    assert_eq!(
        check(&a, &token(&mesh_key, "https://bar.example")),
        Err(JwtError::WrongIssuer("https://bar.example".into()))
    );
}

// ---------------------------------------------------------------------------------------------
// Where tokens are, and what the request becomes

#[tokio::test]
async fn tokens_are_found_where_the_rules_say() {
    let key = ed_key("k");
    let token = sign(&key, &claims(json!({})));
    let default = authenticator(vec![rule(ISS, &jwks(&[&key]))]);
    let get = |uri: &str, headers: &[(&str, &str)]| {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    };
    let found = |a: &JwtAuthenticator, mut req: Request<()>| {
        a.authenticate_request(&mut req).unwrap().is_some()
    };
    assert!(
        found(
            &default,
            get("/", &[("authorization", &format!("bearer {token}"))])
        ),
        "the scheme is case-insensitive"
    );
    assert!(found(
        &default,
        get(&format!("/x?a=1&access_token={token}"), &[])
    ));
    assert!(!found(&default, get("/", &[("x-jwt", &token)])));

    let custom = authenticator(vec![JwtRule {
        from_headers: vec![
            ("X-Jwt-Assertion".into(), String::new()),
            ("x-auth".into(), "Token ".into()),
        ],
        from_params: vec!["jwt".into()],
        from_cookies: vec!["session".into()],
        ..rule(ISS, &jwks(&[&key]))
    }]);
    assert!(found(&custom, get("/", &[("x-jwt-assertion", &token)])));
    assert!(found(
        &custom,
        get("/", &[("x-auth", &format!("Token {token}"))])
    ));
    assert!(!found(
        &custom,
        get("/", &[("x-auth", &format!("Bearer {token}"))])
    ));
    assert!(found(&custom, get(&format!("/?jwt={token}"), &[])));
    assert!(found(
        &custom,
        get(
            "/",
            &[("cookie", &format!("theme=dark; session={token}; x=y"))]
        )
    ));
    assert!(!found(
        &custom,
        get("/", &[("cookie", &format!("other={token}"))])
    ));
    // Configured locations replace the defaults.
    assert!(!found(
        &custom,
        get("/", &[("authorization", &format!("Bearer {token}"))])
    ));
    assert!(!found(
        &custom,
        get(&format!("/?access_token={token}"), &[])
    ));
}

#[tokio::test]
async fn each_token_is_checked_against_its_issuers_rule() {
    let (k1, k2) = (
        ec_key("one", Algorithm::ES256),
        ec_key("two", Algorithm::ES384),
    );
    let a = authenticator(vec![
        rule(ISS, &jwks(&[&k1])),
        JwtRule {
            from_headers: vec![("x-other".into(), String::new())],
            ..rule(OTHER_ISS, &jwks(&[&k2]))
        },
    ]);
    let t1 = sign(&k1, &claims(json!({})));
    let t2 = sign(&k2, &claims(json!({"iss": OTHER_ISS, "sub": "bob"})));
    assert_eq!(
        check(&a, &t1).unwrap().unwrap().principal,
        format!("{ISS}/alice")
    );
    let mut req = Request::builder()
        .uri("/")
        .header("x-other", &t2)
        .body(())
        .unwrap();
    assert_eq!(
        a.authenticate_request(&mut req).unwrap().unwrap().principal,
        format!("{OTHER_ISS}/bob")
    );
    // The other issuer's token where only the first rule looks.
    assert_eq!(check(&a, &t2), Err(JwtError::WrongIssuer(OTHER_ISS.into())));
    // Every token present must be valid.
    let expired = sign(&k2, &claims(json!({"iss": OTHER_ISS, "exp": now() - 3600})));
    let mut both = Request::builder()
        .uri("/")
        .header("authorization", format!("Bearer {t1}"))
        .header("x-other", expired)
        .body(())
        .unwrap();
    assert_eq!(a.authenticate_request(&mut both), Err(JwtError::Expired));
}

#[tokio::test]
async fn the_request_is_rewritten_after_success() {
    let key = rsa_key("k", Algorithm::RS256, RSA_PEM);
    let c = claims(json!({"groups": ["a"], "level": 3, "admin": true, "org": {"team": "blue"}}));
    let token = sign(&key, &c);
    let a = authenticator(vec![JwtRule {
        output_payload_to_header: Some("x-jwt-payload".into()),
        output_claim_to_headers: vec![
            ("x-sub".into(), "sub".into()),
            ("x-level".into(), "level".into()),
            ("x-admin".into(), "admin".into()),
            ("x-team".into(), "org.team".into()),
            ("x-groups".into(), "groups".into()),
            ("x-missing".into(), "nope".into()),
        ],
        ..rule(ISS, &jwks(&[&key]))
    }]);
    let mut req = bearer(&token);
    req.headers_mut()
        .insert("x-sub", "spoofed".parse().unwrap());
    req.headers_mut()
        .insert("x-groups", "spoofed".parse().unwrap());
    assert!(a.authenticate_request(&mut req).unwrap().is_some());
    let h = req.headers();
    assert!(
        h.get("authorization").is_none(),
        "forwardOriginalToken defaults to false"
    );
    assert_eq!(h["x-sub"], "alice");
    assert_eq!(h["x-level"], "3");
    assert_eq!(h["x-admin"], "true");
    assert_eq!(h["x-team"], "blue");
    assert!(
        h.get("x-groups").is_none(),
        "lists are not copied, and the spoofed value is gone"
    );
    assert!(h.get("x-missing").is_none());
    let payload = B64.decode(h["x-jwt-payload"].as_bytes()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), c);
    assert_eq!(req.uri(), "/headers", "the URI is put back");

    // Output headers a client sends are dropped even without a token.
    let mut spoof = Request::builder()
        .uri("/")
        .header("x-jwt-payload", "e30")
        .header("x-sub", "root")
        .body(())
        .unwrap();
    assert_eq!(a.authenticate_request(&mut spoof), Ok(None));
    assert!(spoof.headers().is_empty());

    let keep = authenticator(vec![JwtRule {
        forward_original_token: true,
        ..rule(ISS, &jwks(&[&key]))
    }]);
    let mut req = bearer(&token);
    keep.authenticate_request(&mut req).unwrap();
    assert_eq!(req.headers()["authorization"], format!("Bearer {token}"));
}

#[tokio::test]
async fn the_401_answer_is_envoys() {
    let rsp = unauthorized_response("http://httpbin.foo:8000/headers\"");
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        rsp.headers()["www-authenticate"],
        "Bearer realm=\"http://httpbin.foo:8000/headers\", error=\"invalid_token\""
    );
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], UNAUTHORIZED_BODY.as_bytes());
    assert_eq!(UNAUTHORIZED_BODY, "Jwt verification fails");
}

// ---------------------------------------------------------------------------------------------
// Remote key sets over real HTTP

/// A JWKS server on 127.0.0.1:0 serving whatever `body` holds; `stop` takes it down for good
/// (listener and open connections).
struct JwksServer {
    uri: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    /// Each request's target as sent (origin or absolute form) and its `Host`.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (b, h, sn) = (body.clone(), hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (b, h, sn) = (b.clone(), h.clone(), sn.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        sn.lock().unwrap().push((req.uri().to_string(), host));
                        let doc = b.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(doc)),
                            ))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        JwksServer {
            uri,
            body,
            hits,
            seen,
            task,
        }
    }

    fn stop(&self) {
        self.task.abort();
    }
}

fn remote_rule(issuer: &str, uri: &str) -> JwtRule {
    JwtRule {
        issuer: issuer.into(),
        jwks_uri: Some(uri.into()),
        timeout_ms: Some(500),
        ..Default::default()
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn fast() -> JwksSettings {
    JwksSettings {
        refresh_interval: Duration::from_millis(100),
        min_refresh_interval: Duration::from_millis(50),
        retry_interval: Duration::from_millis(50),
        first_fetch_patience: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn remote_keys_are_fetched_and_served_stale_when_the_host_is_down() {
    let key = ec_key("k", Algorithm::ES256);
    let server = JwksServer::start(jwks(&[&key])).await;
    let store = JwksStore::with_settings(Handle::current(), fast());
    let a = JwtAuthenticator::compile(
        &spec_with(vec![remote_rule(ISS, &server.uri)]),
        "foo",
        &labels(),
        &store,
    );
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    let token = sign(&key, &claims(json!({})));
    let remote = a.remotes().next().unwrap().clone();
    remote.fetched(1).await;
    assert!(check(&a, &token).unwrap().is_some());

    server.stop();
    let before = remote.fetch_count();
    // Several refresh periods pass with the host down: the old keys keep working.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(remote.fetch_count(), before, "no fetch can succeed");
    assert!(check(&a, &token).unwrap().is_some());
}

#[tokio::test]
async fn an_unknown_kid_triggers_a_refresh() {
    let (old, new) = (ed_key("old"), ed_key("new"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let settings = JwksSettings {
        refresh_interval: Duration::from_secs(3600),
        ..fast()
    };
    let store = JwksStore::with_settings(Handle::current(), settings);
    let a = JwtAuthenticator::compile(
        &spec_with(vec![remote_rule(ISS, &server.uri)]),
        "foo",
        &labels(),
        &store,
    );
    let remote = a.remotes().next().unwrap().clone();
    remote.fetched(1).await;
    // The issuer rotates its key.
    *server.body.lock().unwrap() = jwks(&[&old, &new]);
    let token = sign(&new, &claims(json!({})));
    assert!(matches!(
        check(&a, &token),
        Err(JwtError::UnknownKid { .. })
    ));
    eventually("the new key is fetched", || check(&a, &token).is_ok()).await;
    assert_eq!(remote.fetch_count(), 2);
}

#[test]
fn names_go_through_the_mesh_proxy_addresses_do_not() {
    use super::jwks::via_mesh;
    for host in [
        "auth",
        "auth.default",
        "auth.default.svc.cluster.local",
        "idp.example.com",
    ] {
        assert!(via_mesh(host), "{host}");
    }
    for host in [
        "127.0.0.1",
        "10.1.2.3",
        "[::1]",
        "::1",
        "localhost",
        "LOCALHOST",
        "a.localhost",
    ] {
        assert!(!via_mesh(host), "{host}");
    }
}

#[tokio::test]
async fn a_service_name_is_fetched_through_the_mesh_proxy() {
    let key = ec_key("k", Algorithm::ES256);
    // Stands in for the proxy's outbound listener: it sees the absolute-form request.
    let proxy = JwksServer::start(jwks(&[&key])).await;
    let addr: std::net::SocketAddr = proxy.uri["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let store = JwksStore::with_proxy(Handle::current(), fast(), Some(addr));
    let uri = "http://auth.default.svc.cluster.local/.well-known/jwks.json";
    let a = JwtAuthenticator::compile(
        &spec_with(vec![remote_rule(ISS, uri)]),
        "foo",
        &labels(),
        &store,
    );
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    let remote = a.remotes().next().unwrap().clone();
    remote.fetched(1).await;
    assert!(check(&a, &sign(&key, &claims(json!({}))))
        .unwrap()
        .is_some());
    let (target, host) = proxy.seen.lock().unwrap()[0].clone();
    assert_eq!(target, uri, "absolute form, as to an HTTP proxy");
    assert_eq!(host, "auth.default.svc.cluster.local");

    // With a port, and the short name: the same.
    let store = JwksStore::with_proxy(Handle::current(), fast(), Some(addr));
    let remote = store.remote("http://auth:8080/keys", None);
    remote.fetched(1).await;
    let (target, host) = proxy.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        (target.as_str(), host.as_str()),
        ("http://auth:8080/keys", "auth:8080")
    );
}

#[tokio::test]
async fn an_ip_literal_is_fetched_directly_even_with_a_mesh_proxy() {
    let key = ec_key("k", Algorithm::ES256);
    let server = JwksServer::start(jwks(&[&key])).await;
    let proxy = JwksServer::start(jwks(&[&key])).await;
    let addr = proxy.uri["http://".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let store = JwksStore::with_proxy(Handle::current(), fast(), Some(addr));
    let remote = store.remote(&server.uri, None);
    remote.fetched(1).await;
    assert!(server.hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(proxy.hits.load(Ordering::SeqCst), 0);
    let (target, _) = server.seen.lock().unwrap()[0].clone();
    assert_eq!(target, "/jwks.json", "origin form to the host itself");
}

#[tokio::test]
async fn before_the_first_fetch_tokens_are_refused_as_unavailable() {
    let key = ed_key("k");
    // Nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = JwksStore::with_settings(Handle::current(), fast());
    let uri = format!("http://127.0.0.1:{port}/jwks");
    let a = JwtAuthenticator::compile(
        &spec_with(vec![remote_rule(ISS, &uri)]),
        "foo",
        &labels(),
        &store,
    );
    let token = sign(&key, &claims(json!({})));
    assert_eq!(
        check(&a, &token),
        Err(JwtError::JwksUnavailable(ISS.into()))
    );
    // Still so once the fetches have failed for the whole patience (many attempts).
    let remote = a.remotes().next().unwrap().clone();
    eventually("the JWKS to settle without keys", || remote.settled()).await;
    assert!(remote.keys().is_none());
    assert_eq!(
        check(&a, &token),
        Err(JwtError::JwksUnavailable(ISS.into()))
    );
}

#[tokio::test]
async fn snapshots_share_one_fetcher_per_uri() {
    let key = ed_key("k");
    let server = JwksServer::start(jwks(&[&key])).await;
    let store = JwksStore::with_settings(
        Handle::current(),
        JwksSettings {
            refresh_interval: Duration::from_secs(3600),
            ..fast()
        },
    );
    let spec = spec_with(vec![remote_rule(ISS, &server.uri)]);
    let first = JwtAuthenticator::compile(&spec, "foo", &labels(), &store);
    let remote = first.remotes().next().unwrap().clone();
    remote.fetched(1).await;
    let second = JwtAuthenticator::compile(&spec, "foo", &labels(), &store);
    assert!(Arc::ptr_eq(&remote, second.remotes().next().unwrap()));
    assert!(check(&second, &sign(&key, &claims(json!({}))))
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// Refresh timing, with a stub fetcher and paused time

#[derive(Default)]
struct Stub {
    calls: AtomicUsize,
    failing: AtomicBool,
    body: Mutex<String>,
}

impl Fetch for Stub {
    fn fetch(
        &self,
        uri: &str,
        _timeout: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, JwksError>> + Send>>
    {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let result = if self.failing.load(Ordering::SeqCst) {
            Err(JwksError::Status {
                uri: uri.into(),
                status: 503,
            })
        } else {
            Ok(self.body.lock().unwrap().clone())
        };
        Box::pin(async move { result })
    }
}

impl Stub {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn advance(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn refreshes_are_periodic_rate_limited_and_back_off() {
    let stub = Arc::new(Stub::default());
    *stub.body.lock().unwrap() = jwks(&[&ed_key("k")]);
    let settings = JwksSettings {
        refresh_interval: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(10),
        retry_interval: Duration::from_secs(1),
        first_fetch_patience: Duration::from_secs(10),
    };
    let store = JwksStore::with_fetcher(Handle::current(), settings, stub.clone());
    let remote = store.remote("http://jwks.test/keys", None);
    remote.fetched(1).await;
    assert_eq!(stub.calls(), 1);

    // Periodic.
    advance(299.0).await;
    assert_eq!(stub.calls(), 1);
    advance(2.0).await;
    assert_eq!(stub.calls(), 2, "refreshed after 300 s");

    // Unknown kids: a storm of refresh requests makes one fetch, not before 10 s since the last.
    for _ in 0..100 {
        remote.refresh();
    }
    advance(5.0).await;
    assert_eq!(stub.calls(), 2);
    advance(6.0).await;
    assert_eq!(stub.calls(), 3);
    for _ in 0..100 {
        remote.refresh();
    }
    advance(11.0).await;
    assert_eq!(stub.calls(), 4);

    // Failures: retried after 1 s, 2 s, 4 s… and the keys stay.
    // (Now t = 323 s; the last fetch was at 320 s.)
    stub.failing.store(true, Ordering::SeqCst);
    advance(297.5).await; // the periodic fetch at 620 s fails
    let failed_at = stub.calls();
    assert_eq!(failed_at, 5);
    advance(1.0).await; // retried at 621 s
    assert_eq!(stub.calls(), failed_at + 1);
    advance(2.0).await; // 623 s
    assert_eq!(stub.calls(), failed_at + 2);
    advance(4.0).await; // 627 s
    assert_eq!(stub.calls(), failed_at + 3);
    assert!(remote.keys().is_some(), "stale keys are kept");
    stub.failing.store(false, Ordering::SeqCst);
    advance(8.0).await; // 635 s
    assert_eq!(stub.calls(), failed_at + 4);
    assert_eq!(remote.fetch_count(), 5);

    // The task stops with its last handle.
    let calls = stub.calls();
    drop(remote);
    advance(3600.0).await;
    assert_eq!(stub.calls(), calls);
    // A new handle for the same URI starts afresh.
    let again = store.remote("http://jwks.test/keys", None);
    again.fetched(1).await;
    assert_eq!(stub.calls(), calls + 1);
}

#[tokio::test(start_paused = true)]
async fn a_jwks_never_fetched_is_retried_fast_and_settles_once_fetched_or_after_its_patience() {
    let settings = JwksSettings {
        refresh_interval: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(10),
        retry_interval: Duration::from_secs(1),
        first_fetch_patience: Duration::from_secs(10),
    };
    let settled = Arc::new(AtomicUsize::new(0));
    let counter = settled.clone();
    let stub = Arc::new(Stub::default());
    stub.failing.store(true, Ordering::SeqCst);
    *stub.body.lock().unwrap() = jwks(&[&ed_key("k")]);
    let store =
        JwksStore::with_fetcher(Handle::current(), settings, stub.clone()).on_settled(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let t0 = tokio::time::Instant::now();
    let remote = store.remote("http://jwks.test/keys", None);
    // Failing from the start (the JWKS host is not routable yet): retried after 0.1 s, 0.2 s,
    // 0.4 s, 0.8 s, then every second, not after 1 s, 2 s, 4 s… as once keys were fetched.
    for (at, calls) in [
        (0.05, 1),
        (0.15, 2),
        (0.35, 3),
        (0.75, 4),
        (1.55, 5),
        (2.55, 6),
    ] {
        advance(at - t0.elapsed().as_secs_f64()).await;
        assert_eq!(stub.calls(), calls, "at {at} s");
    }
    assert!(
        !remote.settled(),
        "a starting proxy still waits for these keys"
    );
    assert_eq!(settled.load(Ordering::SeqCst), 0);
    // Still failing at 10.5 s, past its patience: it no longer holds the proxy back, once.
    advance(8.0).await;
    assert!(remote.settled());
    assert_eq!(settled.load(Ordering::SeqCst), 1);
    assert!(remote.keys().is_none());
    stub.failing.store(false, Ordering::SeqCst);
    remote.fetched(1).await;
    assert_eq!(settled.load(Ordering::SeqCst), 1, "told once");

    // Another JWKS that the host serves after a few tries settles with its first keys.
    let stub = Arc::new(Stub::default());
    stub.failing.store(true, Ordering::SeqCst);
    *stub.body.lock().unwrap() = jwks(&[&ed_key("k")]);
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    let store =
        JwksStore::with_fetcher(Handle::current(), settings, stub.clone()).on_settled(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
    let t1 = tokio::time::Instant::now();
    let remote = store.remote("http://jwks.test/other", None);
    advance(0.35).await;
    assert!(!remote.settled());
    stub.failing.store(false, Ordering::SeqCst);
    remote.fetched(1).await;
    assert!(remote.settled());
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    assert!(t1.elapsed() < Duration::from_secs(1), "{:?}", t1.elapsed());
}
