//! The examples under `examples/`, each started as its README starts it (`weft up
//! examples/NAME`, the ingress moved to a free port) and checked against what its README says a
//! user sees: shares within 3 points over thousands of requests, exact answers where routing is
//! deterministic, and the flags (`UT`, `UO`, `FI`, `DI`, `NR`) the proxies set.

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Every folder under `examples/`, each run by the test of the same name below.
const EXAMPLES: [&str; 11] = [
    "hello",
    "canary",
    "ab-testing",
    "timeout-retry",
    "circuit-breaker",
    "fault-injection",
    "traffic-split",
    "linkerd",
    "gateway-api",
    "jwt",
    "shop",
];

/// What one request got.
#[derive(Debug)]
struct Answer {
    status: u16,
    flag: Option<String>,
    headers: http::HeaderMap,
    body: Value,
    took: Duration,
}

impl Answer {
    fn version(&self) -> &str {
        self.body["version"].as_str().unwrap_or("")
    }

    /// What the service behind `/fetch` answered.
    fn downstream(&self) -> &Value {
        &self.body["downstream"]["body"]
    }
}

async fn send(
    c: &HttpClient,
    ingress: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{ingress}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let started = Instant::now();
    let rsp = c
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e:?}"));
    let (parts, body) = rsp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        flag: parts
            .headers
            .get("x-weft-flag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        took: started.elapsed(),
    }
}

async fn get_h(
    c: &HttpClient,
    mesh: &Mesh,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send(c, mesh.ingress, "GET", host, path, headers).await
}

/// `n` requests over `concurrency` connections.
async fn many(
    mesh: &Mesh,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
    concurrency: usize,
) -> Vec<Answer> {
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let (c, ingress) = (c.clone(), mesh.ingress);
        let (method, host, path) = (method.to_string(), host.to_string(), path.to_string());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let count = n / concurrency + usize::from(i < n % concurrency);
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                out.push(send(&c, ingress, &method, &host, &path, &headers).await);
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// GETs that must all be 200.
async fn ok_gets(
    mesh: &Mesh,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<Answer> {
    let answers = many(mesh, "GET", host, path, headers, n, 8).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{host}{path} {headers:?}: {a:?}");
    }
    answers
}

fn count<'a>(
    answers: &'a [Answer],
    key: impl Fn(&'a Answer) -> &'a str,
) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for a in answers {
        *counts.entry(key(a)).or_default() += 1;
    }
    counts
}

/// The share (in percent) of `answers` for which `pred` holds.
fn share(answers: &[Answer], pred: impl Fn(&Answer) -> bool) -> f64 {
    answers.iter().filter(|a| pred(a)).count() as f64 * 100.0 / answers.len() as f64
}

fn assert_near(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 3.0,
        "{what}: {got:.1}%, want {want}% ± 3"
    );
}

/// `weft apply -f examples/NAME/FILE`, which answers once every proxy runs the new routes.
fn apply(mesh: &Mesh, example: &str, file: &str) {
    let path = example_dir(example).join(file);
    let out = mesh.weft_ok(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.contains("applied by all"), "{out}");
}

fn up(example: &str) -> Mesh {
    Mesh::up_dir(&example_dir(example))
}

