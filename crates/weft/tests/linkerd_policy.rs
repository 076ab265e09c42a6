//! End-to-end Linkerd policy through real proxies, with the YAML shapes of Linkerd's docs
//! (emojivoto and booksapp): default inbound policies (set in the Mesh file, on a service, on a
//! `kind: Namespace`), Server + AuthorizationPolicy with MeshTLSAuthentication (Linkerd names,
//! SPIFFE IDs, `identityRefs`) and NetworkAuthentication, route-level authorization through
//! HTTPRoutes with a Server parent (a path matching no route gets 404), the legacy
//! ServerAuthorization, and the allow / deny counters by policy name on the admin `/metrics`.
//!
//! Clients are real: mTLS clients hold a certificate from the mesh CA (as another workload's
//! sidecar would), plaintext clients connect to the inbound port from loopback.

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use model::Identity;
use proxy::tls::{self, Credentials};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

const ANNOTATION: &str = "config.linkerd.io/default-inbound-policy";

/// A service of a mesh file: name (also its service account), namespace, port, and the
/// default-inbound-policy annotation if any. Its one workload is labelled `app: NAME-svc`, as
/// emojivoto's pods are.
struct Svc<'a>(&'a str, &'a str, u16, Option<&'a str>);

fn mesh_file(name: &str, default: Option<&str>, services: &[Svc]) -> String {
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n"
    );
    if let Some(d) = default {
        y.push_str(&format!("  defaultInboundPolicy: {d}\n"));
    }
    // Loopback is one address here, so a client on 127.0.0.2 is outside the cluster.
    y.push_str("  clusterNetworks: \"127.0.0.1/32,::1/128\"\n");
    y.push_str("  services:\n");
    for Svc(svc, ns, port, annotation) in services {
        y.push_str(&format!(
            "  - name: {svc}\n    namespace: {ns}\n    port: {port}\n"
        ));
        if let Some(a) = annotation {
            y.push_str(&format!("    annotations:\n      {ANNOTATION}: {a}\n"));
        }
        y.push_str(&format!(
            "    workloads:\n    - name: {svc}\n      labels: {{app: {svc}-svc, version: v11}}\n      replicas: 1\n      command: [weft, demo, echo, --service, {svc}]\n"
        ));
    }
    y
}

/// One running replica of a service.
struct Workload {
    service: String,
    namespace: String,
    port: u16,
    inbound: SocketAddr,
    admin: SocketAddr,
    identity: Identity,
}

/// The replica of `service` (whose port is `port`) in `m`.
fn workload(m: &Mesh, service: &str, port: u16) -> Workload {
    let w = m.status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["service"] == service)
        .unwrap_or_else(|| panic!("no workload of {service} in {}", m.status));
    let addr = |k: &str| w[k].as_str().unwrap().parse().unwrap();
    Workload {
        service: service.to_string(),
        namespace: w["namespace"].as_str().unwrap().to_string(),
        port,
        inbound: addr("inbound"),
        admin: addr("admin"),
        identity: Identity(w["identity"].as_str().unwrap().to_string()),
    }
}

impl Workload {
    fn authority(&self) -> String {
        format!("{}.{}:{}", self.service, self.namespace, self.port)
    }
}

/// What a client got: a status, or a refusal (handshake or connection failure) with why.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Status(u16),
    Refused(String),
}

/// The status, checking that a denial is the proxy's: 403 `RBAC: access denied` (flag RBAC), and
/// a route miss 404 (flag NR; the echo app answers every path with 200).
async fn check_body(rsp: http::Response<hyper::body::Incoming>) -> Got {
    let status = rsp.status().as_u16();
    let flag = rsp
        .headers()
        .get("x-weft-flag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = match rsp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Got::Refused(format!("body: {e}")),
    };
    match status {
        403 => assert_eq!(
            (&body[..], flag.as_str()),
            (&b"RBAC: access denied"[..], "RBAC")
        ),
        404 => assert_eq!(flag, "NR"),
        _ => {}
    }
    Got::Status(status)
}

/// `method path` to `to`'s inbound port over mTLS as `creds` (HTTP/2, as a peer proxy sends).
async fn mtls(creds: &Arc<Credentials>, to: &Workload, method: &str, path: &str) -> Got {
    mtls_from(None, creds, to, method, path).await
}

/// [`mtls`] from the local address `from` (loopback when `None`).
async fn mtls_from(
    from: Option<IpAddr>,
    creds: &Arc<Credentials>,
    to: &Workload,
    method: &str,
    path: &str,
) -> Got {
    let tcp = match connect_from(from, to.inbound).await {
        Ok(t) => t,
        Err(e) => return Got::Refused(format!("connect: {e}")),
    };
    let tls = creds
        .connector(&to.identity)
        .connect(tls::server_name(&to.identity), tcp)
        .await;
    over_h2(tls, to, method, path).await
}

/// `method path` to `to`'s inbound port in plaintext HTTP/2 with prior knowledge (h2c), as a
/// gRPC client outside the mesh sends it to a port whose Server says `proxyProtocol: gRPC`.
async fn plain_h2(to: &Workload, method: &str, path: &str) -> Got {
    over_h2(
        tokio::net::TcpStream::connect(to.inbound).await,
        to,
        method,
        path,
    )
    .await
}

/// The request over HTTP/2 on `stream` (or the failure to connect or handshake).
async fn over_h2<S>(stream: std::io::Result<S>, to: &Workload, method: &str, path: &str) -> Got
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return Got::Refused(format!("connect or TLS handshake: {e}")),
    };
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", to.authority()))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    match h2_send(stream, req).await {
        Ok(rsp) => check_body(rsp).await,
        Err(e) => Got::Refused(e),
    }
}

