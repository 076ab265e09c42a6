//! Captured traffic in a transparent mesh, end to end: unmodified clients in a pod (`curl`
//! and Python's urllib with no proxy variables, a `grpcio` client, `redis-cli`) reach HTTP,
//! gRPC and Redis services by name through their sidecars; a VirtualService's weights, a GAMMA
//! HTTPRoute, an SMI TrafficSplit, JWT checks, an AuthorizationPolicy and STRICT mTLS apply to
//! captured traffic as to any; Istio's metrics count it
//! exactly; and a connection to an address outside the mesh passes through under ALLOW_ANY and
//! is refused under a REGISTRY_ONLY Sidecar resource. Real network namespaces: root only (CI
//! runs as root); without root the tests say why they skip.

mod common;

use common::pods::{can_run_pods, in_pod, in_pod_ok, Outside};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn testdata(dir: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata"))
        .join(dir)
        .canonicalize()
        .unwrap()
}

/// `auth` (issues JWTs; first, so that the sidecars checking its tokens find its keys when they
/// start), `web` (HTTP, v1 and v2 replicas), `echo` (gRPC), `cache` (Redis over TCP), `shop` and
/// `cart` (no replicas of their own: an HTTPRoute and a TrafficSplit send them to `shop-b` and
/// `cart-b`), `client` (where the clients run) and `plain` (a pod without sidecar).
fn mesh_yaml(name: &str) -> String {
    let grpc = testdata("grpc").join("server.py");
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
  interception: transparent
  services:
  - name: auth
    port: 80
    workloads:
    - {{name: auth, replicas: 1, command: [weft, demo, auth, --issuer, weft-auth]}}
  - name: web
    port: 80
    workloads:
    - {{name: web-v1, labels: {{version: v1}}, replicas: 1, command: [weft, demo, echo, --service, web]}}
    - {{name: web-v2, labels: {{version: v2}}, replicas: 1, command: [weft, demo, echo, --service, web]}}
  - name: echo
    port: 50051
    protocol: grpc
    workloads:
    - {{name: echo-v1, replicas: 1, command: [python3, "{grpc}"]}}
  - name: cache
    port: 6379
    protocol: tcp
    workloads:
    - name: cache
      replicas: 1
      command: [sh, -c, 'exec redis-server --bind 127.0.0.1 --port $PORT --save "" --appendonly no']
  - {{name: shop, port: 80}}
  - name: shop-b
    port: 80
    workloads:
    - {{name: shop-b, replicas: 1, command: [weft, demo, echo, --service, shop-b]}}
  - {{name: cart, port: 80}}
  - name: cart-b
    port: 80
    workloads:
    - {{name: cart-b, replicas: 1, command: [weft, demo, echo, --service, cart-b]}}
  - name: client
    port: 80
    workloads:
    - {{name: client, replicas: 1, command: [weft, demo, echo, --service, client]}}
  - name: plain
    port: 80
    workloads:
    - {{name: plain, sidecar: false, replicas: 1, command: [weft, demo, echo, --service, plain]}}
"#,
        grpc = grpc.display()
    )
}

/// The pod of `instance` (its network namespace) and its address, from `weft status`.
fn pod(status: &Value, instance: &str) -> (String, String) {
    let w = workload(status, instance);
    (
        w["pod"].as_str().unwrap().to_string(),
        w["pod_address"].as_str().unwrap().to_string(),
    )
}