/// Every folder under `examples/` has a test here, a README that starts it the way the tests
/// do, and validates offline with no warning; so do the files its README applies later.
#[test]
fn every_example_is_tested_and_valid() {
    let root = example_dir("");
    let found: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let tested: BTreeSet<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, tested, "every example folder needs a test here");
    // ...and the test is really here: a `#[tokio::test]` function that starts the example.
    let source = include_str!("examples.rs");
    for name in EXAMPLES {
        let test_fn = format!(
            "async fn {}() {{\n    let mesh = up(\"{name}\");",
            name.replace('-', "_")
        );
        assert!(
            source.contains(&format!(
                "#[tokio::test(flavor = \"multi_thread\", worker_threads = 2)]\n{test_fn}"
            )),
            "no test starts the {name} example"
        );
    }
    for name in EXAMPLES {
        let dir = example_dir(name);
        let out = std::process::Command::new(WEFT)
            .args(["check", dir.to_str().unwrap()])
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{name}: {stdout}{stderr}");
        assert!(
            stdout.contains(" 0 warning(s)") && stderr.trim().is_empty(),
            "{name}: {stdout}{stderr}"
        );
        let readme = std::fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|e| panic!("{name}/README.md: {e}"));
        assert!(
            readme.contains(&format!("cargo run --release -- up examples/{name}\n")),
            "{name}/README.md does not start the example"
        );
        // A file under steps/ replaces the folder's file its name starts with
        // (steps/virtualservice-50.yaml replaces virtualservice.yaml): the result validates.
        let steps = dir.join("steps");
        if steps.is_dir() {
            for step in std::fs::read_dir(&steps).unwrap() {
                let step = step.unwrap().path();
                let copy = tempfile::tempdir().unwrap();
                let replaced = step
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .split('-')
                    .next()
                    .unwrap()
                    .to_string();
                for f in std::fs::read_dir(&dir).unwrap() {
                    let f = f.unwrap().path();
                    let fname = f.file_name().unwrap().to_string_lossy().into_owned();
                    if f.is_file() && fname != "README.md" && !fname.starts_with(&replaced) {
                        std::fs::copy(&f, copy.path().join(&fname)).unwrap();
                    }
                }
                std::fs::copy(&step, copy.path().join(step.file_name().unwrap())).unwrap();
                let out = std::process::Command::new(WEFT)
                    .args(["check", copy.path().to_str().unwrap()])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}",
                    step.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// The JWT scenario: tokens from the auth demo service, checked by httpbin's sidecar (the whole
/// scenario is `tests/jwt_scenario.rs`; here: the example starts and an admin token works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt() {
    let mesh = up("jwt");
    let c = client();
    let t = get_h(&c, &mesh, "auth", "/token?sub=alice&groups=admin", &[]).await;
    assert_eq!(t.status, 200, "{t:?}");
    let token = t.body["access_token"].as_str().unwrap().to_string();
    // The sidecar fetches the JWKS from the auth service through the mesh, and says ready
    // only once it has it: the first valid token is accepted.
    let a = get_h(
        &c,
        &mesh,
        "httpbin",
        "/admin",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}\n{}", mesh.stderr());
    let a = get_h(&c, &mesh, "httpbin", "/admin", &[]).await;
    assert_eq!(a.status, 403, "{a:?}");
}

