//! `weft canary`: rollouts run by the control plane's canary controller, end to end on `weft
//! up` with two versions of the echo service under steady load through the ingress. A healthy
//! v2 reaches 100% step by step, each step's measured share within 5 points of its weight; a
//! v2 failing 20% or answering slowly is rolled back at the first analysis; an A/B phase sends
//! only the header's requests to v2 and judges them before any weight moves; a webhook
//! answering 500 halts the promotion; pause, resume, abort and promote act at once; the route
//! the rollout owns is refused to other writers.

mod common;

use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// echo v1 and v2 (`v2_flags` added to v2's command), one replica each.
fn mesh_yaml(v2_flags: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: rollout}}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: echo
    port: 80
    workloads:
    - {{name: echo-v1, labels: {{app: echo, version: v1}}, replicas: 1, command: [weft, demo, echo, --service, echo, --version, v1]}}
    - {{name: echo-v2, labels: {{app: echo, version: v2}}, replicas: 1, command: [weft, demo, echo, --service, echo, --version, v2{v2_flags}]}}
"
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One answer the load got: when, from which version, with which status.
#[derive(Clone, Debug)]
struct Seen {
    at_ms: u64,
    version: String,
    status: u16,
    header: bool,
}

/// Steady load through the ingress to echo: `workers` loops, each sending a request every
/// `every` (with `x-canary: true` on the loops listed in `with_header`), until stopped.
struct Load {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(mesh: &Mesh, workers: usize, with_header: usize, every: Duration) -> Load {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|i| {
                let (seen, stop, ingress) = (seen.clone(), stop.clone(), mesh.ingress);
                let header = i < with_header;
                tokio::spawn(async move {
                    let c = client();
                    // Bounded: at most 10 minutes of requests.
                    let deadline = Instant::now() + Duration::from_secs(600);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let headers: &[(&str, &str)] =
                            if header { &[("x-canary", "true")] } else { &[] };
                        if let Ok(r) = get_with(&c, ingress, "echo", "/", headers).await {
                            let version = r.body["version"].as_str().unwrap_or("").to_string();
                            seen.lock().unwrap().push(Seen {
                                at_ms: now_ms(),
                                version,
                                status: r.status,
                                header,
                            });
                        }
                        tokio::time::sleep(every).await;
                    }
                })
            })
            .collect();
        Load { seen, stop, tasks }
    }

    async fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}

/// `weft canary start echo --from v1 --to v2 ARGS…`: what it printed.
fn start(mesh: &Mesh, args: &[&str]) -> String {
    let from_to = ["canary", "start", "echo", "--from", "v1", "--to", "v2"];
    mesh.weft_ok(&[&from_to[..], args].concat())
}

/// `weft canary status NAME -o json`.
fn status(mesh: &Mesh) -> Value {
    serde_json::from_str(&mesh.weft_ok(&["canary", "status", "echo", "-o", "json"])).unwrap()
}

