//! End-to-end traffic management from Istio YAML: a mesh with two versions of a service, a
//! DestinationRule naming them as subsets, and a VirtualService routing between them.

mod common;

use common::*;
use std::collections::HashMap;

fn mesh_with_versions(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: reviews
    port: 9080
    workloads:
    - name: reviews-v1
      labels: {{app: reviews, version: v1}}
      replicas: 1
      command: [weft, demo, echo, --service, reviews, --version, v1]
    - name: reviews-v2
      labels: {{app: reviews, version: v2}}
      replicas: 1
      command: [weft, demo, echo, --service, reviews, --version, v2]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
---
{extra}"#
    )
}

async fn versions(mesh: &Mesh, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let c = client();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut req = http::Request::get(format!("http://{}/anything", mesh.ingress))
            .header("host", "reviews");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let rsp = c
            .request(req.body(http_body_util::Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let body = http_body_util::BodyExt::collect(rsp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        *counts
            .entry(v["version"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

/// A 90/10 canary: over 4,000 requests the v2 share is within 3 points of 10%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_canary_splits_traffic_by_weight() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"#;
    let mesh = Mesh::up(&mesh_with_versions("canary", vs));
    let counts = versions(&mesh, 4000, &[]).await;
    let v2 = counts.get("v2").copied().unwrap_or(0) as f64 / 4000.0;
    assert!((0.07..=0.13).contains(&v2), "v2 share {v2}: {counts:?}");

    // `weft routes` shows the table the proxies run.
    let out = mesh.weft(&["routes", "reviews"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("reviews.default subset v1 90%")
            && text.contains("reviews.default subset v2 10%"),
        "{text}"
    );
}

/// `weft check` validates offline: exit 0 with a summary, or 1 with every error located.
#[test]
fn weft_check_validates_offline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canary.yaml");
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n";
    std::fs::write(&file, mesh_with_versions("check", vs)).unwrap();
    let out = std::process::Command::new(WEFT)
        .args(["check", "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("canary.yaml:37:36:") && err.contains("unknown subset v3"),
        "{err}"
    );

    std::fs::write(&file, mesh_with_versions("check", &vs.replace("v3", "v2"))).unwrap();
    let out = std::process::Command::new(WEFT)
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 routes for 1 services"));
}

/// A/B by header, Istio's first-match order: `end-user: jason` goes to v2, everyone else to v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_match_routes_one_user_to_v2() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"#;
    let mesh = Mesh::up(&mesh_with_versions("ab", vs));
    let jason = versions(&mesh, 50, &[("end-user", "jason")]).await;
    assert_eq!(jason.get("v2"), Some(&50), "{jason:?}");
    let others = versions(&mesh, 50, &[("end-user", "ana")]).await;
    assert_eq!(others.get("v1"), Some(&50), "{others:?}");
}

/// The Gateway API mesh (GAMMA) conformance manifests, unchanged, through real sidecars:
/// `httproute-weight` splits 70/30 over 4,000 requests (within 3 points), and
/// `httproute-matching`'s answers hold (`/v2example` stays on v1: prefixes are segment-wise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_mesh_conformance_weight_and_matching() {
    let conformance = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/conformance/gateway-api/conformance-mesh"
    );
    let mut services = String::new();
    for (name, port) in [("echo", 80), ("echo-v1", 8080), ("echo-v2", 8080)] {
        let version = name.strip_prefix("echo-").unwrap_or("v0");
        let replicas = if name == "echo" { 1 } else { 2 };
        services.push_str(&format!(
            "  - name: {name}\n    namespace: gateway-conformance-mesh\n    port: {port}\n    workloads:\n    - name: {name}\n      labels: {{app: {name}}}\n      replicas: {replicas}\n      command: [weft, demo, echo, --service, {name}, --version, {version}]\n"
        ));
    }
    for (file, checks) in [
        ("httproute-weight.yaml", None),
        (
            "httproute-matching.yaml",
            Some(vec![
                ("/", "v1"),
                ("/example", "v1"),
                ("/v2", "v2"),
                ("/v2/example", "v2"),
                ("/v2example", "v1"),
                ("/foo/v2/example", "v1"),
            ]),
        ),
    ] {
        let manifest = std::fs::read_to_string(format!("{conformance}/{file}")).unwrap();
        let name = file
            .trim_end_matches(".yaml")
            .replace("httproute-", "gamma-");
        let yaml = format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n{services}---\n{manifest}"
        );
        let mesh = Mesh::up(&yaml);
        let c = client();
        let host = "echo.gateway-conformance-mesh";
        match checks {
            None => {
                let mut v2 = 0;
                for _ in 0..4000 {
                    let r = get(&c, mesh.ingress, host, "/").await.unwrap();
                    assert_eq!(r.status, 200, "{}", r.text);
                    if r.body["service"] == "echo-v2" {
                        v2 += 1;
                    }
                }
                let share = v2 as f64 / 4000.0;
                assert!((0.27..=0.33).contains(&share), "echo-v2 got {share}");
            }
            Some(cases) => {
                for (path, want) in cases {
                    let r = get(&c, mesh.ingress, host, path).await.unwrap();
                    assert_eq!(r.status, 200, "{path}: {}", r.text);
                    assert_eq!(r.body["version"], want, "{path}");
                }
            }
        }
    }
}

fn flaky_mesh(name: &str, vs: &str) -> String {
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: ratings
    port: 9080
    workloads:
    - name: ratings-v1
      labels: {{app: ratings, version: v1}}
      replicas: 2
      command: [weft, demo, echo, --service, ratings, --fail-rate, "0.5", --fail-status, "503"]
---
{vs}"#
    )
}

/// Istio timeouts: a slow answer past the route's timeout is 504 with flag UT; `0s` disables.
/// Retries: with half the answers failing, `attempts: 3` on 5xx lifts success from ~50% to ~94%.
/// The share of 200s from `ratings` at `path` over at least 400 requests, and for as long as
/// `busy` says (at most 30 s).
async fn share(
    c: &HttpClient,
    ingress: std::net::SocketAddr,
    path: &str,
    busy: impl Fn() -> bool,
) -> f64 {
    let started = std::time::Instant::now();
    let (mut ok, mut n) = (0, 0);
    while n < 400 || (busy() && started.elapsed() < std::time::Duration::from_secs(30)) {
        let r = get(c, ingress, "ratings", path).await.unwrap();
        ok += (r.status == 200) as usize;
        n += 1;
    }
    ok as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_timeouts_and_retries() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - name: no-timeout
    match: [{uri: {prefix: /forever}}]
    timeout: 0s
    retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
  - name: no-retries
    match: [{uri: {prefix: /once}}]
    timeout: 500ms
    retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
  - name: default
    timeout: 500ms
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: ratings}}]
"#;
    let mesh = Mesh::up(&flaky_mesh("timeouts", vs));
    let c = client();
    // The app fails half its answers; only 504s with UT show the timeout.
    let mut timed_out = 0;
    for _ in 0..10 {
        let r = get(&c, mesh.ingress, "ratings", "/once?delay=1s")
            .await
            .unwrap();
        if r.status == 504 {
            assert_eq!(r.flag.as_deref(), Some("UT"), "{}", r.text);
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 10, "every 1 s answer is past the 500 ms timeout");
    let mut slow_ok = 0;
    for _ in 0..10 {
        let r = get(&c, mesh.ingress, "ratings", "/forever?delay=700ms")
            .await
            .unwrap();
        assert_ne!(r.status, 504, "0s disables the timeout: {}", r.text);
        slow_ok += (r.status == 200) as usize;
    }
    assert!(slow_ok > 0);

    let once = share(&c, mesh.ingress, "/once", || false).await;
    // `weft routes --stats` measures the retried route while the load runs: effective
    // success (what callers got) vs actual success (per attempt), as `linkerd routes -o wide`.
    let home = mesh.home.clone();
    let stats = std::thread::spawn(move || {
        weft_in(
            &home,
            &[
                "routes", "ratings", "--stats", "--window", "1500ms", "-o", "json",
            ],
        )
    });
    // The load covers the whole window.
    let retried = share(&c, mesh.ingress, "/anything", || !stats.is_finished()).await;
    assert!((0.35..=0.65).contains(&once), "without retries {once}");
    assert!(retried >= 0.85, "with 3 retries on 5xx {retried}");
    let out = stats.join().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let route = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "default")
        .unwrap_or_else(|| panic!("{doc}"))
        .clone();
    let effective = route["effective_success"].as_f64().unwrap();
    let actual = route["actual_success"].as_f64().unwrap();
    // What the window saw is a sample (a few dozen requests on a loaded machine, under load
    // for the whole window): each share must lie within 4 standard deviations of what the
    // policy implies, 1 - 0.5^4 of the requests and half of the attempts. With fewer than 20
    // requests the band would take anything.
    let requests = route["requests"].as_f64().unwrap_or(0.0);
    assert!(requests >= 20.0, "too few requests in the window: {route}");
    let within = |got: f64, p: f64, n: &serde_json::Value| {
        let sd = (p * (1.0 - p) / n.as_f64().unwrap()).sqrt();
        (got - p).abs() <= 4.0 * sd
    };
    assert!(
        effective >= 0.85 || within(effective, 0.9375, &route["requests"]),
        "{route}"
    );
    assert!(within(actual, 0.5, &route["attempts"]), "{route}");
    assert!(effective - actual >= 0.2, "{route}");
    assert!(
        route["attempts"].as_u64() > route["requests"].as_u64(),
        "{route}"
    );
    assert!(route["rps"].as_f64().unwrap() > 0.0);
}

