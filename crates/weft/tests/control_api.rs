//! The control plane's API is the operator's alone: every call but `/healthz` needs the admin
//! credential `weft up` keeps in `$WEFT_HOME` (readable by its user alone), and mutating calls
//! take JSON only, so neither another local user nor a web page can mint join tokens, change
//! routes or rotate the CA. The CLI sends the credential by itself.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

/// A call to the API: its status, `WWW-Authenticate` and body.
async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Option<String>, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{api}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let rsp = client
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let challenge = rsp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text =
        String::from_utf8_lossy(&rsp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (status, challenge, text)
}

const ROUTE_TO_NOWHERE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hijack}\nspec:\n  hosts: [hello]\n  http:\n  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    route:\n    - destination: {host: hello}\n";

#[tokio::test]
async fn the_api_refuses_callers_without_the_admin_credential() {
    let mesh = Mesh::up(&mesh_yaml("api-auth", &[("hello", 1, "")]));
    let api: SocketAddr = mesh.status["api"].as_str().unwrap().parse().unwrap();
    let token_file = mesh.home.join("meshes").join("api-auth.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the credential is readable by others");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();

    // Liveness stays open; everything else needs the credential.
    assert_eq!(call(api, "GET", "/healthz", None, None, "").await.0, 200);
    let (status, challenge, _) = call(api, "GET", "/status", None, None, "").await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"weft\""));
    assert_eq!(
        call(api, "GET", "/status", Some("guess"), None, "").await.0,
        403
    );
    assert_eq!(
        call(api, "GET", "/status", Some(token), None, "").await.0,
        200
    );

    // Minting a join token for another workload's identity, replacing routes, rotating the CA:
    // refused without the credential.
    let join = r#"{"identity": "spiffe://cluster.local/ns/default/sa/hello"}"#;
    let json = Some("application/json");
    assert_eq!(call(api, "POST", "/join", None, json, join).await.0, 401);
    let apply = serde_json::json!({"file": "x.yaml", "yaml": ROUTE_TO_NOWHERE}).to_string();
    assert_eq!(call(api, "POST", "/apply", None, json, &apply).await.0, 401);
    for step in ["prepare", "activate", "retire"] {
        let path = format!("/ca/{step}");
        assert_eq!(
            call(api, "POST", &path, None, json, "{}").await.0,
            401,
            "{step}"
        );
    }
    // What a web page can send across origins without asking (text, forms) is refused even
    // with the credential.
    let text = Some("text/plain");
    let form = Some("application/x-www-form-urlencoded");
    assert_eq!(
        call(api, "POST", "/apply", Some(token), text, &apply)
            .await
            .0,
        415
    );
    assert_eq!(
        call(api, "POST", "/apply", Some(token), form, &apply)
            .await
            .0,
        415
    );
    assert_eq!(
        call(api, "POST", "/join", Some(token), text, join).await.0,
        415
    );

    // With the credential, only what the CA signs: canonical SPIFFE IDs of the mesh's domain.
    for bad in [
        "spiffe://evil.example/ns/default/sa/hello",
        "spiffe://cluster.local/ns/default/sa/web/../api",
        "hello",
    ] {
        let body = serde_json::json!({ "identity": bad }).to_string();
        let (status, _, text) = call(api, "POST", "/join", Some(token), json, &body).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }

    // None of it changed the routes.
    let r = get(&client(), mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    // The CLI reads the credential from WEFT_HOME by itself.
    let out = mesh.weft(&["get", "resources"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `weft proxy` started by hand as a client of `mesh` (no join token in its environment):
/// the child, its bound addresses, and its stderr as it comes.
fn hand_started_proxy(
    mesh: &Mesh,
    extra: &[&str],
) -> (
    std::process::Child,
    serde_json::Value,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::{BufRead, BufReader};
    let control = mesh.status["control"].as_str().unwrap();
    let mut child = std::process::Command::new(WEFT)
        .args(["proxy", "--mode", "client", "--control", control])
        .args(["--service", "tester", "--outbound", "127.0.0.1:0"])
        .args(extra)
        .env_remove("WEFT_JOIN_TOKEN")
        .env("WEFT_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let bound: serde_json::Value = serde_json::from_str(&first).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, bound, rx)
}

/// Starts a client proxy with the join token in `token_file` and the mesh's own trust anchors,
/// waits until it is ready, and checks that a request through it reaches `hello`; its answer.
async fn joined_proxy_reaches_hello(mesh: &Mesh, token_file: &std::path::Path) -> Reply {
    let c = client();
    let anchors = mesh.files.path().join("anchors.pem");
    std::fs::write(&anchors, trust_anchors(mesh).await).unwrap();
    let (mut joined, bound, _log) = hand_started_proxy(
        mesh,
        &[
            "--join-token-file",
            token_file.to_str().unwrap(),
            "--trust-anchors-file",
            anchors.to_str().unwrap(),
        ],
    );
    let admin_addr = addr(&bound, "admin");
    let ready = eventually(200, || async {
        get(&c, admin_addr, "admin", "/ready")
            .await
            .map(|r| r.status)
            .unwrap_or(0)
    })
    .await;
    assert_eq!(ready, 200);
    let r = get(&c, addr(&bound, "outbound"), "hello", "/anything")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let _ = joined.kill();
    let _ = joined.wait();
    r
}

/// Whether a line of `log` says `needle` within 20 s; the lines before it.
fn said_within(log: &std::sync::mpsc::Receiver<String>, needle: &str) -> (bool, Vec<String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match log.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return (true, said),
            Ok(l) => said.push(l),
            Err(_) => return (false, said),
        }
    }
}

fn addr(bound: &serde_json::Value, key: &str) -> SocketAddr {
    bound[key].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_proxy_without_a_join_token_does_not_serve_in_an_mtls_mesh() {
    let mesh = Mesh::up(&mesh_yaml("no-token", &[("hello", 1, "")]));
    let c = client();

    // No token: it refuses the mesh's snapshots rather than reach peers in plaintext.
    let (mut plain, bound, log) = hand_started_proxy(&mesh, &[]);
    let (refused, said) = said_within(&log, "not serving rather than talking plaintext");
    assert!(
        refused,
        "the proxy never said why it does not serve: {said:?}"
    );
    let ready = get(&c, addr(&bound, "admin"), "admin", "/ready")
        .await
        .unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text);
    let r = get(&c, addr(&bound, "outbound"), "hello", "/")
        .await
        .unwrap();
    assert_ne!(
        r.status, 200,
        "a request went through in plaintext: {}",
        r.text
    );
    let _ = plain.kill();
    let _ = plain.wait();

    // With a join token from a file it gets its certificate and speaks mTLS as its identity.
    let api: SocketAddr = mesh.status["api"].as_str().unwrap().parse().unwrap();
    let admin = std::fs::read_to_string(mesh.home.join("meshes").join("no-token.token")).unwrap();
    let tester = "spiffe://cluster.local/ns/default/sa/tester";
    let (status, _, token) = call(
        api,
        "POST",
        "/join",
        Some(admin.trim()),
        Some("application/json"),
        &serde_json::json!({ "identity": tester }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let file = mesh.files.path().join("join-token");
    std::fs::write(&file, token).unwrap();
    let r = joined_proxy_reaches_hello(&mesh, &file).await;
    assert_eq!(r.body["headers"]["x-weft-client"], tester);
}

#[tokio::test]
async fn a_proxy_talks_only_to_a_control_plane_its_trust_anchors_vouch_for() {
    let mesh = Mesh::up(&mesh_yaml("anchors", &[("hello", 1, "")]));
    let c = client();
    let api: SocketAddr = mesh.status["api"].as_str().unwrap().parse().unwrap();
    let admin = std::fs::read_to_string(mesh.home.join("meshes").join("anchors.token")).unwrap();
    let tester = "spiffe://cluster.local/ns/default/sa/tester";
    let (status, _, token) = call(
        api,
        "POST",
        "/join",
        Some(admin.trim()),
        Some("application/json"),
        &serde_json::json!({ "identity": tester }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let token_file = mesh.files.path().join("join-token");
    std::fs::write(&token_file, &token).unwrap();

    // The roots of another CA: whoever listens at the control address is not trusted, and the
    // join token is not handed over.
    let foreign = control::ca::Ca::generate(control::ca::CaConfig::default()).unwrap();
    let wrong = mesh.files.path().join("wrong-anchors.pem");
    std::fs::write(&wrong, foreign.bundle_pem()).unwrap();
    let (mut fooled, bound, log) = hand_started_proxy(
        &mesh,
        &[
            "--join-token-file",
            token_file.to_str().unwrap(),
            "--trust-anchors-file",
            wrong.to_str().unwrap(),
        ],
    );
    let (distrusted, said) = said_within(&log, "does not chain to this proxy's trust anchors");
    assert!(
        distrusted,
        "the proxy never refused the control plane: {said:?}"
    );
    let ready = get(&c, addr(&bound, "admin"), "admin", "/ready")
        .await
        .unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text);
    let _ = fooled.kill();
    let _ = fooled.wait();

    // Without anchors at all it does not start.
    let out = std::process::Command::new(WEFT)
        .args(["proxy", "--mode", "client", "--control"])
        .arg(mesh.status["control"].as_str().unwrap())
        .args(["--service", "tester", "--outbound", "127.0.0.1:0"])
        .args(["--join-token-file", token_file.to_str().unwrap()])
        .env_remove("WEFT_JOIN_TOKEN")
        .env_remove("WEFT_TRUST_ANCHORS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--trust-anchors-file"), "{err}");

    // The mesh's own roots: the same token (never spent) gets the certificate.
    joined_proxy_reaches_hello(&mesh, &token_file).await;
}

#[tokio::test]
async fn a_proxys_tap_and_shutdown_need_the_admin_credential() {
    let mesh = Mesh::up(&mesh_yaml("admin-auth", &[("hello", 1, "")]));
    let token = std::fs::read_to_string(mesh.home.join("meshes").join("admin-auth.token")).unwrap();
    let token = token.trim();
    let sidecar = workload(&mesh.status, "hello-v1-0");
    let admin: SocketAddr = sidecar["admin"].as_str().unwrap().parse().unwrap();

    // Read-only endpoints stay open on loopback.
    for path in ["/ready", "/metrics", "/config"] {
        assert_eq!(
            call(admin, "GET", path, None, None, "").await.0,
            200,
            "{path}"
        );
    }
    // Watching requests and stopping the proxy are the operator's.
    let (status, challenge, _) = call(admin, "GET", "/tap?seconds=1", None, None, "").await;
    assert_eq!((status, challenge.is_some()), (401, true));
    assert_eq!(
        call(admin, "POST", "/shutdown", None, None, "").await.0,
        401
    );
    assert_eq!(
        call(admin, "POST", "/shutdown", Some("guess"), None, "")
            .await
            .0,
        403
    );
    assert_eq!(
        call(admin, "GET", "/tap?seconds=1", Some(token), None, "")
            .await
            .0,
        200
    );
    // Still serving: nothing above stopped it.
    let r = get(&client(), mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    // The operator may.
    assert_eq!(
        call(admin, "POST", "/shutdown", Some(token), None, "")
            .await
            .0,
        202
    );
}

/// The mesh's roots, from `GET /ca/bundle` with the admin credential.
async fn trust_anchors(mesh: &Mesh) -> String {
    let api: SocketAddr = mesh.status["api"].as_str().unwrap().parse().unwrap();
    let name = mesh.status["mesh"].as_str().unwrap();
    let admin =
        std::fs::read_to_string(mesh.home.join("meshes").join(format!("{name}.token"))).unwrap();
    let (status, _, pem) = call(api, "GET", "/ca/bundle", Some(admin.trim()), None, "").await;
    assert_eq!(status, 200, "{pem}");
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    pem
}

/// Registers a sidecar for `hello` under the instance name `instance`, by hand, with a join
/// token and the mesh's trust anchors (or neither); the child.
fn hand_started_sidecar(
    mesh: &Mesh,
    instance: &str,
    token: Option<(&str, &str)>,
) -> std::process::Child {
    let control = mesh.status["control"].as_str().unwrap();
    let mut cmd = std::process::Command::new(WEFT);
    cmd.args(["proxy", "--mode", "sidecar", "--control", control])
        .args(["--service", "hello", "--instance", instance])
        .args(["--app", "127.0.0.1:9", "--inbound", "127.0.0.1:0"])
        .env_remove("WEFT_JOIN_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some((t, anchors)) = token {
        cmd.env("WEFT_JOIN_TOKEN", t)
            .env("WEFT_TRUST_ANCHORS", anchors);
    }
    cmd.spawn().unwrap()
}

fn undeclared(mesh: &Mesh) -> Vec<String> {
    mesh.status_json(Some("rogue"))["undeclared"]
        .as_array()
        .map(|u| {
            u.iter()
                .map(|w| w["instance"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn only_proxies_with_credentials_register_and_every_registration_shows() {
    let mesh = Mesh::up(&mesh_yaml("rogue", &[("hello", 1, "")]));
    let c = client();
    // Without a token of the mesh CA the control stream is refused: nothing registers, and
    // the one replica keeps all of hello's traffic.
    let mut rogue = hand_started_sidecar(&mesh, "rogue-0", None);
    let hello = mesh.status["workloads"][0]["inbound"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..20 {
        let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let _ = rogue.kill();
    let _ = rogue.wait();
    assert!(undeclared(&mesh).is_empty(), "{:?}", undeclared(&mesh));
    let st = mesh.status_json(Some("rogue"));
    assert_eq!(st["workloads"][0]["inbound"].as_str().unwrap(), hello);

    // With a join token for hello's identity (the operator's to give), a sidecar under a name
    // the mesh does not declare registers, and shows.
    let api: SocketAddr = mesh.status["api"].as_str().unwrap().parse().unwrap();
    let admin = std::fs::read_to_string(mesh.home.join("meshes").join("rogue.token")).unwrap();
    let body = serde_json::json!({ "identity": "spiffe://cluster.local/ns/default/sa/hello" });
    let json = Some("application/json");
    let (status, _, token) = call(
        api,
        "POST",
        "/join",
        Some(admin.trim()),
        json,
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let anchors = trust_anchors(&mesh).await;
    let mut extra = hand_started_sidecar(&mesh, "extra-0", Some((&token, &anchors)));
    let seen = eventually(true, || async { undeclared(&mesh) == ["extra-0"] }).await;
    let _ = extra.kill();
    let _ = extra.wait();
    assert!(
        seen,
        "a registration went unseen: {}",
        mesh.status_json(None)
    );
    // The declared replica is listed as before, and only it.
    let st = mesh.status_json(Some("rogue"));
    let instances: Vec<&str> = st["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances, ["hello-v1-0"]);
}