/// Polls the rollout until `done` holds (every 250 ms, at most `within`).
async fn wait_for(
    mesh: &Mesh,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let v = status(mesh);
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; status: {v:#}\n{}",
            mesh.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn phase(v: &Value) -> &str {
    v["state"]["phase"].as_str().unwrap_or("")
}

/// The share (percent) of answers from v2 among those in `[from, to)` ms.
fn share_v2(seen: &[Seen], from: u64, to: u64) -> (f64, usize) {
    let window: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at_ms >= from && s.at_ms < to && !s.header)
        .collect();
    let v2 = window.iter().filter(|s| s.version == "v2").count();
    (100.0 * v2 as f64 / window.len().max(1) as f64, window.len())
}

/// Four standard deviations of a measured share (in points) of `n` answers when the true share
/// is `weight`%: a weighted draw per request is a binomial, and a share outside this band has
/// odds under 1 in 15,000.
fn four_sigma(weight: f64, n: usize) -> f64 {
    let p = weight / 100.0;
    4.0 * 100.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_v2_reaches_all_the_traffic_step_by_step() {
    let mesh = Mesh::up(&mesh_yaml(""));
    let load = Load::start(&mesh, 8, 0, Duration::from_millis(2));
    let out = start(
        &mesh,
        &[
            "--steps",
            "10,25,50,100",
            "--interval",
            "4s",
            "--min-requests",
            "20",
            "--max-p99",
            "2s",
        ],
    );
    assert!(out.contains("canary default/echo started"), "{out}");
    // The route the rollout owns is in force, and refused to anyone else.
    let started = wait_for(&mesh, "the first step", Duration::from_secs(20), |v| {
        phase(v) == "progressing"
    })
    .await;
    assert_eq!(
        started["route"], "VirtualService default/canary-echo",
        "{started:#}"
    );
    let got = mesh.weft_ok(&["get", "VirtualService"]);
    assert!(got.contains("default/canary-echo"), "{got}");
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: canary-echo, namespace: default}\nspec:\n  hosts: [echo]\n  http:\n  - route: [{destination: {host: echo}}]\n";
    let file = mesh.files.path().join("mine.yaml");
    std::fs::write(&file, vs).unwrap();
    let refused = mesh.weft(&["apply", "-f", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("managed by Canary default/echo"),
        "{said}"
    );

    let done = wait_for(&mesh, "the promotion", Duration::from_secs(60), |v| {
        phase(v) == "succeeded"
    })
    .await;
    assert_eq!(
        (
            done["weights"]["from"].as_u64(),
            done["weights"]["to"].as_u64()
        ),
        (Some(0), Some(100))
    );
    // A little more load at 100%, then the shares per step.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.stop().await;
    let history: Vec<&Value> = done["state"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let weights: Vec<u64> = history
        .iter()
        .filter(|e| matches!(e["phase"].as_str(), Some("progressing" | "succeeded")))
        .map(|e| e["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [10, 25, 50, 100], "{history:#?}");
    let end = seen.last().unwrap().at_ms + 1;
    for (i, e) in history.iter().enumerate() {
        if !matches!(e["phase"].as_str(), Some("progressing" | "succeeded")) {
            continue;
        }
        // From just after the weight was put in force (the proxies take it within
        // milliseconds) to the next change.
        let from = e["at_ms"].as_u64().unwrap() + 300;
        let to = history
            .get(i + 1)
            .map_or(end, |n| n["at_ms"].as_u64().unwrap());
        let (share, n) = share_v2(&seen, from, to);
        let weight = e["weight"].as_f64().unwrap();
        // Within 5 points, with enough answers that 5 points is at least four standard
        // deviations of the draw (1,600 at 50%).
        eprintln!("at {weight}% v2 had {share:.1}% of {n} answers");
        assert!(
            four_sigma(weight, n) <= 5.0,
            "only {n} answers at {weight}%: too few to tell 5 points"
        );
        assert!(
            (share - weight).abs() <= 5.0,
            "at {weight}% v2 had {share:.1}% of {n} answers"
        );
    }
    assert!(
        seen.iter().all(|s| s.status == 200),
        "a request failed during a healthy rollout"
    );
    // Its analyses are in the status, against the thresholds.
    assert_eq!(done["state"]["last"]["verdict"], "passed", "{done:#}");
    assert_eq!(done["thresholds"]["max_error_rate"], 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_failing_20_percent_is_rolled_back_at_the_first_analysis() {
    let mesh = Mesh::up(&mesh_yaml(", --fail-rate, \"0.2\""));
    let load = Load::start(&mesh, 4, 0, Duration::from_millis(10));
    start(
        &mesh,
        &[
            "--interval",
            "3s",
            "--min-requests",
            "20",
            "--max-error-rate",
            "1%",
        ],
    );
    let done = wait_for(&mesh, "the rollback", Duration::from_secs(30), |v| {
        phase(v) == "rolledback"
    })
    .await;
    let rolled_back = done["state"]["history"].as_array().unwrap().last().unwrap()["at_ms"]
        .as_u64()
        .unwrap();
    // At the first analysis: one step of 10%, never more.
    let history = done["state"]["history"].as_array().unwrap();
    assert!(
        history.iter().all(|e| e["weight"].as_u64() <= Some(10)),
        "{history:#?}"
    );
    assert_eq!(done["state"]["failed_checks"], 1, "{done:#}");
    let message = done["state"]["message"].as_str().unwrap();
    assert!(
        message.contains("error rate") && message.contains("over 1.00%"),
        "{message}"
    );
    // Afterwards v2 gets nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.stop().await;
    let (share, n) = share_v2(&seen, after, u64::MAX);
    assert!(
        n >= 100 && share == 0.0,
        "after the rollback v2 had {share}% of {n}"
    );
    // What the attempt cost the clients: only v2's share of 10% could fail, 20% of it, so the
    // failed share of the requests sent while it ran is 2% in expectation; at most 4%.
    // The attempt: from its first step (before it, with no route yet, echo's two versions
    // shared the traffic as any two replicas do) to just after the rollback.
    let attempt = history
        .iter()
        .find(|e| e["phase"] == "progressing")
        .and_then(|e| e["at_ms"].as_u64())
        .unwrap();
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at_ms >= attempt && s.at_ms <= rolled_back + 300)
        .collect();
    let failed = during.iter().filter(|s| s.status >= 500).count();
    let bound = during.len() as f64 * 0.04;
    assert!(
        (failed as f64) <= bound,
        "{failed} of {} requests failed during the attempt (bound {bound:.0})",
        during.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_v2_is_rolled_back() {
    let mesh = Mesh::up(&mesh_yaml(", --delay, 300ms"));
    let load = Load::start(&mesh, 6, 0, Duration::from_millis(10));
    start(
        &mesh,
        &[
            "--interval",
            "3s",
            "--min-requests",
            "10",
            "--max-p99",
            "100ms",
        ],
    );
    let done = wait_for(&mesh, "the rollback", Duration::from_secs(30), |v| {
        phase(v) == "rolledback"
    })
    .await;
    let message = done["state"]["message"].as_str().unwrap();
    assert!(
        message.contains("p99") && message.contains("over 100 ms"),
        "{message}"
    );
    assert!(
        done["state"]["last"]["p99_ms"].as_f64().unwrap() > 100.0,
        "{done:#}"
    );
    let seen = load.stop().await;
    assert!(seen.iter().all(|s| s.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_phase_sends_only_the_header_to_v2_and_judges_it_before_any_weight_moves() {
    let mesh = Mesh::up(&mesh_yaml(""));
    // Two loops with the header, two without.
    let load = Load::start(&mesh, 4, 2, Duration::from_millis(10));
    start(
        &mesh,
        &[
            "--interval",
            "3s",
            "--min-requests",
            "20",
            "--ab-header",
            "x-canary: true",
            "--ab-duration",
            "6s",
        ],
    );
    let testing = wait_for(&mesh, "the A/B phase", Duration::from_secs(20), |v| {
        phase(v) == "testing"
    })
    .await;
    let began = testing["state"]["since_ms"].as_u64().unwrap();
    let progressing = wait_for(&mesh, "the first step", Duration::from_secs(30), |v| {
        phase(v) == "progressing"
    })
    .await;
    let ended = progressing["state"]["since_ms"].as_u64().unwrap();
    assert!(
        ended - began >= 6_000,
        "the A/B phase lasted {} ms",
        ended - began
    );
    // It was judged on the header's requests before the weight moved.
    let history = progressing["state"]["history"].as_array().unwrap();
    assert!(
        history.iter().all(|e| e["weight"].as_u64() <= Some(10)),
        "{history:#?}"
    );
    assert_eq!(progressing["state"]["weight"], 10);
    assert!(
        progressing["state"]["last"]["requests"].as_u64().unwrap() >= 20,
        "{progressing:#}"
    );
    // An operator promotes it at once.
    let out = mesh.weft_ok(&["canary", "promote", "echo"]);
    assert!(out.contains("succeeded at 100%"), "{out}");
    let promoted = now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.stop().await;
    let in_ab: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at_ms > began + 300 && s.at_ms < ended)
        .collect();
    let plain = in_ab.iter().filter(|s| !s.header).count();
    let plain_v2 = in_ab
        .iter()
        .filter(|s| !s.header && s.version == "v2")
        .count();
    let marked = in_ab.iter().filter(|s| s.header).count();
    let marked_v2 = in_ab
        .iter()
        .filter(|s| s.header && s.version == "v2")
        .count();
    assert!(
        plain >= 100 && plain_v2 == 0,
        "during A/B, {plain_v2} of {plain} plain requests went to v2"
    );
    assert!(
        marked >= 100 && marked_v2 == marked,
        "during A/B, {marked_v2} of {marked} marked requests went to v2"
    );
    let (share, n) = share_v2(&seen, promoted + 300, u64::MAX);
    assert!(
        n >= 50 && share == 100.0,
        "after promote v2 had {share}% of {n}"
    );
}

/// A webhook that answers 200 before the rollout and 500 before the promotion: the bodies it
/// got.
async fn webhook() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let status = if v["phase"] == "pre-promotion" {
                                500
                            } else {
                                200
                            };
                            kept.lock().unwrap().push(v);
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_halts_the_promotion_and_the_operator_pauses_resumes_and_aborts() {
    let mesh = Mesh::up(&mesh_yaml(""));
    let (hook, calls) = webhook().await;
    let load = Load::start(&mesh, 4, 0, Duration::from_millis(10));
    start(
        &mesh,
        &[
            "--steps",
            "50,100",
            "--interval",
            "2s",
            "--min-requests",
            "20",
            "--webhook",
            &format!("http://{hook}/gate"),
        ],
    );
    // Before the rollout: called, 200. Before the promotion: 500, so it stays at 50%.
    let halted = wait_for(
        &mesh,
        "the halted promotion",
        Duration::from_secs(30),
        |v| {
            v["state"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("promotion halted"))
        },
    )
    .await;
    assert_eq!(
        (phase(&halted), halted["state"]["weight"].as_u64()),
        ("progressing", Some(50)),
        "{halted:#}"
    );
    assert!(
        halted["state"]["message"]
            .as_str()
            .unwrap()
            .contains("answered 500"),
        "{halted:#}"
    );
    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls[0]["phase"], "pre-rollout", "{calls:?}");
        assert_eq!(
            (calls[0]["name"].as_str(), calls[0]["to"].as_str()),
            (Some("echo"), Some("v2"))
        );
        assert!(
            calls.iter().any(|c| c["phase"] == "pre-promotion"),
            "{calls:?}"
        );
    }
    // Two more analyses: still held.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = status(&mesh);
    assert_eq!(
        (phase(&held), held["state"]["weight"].as_u64()),
        ("progressing", Some(50)),
        "{held:#}"
    );

    let out = mesh.weft_ok(&["canary", "pause", "echo"]);
    assert!(out.contains("paused at 50%"), "{out}");
    assert_eq!(phase(&status(&mesh)), "paused");
    let out = mesh.weft_ok(&["canary", "resume", "echo"]);
    assert!(out.contains("progressing at 50%"), "{out}");

    // Abort: everything back on v1 at once.
    let out = mesh.weft_ok(&["canary", "abort", "echo"]);
    assert!(out.contains("aborted at 0%"), "{out}");
    let aborted = now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.stop().await;
    let (share, n) = share_v2(&seen, aborted + 200, u64::MAX);
    assert!(
        n >= 100 && share == 0.0,
        "after abort v2 had {share}% of {n}"
    );
    let (during, n) = share_v2(
        &seen,
        halted["state"]["since_ms"].as_u64().unwrap() + 300,
        aborted,
    );
    assert!(
        n >= 500 && (during - 50.0).abs() <= four_sigma(50.0, n),
        "held at 50%, v2 had {during:.1}% of {n}"
    );
    // A final rollout cannot be paused.
    let again = mesh.weft(&["canary", "pause", "echo"]);
    assert!(!again.status.success(), "paused an aborted rollout");
    // `status` tells the story.
    let text = mesh.weft_ok(&["canary", "status", "echo"]);
    for want in [
        "aborted",
        "pre-promotion webhook",
        "paused by an operator",
        "resumed by an operator",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_resource_is_checked_field_by_field() {
    let mesh = Mesh::up(&mesh_yaml(""));
    let bad = "apiVersion: weft.dev/v1alpha1\nkind: Canary\nmetadata: {name: echo}\nspec:\n  service: echo\n  from: v1\n  to: v3\n  steps: [50, 20]\n";
    let file = mesh.files.path().join("canary.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = mesh.weft(&["apply", "-f", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("canary.yaml:7:") && said.contains("spec.to") && said.contains("version: v3"),
        "{said}"
    );
    assert!(
        said.contains("canary.yaml:8:") && said.contains("spec.steps"),
        "{said}"
    );
    // Nothing started.
    let all: Value =
        serde_json::from_str(&mesh.weft_ok(&["canary", "status", "-o", "json"])).unwrap();
    assert_eq!(all, serde_json::json!([]));
}

/// The control plane restarted mid-rollout: `weft control` over etcd, SIGKILLed at the second
/// step and started again on the same store and ports; the rollout goes on from that step
/// (its history intact) and completes, the proxies serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_control_plane_resumes_the_rollout_at_the_same_step() {
    use common::etcd::{client_args, credentials, proxy, Cluster, Proc, Replica};
    let etcd = Cluster::start(1);
    let store = etcd.url();
    let dir = tempfile::tempdir().unwrap();
    let mesh_file = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: rollout}
spec:
  services:
  - name: echo
    port: 80
    workloads:
    - {name: echo-v1, replicas: 1, labels: {app: echo, version: v1}, command: [weft, demo, echo]}
    - {name: echo-v2, replicas: 1, labels: {app: echo, version: v2}, command: [weft, demo, echo]}
  - name: client
    port: 80
",
    )
    .unwrap();
    let (grpc, api) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut control = Replica::start_on(&store, &[&mesh_file], &grpc, &api, &[]);
    let home = tempfile::tempdir().unwrap();
    // echo v1 and v2, each an app behind its sidecar, and a client proxy to send through.
    let mut keep: Vec<Proc> = Vec::new();
    for version in ["v1", "v2"] {
        let port = free_port();
        keep.push(Proc(
            std::process::Command::new(WEFT)
                .args(["demo", "echo", "--service", "echo", "--version", version])
                .args(["--port", &port.to_string()])
                .env("WEFT_LOG", "warn")
                .spawn()
                .unwrap(),
        ));
        let (token, bundle) = credentials(
            &control,
            "spiffe://cluster.local/ns/default/sa/echo",
            dir.path(),
        );
        let (p, _) = proxy(
            home.path(),
            &[control.grpc],
            &[
                "--mode",
                "sidecar",
                "--service",
                "echo",
                "--workload",
                &format!("echo-{version}"),
                "--instance",
                &format!("echo-{version}-0"),
                "--label",
                "app=echo",
                "--label",
                &format!("version={version}"),
                "--app",
                &format!("127.0.0.1:{port}"),
                "--inbound",
                "127.0.0.1:0",
                "--join-token-file",
                &token,
                "--trust-anchors-file",
                &bundle,
            ],
        );
        keep.push(p);
    }
    let (token, bundle) = credentials(
        &control,
        "spiffe://cluster.local/ns/default/sa/client",
        dir.path(),
    );
    let (_client, bound) = proxy(
        home.path(),
        &[control.grpc],
        &client_args("client-0", &token, &bundle),
    );
    let outbound: std::net::SocketAddr = bound["outbound"].as_str().unwrap().parse().unwrap();
    until("both versions routable", Duration::from_secs(30), || {
        let c = client();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..20 {
                if let Ok(r) = get(&c, outbound, "echo", "/").await {
                    if r.status == 200 {
                        seen.insert(r.body["version"].as_str().unwrap_or("").to_string());
                    }
                }
            }
            seen.len() == 2
        }
    })
    .await;
    // Steady load through the client proxy.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(0usize));
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let (stop, failures) = (stop.clone(), failures.clone());
            tokio::spawn(async move {
                let c = client();
                let deadline = Instant::now() + Duration::from_secs(300);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match get(&c, outbound, "echo", "/").await {
                        Ok(r) if r.status == 200 => {}
                        _ => *failures.lock().unwrap() += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    let canary = |c: &Replica, args: &[&str]| {
        let out = c.weft(&[&["canary"], args].concat());
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            c.stderr.lock().unwrap()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    canary(
        &control,
        &[
            "start",
            "echo",
            "--from",
            "v1",
            "--to",
            "v2",
            "--steps",
            "10,25,50,100",
            "--interval",
            "3s",
            "--min-requests",
            "20",
        ],
    );
    let status_of = |c: &Replica| -> Value {
        serde_json::from_str(&canary(c, &["status", "echo", "-o", "json"])).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let v = status_of(&control);
        if v["state"]["weight"] == 25 {
            break v;
        }
        assert!(Instant::now() < deadline, "never reached 25%: {v:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    control.kill();
    let control = Replica::start_on(&store, &[&mesh_file], &grpc, &api, &[]);
    // The same step, the same history.
    let after = status_of(&control);
    assert_eq!(after["state"]["weight"], 25, "{after:#}");
    assert_eq!(after["state"]["started_ms"], before["state"]["started_ms"]);
    assert_eq!(after["state"]["history"], before["state"]["history"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let v = status_of(&control);
        if phase(&v) == "succeeded" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "not promoted after the restart: {v:#}\n{}",
            control.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    assert_eq!(rollout_weights(&done), [10, 25, 50, 100], "{done:#}");
    assert_eq!(
        *failures.lock().unwrap(),
        0,
        "requests failed across the restart"
    );
}

/// Rollouts on the other traffic-splitting APIs: an SMI TrafficSplit's backends (clients
/// call the apex through the ingress) and a Gateway API HTTPRoute's (GAMMA: a route on the
/// apex Service, for calls made inside the mesh, here by `front`), both moved to 50% and then
/// promoted, each step's share within 7 points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_move_traffic_split_and_http_route_backends() {
    let echo = |svc: &str, v: &str| {
        format!("  - name: {svc}-{v}\n    port: 80\n    workloads:\n    - {{name: {svc}-{v}, labels: {{app: {svc}, version: {v}}}, replicas: 1, command: [weft, demo, echo, --service, {svc}, --version, {v}]}}\n")
    };
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: apis}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: web\n    port: 80\n  - name: api\n    port: 80\n  - name: front\n    port: 80\n    workloads:\n    - {{name: front, labels: {{app: front}}, replicas: 1, command: [weft, demo, echo, --service, front]}}\n{}{}{}{}---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {{name: web, namespace: default}}
spec:
  service: web
  backends:
  - {{service: web-v1, weight: 100}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: default}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: api, port: 80}}]
  rules:
  - backendRefs: [{{name: api-v1, port: 80}}]
",
        echo("web", "v1"),
        echo("web", "v2"),
        echo("api", "v1"),
        echo("api", "v2"),
    );
    let mesh = Mesh::up(&yaml);
    // (when, which host was called, which version answered)
    type Answers = Arc<Mutex<Vec<(u64, &'static str, String)>>>;
    let seen: Answers = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = [
        ("web", "/"),
        ("front", "/fetch?url=http://api/"),
        ("web", "/"),
        ("front", "/fetch?url=http://api/"),
    ]
    .into_iter()
    .map(|(host, path)| {
        let (seen, stop, ingress) = (seen.clone(), stop.clone(), mesh.ingress);
        tokio::spawn(async move {
            let c = client();
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(r) = get(&c, ingress, host, path).await {
                    let body = if host == "web" {
                        &r.body
                    } else {
                        &r.body["downstream"]["body"]
                    };
                    let v = body["version"].as_str().unwrap_or("").to_string();
                    seen.lock().unwrap().push((now_ms(), host, v));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    })
    .collect();
    let common_args = [
        "--steps",
        "50,100",
        "--interval",
        "3s",
        "--min-requests",
        "20",
    ];
    mesh.weft_ok(
        &[
            &[
                "canary",
                "start",
                "web",
                "--traffic-split",
                "web",
                "--from",
                "web-v1",
                "--to",
                "web-v2",
            ][..],
            &common_args,
        ]
        .concat(),
    );
    mesh.weft_ok(
        &[
            &[
                "canary",
                "start",
                "api",
                "--http-route",
                "api",
                "--from",
                "api-v1",
                "--to",
                "api-v2",
            ][..],
            &common_args,
        ]
        .concat(),
    );
    let status_of = |name: &str| -> Value {
        serde_json::from_str(&mesh.weft_ok(&["canary", "status", name, "-o", "json"])).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (web, api) = loop {
        let (web, api) = (status_of("web"), status_of("api"));
        if phase(&web) == "succeeded" && phase(&api) == "succeeded" {
            break (web, api);
        }
        assert!(
            Instant::now() < deadline,
            "web: {web:#}\napi: {api:#}\n{}",
            mesh.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(web["route"], "TrafficSplit default/web");
    assert_eq!(api["route"], "HTTPRoute default/api");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let seen = seen.lock().unwrap().clone();
    for (host, status, prefix) in [("web", &web, "web"), ("front", &api, "api")] {
        let history = status["state"]["history"].as_array().unwrap();
        let at = |w: u64| {
            history
                .iter()
                .find(|e| e["weight"] == w && e["phase"] != "initializing")
                .map(|e| e["at_ms"].as_u64().unwrap())
                .unwrap_or_else(|| panic!("{host}: no step at {w}%: {history:#?}"))
        };
        let (half, full) = (at(50), at(100));
        let share = |from: u64, to: u64| {
            let window: Vec<_> = seen
                .iter()
                .filter(|(t, h, _)| *h == host && *t >= from && *t < to)
                .collect();
            let v2 = window.iter().filter(|(_, _, v)| *v == "v2").count();
            (100.0 * v2 as f64 / window.len().max(1) as f64, window.len())
        };
        let (s, n) = share(half + 300, full);
        assert!(
            n >= 100 && (s - 50.0).abs() <= four_sigma(50.0, n),
            "{prefix} at 50%: v2 had {s:.1}% of {n}"
        );
        let (s, n) = share(full + 300, u64::MAX);
        assert!(
            n >= 20 && s == 100.0,
            "{prefix} at 100%: v2 had {s:.1}% of {n}"
        );
    }
}
