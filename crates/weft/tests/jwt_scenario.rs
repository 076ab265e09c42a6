//! The JWT scenario end to end, on `examples/jwt`: `auth` (`weft demo auth`) issues tokens,
//! httpbin's sidecar checks them against the JWKS it fetches by mesh name
//! (`http://auth.default.svc.cluster.local/…`, through its own outbound listener, since auth's
//! port is dynamic) and an AuthorizationPolicy lets only admins into `/admin`. As in Istio: a
//! request without a token passes authentication, so `/admin` answers it 403 (the policy wants a
//! principal); a token without the `admin` group 403; an admin's 200; an invalid token 401 with
//! `www-authenticate`, on every path. The ingress then checks tokens too, with a `jwksUri` of
//! the short name `http://auth/…` fetched through its gateway port.

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use std::net::SocketAddr;

/// What httpbin answered through the ingress.
#[derive(Debug)]
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    text: String,
    body: Value,
}

async fn call(c: &HttpClient, ingress: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let mut req = http::Request::get(format!("http://{ingress}{path}")).header("host", "httpbin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let rsp = c.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let status = rsp.status().as_u16();
    let www_authenticate = rsp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        www_authenticate,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A token from the auth service, asked for through the ingress.
async fn token(c: &HttpClient, ingress: SocketAddr, query: &str) -> (String, Value) {
    let r = get(c, ingress, "auth", &format!("/token?{query}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    (
        r.body["access_token"].as_str().unwrap().to_string(),
        r.body["claims"].clone(),
    )
}

/// A token that claims to be weft-auth's, under its `kid`, signed with another key.
fn forged(kid: &str, sub: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    let claims = serde_json::json!({
        "iss": "weft-auth", "sub": sub, "groups": ["admin"], "iat": now, "exp": now + 3600,
    });
    encode(
        &h,
        &claims,
        &EncodingKey::from_ec_der(&pair.serialize_der()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_auth_service_gate_admin() {
    let m = Mesh::up_dir(&example_dir("jwt"));
    let c = client();
    let ingress = m.ingress;

    // The auth service, through the ingress: its public key and tokens.
    let jwks = get(&c, ingress, "auth", "/.well-known/jwks.json")
        .await
        .unwrap();
    assert_eq!(jwks.status, 200, "{}", jwks.text);
    let kid = jwks.body["keys"][0]["kid"].as_str().unwrap().to_string();
    let (admin, claims) = token(&c, ingress, "sub=alice&groups=admin,dev&ttl=1h").await;
    assert_eq!(claims["iss"], "weft-auth");
    assert_eq!(claims["groups"], serde_json::json!(["admin", "dev"]));
    let (dev, _) = token(&c, ingress, "sub=bob&groups=dev").await;

    // A sidecar with JWT rules is ready only once it has fetched their keys (by mesh name):
    // the first valid token after ready is accepted.
    let ok = call(&c, ingress, "/admin", Some(&admin)).await;
    assert_eq!(ok.status, 200, "an admin's token: {ok:?}\n{}", m.stderr());
    assert_eq!(ok.body["service"], "httpbin");
    assert_eq!(ok.body["path"], "/admin");
    assert!(
        ok.body["headers"].get("authorization").is_none(),
        "the verified token is not forwarded (forwardOriginalToken: false)"
    );

    // No token: authentication passes (Istio), the policy wants a principal on /admin: 403.
    let none = call(&c, ingress, "/admin", None).await;
    assert_eq!(
        (none.status, none.text.as_str()),
        (403, "RBAC: access denied"),
        "{none:?}"
    );
    assert_eq!(none.www_authenticate, None);
    // … and the open paths need none.
    assert_eq!(call(&c, ingress, "/headers", None).await.status, 200);

    // A valid token without the claim the policy asks for: 403.
    let a = call(&c, ingress, "/admin/users", Some(&dev)).await;
    assert_eq!((a.status, a.text.as_str()), (403, "RBAC: access denied"));
    assert_eq!(call(&c, ingress, "/headers", Some(&dev)).await.status, 200);
    assert_eq!(
        call(&c, ingress, "/admin/users", Some(&admin)).await.status,
        200
    );

    // Invalid tokens: 401 with a challenge, on every path, whatever the policy would say.
    for (what, bad) in [
        ("garbage", "not-a-jwt".to_string()),
        ("forged signature", forged(&kid, "mallory")),
    ] {
        for path in ["/admin", "/headers"] {
            let a = call(&c, ingress, path, Some(&bad)).await;
            assert_eq!(a.status, 401, "{what} on {path}: {a:?}");
            assert!(
                a.www_authenticate.as_deref().is_some_and(
                    |w| w.starts_with("Bearer") && w.contains("error=\"invalid_token\"")
                ),
                "{what} on {path}: {a:?}"
            );
            assert_eq!(a.text, "Jwt verification fails");
        }
    }

    // The ingress fetches by mesh name too (through its gateway port), here the short name:
    // its rule copies `sub` into a header the app then sees, and forwards the token on.
    let file = m.files.path().join("ingress-jwt.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: ingress-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: weft-auth
    jwksUri: http://auth/.well-known/jwks.json
    forwardOriginalToken: true
    outputClaimToHeaders:
    - header: x-jwt-sub
      claim: sub
"#,
    )
    .unwrap();
    let out = m.weft(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Applied means every proxy runs it; the keys of the same jwksUri are kept.
    let seen = call(&c, ingress, "/admin", Some(&admin)).await;
    assert_eq!(seen.status, 200, "{seen:?}\n{}", m.stderr());
    assert_eq!(
        seen.body["headers"]["x-jwt-sub"],
        "alice",
        "{seen:?}\n{}",
        m.stderr()
    );
    let a = call(&c, ingress, "/headers", Some(&forged(&kid, "mallory"))).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(call(&c, ingress, "/admin", None).await.status, 403);
}
