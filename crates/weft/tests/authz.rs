//! End-to-end Istio security tasks through real proxies, with the upstream YAML shapes:
//! PeerAuthentication (STRICT / PERMISSIVE / DISABLE), AuthorizationPolicy (allow-nothing, ALLOW
//! by principal, method and path, DENY beating ALLOW) and RequestAuthentication (valid token
//! 200, bad token 401, no token 200 until a policy requires a principal, then 403).

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use model::Identity;
use proxy::tls::{self, Credentials};
use std::net::SocketAddr;
use std::sync::Arc;

/// httpbin in namespace foo (the Istio tasks' shape).
fn mesh(name: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: httpbin\n    namespace: foo\n    port: 8000\n    workloads:\n    - name: httpbin\n      labels: {{app: httpbin, version: v1}}\n      replicas: 1\n      command: [weft, demo, echo, --service, httpbin]\n"
    )
}

fn httpbin(mesh: &Mesh) -> (SocketAddr, SocketAddr) {
    let w = &mesh.status["workloads"][0];
    (
        w["inbound"].as_str().unwrap().parse().unwrap(),
        w["admin"].as_str().unwrap().parse().unwrap(),
    )
}

/// `method path` to httpbin's inbound over mTLS as `creds`: the status and the flag.
async fn as_workload(
    creds: &Arc<Credentials>,
    inbound: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, String) {
    let server = Identity::spiffe("foo", "httpbin");
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://httpbin.foo:8000{path}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = mtls_send(creds, inbound, &server, req).await.unwrap();
    let status = rsp.status().as_u16();
    let flag = rsp
        .headers()
        .get("x-weft-flag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    if status == 403 {
        assert_eq!(&body[..], b"RBAC: access denied");
    }
    (status, flag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_strict_permissive_disable() {
    let m = Mesh::up(&mesh("peerauthn"));
    let c = client();
    let (inbound, admin) = httpbin(&m);
    let plaintext = || {
        let c = c.clone();
        async move {
            match get(&c, inbound, "httpbin.foo:8000", "/headers").await {
                Ok(r) => r.status.to_string(),
                Err(_) => "refused".to_string(),
            }
        }
    };
    let meshed = || {
        let c = c.clone();
        let ingress = m.ingress;
        async move {
            get(&c, ingress, "httpbin.foo", "/headers")
                .await
                .unwrap()
                .status
        }
    };
    // PERMISSIVE (nothing set): plaintext from outside and mTLS from the mesh both work.
    assert_eq!(plaintext().await, "200");
    assert_eq!(meshed().await, 200);

    // STRICT for namespace foo: plaintext is refused at the handshake; the mesh still works.
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec:\n  mtls: {mode: STRICT}\n";
    m.apply_yaml("strict.yaml", strict);
    assert_eq!(plaintext().await, "refused");
    assert_eq!(meshed().await, 200);
    let refused = metric_sum(
        &c,
        admin,
        "weft_tls_handshake_failures_total{direction=\"inbound\",reason=\"plaintext\"",
    )
    .await;
    assert!(refused >= 1.0);

    // DISABLE for the workload (more specific than the namespace's STRICT): plaintext only,
    // and the mesh's clients switch to plaintext toward it.
    let disable = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: httpbin, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: DISABLE}\n";
    m.apply_yaml("disable.yaml", disable);
    assert_eq!(plaintext().await, "200");
    assert_eq!(meshed().await, 200);
    let mtls_client = workload_client(&m, "foo", "sleep");
    let server = Identity::spiffe("foo", "httpbin");
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    assert!(
        mtls_client
            .connector(&server)
            .connect(tls::server_name(&server), tcp)
            .await
            .is_err(),
        "a DISABLE port speaks no TLS"
    );
    m.delete_file("disable.yaml");
    m.delete_file("strict.yaml");
    assert_eq!(plaintext().await, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_follow_istio_order() {
    let m = Mesh::up(&mesh("authz"));
    let c = client();
    let (inbound, admin) = httpbin(&m);
    let sleep = workload_client(&m, "foo", "sleep");
    let other = workload_client(&m, "bar", "curl");
    assert_eq!(as_workload(&sleep, inbound, "GET", "/headers").await.0, 200);

    // allow-nothing: an ALLOW policy with no rules denies everything.
    m.apply_yaml("allow-nothing.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: foo}\nspec: {}\n",
    );
    assert_eq!(
        as_workload(&sleep, inbound, "GET", "/headers").await,
        (403, "RBAC".to_string())
    );
    let r = get(&c, m.ingress, "httpbin.foo", "/headers").await.unwrap();
    assert_eq!((r.status, r.text.as_str()), (403, "RBAC: access denied"));

    // ALLOW GET /headers and /status/* for sleep's principal only.
    m.apply_yaml(
        "httpbin-viewer.yaml",
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin-viewer
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/headers", "/status/*"]
"#,
    );
    assert_eq!(as_workload(&sleep, inbound, "GET", "/headers").await.0, 200);
    assert_eq!(
        as_workload(&sleep, inbound, "GET", "/status/201").await.0,
        201
    );
    assert_eq!(
        as_workload(&sleep, inbound, "POST", "/headers").await.0,
        403
    );
    assert_eq!(as_workload(&sleep, inbound, "GET", "/ip").await.0, 403);
    assert_eq!(as_workload(&other, inbound, "GET", "/headers").await.0, 403);

    // DENY beats ALLOW: deny sleep's GET /headers while the ALLOW above still matches it.
    m.apply_yaml(
        "deny.yaml",
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-headers
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#,
    );
    assert_eq!(as_workload(&sleep, inbound, "GET", "/headers").await.0, 403);
    assert_eq!(
        as_workload(&sleep, inbound, "GET", "/status/200").await.0,
        200
    );
    // Decisions are counted by policy.
    let denied = metric_sum(&c, admin, "weft_inbound_authz_deny_total{").await;
    assert!(denied >= 5.0, "{denied} denials counted");
}

mod jwt_task {
    //! Istio's "Authorization with JWT" task on the ingress gateway.
    use base64::Engine;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    pub struct Issuer {
        key: EncodingKey,
        pub jwks: String,
    }

    impl Issuer {
        pub fn new() -> Issuer {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let point = pair.public_key_raw();
            let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let jwks = serde_json::json!({"keys": [{
                "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            }]})
            .to_string();
            Issuer {
                key: EncodingKey::from_ec_der(&pair.serialize_der()),
                jwks,
            }
        }

        pub fn token(&self, claims: serde_json::Value) -> String {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some("k1".into());
            encode(&h, &claims, &self.key).unwrap()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_authentication_and_required_principals_on_the_ingress() {
    let issuer = jwt_task::Issuer::new();
    let m = Mesh::up(&mesh("jwt"));
    let c = client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iss = "testing@secure.istio.io";
    let valid = issuer.token(serde_json::json!({
        "iss": iss, "sub": iss, "exp": now + 3600, "groups": ["group1"],
    }));
    let no_group = issuer.token(serde_json::json!({"iss": iss, "sub": iss, "exp": now + 3600}));
    let expired = issuer.token(serde_json::json!({"iss": iss, "sub": iss, "exp": now - 3600}));
    let ask = |token: Option<String>| {
        let (c, ingress) = (c.clone(), m.ingress);
        async move {
            let mut req = http::Request::get(format!("http://{ingress}/headers"))
                .header("host", "httpbin.foo");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let rsp = c.request(req.body(Empty::new()).unwrap()).await.unwrap();
            let status = rsp.status().as_u16();
            if status == 401 {
                assert!(rsp.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"));
            }
            status
        }
    };
    m.apply_yaml(
        "jwt-example.yaml",
        &format!(
            r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "{iss}"
    jwks: '{}'
"#,
            issuer.jwks
        ),
    );
    assert_eq!(ask(Some("deadbeef".into())).await, 401);
    assert_eq!(ask(Some(valid.clone())).await, 200);
    assert_eq!(ask(Some(expired)).await, 401);
    assert_eq!(
        ask(None).await,
        200,
        "no token passes until a policy requires one"
    );

    m.apply_yaml(
        "require-jwt.yaml",
        &format!(
            r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: ["{iss}/{iss}"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
"#
        ),
    );
    assert_eq!(ask(None).await, 403);
    assert_eq!(ask(Some(valid)).await, 200);
    assert_eq!(ask(Some(no_group)).await, 403, "a token without the claim");
}

/// Istio's `legacy` namespace: a workload declared with `sidecar: false` runs as a plain process
/// outside the mesh. It is never an endpoint of its service (the ingress finds no replica), its
/// plaintext calls reach httpbin's sidecar under PERMISSIVE with no identity the app would
/// believe, and STRICT refuses them at the handshake while meshed traffic goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_without_a_sidecar_is_a_plaintext_client_outside_the_mesh() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "{}  - name: sleep\n    namespace: legacy\n    port: 80\n    workloads:\n    - name: sleep\n      sidecar: false\n      replicas: 1\n      command: [weft, demo, echo, --service, sleep]\n      env: {{PORT: \"{port}\"}}\n",
        mesh("legacy")
    );
    let m = Mesh::up(&yaml);
    let c = client();
    let (inbound, _) = httpbin(&m);
    let sleep = SocketAddr::from(([127, 0, 0, 1], port));
    // `weft up` reports ready for meshed replicas only: wait for the legacy process itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(sleep).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar-less workload never listened on {sleep}\n{}",
            m.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let instances: Vec<&str> = m.status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["instance"].as_str())
        .collect();
    assert_eq!(instances, ["httpbin-0"], "{}", m.status);
    let r = get(&c, m.ingress, "sleep.legacy", "/").await.unwrap();
    assert_eq!(
        (r.status, r.flag.as_deref()),
        (503, Some("UH")),
        "{}",
        r.text
    );

    // The legacy process calls httpbin's sidecar directly, in plaintext.
    let fetch = |c: HttpClient| async move {
        let path = format!("/fetch?url=http://{inbound}/headers");
        get(&c, sleep, "sleep.legacy", &path).await.unwrap()
    };
    let r = fetch(c.clone()).await;
    let downstream = &r.body["downstream"];
    assert_eq!(downstream["status"], 200, "{}", r.text);
    assert_eq!(
        downstream["body"]["headers"]["x-weft-client"],
        serde_json::Value::Null,
        "a plaintext caller proves no identity: {}",
        r.text
    );

    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec:\n  mtls: {mode: STRICT}\n";
    m.apply_yaml("strict.yaml", strict);
    // Applied: the legacy client's plaintext call is refused at the handshake.
    let r = fetch(c.clone()).await;
    // The sidecar dropped the plaintext connection (STRICT), rather than anything else failing
    // (a sidecar that is down refuses the connection instead).
    let error = r.body["error"].as_str().unwrap_or_default();
    assert_eq!(
        r.status, 502,
        "STRICT still served the legacy client: {}",
        r.text
    );
    assert!(
        r.body["downstream"].is_null()
            && (error.contains("reset") || error.contains("closed"))
            && !error.contains("refused"),
        "{}",
        r.text
    );
    let r = get(&c, m.ingress, "httpbin.foo", "/headers").await.unwrap();
    assert_eq!(r.status, 200, "meshed traffic under STRICT: {}", r.text);
}
