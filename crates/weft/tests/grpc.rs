//! gRPC through the mesh, end to end with a real gRPC stack: Python `grpcio` servers behind
//! sidecars (the Mesh file declares their port `protocol: grpc`, so the sidecar speaks h2c to
//! them) and the `grpcio` client of testdata/grpc calling the ingress or a sidecar's outbound
//! listener with prior-knowledge HTTP/2. Unary, server-streaming and bidi calls pass with their
//! trailers; `retryOn: unavailable` retries UNAVAILABLE answers; Istio's metrics count calls by
//! `grpc_response_status`, from headers or trailers; the proxy's own answers (no endpoint, no
//! route, a `grpc-timeout` past) reach the client as gRPC statuses.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// testdata/grpc, once Python's gRPC packages are known to be there (a mesh whose servers
/// cannot start would only time out).
fn grpc_dir() -> PathBuf {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let ok = Command::new("python3")
            .args(["-c", "import grpc, grpc_tools"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 needs grpcio and grpcio-tools (scripts/test installs them)"
        );
    });
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/grpc"))
        .canonicalize()
        .unwrap()
}

/// `echo` (2 replicas of the Python Echo server, port declared gRPC), `idle` (gRPC, no replica)
/// and `client` (a plain HTTP workload whose sidecar's outbound listener the test calls
/// through). On `echo`, calls carrying `x-retry: yes` are retried on UNAVAILABLE; others not.
fn grpc_mesh(name: &str) -> String {
    let server = grpc_dir().join("server.py");
    let server = server.display();
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: echo
    port: 50051
    protocol: grpc
    workloads:
    - name: echo-v1
      labels: {{app: echo, version: v1}}
      replicas: 2
      command: [python3, "{server}"]
  - name: idle
    port: 50051
    protocol: grpc
    workloads:
    - name: idle-v1
      labels: {{app: idle, version: v1}}
      replicas: 0
      command: [python3, "{server}"]
  - name: client
    port: 80
    workloads:
    - name: client-v1
      labels: {{app: client, version: v1}}
      replicas: 1
      command: [weft, demo, echo, --service, client, --version, v1]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo]
  http:
  - name: retried
    match: [{{headers: {{x-retry: {{exact: "yes"}}}}}}]
    retries: {{attempts: 3, retryOn: unavailable}}
    route: [{{destination: {{host: echo}}}}]
  - name: once
    retries: {{attempts: 0}}
    route: [{{destination: {{host: echo}}}}]
"#
    )
}