/// `weft up` with no files runs the shop: it says where it is, how to log in and what to try;
/// its pages answer through the ingress, the demo account logs in and an order is confirmed
/// (tests/shop.rs runs the same files through their paces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_mesh_is_the_shop() {
    let mesh = Mesh::up_built_in(&["--ingress", "127.0.0.1:0"]);
    assert!(
        mesh.ready_line.contains("mesh shop is ready"),
        "{}",
        mesh.ready_line
    );
    mesh.weft_ok(&["status", "--wait", "--timeout", "60s"]);
    let welcome = format!(
        "The shop is open at http://{}/  (log in as alice / wonderland)",
        mesh.ingress
    );
    until("the welcome", Duration::from_secs(10), || async {
        let out = mesh.stdout.lock().unwrap().clone();
        out.contains(&welcome)
            && out.contains("apply -f examples/shop/steps/resilience-canary.yaml")
            && out.contains(" dashboard ")
    })
    .await;
    // Without --dashboard, the dashboard is under the API: `weft dashboard` prints where, and
    // the URL signs a browser in.
    let url = mesh.weft_ok(&["dashboard"]).trim().to_string();
    let api = mesh.status["api"].as_str().unwrap();
    let path = url
        .strip_prefix(&format!("http://{api}"))
        .unwrap_or_else(|| panic!("{url} is not under the API {api}"));
    assert!(path.starts_with("/dashboard/?token="), "{url}");
    let signed_in = get(&client(), api.parse().unwrap(), api, path)
        .await
        .unwrap();
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    // Seven services; the frontend and order with two replicas each.
    let status: serde_json::Value =
        serde_json::from_str(&mesh.weft_ok(&["status", "-o", "json"])).unwrap();
    let replicas = |svc: &str| {
        status["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["service"] == svc)
            .count()
    };
    for (svc, n) in [
        ("frontend", 2),
        ("order", 2),
        ("auth", 1),
        ("user", 1),
        ("product", 2),
        ("inventory", 1),
        ("payment", 2),
    ] {
        assert_eq!(replicas(svc), n, "{svc}: {status}");
    }
    // Whatever the host, the ingress serves the frontend's pages.
    let c = client();
    let page = get(&c, mesh.ingress, &mesh.ingress.to_string(), "/")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("Green tea") && page.text.contains("Log in"),
        "{}",
        page.text
    );
    // The demo account logs in and orders.
    let login = post_to(
        &mesh,
        "/api/login",
        None,
        r#"{"name": "alice", "password": "wonderland"}"#,
    )
    .await;
    assert_eq!(login.0, 200, "{:?}", login.1);
    let token = login.1["access_token"].as_str().unwrap().to_string();
    let (status, o) = post_to(
        &mesh,
        "/api/orders",
        Some(&token),
        r#"{"items": [{"product": "cup", "qty": 1}]}"#,
    )
    .await;
    assert_eq!(
        (status, o["state"].as_str()),
        (201, Some("confirmed")),
        "{o}"
    );
    let mine = get_with(
        &c,
        mesh.ingress,
        "shop",
        "/api/orders",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    assert_eq!(mine.body[0]["id"], o["id"], "{}", mine.text);
}

/// examples/canary/rollout: `weft up` with a Canary and its own traffic runs the whole
/// rollout by itself (here with 2 s steps in place of 15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rollout() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["mesh.yaml", "canary.yaml"] {
        let text = std::fs::read_to_string(example_dir("canary").join("rollout").join(f))
            .unwrap()
            .replace("interval: 15s", "interval: 2s")
            .replace("minRequests: 50", "minRequests: 10");
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let mesh = Mesh::up_dir_with(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let v: Value =
            serde_json::from_str(&mesh.weft_ok(&["canary", "status", "echo", "-o", "json"]))
                .unwrap();
        if v["state"]["phase"] == "succeeded" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v:#}\n{}", mesh.stderr());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(rollout_weights(&done), [10, 25, 50, 100], "{done:#}");
    let answers = ok_gets(&mesh, "echo", "/", &[], 50).await;
    assert!(answers.iter().all(|a| a.version() == "v2"));
}

/// examples/shop as files: the pages answer through the ingress, the demo account logs in,
/// orders need its token (tests/shop.rs places them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop() {
    let mesh = up("shop");
    mesh.weft_ok(&["status", "--wait", "--timeout", "60s"]);
    let c = client();
    let products = get_h(&c, &mesh, "shop", "/api/products", &[]).await;
    assert_eq!(products.status, 200, "{products:?}");
    assert!(
        products.body.as_array().is_some_and(|p| p.len() >= 5),
        "{products:?}"
    );
    let login = post_to(
        &mesh,
        "/api/login",
        None,
        r#"{"name": "alice", "password": "wonderland"}"#,
    )
    .await;
    assert_eq!(login.0, 200, "{:?}", login.1);
    let bearer = format!("Bearer {}", login.1["access_token"].as_str().unwrap());
    let mine = get_h(
        &c,
        &mesh,
        "shop",
        "/api/orders",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(mine.status, 200, "{mine:?}\n{}", mesh.stderr());
    assert_eq!(mine.body, serde_json::json!([]));
    let anon = get_h(&c, &mesh, "shop", "/api/orders", &[]).await;
    assert_eq!(anon.status, 403, "{anon:?}");
}

/// POSTs `body` (JSON) to the ingress: status and JSON answer.
async fn post_to(
    mesh: &Mesh,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    post_json(mesh.ingress, path, &headers, &body).await
}