/// A TCP connection to `to` from the local address `from` (loopback when `None`).
async fn connect_from(
    from: Option<IpAddr>,
    to: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    match from {
        None => tokio::net::TcpStream::connect(to).await,
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(to).await
        }
    }
}

/// A plaintext HTTP client whose connections come from the local address `from`.
fn client_from(from: IpAddr) -> HttpClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(from));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// The client address outside the networks these tests declare as the cluster's and the
/// NetworkAuthentications': 127.0.0.2 (all of 127/8 is loopback on Linux, so a client can bind
/// it and reach the proxies, and the proxies see it as the source). The meshes here set
/// `clusterNetworks: 127.0.0.1/32`, so 127.0.0.1 is in the cluster and 127.0.0.2 is not.
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// `method path` to `to`'s inbound port in plaintext HTTP/1.1 from loopback (a client outside
/// the mesh).
async fn plain(c: &HttpClient, to: &Workload, method: &str, path: &str) -> Got {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", to.inbound))
        .header("host", to.authority())
        .body(Empty::new())
        .unwrap();
    match c.request(req).await {
        Ok(rsp) => check_body(rsp).await,
        Err(e) => Got::Refused(format!("{e:?}")),
    }
}

/// Decisions `policy` made on `w`'s proxy: `weft_inbound_authz_{allow,deny}_total{policy=…}`.
async fn decisions(c: &HttpClient, w: &Workload, verdict: &str, policy: &str) -> f64 {
    metric_sum(
        c,
        w.admin,
        &format!("weft_inbound_authz_{verdict}_total{{policy=\"{policy}\""),
    )
    .await
}

/// Accepts any server certificate, so that a client of another trust domain gets as far as the
/// server's check of *its* certificate (its own check would refuse the mesh's trust domain
/// first, and the test would prove nothing about the server).
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A connector of the same type as `_template`, for `config`.
fn connector_like<C: From<Arc<rustls::ClientConfig>>>(
    _template: &C,
    config: Arc<rustls::ClientConfig>,
) -> C {
    C::from(config)
}

/// `method path` over mTLS as `creds`, whatever certificate the server presents.
async fn mtls_trusting_any_server(
    creds: &Arc<Credentials>,
    to: &Workload,
    method: &str,
    path: &str,
) -> Got {
    let mut config = (*creds.client_config(&to.identity)).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AnyServer));
    let connector = connector_like(&creds.connector(&to.identity), Arc::new(config));
    let tcp = match tokio::net::TcpStream::connect(to.inbound).await {
        Ok(t) => t,
        Err(e) => return Got::Refused(format!("connect: {e}")),
    };
    let tls = connector.connect(tls::server_name(&to.identity), tcp).await;
    over_h2(tls, to, method, path).await
}

/// Inbound handshakes `w`'s proxy refused for a client certificate of another trust domain.
async fn wrong_trust_domain(c: &HttpClient, w: &Workload) -> f64 {
    metric_sum(
        c,
        w.admin,
        "weft_tls_handshake_failures_total{direction=\"inbound\",reason=\"wrong_trust_domain\"",
    )
    .await
}

const OK: Got = Got::Status(200);
const DENIED: Got = Got::Status(403);
const NOT_FOUND: Got = Got::Status(404);