/// Runs testdata/grpc/client.py against `target` naming `authority`: one JSON object per call.
async fn grpc_calls(target: SocketAddr, authority: &str, kind: &str, args: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new("python3");
    cmd.arg(grpc_dir().join("client.py"))
        .arg(target.to_string())
        .arg(authority)
        .arg(kind)
        .args(args)
        // Straight to the target: the test process may have a proxy in its environment.
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("grpc_proxy");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client.py {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

async fn one_call(target: SocketAddr, authority: &str, kind: &str, args: &[&str]) -> Value {
    let mut calls = grpc_calls(target, authority, kind, args).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls.remove(0)
}

fn texts(call: &Value) -> Vec<&str> {
    call["texts"]
        .as_array()
        .unwrap_or_else(|| panic!("no answer: {call}"))
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect()
}

fn addr(v: &Value) -> SocketAddr {
    v.as_str().unwrap().parse().unwrap()
}

/// Unary, server-streaming and bidi calls through the ingress and from a sidecar's outbound
/// listener to the replicas' sidecars (mTLS between them, h2c to the app), with the status in
/// the trailers; a status that arrives in trailers after a message counts in Istio's metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_stream_through_the_ingress_and_between_sidecars() {
    let mesh = Mesh::up(&grpc_mesh("grpc-calls"));
    let status = mesh.status_json(None);
    let outbound = addr(&workload(&status, "client-v1-0")["outbound"]);
    for (via, target, authority) in [
        ("ingress", mesh.ingress, "echo"),
        ("sidecar", outbound, "echo:50051"),
    ] {
        let call = one_call(target, authority, "unary", &["--text", "hello"]).await;
        assert_eq!(call["code"], 0, "{via}: {call}");
        assert_eq!(texts(&call), ["hello"], "{via}");
        let call = one_call(target, authority, "stream", &["--n", "5"]).await;
        assert_eq!(call["code"], 0, "{via}: {call}");
        assert_eq!(
            texts(&call),
            ["hi-0", "hi-1", "hi-2", "hi-3", "hi-4"],
            "{via}"
        );
        // Each message goes once the previous answer is back: both directions stream.
        let call = one_call(target, authority, "bidi", &["--n", "4"]).await;
        assert_eq!(call["code"], 0, "{via}: {call}");
        assert_eq!(texts(&call), ["hi-0", "hi-1", "hi-2", "hi-3"], "{via}");
        // Also on a route that retries, whose request bodies are kept for another attempt.
        let retried = ["--n", "3", "--metadata", "x-retry=yes"];
        let call = one_call(target, authority, "bidi", &retried).await;
        assert_eq!(call["code"], 0, "{via}: {call}");
        assert_eq!(texts(&call), ["hi-0", "hi-1", "hi-2"], "{via}");
        // A message, then UNAVAILABLE in the trailers: the client sees the server's status.
        let call = one_call(target, authority, "fail-after-one", &["--code", "14"]).await;
        assert_eq!(call["code"], 14, "{via}: {call}");
        assert_eq!(
            call["flag"], "",
            "{via}: the app's own status, not the proxy's"
        );
    }
    // Istio's metrics: the calls are gRPC, the trailers' status counts (both through the
    // ingress, reporter source, and at the replicas' sidecars, reporter destination).
    let c = client();
    let admin = addr(&status["ingress_admin"]);
    let calls = |admin, st| grpc_count(&c, admin, "source", st);
    assert_eq!(eventually(4.0, || calls(admin, "0")).await, 4.0);
    assert_eq!(eventually(1.0, || calls(admin, "14")).await, 1.0);
    let sidecar = addr(&workload(&status, "client-v1-0")["admin"]);
    assert_eq!(eventually(1.0, || calls(sidecar, "14")).await, 1.0);
    let mut served = 0.0;
    for i in 0..2 {
        let admin = addr(&workload(&status, &format!("echo-v1-{i}"))["admin"]);
        served += grpc_count(&c, admin, "destination", "14").await;
    }
    assert_eq!(
        served, 2.0,
        "each failed call counted by the sidecar that served it"
    );
}

/// gRPC calls in a proxy's `istio_requests_total` as `reporter` (all HTTP 200) whose
/// `grpc_response_status` is `status`.
async fn grpc_count(c: &HttpClient, admin: SocketAddr, reporter: &str, status: &str) -> f64 {
    let text = get(c, admin, "admin", "/metrics").await.unwrap().text;
    let want = [
        format!("reporter=\"{reporter}\""),
        "request_protocol=\"grpc\"".to_string(),
        "response_code=\"200\"".to_string(),
        format!("grpc_response_status=\"{status}\""),
    ];
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{") && want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// The share of successful Flaky calls (each fails UNAVAILABLE half the time) over 200 calls.
async fn flaky_share(ingress: SocketAddr, retried: bool) -> f64 {
    let mut args = vec!["--n", "0.5", "--count", "200"];
    if retried {
        args.extend(["--metadata", "x-retry=yes"]);
    }
    let calls = grpc_calls(ingress, "echo", "flaky", &args).await;
    let ok = calls.iter().filter(|c| c["code"] == 0).count();
    for c in &calls {
        assert!(c["code"] == 0 || c["code"] == 14, "{c}");
    }
    ok as f64 / calls.len() as f64
}

/// `retryOn: unavailable` retries calls answered UNAVAILABLE (a trailers-only answer): with
/// half the calls failing, 3 retries lift success from ~50% to ~94%. The failures count in
/// Istio's metrics as `grpc_response_status="14"` with HTTP 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_and_counted() {
    let mesh = Mesh::up(&grpc_mesh("grpc-retries"));
    let once = flaky_share(mesh.ingress, false).await;
    let retried = flaky_share(mesh.ingress, true).await;
    eprintln!("Flaky success: {once:.3} without retries, {retried:.3} with 3 on unavailable");
    assert!((0.35..=0.65).contains(&once), "without retries {once}");
    assert!(retried >= 0.85, "with 3 retries on unavailable {retried}");
    let c = client();
    let status = mesh.status_json(None);
    let admin = addr(&status["ingress_admin"]);
    let unavailable = grpc_count(&c, admin, "source", "14").await;
    let expected = 200.0 * (1.0 - once) + 200.0 * (1.0 - retried);
    assert!(
        (unavailable - expected).abs() < 0.5,
        "failed calls counted {unavailable}, the client saw {expected}"
    );
}

/// The proxy's own answers to gRPC clients are gRPC statuses (HTTP 200, `grpc-status`,
/// `grpc-message`, the flag): a service with no ready replica is UNAVAILABLE, an unknown one
/// UNIMPLEMENTED (as Envoy maps 404), a request the listener refuses INTERNAL (a 400), and a call whose `grpc-timeout` passes before the app
/// answers is DEADLINE_EXCEEDED from the proxy, without waiting for the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answers_are_grpc_statuses() {
    let mesh = Mesh::up(&grpc_mesh("grpc-answers"));
    let status = mesh.status_json(None);
    let outbound = addr(&workload(&status, "client-v1-0")["outbound"]);
    for (target, authority) in [(mesh.ingress, "idle"), (outbound, "idle:50051")] {
        let call = one_call(target, authority, "unary", &[]).await;
        assert_eq!(call["code"], 14, "{authority}: {call}");
        assert_eq!(call["flag"], "UH", "{authority}: {call}");
        assert!(
            call["message"]
                .as_str()
                .unwrap()
                .contains("no ready endpoint"),
            "{call}"
        );
    }
    let call = one_call(outbound, "nosuch:50051", "unary", &[]).await;
    assert_eq!(call["code"], 12, "{call}");
    assert_eq!(call["flag"], "NR", "{call}");
    // The ingress refuses header names with underscores: INTERNAL, as Envoy maps a 400, with
    // the listener's reason.
    let call = one_call(mesh.ingress, "echo", "unary", &["--metadata", "x_bad=1"]).await;
    assert_eq!(call["code"], 13, "{call}");
    assert_eq!(call["flag"], "DPE", "{call}");
    assert!(
        call["message"].as_str().unwrap().contains("underscore"),
        "{call}"
    );

    // grpc-timeout: a raw HTTP/2 call (a grpcio client enforces its deadline itself, so its
    // answer would not show who gave up): Unary sleeping 2 s (Msg.code = 2000), 300 ms allowed.
    for (target, authority) in [(mesh.ingress, "echo"), (outbound, "echo:50051")] {
        let t0 = Instant::now();
        let rsp = raw_unary(target, authority, 2000, Some("300m")).await;
        let took = t0.elapsed();
        assert_eq!(rsp.0, 200, "{authority}");
        assert_eq!(
            rsp.1.as_deref(),
            Some("4"),
            "{authority}: DEADLINE_EXCEEDED"
        );
        assert_eq!(rsp.2.as_deref(), Some("UT"), "{authority}");
        assert!(took < Duration::from_millis(1500), "{authority}: {took:?}");
        // Without the header the call waits for the app's answer.
        let rsp = raw_unary(target, authority, 500, None).await;
        assert_eq!(rsp.1.as_deref(), Some("0"), "{authority}: {rsp:?}");
    }
}

/// A unary Echo call over prior-knowledge HTTP/2 with `grpc-timeout` set by hand: the HTTP
/// status, the `grpc-status` (headers or trailers) and the flag.
async fn raw_unary(
    target: SocketAddr,
    authority: &str,
    sleep_ms: u16,
    timeout: Option<&str>,
) -> (u16, Option<String>, Option<String>) {
    let tcp = tokio::net::TcpStream::connect(target).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // Msg { code: sleep_ms }: field 3, varint.
    let mut msg = vec![0x18];
    let mut v = sleep_ms as u32;
    while v >= 0x80 {
        msg.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    msg.push(v as u8);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let mut req = http::Request::post(format!("http://{authority}/weft.test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    let header =
        |h: &http::HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (code, flag) = (rsp.status().as_u16(), header(rsp.headers(), "x-weft-flag"));
    let mut grpc = header(rsp.headers(), "grpc-status");
    let body = rsp.into_body().collect().await.unwrap();
    if let Some(t) = body.trailers() {
        grpc = grpc.or(header(t, "grpc-status"));
    }
    (code, grpc, flag)
}

/// Services `NAME` with one good replica and one that fails every call UNAVAILABLE, under a
/// DestinationRule that ejects after 3 consecutive 5xx.
fn failing_replica_mesh(name: &str, services: &[&str]) -> String {
    let server = grpc_dir().join("server.py");
    let server = server.display();
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n"
    );
    for svc in services {
        y.push_str(&format!(
            r#"  - name: {svc}
    port: 50051
    protocol: grpc
    workloads:
    - name: {svc}-good
      labels: {{app: {svc}, version: good}}
      replicas: 1
      command: [python3, "{server}"]
    - name: {svc}-bad
      labels: {{app: {svc}, version: bad}}
      replicas: 1
      command: [python3, "{server}", --fail, "14"]
"#
        ));
    }
    for svc in services {
        y.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {svc}}}
spec:
  host: {svc}
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 60s
      maxEjectionPercent: 50
"#
        ));
    }
    y
}