/// examples/hello: hello's two replicas answer through the ingress, and hello reaches slow
/// through its sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello() {
    let mesh = up("hello");
    let answers = ok_gets(&mesh, "hello", "/", &[], 40).await;
    let instances = count(&answers, |a| a.body["instance"].as_str().unwrap_or(""));
    assert_eq!(instances.len(), 2, "{instances:?}");
    let c = client();
    let a = get_h(&c, &mesh, "hello", "/fetch?url=http://slow/anything", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["downstream"]["status"], 200, "{a:?}");
    assert_eq!(a.downstream()["service"], "slow", "{a:?}");
}

/// The Istio canary: 90/10 (v2 within 3 points over 2,000 requests), jason always on v2, then
/// the README's rollout steps with `weft apply`: 50/50 (over 4,000), 100% v2, and the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary() {
    let mesh = up("canary");
    let routes = mesh.weft_ok(&["routes", "reviews"]);
    assert!(
        routes.contains("reviews.default subset v1 90%, reviews.default subset v2 10%"),
        "{routes}"
    );
    let answers = ok_gets(&mesh, "reviews", "/", &[], 2000).await;
    assert_near(
        "v2 at 90/10",
        share(&answers, |a| a.version() == "v2"),
        10.0,
    );
    assert_eq!(
        share(&answers, |a| ["v1", "v2"].contains(&a.version())),
        100.0
    );

    let jason = ok_gets(&mesh, "reviews", "/", &[("end-user", "jason")], 50).await;
    assert!(jason.iter().all(|a| a.version() == "v2"), "{jason:?}");

    apply(&mesh, "canary", "steps/virtualservice-50.yaml");
    let answers = ok_gets(&mesh, "reviews", "/", &[], 4000).await;
    assert_near(
        "v2 at 50/50",
        share(&answers, |a| a.version() == "v2"),
        50.0,
    );

    apply(&mesh, "canary", "steps/virtualservice-100.yaml");
    let answers = ok_gets(&mesh, "reviews", "/", &[], 500).await;
    assert!(answers.iter().all(|a| a.version() == "v2"));

    // Rolling back is applying the first step again.
    apply(&mesh, "canary", "virtualservice.yaml");
    let answers = ok_gets(&mesh, "reviews", "/", &[], 500).await;
    let v1 = share(&answers, |a| a.version() == "v1");
    assert!(v1 > 80.0, "v1 after the rollback: {v1}%");
}

/// A/B testing by request: header, cookie or query parameter pick B, in Istio's first-match
/// order (staff stay on A even as jason). Every answer is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_testing() {
    let mesh = up("ab-testing");
    // (path, headers, the version that must answer)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("/", &[], "v1"),
        ("/", &[("end-user", "jason")], "v2"),
        ("/", &[("end-user", "ana")], "v1"),
        ("/", &[("cookie", "ab-group=b")], "v2"),
        ("/", &[("cookie", "session=42; ab-group=b")], "v2"),
        (
            "/",
            &[("cookie", "session=42; ab-group=b; theme=dark")],
            "v2",
        ),
        ("/", &[("cookie", "ab-group=bb")], "v1"),
        ("/", &[("cookie", "x-ab-group=b")], "v1"),
        ("/?variant=b", &[], "v2"),
        ("/checkout?variant=b&page=2", &[], "v2"),
        ("/?variant=a", &[], "v1"),
        ("/", &[("x-employee", "true"), ("end-user", "jason")], "v1"),
        ("/?variant=b", &[("x-employee", "true")], "v1"),
        ("/", &[("x-employee", "false"), ("end-user", "jason")], "v2"),
    ];
    for (path, headers, want) in cases {
        let answers = ok_gets(&mesh, "web", path, headers, 20).await;
        let got = count(&answers, Answer::version);
        assert_eq!(got, HashMap::from([(*want, 20)]), "{path} {headers:?}");
    }
}