// --- Default inbound policies -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_by_default_until_a_server_and_authorization_policy_allow() {
    let m = Mesh::up(&mesh_file(
        "l5d-deny",
        Some("deny"),
        &[
            Svc("web", "emojivoto", 80, None),
            Svc("emoji", "emojivoto", 8080, Some("all-authenticated")),
        ],
    ));
    let c = client();
    let web = workload(&m, "web", 80);
    let emoji = workload(&m, "emoji", 8080);
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");
    let as_web = workload_client(&m, "emojivoto", "web");

    // The mesh-wide `deny`: every request to web is refused, meshed or not.
    assert_eq!(mtls(&vote_bot, &web, "GET", "/api/list").await, DENIED);
    assert_eq!(mtls(&as_web, &web, "GET", "/").await, DENIED);
    assert_eq!(plain(&c, &web, "GET", "/").await, DENIED);
    assert_eq!(decisions(&c, &web, "deny", "default:deny").await, 3.0);
    // The ingress gateway's proxy is under the mesh-wide default too (as a meshed ingress
    // controller is in Linkerd): it refuses the request itself.
    let r = get(&c, m.ingress, "web.emojivoto", "/").await.unwrap();
    assert_eq!((r.status, r.text.as_str()), (403, "RBAC: access denied"));
    let ingress_admin: SocketAddr = m.status["ingress_admin"].as_str().unwrap().parse().unwrap();
    let at_ingress = metric_sum(
        &c,
        ingress_admin,
        "weft_inbound_authz_deny_total{policy=\"default:deny\"",
    )
    .await;
    assert_eq!(at_ingress, 1.0);

    // emoji's annotation overrides the mesh's default: all-authenticated.
    assert_eq!(mtls(&as_web, &emoji, "GET", "/").await, OK);
    assert_eq!(plain(&c, &emoji, "GET", "/").await, DENIED);
    assert_eq!(
        decisions(&c, &emoji, "allow", "default:all-authenticated").await,
        1.0
    );
    assert_eq!(
        decisions(&c, &emoji, "deny", "default:all-authenticated").await,
        1.0
    );

    // A Server for web's port with an AuthorizationPolicy for vote-bot only (Linkerd's
    // authorization-policy reference shapes).
    m.apply_yaml(
        "web-policy.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  namespace: emojivoto
  name: web-http
spec:
  podSelector:
    matchLabels:
      app: web-svc
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  namespace: emojivoto
  name: web-http
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: web-http
  requiredAuthenticationRefs:
    - name: web-clients
      kind: MeshTLSAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  namespace: emojivoto
  name: web-clients
spec:
  identities:
    - "vote-bot.emojivoto.serviceaccount.identity.linkerd.cluster.local"
"#,
    );
    assert_eq!(mtls(&vote_bot, &web, "GET", "/api/list").await, OK);
    assert_eq!(mtls(&as_web, &web, "GET", "/").await, DENIED);
    assert_eq!(plain(&c, &web, "GET", "/").await, DENIED);
    assert_eq!(
        decisions(&c, &web, "allow", "AuthorizationPolicy emojivoto/web-http").await,
        1.0
    );
    assert_eq!(decisions(&c, &web, "deny", "emojivoto/web-http").await, 2.0);

    // Opening the ingress gateway's namespace (as Linkerd's docs advise for an ingress under a
    // cluster-wide deny) lets the request through it, to web's Server, which refuses the
    // gateway's identity until its MeshTLSAuthentication lists it.
    m.apply_yaml("istio-system.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n  annotations:\n    {ANNOTATION}: all-unauthenticated\n"
        ),
    );
    let via_ingress = || async {
        let r = get(&c, m.ingress, "web.emojivoto", "/").await.unwrap();
        Got::Status(r.status)
    };
    assert_eq!(via_ingress().await, DENIED);
    assert_eq!(
        metric_sum(
            &c,
            ingress_admin,
            "weft_inbound_authz_deny_total{policy=\"default:deny\"",
        )
        .await,
        1.0,
        "the gateway let it through"
    );
    assert_eq!(decisions(&c, &web, "deny", "emojivoto/web-http").await, 3.0);
    m.apply_yaml(
        "web-clients.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  namespace: emojivoto
  name: web-clients
spec:
  identities:
    - "vote-bot.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    - "istio-ingressgateway.istio-system.serviceaccount.identity.linkerd.cluster.local"
"#,
    );
    assert_eq!(via_ingress().await, OK);

    // Without them, the default denies again.
    m.delete_file("web-policy.yaml");
    assert_eq!(mtls(&vote_bot, &web, "GET", "/api/list").await, DENIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_authenticated_by_default_and_cluster_authenticated_by_annotation() {
    let m = Mesh::up(&mesh_file(
        "l5d-authn",
        Some("all-authenticated"),
        &[
            Svc("web", "emojivoto", 80, None),
            Svc("voting", "emojivoto", 8080, Some("cluster-authenticated")),
        ],
    ));
    let c = client();
    let web = workload(&m, "web", 80);
    let voting = workload(&m, "voting", 8080);
    let as_web = workload_client(&m, "emojivoto", "web");
    let other_namespace = workload_client(&m, "bar", "curl");
    let foreign = identity_client(&m, "other.local", "emojivoto", "web");

    for w in [&web, &voting] {
        assert_eq!(mtls(&as_web, w, "GET", "/").await, OK, "{}", w.service);
        assert_eq!(mtls(&other_namespace, w, "GET", "/").await, OK);
        assert_eq!(plain(&c, w, "GET", "/").await, DENIED, "{}", w.service);
    }
    assert_eq!(
        decisions(&c, &web, "allow", "default:all-authenticated").await,
        2.0
    );
    assert_eq!(
        decisions(&c, &web, "deny", "default:all-authenticated").await,
        1.0
    );
    assert_eq!(
        decisions(&c, &voting, "allow", "default:cluster-authenticated").await,
        2.0
    );
    assert_eq!(
        decisions(&c, &voting, "deny", "default:cluster-authenticated").await,
        1.0
    );

    // An identity of another trust domain (signed by the mesh's own root) is refused.
    let got = mtls_trusting_any_server(&foreign, &voting, "GET", "/").await;
    assert!(
        matches!(got, Got::Refused(_)),
        "other.local client got {got:?}"
    );
    // At the handshake, before any policy: counted as such.
    assert_eq!(
        eventually(1.0, || wrong_trust_domain(&c, &voting)).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_authenticated_by_default_and_audit_by_annotation() {
    let m = Mesh::up_logging(
        &mesh_file(
            "l5d-cluster",
            Some("cluster-authenticated"),
            &[
                Svc("web", "emojivoto", 80, None),
                Svc("emoji", "emojivoto", 8080, Some("audit")),
            ],
        ),
        "info,h2=warn,hyper=warn",
    );
    let c = client();
    let web = workload(&m, "web", 80);
    let emoji = workload(&m, "emoji", 8080);
    let as_web = workload_client(&m, "emojivoto", "web");
    let foreign = identity_client(&m, "other.local", "emojivoto", "web");

    assert_eq!(mtls(&as_web, &web, "GET", "/").await, OK);
    assert_eq!(plain(&c, &web, "GET", "/").await, DENIED);
    let got = mtls_trusting_any_server(&foreign, &web, "GET", "/").await;
    assert!(
        matches!(got, Got::Refused(_)),
        "other.local client got {got:?}"
    );
    assert_eq!(eventually(1.0, || wrong_trust_domain(&c, &web)).await, 1.0);
    assert_eq!(
        decisions(&c, &web, "allow", "default:cluster-authenticated").await,
        1.0
    );

    // audit: everything is allowed, and the decisions are counted and logged.
    assert_eq!(plain(&c, &emoji, "GET", "/api/list").await, OK);
    assert_eq!(mtls(&as_web, &emoji, "GET", "/api/list").await, OK);
    assert_eq!(decisions(&c, &emoji, "allow", "default:audit").await, 2.0);
    assert_eq!(decisions(&c, &emoji, "deny", "default:audit").await, 0.0);
    let logged = eventually(true, || async {
        m.stderr()
            .lines()
            .filter(|l| l.contains("audited request allowed") && l.contains("default:audit"))
            .count()
            >= 2
    })
    .await;
    assert!(logged, "audit decisions logged:\n{}", m.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_unauthenticated_by_default_deny_by_annotation_and_namespace_annotation() {
    let m = Mesh::up(&mesh_file(
        "l5d-open",
        Some("all-unauthenticated"),
        &[
            Svc("web", "emojivoto", 80, None),
            Svc("emoji", "emojivoto", 8080, Some("deny")),
            Svc("voting", "emojivoto", 8080, Some("cluster-unauthenticated")),
        ],
    ));
    let c = client();
    let web = workload(&m, "web", 80);
    let emoji = workload(&m, "emoji", 8080);
    let voting = workload(&m, "voting", 8080);
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");

    // cluster-unauthenticated: any client from the cluster's networks (loopback is one here).
    assert_eq!(plain(&c, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &voting, "GET", "/").await, OK);
    assert_eq!(
        decisions(&c, &voting, "allow", "default:cluster-unauthenticated").await,
        2.0
    );

    assert_eq!(mtls(&vote_bot, &web, "GET", "/").await, OK);
    assert_eq!(plain(&c, &web, "GET", "/").await, OK);
    assert_eq!(
        decisions(&c, &web, "allow", "default:all-unauthenticated").await,
        2.0
    );
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/").await, DENIED);
    assert_eq!(plain(&c, &emoji, "GET", "/").await, DENIED);
    assert_eq!(decisions(&c, &emoji, "deny", "default:deny").await, 2.0);

    // The annotation on the namespace: all-authenticated for its workloads, except where a
    // workload's own annotation says otherwise (emoji stays deny).
    m.apply_yaml("namespace.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: emojivoto\n  annotations:\n    {ANNOTATION}: all-authenticated\n"
        ),
    );
    assert_eq!(plain(&c, &web, "GET", "/").await, DENIED);
    assert_eq!(mtls(&vote_bot, &web, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/").await, DENIED);
    assert_eq!(
        decisions(&c, &web, "deny", "default:all-authenticated").await,
        1.0
    );
    m.delete_file("namespace.yaml");
    assert_eq!(plain(&c, &web, "GET", "/").await, OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_by_default_and_all_unauthenticated_by_annotation() {
    let m = Mesh::up_logging(
        &mesh_file(
            "l5d-audit",
            Some("audit"),
            &[
                Svc("web", "emojivoto", 80, None),
                Svc("emoji", "emojivoto", 8080, Some("all-unauthenticated")),
            ],
        ),
        "info,h2=warn,hyper=warn",
    );
    let c = client();
    let web = workload(&m, "web", 80);
    let emoji = workload(&m, "emoji", 8080);
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");

    assert_eq!(plain(&c, &web, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &web, "POST", "/api/vote").await, OK);
    assert_eq!(decisions(&c, &web, "allow", "default:audit").await, 2.0);
    assert_eq!(decisions(&c, &web, "deny", "default:audit").await, 0.0);
    let logged = eventually(true, || async {
        m.stderr().lines().any(|l| {
            l.contains("web-0 proxy")
                && l.contains("audited request allowed")
                && l.contains("/api/vote")
        })
    })
    .await;
    assert!(logged, "audit decisions logged:\n{}", m.stderr());

    assert_eq!(plain(&c, &emoji, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/").await, OK);
    assert_eq!(
        decisions(&c, &emoji, "allow", "default:all-unauthenticated").await,
        2.0
    );
    assert_eq!(decisions(&c, &emoji, "allow", "default:audit").await, 0.0);
}

/// The `cluster-*` defaults also look at where the client connects from: Linkerd's
/// policy controller gives them `networks: clusterNetworks` (`mk_default_policy` in
/// linkerd2's policy-controller/k8s/index/src/inbound/tests.rs), `all-*` all networks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_unauthenticated_refuses_clients_outside_the_cluster_networks() {
    let outside = OUTSIDE;
    let m = Mesh::up(&mesh_file(
        "l5d-networks",
        Some("cluster-unauthenticated"),
        &[
            Svc("web", "emojivoto", 80, None),
            Svc("emoji", "emojivoto", 8080, Some("all-authenticated")),
        ],
    ));
    let c = client();
    let web = workload(&m, "web", 80);
    let emoji = workload(&m, "emoji", 8080);
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");
    let from_outside = client_from(outside);

    assert_eq!(plain(&c, &web, "GET", "/").await, OK);
    assert_eq!(plain(&from_outside, &web, "GET", "/").await, DENIED);
    assert_eq!(
        mtls_from(Some(outside), &vote_bot, &web, "GET", "/").await,
        DENIED
    );
    assert_eq!(
        decisions(&c, &web, "deny", "default:cluster-unauthenticated").await,
        2.0
    );
    // all-authenticated: meshed clients from anywhere.
    assert_eq!(
        mtls_from(Some(outside), &vote_bot, &emoji, "GET", "/").await,
        OK
    );
    assert_eq!(plain(&from_outside, &emoji, "GET", "/").await, DENIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_authenticated_refuses_meshed_clients_outside_the_cluster_networks() {
    let outside = OUTSIDE;
    let m = Mesh::up(&mesh_file(
        "l5d-cluster-networks",
        Some("cluster-authenticated"),
        &[Svc("web", "emojivoto", 80, None)],
    ));
    let c = client();
    let web = workload(&m, "web", 80);
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");

    assert_eq!(mtls(&vote_bot, &web, "GET", "/").await, OK);
    assert_eq!(
        mtls_from(Some(outside), &vote_bot, &web, "GET", "/").await,
        DENIED,
        "a meshed client from {outside}, outside the cluster networks"
    );
    assert_eq!(
        decisions(&c, &web, "deny", "default:cluster-authenticated").await,
        1.0
    );
}

// --- Servers, AuthorizationPolicies and authentications -----------------------------------

fn emojivoto(name: &str) -> String {
    mesh_file(
        name,
        None,
        &[
            Svc("web", "emojivoto", 80, None),
            Svc("emoji", "emojivoto", 8080, None),
            Svc("voting", "emojivoto", 8080, None),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_admit_only_the_authenticated_clients_of_their_policies() {
    let m = Mesh::up(&emojivoto("l5d-authz"));
    let c = client();
    let web = workload(&m, "web", 80);
    let emoji = workload(&m, "emoji", 8080);
    let voting = workload(&m, "voting", 8080);
    let as_web = workload_client(&m, "emojivoto", "web");
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");
    let curl = workload_client(&m, "bar", "curl");
    for w in [&web, &emoji, &voting] {
        assert_eq!(
            plain(&c, w, "GET", "/").await,
            OK,
            "{}: no policy",
            w.service
        );
    }

    // emojivoto's task: only web may call emoji (a Linkerd identity name).
    m.apply_yaml(
        "emoji-grpc.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  namespace: emojivoto
  name: emoji-grpc
spec:
  podSelector:
    matchLabels:
      app: emoji-svc
  port: grpc
  proxyProtocol: gRPC
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: emoji-grpc
  namespace: emojivoto
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: emoji-grpc
  requiredAuthenticationRefs:
    - name: emoji-web
      kind: MeshTLSAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: emoji-web
  namespace: emojivoto
spec:
  identities:
    - 'web.emojivoto.serviceaccount.identity.linkerd.cluster.local'
"#,
    );
    assert_eq!(
        plain_h2(&emoji, "POST", "/emojivoto.v1.EmojiService/ListAll").await,
        DENIED
    );
    assert_eq!(
        mtls(
            &as_web,
            &emoji,
            "POST",
            "/emojivoto.v1.EmojiService/ListAll"
        )
        .await,
        OK
    );
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/").await, DENIED);
    assert_eq!(mtls(&curl, &emoji, "GET", "/").await, DENIED);
    assert_eq!(
        decisions(
            &c,
            &emoji,
            "allow",
            "AuthorizationPolicy emojivoto/emoji-grpc"
        )
        .await,
        1.0
    );
    assert_eq!(
        decisions(&c, &emoji, "deny", "emojivoto/emoji-grpc").await,
        3.0
    );

    // The same authentication with a SPIFFE ID: now vote-bot, not web.
    m.apply_yaml(
        "emoji-web.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: emoji-web
  namespace: emojivoto
spec:
  identities:
    - spiffe://cluster.local/ns/emojivoto/sa/vote-bot
"#,
    );
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/").await, OK);
    assert_eq!(mtls(&as_web, &emoji, "GET", "/").await, DENIED);

    // identityRefs to a ServiceAccount (web, in the policy's namespace) for voting.
    m.apply_yaml(
        "voting-grpc.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  namespace: emojivoto
  name: voting-grpc
spec:
  podSelector:
    matchLabels:
      app: voting-svc
  port: 8080
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: voting-grpc
  namespace: emojivoto
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: voting-grpc
  requiredAuthenticationRefs:
    - name: voting-web
      kind: MeshTLSAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: voting-web
  namespace: emojivoto
spec:
  identityRefs:
    - kind: ServiceAccount
      name: web
"#,
    );
    assert_eq!(plain(&c, &voting, "GET", "/").await, DENIED);
    assert_eq!(
        mtls(
            &as_web,
            &voting,
            "POST",
            "/emojivoto.v1.VotingService/VoteDoughnut"
        )
        .await,
        OK
    );
    assert_eq!(mtls(&vote_bot, &voting, "GET", "/").await, DENIED);

    // A Namespace identityRef: every service account of emojivoto, no other namespace's.
    m.apply_yaml(
        "voting-web.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: voting-web
  namespace: emojivoto
spec:
  identityRefs:
    - kind: Namespace
      name: emojivoto
"#,
    );
    assert_eq!(mtls(&vote_bot, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&as_web, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&curl, &voting, "GET", "/").await, DENIED);
    assert_eq!(plain(&c, &voting, "GET", "/").await, DENIED);

    // `*`: any meshed client, and no plaintext one.
    m.apply_yaml(
        "voting-web-any.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: voting-web
  namespace: emojivoto
spec:
  identities: ["*"]
"#,
    );
    assert_eq!(mtls(&curl, &voting, "GET", "/").await, OK);
    assert_eq!(plain(&c, &voting, "GET", "/").await, DENIED);

    // A ServiceAccount named directly in requiredAuthenticationRefs.
    m.apply_yaml(
        "voting-grpc-sa.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: voting-grpc
  namespace: emojivoto
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: voting-grpc
  requiredAuthenticationRefs:
    - kind: ServiceAccount
      name: curl
      namespace: bar
"#,
    );
    assert_eq!(mtls(&curl, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &voting, "GET", "/").await, DENIED);

    // Policies add up: a second one for the namespace's Servers (targetRef Namespace) lets
    // vote-bot into emoji and voting besides the clients their own policies admit.
    m.apply_yaml(
        "emojivoto-ns.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: emojivoto-vote-bot
  namespace: emojivoto
spec:
  targetRef:
    kind: Namespace
    name: emojivoto
  requiredAuthenticationRefs:
    - kind: ServiceAccount
      name: vote-bot
"#,
    );
    assert_eq!(mtls(&vote_bot, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&curl, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&as_web, &voting, "GET", "/").await, DENIED);
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/").await, OK);
    assert_eq!(
        decisions(
            &c,
            &voting,
            "allow",
            "AuthorizationPolicy emojivoto/emojivoto-vote-bot"
        )
        .await,
        1.0
    );
    m.delete_file("emojivoto-ns.yaml");

    // NetworkAuthentication: clients from loopback, meshed or not.
    m.apply_yaml(
        "web-http.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  namespace: emojivoto
  name: web-http
spec:
  podSelector:
    matchLabels:
      app: web-svc
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web-local
  namespace: emojivoto
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: web-http
  requiredAuthenticationRefs:
    - name: loopback
      kind: NetworkAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata:
  name: loopback
  namespace: emojivoto
spec:
  networks:
  - cidr: 127.0.0.1/32
  - cidr: ::1/128
"#,
    );
    // Applied: the Server now covers web; loopback clients still pass.
    assert_eq!(plain(&c, &web, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &web, "GET", "/").await, OK);
    assert_eq!(
        decisions(&c, &web, "allow", "AuthorizationPolicy emojivoto/web-local").await,
        2.0
    );
    // A client from another network of this host is not in it.
    assert_eq!(plain(&client_from(OUTSIDE), &web, "GET", "/").await, DENIED);
    assert_eq!(
        mtls_from(Some(OUTSIDE), &vote_bot, &web, "GET", "/").await,
        DENIED
    );
    // …until `except` carves 127.0.0.1 out of the network.
    let denied = decisions(&c, &web, "deny", "emojivoto/web-http").await;
    m.apply_yaml(
        "loopback.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata:
  name: loopback
  namespace: emojivoto
spec:
  networks:
  - cidr: 127.0.0.0/8
    except:
    - 127.0.0.1/32
"#,
    );
    assert_eq!(plain(&c, &web, "GET", "/").await, DENIED);
    assert_eq!(mtls(&vote_bot, &web, "GET", "/").await, DENIED);
    assert_eq!(
        decisions(&c, &web, "deny", "emojivoto/web-http").await,
        denied + 2.0
    );

    // Both authentications required: web from loopback, once 127.0.0.1 is back in.
    m.apply_yaml(
        "web-both.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata:
  name: loopback
  namespace: emojivoto
spec:
  networks:
  - cidr: 127.0.0.0/8
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: web-clients
  namespace: emojivoto
spec:
  identities:
  - vote-bot.emojivoto.serviceaccount.identity.linkerd.cluster.local
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web-local
  namespace: emojivoto
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: web-http
  requiredAuthenticationRefs:
    - name: loopback
      kind: NetworkAuthentication
      group: policy.linkerd.io
    - name: web-clients
      kind: MeshTLSAuthentication
      group: policy.linkerd.io
"#,
    );
    assert_eq!(mtls(&vote_bot, &web, "GET", "/").await, OK);
    assert_eq!(plain(&c, &web, "GET", "/").await, DENIED);
    assert_eq!(mtls(&as_web, &web, "GET", "/").await, DENIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_access_policy_audit_lets_unauthorized_clients_in() {
    let m = Mesh::up_logging(&emojivoto("l5d-server-audit"), "info,h2=warn,hyper=warn");
    let c = client();
    let emoji = workload(&m, "emoji", 8080);
    let as_web = workload_client(&m, "emojivoto", "web");
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");
    m.apply_yaml(
        "emoji-grpc.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  namespace: emojivoto
  name: emoji-grpc
spec:
  podSelector:
    matchLabels:
      app: emoji-svc
  port: grpc
  accessPolicy: audit
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: emoji-grpc
  namespace: emojivoto
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: emoji-grpc
  requiredAuthenticationRefs:
    - kind: ServiceAccount
      name: web
"#,
    );
    assert_eq!(mtls(&as_web, &emoji, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/audited").await, OK);
    assert_eq!(plain(&c, &emoji, "GET", "/audited").await, OK);
    assert_eq!(
        decisions(
            &c,
            &emoji,
            "allow",
            "AuthorizationPolicy emojivoto/emoji-grpc"
        )
        .await,
        1.0
    );
    assert_eq!(
        decisions(&c, &emoji, "allow", "emojivoto/emoji-grpc").await,
        2.0
    );
    let logged = eventually(2, || async {
        m.stderr()
            .lines()
            .filter(|l| l.contains("audited request allowed") && l.contains("/audited"))
            .count()
    })
    .await;
    assert_eq!(logged, 2, "audited decisions logged:\n{}", m.stderr());
}

// --- Route-level authorization ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_level_authorization_and_404_for_a_path_of_no_route() {
    let m = Mesh::up(&mesh_file(
        "l5d-routes",
        None,
        &[
            Svc("authors", "booksapp", 7001, None),
            Svc("books", "booksapp", 7002, None),
            Svc("webapp", "booksapp", 7000, None),
        ],
    ));
    let c = client();
    let authors = workload(&m, "authors", 7001);
    let books = workload_client(&m, "booksapp", "books");
    let webapp = workload_client(&m, "booksapp", "webapp");
    let traffic = workload_client(&m, "booksapp", "traffic");

    // Linkerd's "Restricting access to services" (per-route policy) task.
    m.apply_yaml(
        "authors.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  name: authors-server
  namespace: booksapp
spec:
  podSelector:
    matchLabels:
      app: authors-svc
  port: service
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata:
  name: authors-probe-route
  namespace: booksapp
spec:
  parentRefs:
    - name: authors-server
      kind: Server
      group: policy.linkerd.io
  rules:
    - matches:
      - path:
          value: "/ping"
        method: GET
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata:
  name: authors-probe-authn
  namespace: booksapp
spec:
  networks:
  - cidr: 0.0.0.0/0
  - cidr: ::/0
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: authors-probe-policy
  namespace: booksapp
spec:
  targetRef:
    group: policy.linkerd.io
    kind: HTTPRoute
    name: authors-probe-route
  requiredAuthenticationRefs:
    - name: authors-probe-authn
      kind: NetworkAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata:
  name: authors-get-route
  namespace: booksapp
spec:
  parentRefs:
    - name: authors-server
      kind: Server
      group: policy.linkerd.io
  rules:
    - matches:
      - path:
          value: "/authors.json"
        method: GET
      - path:
          value: "/authors/"
          type: "PathPrefix"
        method: GET
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: authors-get-policy
  namespace: booksapp
spec:
  targetRef:
    group: policy.linkerd.io
    kind: HTTPRoute
    name: authors-get-route
  requiredAuthenticationRefs:
    - name: authors-get-authn
      kind: MeshTLSAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: authors-get-authn
  namespace: booksapp
spec:
  identities:
    - "books.booksapp.serviceaccount.identity.linkerd.cluster.local"
    - "webapp.booksapp.serviceaccount.identity.linkerd.cluster.local"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: authors-modify-route
  namespace: booksapp
spec:
  parentRefs:
    - name: authors-server
      kind: Server
      group: policy.linkerd.io
  rules:
    - matches:
      - path:
          value: "/authors/"
          type: "PathPrefix"
        method: DELETE
      - path:
          value: "/authors/"
          type: "PathPrefix"
        method: PUT
      - path:
          value: "/authors.json"
        method: POST
"#,
    );
    // The probe route: anyone, plaintext included.
    assert_eq!(plain(&c, &authors, "GET", "/ping").await, OK);
    // The GET route: books and webapp only.
    assert_eq!(mtls(&books, &authors, "GET", "/authors.json").await, OK);
    assert_eq!(mtls(&webapp, &authors, "GET", "/authors/1.json").await, OK);
    assert_eq!(
        mtls(&traffic, &authors, "GET", "/authors.json").await,
        DENIED
    );
    assert_eq!(plain(&c, &authors, "GET", "/authors.json").await, DENIED);
    // The modify route has no policy yet: denied to everyone.
    assert_eq!(
        mtls(&books, &authors, "POST", "/authors.json").await,
        DENIED
    );
    assert_eq!(
        mtls(&webapp, &authors, "DELETE", "/authors/1.json").await,
        DENIED
    );
    // A request no route of the Server matches: 404, even for an authorized client.
    for (method, path) in [("GET", "/books.json"), ("POST", "/authors/1.json")] {
        let got = mtls(&books, &authors, method, path).await;
        assert_eq!(got, NOT_FOUND, "{method} {path}");
    }
    assert_eq!(plain(&c, &authors, "GET", "/").await, NOT_FOUND);

    assert_eq!(
        decisions(
            &c,
            &authors,
            "allow",
            "AuthorizationPolicy booksapp/authors-get-policy"
        )
        .await,
        2.0
    );
    assert_eq!(
        decisions(
            &c,
            &authors,
            "allow",
            "AuthorizationPolicy booksapp/authors-probe-policy"
        )
        .await,
        1.0
    );
    assert_eq!(
        decisions(&c, &authors, "deny", "booksapp/authors-server").await,
        7.0,
        "4 unauthorized, 3 route misses"
    );

    // A policy on the Server applies to every route of it; a request of no route stays 404.
    m.apply_yaml(
        "authors-server-policy.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: authors-traffic
  namespace: booksapp
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: authors-server
  requiredAuthenticationRefs:
    - kind: ServiceAccount
      name: traffic
"#,
    );
    assert_eq!(mtls(&traffic, &authors, "GET", "/authors.json").await, OK);
    assert_eq!(mtls(&traffic, &authors, "PUT", "/authors/1.json").await, OK);
    assert_eq!(
        mtls(&traffic, &authors, "GET", "/books.json").await,
        NOT_FOUND
    );
    m.delete_file("authors-server-policy.yaml");
    assert_eq!(
        mtls(&traffic, &authors, "GET", "/authors.json").await,
        DENIED
    );

    // webapp may modify authors.
    m.apply_yaml(
        "authors-modify.yaml",
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: authors-modify-policy
  namespace: booksapp
spec:
  targetRef:
    group: gateway.networking.k8s.io
    kind: HTTPRoute
    name: authors-modify-route
  requiredAuthenticationRefs:
    - name: authors-modify-authn
      kind: MeshTLSAuthentication
      group: policy.linkerd.io
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  name: authors-modify-authn
  namespace: booksapp
spec:
  identities:
    - "webapp.booksapp.serviceaccount.identity.linkerd.cluster.local"
"#,
    );
    assert_eq!(
        mtls(&webapp, &authors, "DELETE", "/authors/1.json").await,
        OK
    );
    assert_eq!(mtls(&webapp, &authors, "POST", "/authors.json").await, OK);
    assert_eq!(
        mtls(&books, &authors, "PUT", "/authors/1.json").await,
        DENIED
    );
    assert_eq!(mtls(&books, &authors, "GET", "/authors/1.json").await, OK);
}

/// Linkerd picks, among every route of the Server, the one whose match is the most specific
/// (Gateway API precedence: an Exact path over a PathPrefix, a longer prefix over a shorter,
/// then method, headers, query), the earliest on a tie: `find` in linkerd2-proxy's
/// linkerd/http/route/src/lib.rs. The route it picks decides which policies apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_inbound_route_decides() {
    let m = Mesh::up(&mesh_file(
        "l5d-route-precedence",
        None,
        &[Svc("authors", "booksapp", 7001, None)],
    ));
    let authors = workload(&m, "authors", 7001);
    let books = workload_client(&m, "booksapp", "books");
    let webapp = workload_client(&m, "booksapp", "webapp");
    m.apply_yaml(
        "authors.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  name: authors-server
  namespace: booksapp
spec:
  podSelector:
    matchLabels:
      app: authors-svc
  port: service
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata:
  name: authors-all-route
  namespace: booksapp
spec:
  parentRefs:
    - name: authors-server
      kind: Server
      group: policy.linkerd.io
  rules:
    - matches:
      - path:
          value: "/"
          type: "PathPrefix"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: authors-all-policy
  namespace: booksapp
spec:
  targetRef:
    group: policy.linkerd.io
    kind: HTTPRoute
    name: authors-all-route
  requiredAuthenticationRefs:
    - kind: ServiceAccount
      name: books
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata:
  name: authors-json-route
  namespace: booksapp
spec:
  parentRefs:
    - name: authors-server
      kind: Server
      group: policy.linkerd.io
  rules:
    - matches:
      - path:
          value: "/authors.json"
          type: "Exact"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: authors-json-policy
  namespace: booksapp
spec:
  targetRef:
    group: policy.linkerd.io
    kind: HTTPRoute
    name: authors-json-route
  requiredAuthenticationRefs:
    - kind: ServiceAccount
      name: webapp
"#,
    );
    // Only the prefix route matches.
    assert_eq!(mtls(&books, &authors, "GET", "/authors/1.json").await, OK);
    assert_eq!(
        mtls(&webapp, &authors, "GET", "/authors/1.json").await,
        DENIED
    );
    // Both match; the Exact one is the more specific and decides.
    assert_eq!(mtls(&webapp, &authors, "GET", "/authors.json").await, OK);
    assert_eq!(mtls(&books, &authors, "GET", "/authors.json").await, DENIED);
}

// --- Legacy ServerAuthorization -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_server_authorizations() {
    let m = Mesh::up(&emojivoto("l5d-saz"));
    let c = client();
    let web = workload(&m, "web", 80);
    let emoji = workload(&m, "emoji", 8080);
    let voting = workload(&m, "voting", 8080);
    let as_web = workload_client(&m, "emojivoto", "web");
    let vote_bot = workload_client(&m, "emojivoto", "vote-bot");
    let curl = workload_client(&m, "bar", "curl");

    // Linkerd 2.11's emojivoto policy, as published.
    m.apply_yaml(
        "emojivoto-policy.yaml",
        r#"---
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata:
  namespace: emojivoto
  name: emoji-grpc
  labels:
    app.kubernetes.io/part-of: emojivoto
    app.kubernetes.io/name: emoji
    app.kubernetes.io/version: v11
spec:
  podSelector:
    matchLabels:
      app: emoji-svc
  port: grpc
  proxyProtocol: gRPC
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata:
  namespace: emojivoto
  name: emoji-grpc
  labels:
    app.kubernetes.io/part-of: emojivoto
    app.kubernetes.io/name: emoji
    app.kubernetes.io/version: v11
spec:
  server:
    selector:
      matchLabels:
        app.kubernetes.io/part-of: emojivoto
        app.kubernetes.io/name: emoji
  client:
    meshTLS:
      serviceAccounts:
        - name: web
---
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata:
  namespace: emojivoto
  name: voting-grpc
  labels:
    app.kubernetes.io/part-of: emojivoto
    app.kubernetes.io/name: voting
spec:
  podSelector:
    matchLabels:
      app: voting-svc
  port: grpc
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata:
  namespace: emojivoto
  name: voting-grpc
spec:
  server:
    name: voting-grpc
  client:
    meshTLS:
      identities:
        - "*.emojivoto.serviceaccount.identity.linkerd.cluster.local"
---
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata:
  namespace: emojivoto
  name: web-http
spec:
  podSelector:
    matchLabels:
      app: web-svc
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata:
  namespace: emojivoto
  name: web-public
spec:
  server:
    name: web-http
  # Allow all clients to access the web HTTP port without regard for
  # authentication. If unauthenticated connections are permitted, there is no
  # need to describe authenticated clients.
  client:
    unauthenticated: true
    networks:
      - cidr: 0.0.0.0/0
      - cidr: ::/0
"#,
    );
    // emoji: serviceAccounts [web].
    assert_eq!(mtls(&as_web, &emoji, "GET", "/").await, OK);
    assert_eq!(mtls(&vote_bot, &emoji, "GET", "/").await, DENIED);
    assert_eq!(
        plain_h2(&emoji, "POST", "/emojivoto.v1.EmojiService/ListAll").await,
        DENIED
    );
    // voting: any identity of emojivoto.
    assert_eq!(mtls(&vote_bot, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&as_web, &voting, "GET", "/").await, OK);
    assert_eq!(mtls(&curl, &voting, "GET", "/").await, DENIED);
    assert_eq!(plain(&c, &voting, "GET", "/").await, DENIED);
    // web: everyone, plaintext included.
    assert_eq!(plain(&c, &web, "GET", "/").await, OK);
    assert_eq!(mtls(&curl, &web, "GET", "/").await, OK);

    assert_eq!(
        decisions(
            &c,
            &emoji,
            "allow",
            "ServerAuthorization emojivoto/emoji-grpc"
        )
        .await,
        1.0
    );
    assert_eq!(
        decisions(&c, &emoji, "deny", "emojivoto/emoji-grpc").await,
        2.0
    );
    assert_eq!(
        decisions(
            &c,
            &voting,
            "allow",
            "ServerAuthorization emojivoto/voting-grpc"
        )
        .await,
        2.0
    );
    assert_eq!(
        decisions(
            &c,
            &web,
            "allow",
            "ServerAuthorization emojivoto/web-public"
        )
        .await,
        2.0
    );

    // Removing the ServerAuthorization leaves the Server's default access policy, deny.
    m.apply_yaml(
        "web-public.yaml",
        r#"apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata:
  namespace: emojivoto
  name: web-public
spec:
  server:
    name: web-http
  client:
    unauthenticated: true
"#,
    );
    m.delete_file("web-public.yaml");
    assert_eq!(plain(&c, &web, "GET", "/").await, DENIED);
    assert_eq!(mtls(&as_web, &web, "GET", "/").await, DENIED);
}