/// Istio fault injection: an abort for half the requests (flag FI, the configured status), a
/// delay for a quarter of another route's requests and for every request of a third (flag DI);
/// each share within 3 points over 4,000 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_fault_injection_aborts_and_delays() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /slow}}]
    fault:
      delay: {fixedDelay: 300ms, percentage: {value: 100}}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /partly}}]
    fault:
      delay: {fixedDelay: 5ms, percentage: {value: 25}}
    route: [{destination: {host: ratings}}]
  - fault:
      abort: {httpStatus: 418, percentage: {value: 50}}
    route: [{destination: {host: ratings}}]
"#;
    let mesh = Mesh::up(&flaky_mesh("faults", vs).replace(
        "--fail-rate, \"0.5\", --fail-status, \"503\"",
        "--version, v1",
    ));
    let c = client();
    // 4,000 requests over 4 connections: the aborted share is within 3 points of 50%.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, ingress) = (c.clone(), mesh.ingress);
        tasks.push(tokio::spawn(async move {
            let mut aborted = 0;
            for _ in 0..1000 {
                let r = get(&c, ingress, "ratings", "/").await.unwrap();
                if r.status == 418 {
                    assert_eq!(r.flag.as_deref(), Some("FI"));
                    aborted += 1;
                } else {
                    assert_eq!(r.status, 200, "{}", r.text);
                }
            }
            aborted
        }));
    }
    let mut aborted = 0;
    for t in tasks {
        aborted += t.await.unwrap();
    }
    let share = aborted as f64 / 4000.0;
    assert!((0.47..=0.53).contains(&share), "aborted {share}");
    // A 25% delay: 4,000 requests, the delayed (DI) share within 3 points.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, ingress) = (c.clone(), mesh.ingress);
        tasks.push(tokio::spawn(async move {
            let mut delayed = 0;
            for _ in 0..1000 {
                let r = get(&c, ingress, "ratings", "/partly").await.unwrap();
                assert_eq!(r.status, 200, "{}", r.text);
                delayed += (r.flag.as_deref() == Some("DI")) as usize;
            }
            delayed
        }));
    }
    let mut delayed = 0;
    for t in tasks {
        delayed += t.await.unwrap();
    }
    let share = delayed as f64 / 4000.0;
    assert!((0.22..=0.28).contains(&share), "delayed {share}");

    let started = std::time::Instant::now();
    let r = get(&c, mesh.ingress, "ratings", "/slow").await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        (r.status, r.flag.as_deref()),
        (200, Some("DI")),
        "{}",
        r.text
    );
}

