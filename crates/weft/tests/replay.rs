//! Request bodies kept for retries and mirrors, end to end: a body is kept as it streams
//! upstream, whatever its framing, up to `--max-buffered-body`; one that ends within the limit
//! is retried and mirrored, one that outgrows it goes through once — counted in
//! `weft_replays_skipped_total` and flagged `RS` in `x-weft-flag` and the access log.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Service `files`: v1 serves, v2 gets a mirrored copy of every request; the route retries
/// 5xx twice.
fn mesh(name: &str) -> String {
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: files\n    port: 80\n    workloads:\n"
    );
    for v in ["v1", "v2"] {
        y.push_str(&format!(
            "    - name: files-{v}\n      labels: {{app: files, version: {v}}}\n      replicas: 1\n      command: [weft, demo, echo, --service, files, --version, {v}]\n"
        ));
    }
    y.push_str(
        r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: files}
spec:
  host: files
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: files}
spec:
  hosts: [files]
  http:
  - route: [{destination: {host: files, subset: v1}}]
    retries: {attempts: 2, retryOn: 5xx}
    mirror: {host: files, subset: v2}
    mirrorPercentage: {value: 100}
"#,
    );
    y
}

type Sender = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
type Streamed = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// POSTs to `files` through the ingress with a body fed through the returned sender: chunked,
/// unless `content_length` is given. The answer comes from the returned task.
fn post(
    ingress: SocketAddr,
    path: &str,
    request_id: &str,
    content_length: Option<usize>,
) -> (Sender, tokio::task::JoinHandle<Reply>) {
    let (tx, rx) = mpsc::channel(16);
    let mut req = http::Request::post(format!("http://{ingress}{path}"))
        .header("host", "files")
        .header("x-request-id", request_id);
    if let Some(n) = content_length {
        req = req.header("content-length", n);
    }
    let req = req.body(StreamBody::new(ReceiverStream::new(rx))).unwrap();
    let task = tokio::spawn(async move {
        let c: Client<_, Streamed> = Client::builder(TokioExecutor::new()).build_http();
        let rsp = c.request(req).await.expect("the proxy answers");
        let status = rsp.status().as_u16();
        let flag = rsp
            .headers()
            .get("x-weft-flag")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            flag,
            body: serde_json::from_slice(&bytes).unwrap_or_default(),
            text,
        }
    });
    (tx, task)
}

/// Sends `chunks` chunks of `size` bytes each, then ends the body.
async fn send_all(tx: Sender, chunks: usize, size: usize) {
    for _ in 0..chunks {
        tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; size]))))
            .await
            .unwrap();
    }
}