/// Outlier detection counts UNAVAILABLE as a 503, as Envoy does: the replica that fails every
/// call is ejected after its 3 failures, whether its status comes in a trailers-only answer
/// (unary) or in trailers after a message (server-streaming); the next 100 calls succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_replica_answering_unavailable() {
    let mesh = Mesh::up(&failing_replica_mesh(
        "grpc-outlier",
        &["heads", "trailers"],
    ));
    for (svc, kind) in [("heads", "unary"), ("trailers", "stream")] {
        let calls = grpc_calls(mesh.ingress, svc, kind, &["--n", "1", "--count", "110"]).await;
        let failed: Vec<usize> = (0..calls.len())
            .filter(|i| calls[*i]["code"] != 0)
            .collect();
        for i in &failed {
            assert_eq!(calls[*i]["code"], 14, "{svc}: {}", calls[*i]);
        }
        // The bad replica fails 3 times, then is out for the rest of the calls.
        assert_eq!(failed.len(), 3, "{svc}: failed calls {failed:?}");
        assert!(failed[2] < 60, "{svc}: failed calls {failed:?}");
    }
    let c = client();
    let admin = addr(&mesh.status["ingress_admin"]);
    assert_eq!(
        metric_sum(&c, admin, "weft_endpoint_ejections_total").await,
        2.0
    );
}