fn admin(status: &Value, instance: &str) -> SocketAddr {
    workload(status, instance)["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The sum of the samples of `family` on the proxy at `admin` whose labels include all of
/// `labels` (`name="value"` each).
async fn metric(admin: SocketAddr, family: &str, labels: &[&str]) -> f64 {
    let text = get(&client(), admin, "admin", "/metrics")
        .await
        .unwrap()
        .text;
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// `curl URL` inside `ns`, with extra arguments: (HTTP status, body); status 0 when curl
/// got no answer.
fn curl(ns: &str, url: &str, extra: &[&str]) -> (u16, String) {
    let mut argv = vec!["curl", "-s", "-m", "10", "-w", "\n%{http_code}"];
    argv.extend_from_slice(extra);
    argv.push(url);
    let out = in_pod(ns, &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_clients_reach_http_grpc_and_redis_services_by_name() {
    if !can_run_pods() {
        return;
    }
    let m = Mesh::up(&mesh_yaml("tclients"));
    let (client_pod, _) = pod(&m.status, "client-0");
    // Names come from the pod's hosts file; its resolver asks no DNS server beyond the pod
    // (none is reachable), so a lookup the hosts file cannot answer fails at once.
    let resolv = in_pod_ok(&client_pod, &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 127.0.0.1\nsearch default.svc.cluster.local"),
        "{resolv}"
    );

    // curl and urllib, no proxy settings: by bare name, by FQDN.
    let (code, body) = curl(&client_pod, "http://web/hello", &[]);
    assert_eq!(code, 200, "{body}\n{}", m.stderr());
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["service"], "web");
    assert_eq!(
        body["headers"]["x-weft-client"], "spiffe://cluster.local/ns/default/sa/client",
        "the call went through the client's sidecar, over mTLS"
    );
    let urllib = "import json, urllib.request as u; print(json.load(u.build_opener(u.ProxyHandler({})).open('http://web.default.svc.cluster.local/py', timeout=10))['path'])";
    assert_eq!(
        in_pod_ok(&client_pod, &["python3", "-c", urllib]).trim(),
        "/py"
    );

    // gRPC: unary, server streaming and bidi calls to echo:50051 (the grpcio client of
    // testdata/grpc, with no proxy).
    let grpc_client = testdata("grpc").join("client.py");
    let grpc_client = grpc_client.to_str().unwrap();
    for (kind, extra, texts) in [
        ("unary", vec![], 1),
        ("stream", vec!["--n", "3"], 3),
        ("bidi", vec!["--n", "4"], 4),
    ] {
        let mut argv = vec!["python3", grpc_client, "echo:50051", "echo:50051", kind];
        argv.extend(extra);
        let out = in_pod_ok(&client_pod, &argv);
        let call: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(call["code"], 0, "{kind}: {out}");
        assert_eq!(
            call["texts"].as_array().unwrap().len(),
            texts,
            "{kind}: {out}"
        );
    }

    // Redis over TCP: redis-cli by name.
    let redis = |args: &[&str]| {
        let mut argv = vec!["redis-cli", "-h", "cache", "-p", "6379"];
        argv.extend_from_slice(args);
        in_pod_ok(&client_pod, &argv).trim().to_string()
    };
    assert_eq!(redis(&["PING"]), "PONG");
    assert_eq!(redis(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(redis(&["GET", "greeting"]), "hello");

    // The client's sidecar counted exactly what went through it.
    let a = admin(&m.status, "client-0");
    let to = |svc: &str| format!("destination_service_name=\"{svc}\"");
    let src = "reporter=\"source\"";
    assert_eq!(
        metric(a, "istio_requests_total", &[src, &to("web")]).await,
        2.0
    );
    assert_eq!(
        metric(
            a,
            "istio_requests_total",
            &[
                src,
                &to("echo"),
                "request_protocol=\"grpc\"",
                "grpc_response_status=\"0\""
            ]
        )
        .await,
        3.0
    );
    let cache = [src, &to("cache")];
    let opened = || metric(a, "istio_tcp_connections_opened_total", &cache);
    assert_eq!(opened().await, 3.0, "one connection per redis-cli");
    eventually(3.0, || async {
        metric(a, "istio_tcp_connections_closed_total", &cache).await
    })
    .await;
}

/// `n` requests to `url` over one keep-alive connection from inside `ns`: requests per
/// instance that answered.
fn spread(ns: &str, host: &str, n: usize) -> BTreeMap<String, usize> {
    let script = format!(
        "import http.client, json, collections\n\
         c = http.client.HTTPConnection('{host}', 80, timeout=10)\n\
         seen = collections.Counter()\n\
         for _ in range({n}):\n\
         \x20   c.request('GET', '/spread')\n\
         \x20   r = c.getresponse()\n\
         \x20   seen[json.loads(r.read())['instance']] += 1\n\
         print(json.dumps(seen))\n"
    );
    let out = in_pod_ok(ns, &["python3", "-c", &script]);
    serde_json::from_str(out.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_jwt_authorization_and_strict_mtls_apply_to_captured_traffic() {
    if !can_run_pods() {
        return;
    }
    let rules = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: web, subset: v1}, weight: 80}
    - {destination: {host: web, subset: v2}, weight: 20}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules:
  - issuer: weft-auth
    jwksUri: http://auth.default.svc.cluster.local/.well-known/jwks.json
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-admin}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {paths: [/admin]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: shop, port: 80}]
  rules:
  - backendRefs: [{name: shop-b, port: 80}]
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: cart}
spec:
  service: cart
  backends:
  - {service: cart-b, weight: 100}
";
    let m = Mesh::up(&format!("{}---\n{rules}", mesh_yaml("trules")));
    let (client_pod, _) = pod(&m.status, "client-0");

    // 80/20 over 3000 requests: the share of v1 within 3 points (its standard deviation at
    // this count is 0.73 points).
    let n = 3000;
    let seen = spread(&client_pod, "web", n);
    let v1 = seen.get("web-v1-0").copied().unwrap_or(0);
    assert_eq!(seen.values().sum::<usize>(), n, "{seen:?}");
    let share = v1 as f64 / n as f64;
    assert!(
        (0.77..=0.83).contains(&share),
        "v1 got {share:.3}: {seen:?}"
    );

    // JWT: a token from auth is accepted, a malformed one 401.
    let (code, token) = curl(&client_pod, "http://auth/token?sub=alice", &[]);
    assert_eq!(code, 200, "{token}");
    let token: Value = serde_json::from_str(&token).unwrap();
    let bearer = format!(
        "authorization: Bearer {}",
        token["access_token"].as_str().unwrap()
    );
    assert_eq!(curl(&client_pod, "http://web/jwt", &["-H", &bearer]).0, 200);
    let bad = "authorization: Bearer not-a-jwt";
    assert_eq!(curl(&client_pod, "http://web/jwt", &["-H", bad]).0, 401);

    // An AuthorizationPolicy denies the client /admin, by the identity its sidecar proved.
    let (code, body) = curl(&client_pod, "http://web/admin", &[]);
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(curl(&client_pod, "http://web/public", &[]).0, 200);

    // A GAMMA HTTPRoute and an SMI TrafficSplit route captured requests to services that have
    // no replicas of their own.
    for (parent, backend) in [("shop", "shop-b"), ("cart", "cart-b")] {
        let (code, body) = curl(&client_pod, &format!("http://{parent}/"), &[]);
        assert_eq!(code, 200, "{parent}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["service"], backend, "{parent}");
    }

    // A pod without a sidecar calls web-v1's pod address: its inbound capture takes the
    // plaintext connection while the port is PERMISSIVE, refuses it once STRICT.
    let plain_pod = local::pods::netns_name("trules", "plain-0");
    let (_, web_addr) = pod(&m.status, "web-v1-0");
    let direct = format!("http://{web_addr}/direct");
    let (code, body) = curl(&plain_pod, &direct, &[]);
    assert_eq!(code, 200, "PERMISSIVE: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["headers"]["x-weft-inbound"], "web-v1-0");
    // … and so does a TCP port: redis-cli to the cache pod's address reaches Redis through
    // its sidecar, which counts the connection.
    let (_, cache_addr) = pod(&m.status, "cache-0");
    let ping = || {
        in_pod(
            &plain_pod,
            &["redis-cli", "-h", &cache_addr, "-p", "6379", "PING"],
        )
    };
    assert_eq!(String::from_utf8_lossy(&ping().stdout).trim(), "PONG");
    let cache_admin = admin(&m.status, "cache-0");
    let inbound = [
        "reporter=\"destination\"",
        "destination_service_name=\"cache\"",
    ];
    assert_eq!(
        metric(cache_admin, "istio_tcp_connections_opened_total", &inbound).await,
        1.0
    );
    m.apply_yaml(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    let (code, body) = curl(&plain_pod, &direct, &[]);
    assert_eq!(code, 0, "STRICT refuses plaintext: {body}");
    let refused = ping();
    assert_ne!(
        String::from_utf8_lossy(&refused.stdout).trim(),
        "PONG",
        "STRICT refuses plaintext TCP too"
    );
    // Meshed callers still get through.
    assert_eq!(curl(&client_pod, "http://web/after", &[]).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_outside_the_mesh_pass_through_unless_registry_only() {
    if !can_run_pods() {
        return;
    }
    let m = Mesh::up(&mesh_yaml("tpass"));
    let (client_pod, _) = pod(&m.status, "client-0");
    let network = &m.status["network"];
    let bridge = network["bridge"].as_str().unwrap();
    let subnet = network["subnet"].as_str().unwrap();
    let prefix: u8 = subnet.rsplit_once('/').unwrap().1.parse().unwrap();
    let base = subnet.split('/').next().unwrap();
    let outside_addr = format!("{}.254", base.rsplit_once('.').unwrap().0);
    let _outside = Outside::attach(
        "tpass",
        bridge,
        &outside_addr,
        prefix,
        &[
            "python3",
            "-m",
            "http.server",
            "8000",
            "--bind",
            &outside_addr,
        ],
    );
    let url = format!("http://{outside_addr}:8000/");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = curl(&client_pod, &url, &[]);
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ALLOW_ANY: no answer from {url} through passthrough"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A Sidecar resource in the root namespace: REGISTRY_ONLY for every workload.
    m.apply_yaml(
        "registry-only.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    );
    let (code, _) = curl(&client_pod, &url, &[]);
    assert_eq!(code, 0, "REGISTRY_ONLY refuses {url}");
    // Services of the mesh are still reached.
    assert_eq!(curl(&client_pod, "http://web/", &[]).0, 200);
}