fn admin_of(status: &serde_json::Value, instance: &str) -> SocketAddr {
    workload(status, instance)["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The JSON access-log lines `process` printed for `request_id`, once there is one.
fn log_line(mesh: &Mesh, process: &str, request_id: &str) -> serde_json::Value {
    let prefix = format!("[{process}] ");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = mesh
            .stderr()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["x_request_id"] == request_id);
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for {request_id}:\n{}",
            mesh.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A chunked body (no Content-Length) that ends within the limit is kept: the first attempt
/// fails, the retry carries the whole body again, and the mirror gets a whole copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_within_the_limit_is_retried_and_mirrored() {
    let m = Mesh::up(&mesh("replay-within"));
    let c = client();
    let (tx, answer) = post(m.ingress, "/upload?fail_times=1", "rid-within", None);
    send_all(tx, 3, 10_000).await;
    let r = answer.await.unwrap();
    assert_eq!(r.status, 200, "the retry succeeds: {}", r.text);
    assert_eq!(r.flag, None);
    assert_eq!(r.body["body_bytes"], 30_000, "{}", r.text);
    assert_eq!(r.body["instance"], "files-v1-0");
    assert_eq!(inbound_requests(&c, &m, "files-v1-0").await, 2.0);
    let ingress = m.status["ingress_admin"].as_str().unwrap().parse().unwrap();
    assert_eq!(metric_sum(&c, ingress, "weft_retries_total").await, 1.0);
    assert_eq!(
        metric_sum(&c, ingress, "weft_replays_skipped_total").await,
        0.0
    );
    // The mirror's copy is whole too: its sidecar saw one request of 30,000 bytes.
    let mirror = admin_of(&m.status, "files-v2-0");
    let (requests, bytes) = eventually((1.0, 30_000.0), || async {
        (
            inbound_requests(&c, &m, "files-v2-0").await,
            metric_sum(&c, mirror, "istio_request_bytes_sum").await,
        )
    })
    .await;
    assert_eq!((requests, bytes), (1.0, 30_000.0));
}

/// A body that outgrows `--max-buffered-body` still goes through, once and whole; its retry
/// and its mirrored copy are skipped, counted, and flagged `RS` on the answer and in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_goes_once_and_says_so() {
    let m = Mesh::up_with(
        &mesh("replay-over"),
        &["--max-buffered-body", "16KiB", "--access-log", "json"],
    );
    let c = client();
    let ingress = m.status["ingress_admin"].as_str().unwrap().parse().unwrap();
    let skipped = |what: &'static str| {
        let c = c.clone();
        async move {
            metric_sum(
                &c,
                ingress,
                &format!("weft_replays_skipped_total{{skipped=\"{what}\"}}"),
            )
            .await
        }
    };
    let (tx, answer) = post(m.ingress, "/upload?fail_times=1", "rid-over", None);
    send_all(tx, 3, 10_000).await;
    let r = answer.await.unwrap();
    assert_eq!(
        r.status, 500,
        "the failed attempt is the answer: {}",
        r.text
    );
    assert_eq!(r.body["body_bytes"], 30_000, "delivered whole: {}", r.text);
    assert_eq!(r.flag.as_deref(), Some("RS"));
    assert_eq!(inbound_requests(&c, &m, "files-v1-0").await, 1.0);
    assert_eq!(metric_sum(&c, ingress, "weft_retries_total").await, 0.0);
    assert_eq!(skipped("retry").await, 1.0);
    assert_eq!(eventually(1.0, || skipped("mirror")).await, 1.0);
    assert_eq!(inbound_requests(&c, &m, "files-v2-0").await, 0.0);
    let line = log_line(&m, "ingress", "rid-over");
    assert_eq!(line["response_flags"], "RS", "{line}");
    assert_eq!(line["response_code"], 500, "{line}");

    // A body within the limit on the same proxies is retried as before.
    let (tx, answer) = post(m.ingress, "/upload?fail_times=1", "rid-small", None);
    send_all(tx, 2, 4_000).await;
    let r = answer.await.unwrap();
    assert_eq!((r.status, r.flag), (200, None), "{}", r.text);
    assert_eq!(skipped("retry").await, 1.0);
}

/// The copy is kept while the body streams: the request reaches the app before its body has
/// all arrived, although the route retries and mirrors it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_body_streams_upstream_before_it_has_all_arrived() {
    let m = Mesh::up(&mesh("replay-stream"));
    let c = client();
    let app = admin_of(&m.status, "files-v1-0");
    let app_connections = || metric_sum(&c, app, "weft_app_pool_connections");
    assert_eq!(
        app_connections().await,
        0.0,
        "no request has reached the app"
    );
    // 48,000 bytes announced (within the 64 KiB limit), 16,000 sent, then a pause.
    let (tx, answer) = post(m.ingress, "/upload", "rid-stream", Some(48_000));
    send_all(tx.clone(), 1, 16_000).await;
    assert_eq!(
        eventually(1.0, app_connections).await,
        1.0,
        "the request went on to the app before the rest of its body"
    );
    send_all(tx, 2, 16_000).await;
    let r = answer.await.unwrap();
    assert_eq!((r.status, &r.body["body_bytes"]), (200, &48_000.into()));
}