/// `weft apply` switches a running mesh's routes in under a second with no failed request in
/// flight; a bad document is rejected with its line and changes nothing; `weft get` lists what
/// is in force; `weft delete` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reaches_every_proxy_quickly_and_bad_config_changes_nothing() {
    let vs = |w1: u32, w2: u32, subset2: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: {w1}\n    - destination: {{host: reviews, subset: {subset2}}}\n      weight: {w2}\n"
        )
    };
    let mesh = Mesh::up(&mesh_with_versions("apply", &vs(100, 0, "v2")));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs.yaml");

    // Load from 4 clients all along; every answer must be a 200.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(std::time::Instant, String)>::new(),
    ));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, stop, seen, ingress) = (client(), stop.clone(), seen.clone(), mesh.ingress);
        tasks.push(tokio::spawn(async move {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < end
            {
                let sent = std::time::Instant::now();
                let r = get(&c, ingress, "reviews", "/")
                    .await
                    .expect("request failed");
                assert_eq!(r.status, 200, "{}", r.text);
                let v = r.body["version"].as_str().unwrap_or("").to_string();
                seen.lock().unwrap().push((sent, v));
            }
        }));
    }
    // Windows with answers in them (bounded waits on the load itself, not fixed sleeps).
    let answered_since = |from: std::time::Instant, n: usize| {
        let seen = seen.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t > from)
                .count()
                < n
            {
                assert!(std::time::Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    let start = std::time::Instant::now();
    answered_since(start, 50).await;

    std::fs::write(&file, vs(0, 100, "v2")).unwrap();
    let out = tokio::task::block_in_place(|| mesh.weft(&["apply", "-f", file.to_str().unwrap()]));
    let applied = std::time::Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("VirtualService default/reviews configured")
    );
    answered_since(applied, 50).await;

    // A bad document: rejected with its line; the routes in force do not move.
    std::fs::write(&file, vs(0, 100, "v9")).unwrap();
    let out = tokio::task::block_in_place(|| mesh.weft(&["apply", "-f", file.to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("vs.yaml:10:") && err.contains("unknown subset v9"),
        "{err}"
    );
    let rejected = std::time::Instant::now();
    answered_since(rejected, 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    // `weft apply` answers once every proxy runs the change: no request sent after it reaches
    // v1, and the rejected document moves nothing.
    let late_v1: Vec<_> = seen
        .iter()
        .filter(|(t, v)| *t > applied && v == "v1")
        .collect();
    assert!(
        late_v1.is_empty(),
        "{} requests sent after apply answered by v1",
        late_v1.len()
    );
    let before: Vec<_> = seen.iter().filter(|(t, _)| *t < applied).collect();
    assert!(before.len() >= 50 && before.iter().any(|(_, v)| v == "v1"));
    let after_rejection: Vec<_> = seen.iter().filter(|(t, _)| *t > rejected).collect();
    assert!(after_rejection.len() >= 50);
    assert!(after_rejection.iter().all(|(_, v)| v == "v2"));

    let out = mesh.weft(&["get", "virtualservice"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("default/reviews"));
    std::fs::write(&file, vs(0, 100, "v2")).unwrap();
    let out = mesh.weft(&["delete", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mesh.weft(&["routes", "reviews"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no routes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every split the traffic issue names, applied in turn to one running mesh: over 4,000
/// requests each version's share is within 3 points of its weight, and a 0 weight gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_splits_hold_within_three_points() {
    let mesh = Mesh::up(
        &mesh_with_versions("splits", "")
            .replace(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule",
                "    - name: reviews-v3\n      labels: {app: reviews, version: v3}\n      replicas: 1\n      command: [weft, demo, echo, --service, reviews, --version, v3]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule",
            )
            .replace(
                "  - name: v2\n    labels: {version: v2}\n",
                "  - name: v2\n    labels: {version: v2}\n  - name: v3\n    labels: {version: v3}\n",
            ),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs.yaml");
    for weights in [
        [90, 10, 0],
        [75, 25, 0],
        [50, 50, 0],
        [0, 100, 0],
        [70, 30, 0],
    ] {
        let mut vs = String::from("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n");
        for (i, w) in weights.iter().enumerate() {
            vs.push_str(&format!(
                "    - destination: {{host: reviews, subset: v{}}}\n      weight: {w}\n",
                i + 1
            ));
        }
        std::fs::write(&file, vs).unwrap();
        let out = mesh.weft(&["apply", "-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `apply` answers once every proxy, the ingress included, runs the new snapshot.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("applied by all"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let counts = versions(&mesh, 4000, &[]).await;
        for (i, w) in weights.iter().enumerate() {
            let got = counts.get(&format!("v{}", i + 1)).copied().unwrap_or(0);
            let share = got as f64 / 4000.0 * 100.0;
            if *w == 0 {
                assert_eq!(got, 0, "{weights:?}: v{} got {got}", i + 1);
            } else {
                assert!(
                    (share - *w as f64).abs() <= 3.0,
                    "{weights:?}: v{} got {share:.1}%",
                    i + 1
                );
            }
        }
    }
}

/// `weft up --watch DIR`: editing a VirtualService in the directory reroutes the running mesh;
/// a broken edit is reported and the last good routes keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_applies_edits_and_rejects_broken_ones() {
    let route = |subset: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"
        )
    };
    let mesh = Mesh::up_watching(
        &mesh_with_versions("watched", ""),
        &[("vs.yaml", &route("v1"))],
    );
    let all = |counts: &HashMap<String, usize>, v: &str| counts.get(v) == Some(&20);
    assert!(all(&versions(&mesh, 20, &[]).await, "v1"));

    std::fs::write(mesh.files.path().join("vs.yaml"), route("v2")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Polled every 500 ms, then pushed to every proxy.
    while !all(&versions(&mesh, 20, &[]).await, "v2") {
        assert!(std::time::Instant::now() < deadline, "{}", mesh.stderr());
    }

    // A subset that does not exist: rejected, v2 keeps serving.
    std::fs::write(mesh.files.path().join("vs.yaml"), route("v9")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !mesh.stderr().contains("change rejected") {
        assert!(std::time::Instant::now() < deadline, "{}", mesh.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        mesh.stderr().contains("unknown subset v9"),
        "{}",
        mesh.stderr()
    );
    assert!(all(&versions(&mesh, 20, &[]).await, "v2"));
}

/// Requests with bodies are retried only when the proxy could keep the body (≤ 64 KiB): a
/// 1 KiB POST whose first attempt fails is retried with its body intact; a 100 KiB one streams
/// through once and its failure is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_retried_only_when_buffered() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: ratings}}]
"#;
    let mesh = Mesh::up(&flaky_mesh("bodies", vs).replace(
        "--fail-rate, \"0.5\", --fail-status, \"503\"",
        "--version, v1",
    ));
    let c: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let post = |size: usize| {
        let c = c.clone();
        let ingress = mesh.ingress;
        async move {
            let req =
                http::Request::post(format!("http://{ingress}/anything?fail_times=1&status=503"))
                    .header("host", "ratings")
                    .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                        b'x';
                        size
                    ])))
                    .unwrap();
            let rsp = c.request(req).await.unwrap();
            let status = rsp.status().as_u16();
            let body = http_body_util::BodyExt::collect(rsp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            (status, v["body_bytes"].as_u64().unwrap_or(0))
        }
    };
    assert_eq!(post(1024).await, (200, 1024), "retried with the whole body");
    assert_eq!(
        post(100 * 1024).await.0,
        503,
        "too big to keep: not retried"
    );
}