/// A streaming call outlives the listeners' whole-request deadline (`--request-timeout`, here
/// 2 s): a bidi call of 3.5 s, a message every 0.5 s, completes through the ingress and between
/// sidecars. (A plain HTTP body that takes as long still gets 408: tests/robustness.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_call_outlives_the_request_timeout() {
    let mesh = Mesh::up_with(&grpc_mesh("grpc-long"), &["--request-timeout", "2s"]);
    let status = mesh.status_json(None);
    let outbound = addr(&workload(&status, "client-v1-0")["outbound"]);
    for (target, authority) in [(mesh.ingress, "echo"), (outbound, "echo:50051")] {
        let t0 = Instant::now();
        let call = one_call(target, authority, "bidi", &["--n", "8", "--pause", "0.5"]).await;
        assert_eq!(call["code"], 0, "{authority}: {call}");
        assert_eq!(texts(&call).len(), 8, "{authority}: {call}");
        assert!(t0.elapsed() > Duration::from_secs(3), "{:?}", t0.elapsed());
    }
}

/// `weft tap` reports a gRPC call's status, also when it comes in the trailers after a message
/// (the event is sent once they have gone by): a server-streaming service with one replica that
/// fails every call UNAVAILABLE and one that does not gives events with `grpc_status` 14 and 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_reports_the_grpc_status_of_trailers() {
    // The failing-replica mesh without its outlier detection: both replicas keep their share.
    let yaml = failing_replica_mesh("grpc-tap", &["trailers"]);
    let yaml = yaml.split("---").next().unwrap().to_string();
    let mesh = Mesh::up(&yaml);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = {
        let (stop, ingress) = (stop.clone(), mesh.ingress);
        tokio::spawn(async move {
            // Bounded: at most 30 rounds of 20 calls, until the tap has what it waits for.
            for _ in 0..30 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                grpc_calls(
                    ingress,
                    "trailers",
                    "stream",
                    &["--n", "1", "--count", "20"],
                )
                .await;
            }
        })
    };
    let out = mesh.weft_ok(&[
        "tap",
        "trailers",
        "--max",
        "20",
        "--duration",
        "60s",
        "-o",
        "json",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    calls.await.unwrap();
    let statuses: Vec<Option<u64>> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|e| e["grpc_status"].as_u64())
        .collect();
    assert_eq!(statuses.len(), 20, "{out}");
    assert!(statuses.contains(&Some(14)), "{out}");
    assert!(statuses.contains(&Some(0)), "{out}");
    assert!(statuses.iter().all(Option::is_some), "{out}");
}
