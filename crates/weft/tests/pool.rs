//! Istio's circuit-breaking task end to end, with its own DestinationRule: one connection to
//! httpbin, one request waiting for it, one request per connection (so every request opens a
//! new connection, as Envoy's HTTP/1.1 pool does). Clients send as fast as answered, each on its
//! own connection, as `fortio load -c N -qps 0 -n M` does: one client never overflows, two
//! sometimes do (a request arriving while the other waits for its new connection), three
//! clearly more often — and every overflow is a 503 with flag UO, answered at once.

mod common;

use common::*;
use std::net::SocketAddr;

/// The task's DestinationRule, as the task applies it.
const CIRCUIT_BREAKER: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"#;

fn mesh(name: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: httpbin\n    port: 8000\n    workloads:\n    - name: httpbin-v1\n      labels: {{app: httpbin, version: v1}}\n      replicas: 1\n      command: [weft, demo, echo, --service, httpbin, --version, v1]\n---\n{CIRCUIT_BREAKER}"
    )
}

/// What `fortio load -c clients -qps 0 -n total http://httpbin:8000/get` got: (200s, 503 UOs).
async fn fortio(ingress: SocketAddr, clients: usize, total: usize) -> (usize, usize) {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                // Each client its own keep-alive connection, as fortio's.
                let c = client();
                let (mut ok, mut overflow) = (0, 0);
                for _ in 0..total / clients {
                    let r = get(&c, ingress, "httpbin:8000", "/get").await.unwrap();
                    match (r.status, r.flag.as_deref()) {
                        (200, _) => ok += 1,
                        (503, Some("UO")) => overflow += 1,
                        (s, f) => panic!("unexpected {s} {f:?}: {}", r.text),
                    }
                }
                (ok, overflow)
            })
        })
        .collect();
    let mut sum = (0, 0);
    for t in tasks {
        let (ok, overflow) = t.await.unwrap();
        sum.0 += ok;
        sum.1 += overflow;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn istio_circuit_breaking_task_overflows_more_with_more_clients() {
    let m = Mesh::up(&mesh("breaker-task"));
    let ingress = m.status["ingress_admin"].as_str().unwrap().parse().unwrap();
    let admin_client = client();
    let opened = || metric_sum(&admin_client, ingress, "weft_pool_connections_opened_total");
    // The first call, as the task's first `fortio curl`, succeeds.
    assert_eq!(fortio(m.ingress, 1, 1).await, (1, 0));
    // One client at a time: its request waits for its new connection, never overflows; every
    // request had a connection of its own (maxRequestsPerConnection: 1).
    assert_eq!(fortio(m.ingress, 1, 20).await, (20, 0));
    assert_eq!(opened().await, 21.0);
    // Rounds of -c 2 -n 20 and -c 3 -n 30, interleaved so that load on the machine falls on
    // both alike.
    const ROUNDS: usize = 5;
    let (mut two, mut three) = ((0, 0), (0, 0));
    for round in 0..ROUNDS {
        let t = fortio(m.ingress, 2, 20).await;
        let h = fortio(m.ingress, 3, 30).await;
        eprintln!("round {round}: -c 2: {t:?}, -c 3: {h:?} (200, 503 UO)");
        assert!(h.0 > 0 && h.1 > 0, "-c 3: some pass, some overflow: {h:?}");
        two = (two.0 + t.0, two.1 + t.1);
        three = (three.0 + h.0, three.1 + h.1);
    }
    let share = |(ok, uo): (usize, usize)| uo as f64 / (ok + uo) as f64;
    eprintln!(
        "503 UO: -c 2 {:.0}%, -c 3 {:.0}%",
        100.0 * share(two),
        100.0 * share(three)
    );
    // Structurally about 15 points apart or more: when reconnects are slow both shares rise
    // (a client that overflows asks again at once), to ~45% and ~63% in the limit.
    assert!(
        share(three) > share(two) + 0.05,
        "three clients overflow clearly more than two: {two:?} vs {three:?}"
    );
    // Every overflow was counted as the proxy's own UO answer.
    assert_eq!(
        metric_sum(
            &admin_client,
            ingress,
            "weft_proxy_responses_total{flag=\"UO\"}"
        )
        .await,
        (two.1 + three.1) as f64
    );
}

/// One connection carries one request at a time: of two slow requests sent together, one waits
/// (pending) until the other's answer is in, then goes on a new connection; a third overflows
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_connection_carries_one_request_at_a_time() {
    let m = Mesh::up(&mesh("breaker-serial"));
    let c = client();
    assert_eq!(
        get(&c, m.ingress, "httpbin", "/").await.unwrap().status,
        200
    );
    let started = std::time::Instant::now();
    let slow = |delay: &'static str| {
        let ingress = m.ingress;
        tokio::spawn(async move {
            let r = get(
                &client(),
                ingress,
                "httpbin",
                &format!("/get?delay={delay}"),
            )
            .await
            .unwrap();
            (r.status, r.flag, started.elapsed())
        })
    };
    let first = slow("1s");
    // The second arrives while the first is on the connection.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = slow("1s");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let third = slow("1s");
    let (s1, _, t1) = first.await.unwrap();
    let (s2, _, t2) = second.await.unwrap();
    let (s3, f3, t3) = third.await.unwrap();
    assert_eq!((s1, s2), (200, 200));
    assert_eq!((s3, f3.as_deref()), (503, Some("UO")), "past one pending");
    assert!(
        t3 < std::time::Duration::from_millis(900),
        "UO at once: {t3:?}"
    );
    assert!(
        t2 >= t1 + std::time::Duration::from_millis(700),
        "the second waited for the first's connection: {t1:?} then {t2:?}"
    );
}