/// Istio timeouts and retries: past 1 s the caller gets 504 UT; a try slower than the 300 ms
/// per-try timeout is retried; retries lift success from ~90% to ≥ 98.5%, and applying the
/// README's route without retries brings the failures back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_retry() {
    let mesh = up("timeout-retry");
    let c = client();
    let fast = many(&mesh, "GET", "ratings", "/?delay=100ms", &[], 8, 8).await;
    assert!(fast.iter().all(|a| a.status == 200), "{fast:?}");

    let admin = ingress_admin(&mesh);
    let before = metric_sum(&c, admin, "weft_retries_total").await;
    for path in ["/?delay=500ms", "/?delay=3s"] {
        let a = get_h(&c, &mesh, "ratings", path, &[]).await;
        assert_eq!((a.status, a.flag.as_deref()), (504, Some("UT")), "{path}");
        assert!(
            a.took >= Duration::from_millis(950) && a.took < Duration::from_millis(2500),
            "{path}: answered after {:?}, the route's timeout is 1 s",
            a.took
        );
    }
    // Each try was abandoned after 300 ms and retried (after a back-off) until the 1 s timeout.
    let retries = metric_sum(&c, admin, "weft_retries_total").await - before;
    assert!(
        (4.0..=6.0).contains(&retries),
        "{retries} retries for 2 requests"
    );

    let answers = many(&mesh, "GET", "ratings", "/", &[], 1000, 4).await;
    let ok = share(&answers, |a| a.status == 200);
    assert!(ok >= 98.5, "with retries {ok}% succeeded");

    apply(
        &mesh,
        "timeout-retry",
        "steps/virtualservice-no-retries.yaml",
    );
    let answers = many(&mesh, "GET", "ratings", "/", &[], 1000, 4).await;
    let ok = share(&answers, |a| a.status == 200);
    assert!(
        (85.0..=95.0).contains(&ok),
        "without retries {ok}% succeeded"
    );
    assert!(answers.iter().all(|a| [200, 503].contains(&a.status)));
}

/// Istio circuit breaking. httpbin admits 2 requests at once (1 connection + 1 pending): a
/// burst of 8 gets 503 UO at once for the rest, and the README's `weft load` at 20 req/s of
/// 200 ms requests sees both. ratings' broken replica is ejected after 3 errors: then ≥ 99%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker() {
    let mesh = up("circuit-breaker");
    let c = client();
    assert_eq!(get_h(&c, &mesh, "httpbin", "/get", &[]).await.status, 200);
    let burst = many(&mesh, "GET", "httpbin", "/delay/600", &[], 8, 8).await;
    let admitted = burst.iter().filter(|a| a.status == 200).count();
    assert!(
        (1..=2).contains(&admitted),
        "{admitted} admitted: {burst:?}"
    );
    for a in burst.iter().filter(|a| a.status != 200) {
        assert_eq!((a.status, a.flag.as_deref()), (503, Some("UO")), "{a:?}");
        assert!(a.took < Duration::from_millis(600), "queued: {a:?}");
    }

    let url = format!("http://{}/delay/200", mesh.ingress);
    let out = mesh.weft_ok(&[
        "load",
        &url,
        "-H",
        "Host: httpbin",
        "--rate",
        "20",
        "--duration",
        "3s",
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let (ok, overflow) = (
        report["status"]["200"].as_u64().unwrap_or(0),
        report["status"]["503"].as_u64().unwrap_or(0),
    );
    assert_eq!(ok + overflow, report["requests"].as_u64().unwrap(), "{out}");
    // At most 2 requests of 200 ms at a time: 10 a second.
    assert!(ok > 0 && ok <= 32 && overflow > 0, "{out}");

    until_ejected(&mesh, "ratings", "/").await;
    let answers = ok_gets_or_not(&mesh, "ratings", 400).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert!(ok >= 396, "after the ejection {ok}/400 succeeded");
    assert!(answers
        .iter()
        .all(|a| a.body["instance"] == "ratings-good-0" || a.status == 503));
}

/// The ingress's admin address.
fn ingress_admin(mesh: &Mesh) -> SocketAddr {
    mesh.status["ingress_admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends GETs for `host` through the ingress until the ingress takes the service's broken
/// replica out of rotation (its `weft_endpoint_ejections_total` goes up). On the way the
/// client sees at most 3 of that replica's 503s (the policies eject after 3 consecutive
/// failures; attempts that never reached the app count too, but the ingress retries those
/// elsewhere unseen), within 100 requests.
async fn until_ejected(mesh: &Mesh, host: &str, path: &str) {
    let c = client();
    let admin = ingress_admin(mesh);
    let ejections = "weft_endpoint_ejections_total";
    let before = metric_sum(&c, admin, ejections).await;
    let (mut failures, mut sent) = (0, 0);
    while metric_sum(&c, admin, ejections).await == before {
        let a = get_h(&c, mesh, host, path, &[]).await;
        failures += usize::from(a.status == 503);
        sent += 1;
        if failures > 3 || sent >= 100 {
            let metrics = get(&c, admin, "admin", "/metrics").await.map(|r| r.text);
            panic!(
                "{host}: {failures} of {sent} requests failed and the ingress ejected nothing\n\
                 ingress endpoints: {:?}\nstatus: {}\nweft up said:\n{}",
                metrics.map(|m| m
                    .lines()
                    .filter(|l| l.starts_with("weft_endpoint"))
                    .collect::<Vec<_>>()
                    .join("\n")),
                mesh.status_json(None),
                mesh.stderr()
            );
        }
    }
}

/// Sequential GETs that may fail.
async fn ok_gets_or_not(mesh: &Mesh, host: &str, n: usize) -> Vec<Answer> {
    many(mesh, "GET", host, "/", &[], n, 1).await
}

/// Istio fault injection: jason waits 2 s (DI); everyone else gets 10% aborted with 503 FI and
/// 20% delayed by 100 ms (DI), drawn independently, within 3 points over 3,000 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection() {
    let mesh = up("fault-injection");
    let c = client();
    let a = get_h(&c, &mesh, "ratings", "/", &[("end-user", "jason")]).await;
    assert_eq!((a.status, a.flag.as_deref()), (200, Some("DI")), "{a:?}");
    assert!(a.took >= Duration::from_secs(2), "{a:?}");

    let answers = many(&mesh, "GET", "ratings", "/", &[], 3000, 16).await;
    for a in &answers {
        match (a.status, a.flag.as_deref()) {
            (503, Some("FI")) | (200, None) => {}
            (200, Some("DI")) => assert!(a.took >= Duration::from_millis(100), "{a:?}"),
            _ => panic!("unexpected {a:?}"),
        }
    }
    assert_near("aborted (FI)", share(&answers, |a| a.status == 503), 10.0);
    // Delayed and not aborted: 20% of 90%.
    assert_near(
        "delayed (DI)",
        share(&answers, |a| a.flag.as_deref() == Some("DI")),
        18.0,
    );
}

/// SMI TrafficSplit: 60/30/10 within 3 points over 4,000 requests to the apex; then the
/// README's next step, 0/50/50: v1 gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_split() {
    let mesh = up("traffic-split");
    let routes = mesh.weft_ok(&["routes", "web"]);
    assert!(
        routes.contains("web-v1.default 60%, web-v2.default 30%, web-v3.default 10%"),
        "{routes}"
    );
    let answers = ok_gets(&mesh, "web", "/", &[], 4000).await;
    for (v, want) in [("v1", 60.0), ("v2", 30.0), ("v3", 10.0)] {
        assert_near(v, share(&answers, |a| a.version() == v), want);
    }
    apply(&mesh, "traffic-split", "steps/trafficsplit-v3.yaml");
    let answers = ok_gets(&mesh, "web", "/", &[], 4000).await;
    assert_eq!(share(&answers, |a| a.version() == "v1"), 0.0);
    assert_near("v2", share(&answers, |a| a.version() == "v2"), 50.0);
    assert_eq!(
        share(&answers, |a| ["v2", "v3"].contains(&a.version())),
        100.0
    );
}

/// Linkerd: books fails 25%. Its ServiceProfile's retryable routes succeed (≥ 97%), the
/// POST route and paths no route names are not retried (~75%), and a slow read gets 504 UT
/// at the route's 500 ms. authors' failure-accrual annotations stop sending to the broken
/// replica after 3 consecutive failures: then ≥ 99%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd() {
    let mesh = up("linkerd");
    let c = client();
    for path in ["/books/1", "/books"] {
        let answers = many(&mesh, "GET", "books", path, &[], 600, 4).await;
        let ok = share(&answers, |a| a.status == 200);
        assert!(ok >= 97.0, "GET {path}, retryable: {ok}% succeeded");
    }
    for (method, path) in [("POST", "/books"), ("GET", "/authors/1")] {
        let answers = many(&mesh, method, "books", path, &[], 600, 4).await;
        let ok = share(&answers, |a| a.status == 200);
        assert!(
            (65.0..=85.0).contains(&ok),
            "{method} {path}: {ok}% succeeded"
        );
    }
    let a = get_h(&c, &mesh, "books", "/books/7?delay=1s", &[]).await;
    assert_eq!((a.status, a.flag.as_deref()), (504, Some("UT")), "{a:?}");
    assert!(a.took < Duration::from_millis(900), "{a:?}");

    until_ejected(&mesh, "authors", "/authors/1").await;
    let answers = many(&mesh, "GET", "authors", "/authors/1", &[], 400, 1).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert!(ok >= 396, "after 3 failures {ok}/400 succeeded");
}

/// Gateway API: the ingress serves shop.example.com by path (`/api` rewritten with a header
/// added, `/` with a response header), other hosts get 404 NR; inside the mesh the GAMMA route
/// of api sends jason to api-v2 and 10% (within 3 points over 2,000) of the others, with its
/// header filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api() {
    let mesh = up("gateway-api");
    let c = client();
    let host = "shop.example.com";
    let a = get_h(&c, &mesh, host, "/", &[]).await;
    assert_eq!(
        (a.status, &a.body["service"]),
        (200, &Value::from("web")),
        "{a:?}\nweft up said:\n{}\nstatus: {}",
        mesh.stderr(),
        mesh.status_json(None)
    );
    assert_eq!(a.headers["cache-control"], "no-store");

    for a in ok_gets(&mesh, host, "/api/items?page=2", &[], 20).await {
        let b = &a.body;
        assert_eq!(
            (&b["service"], &b["path"]),
            (&"api".into(), &"/items".into())
        );
        assert_eq!(b["query"]["page"], "2");
        assert_eq!(b["headers"]["x-forwarded-prefix"], "/api");
        // The gateway's traffic follows its own route, not api's mesh route.
        assert_eq!(
            (a.version(), &b["headers"]["x-api-channel"]),
            ("v1", &Value::Null)
        );
        assert!(!a.headers.contains_key("x-api-route"));
    }
    let a = get_h(&c, &mesh, "other.example.com", "/", &[]).await;
    assert_eq!((a.status, a.flag.as_deref()), (404, Some("NR")));

    let fetch = "/fetch?url=http://api:8080/items";
    let answers = ok_gets(&mesh, host, fetch, &[], 2000).await;
    for a in &answers {
        assert_eq!(a.body["downstream"]["status"], 200, "{a:?}");
        assert_eq!(
            a.downstream()["headers"]["x-api-channel"],
            "stable",
            "{a:?}"
        );
    }
    assert_near(
        "api-v2 from web",
        share(&answers, |a| a.downstream()["version"] == "v2"),
        10.0,
    );
    for a in ok_gets(&mesh, host, fetch, &[("end-user", "jason")], 20).await {
        let d = a.downstream();
        assert_eq!(
            (&d["version"], &d["headers"]["x-api-channel"]),
            (&"v2".into(), &"beta".into()),
            "{a:?}"
        );
    }
}
