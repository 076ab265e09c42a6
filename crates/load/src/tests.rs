//! End-to-end tests against a small hyper server on 127.0.0.1 (HTTP/1.1 and h2c), plus the SLO
//! gates, the report format and the schedule.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::lane::intended_offset;
use crate::*;

/// What the test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
    h2_requests: AtomicU64,
    body_bytes: AtomicU64,
    /// Request counter, for "every n-th request" behaviour.
    nth: AtomicU64,
    hosts: Mutex<Vec<String>>,
}

/// Routes: `/` 200; `/mixed` 500 on every 4th request; `/slow10` sleeps 50 ms on every 10th;
/// `/hang` never answers; `/close` answers with `Connection: close`.
async fn handle(seen: Arc<Seen>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    seen.requests.fetch_add(1, Ordering::Relaxed);
    if req.version() == Version::HTTP_2 {
        seen.h2_requests.fetch_add(1, Ordering::Relaxed);
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Ok(mut hosts) = seen.hosts.lock() {
        if hosts.len() < 16 {
            hosts.push(host);
        }
    }
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    seen.body_bytes
        .fetch_add(body.map(|b| b.len() as u64).unwrap_or(0), Ordering::Relaxed);
    let mut resp = Response::new(Full::new(Bytes::from_static(b"hello from the test server")));
    let n = seen.nth.fetch_add(1, Ordering::Relaxed);
    match path.as_str() {
        "/mixed" if n % 4 == 3 => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
        "/slow10" if n.is_multiple_of(10) => tokio::time::sleep(Duration::from_millis(50)).await,
        "/hang" => std::future::pending::<()>().await,
        "/close" => {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

async fn server() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            s.connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let s = s.clone();
            let service = service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(handle(s, req).await) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    });
    (addr, seen)
}

fn spec(addr: SocketAddr, path: &str) -> LoadSpec {
    let url = format!("http://{addr}{path}").parse().expect("url");
    LoadSpec::new(url)
}

fn count(map: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_counts_exactly() {
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/mixed");
    s.requests = Some(200);
    s.connections = 4;
    let r = run(s, None).await.expect("run");
    assert_eq!(r.mode, "closed");
    assert_eq!(r.target_rps, None);
    assert_eq!(r.requests, 200);
    assert_eq!(count(&r.status, "200"), 150);
    assert_eq!(count(&r.status, "500"), 50);
    assert_eq!(r.succeeded, 150);
    assert_eq!(r.failed, 50);
    assert!((r.success_ratio - 0.75).abs() < 1e-9, "{}", r.success_ratio);
    assert!(r.errors.values().all(|&n| n == 0), "{:?}", r.errors);
    assert_eq!(r.latency_us.count, 200);
    assert!(r.latency_us.min >= 1 && r.latency_us.min <= r.latency_us.p50);
    assert!(r.latency_us.p50 <= r.latency_us.p99 && r.latency_us.p99 <= r.latency_us.max);
    assert!(r.achieved_rps > 0.0);
    // The server saw exactly what was reported, over 4 keep-alive connections.
    assert_eq!(seen.requests.load(Ordering::Relaxed), 200);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 4);
    let hosts = seen.hosts.lock().expect("hosts").clone();
    assert!(hosts.iter().all(|h| *h == addr.to_string()), "{hosts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_by_duration_and_progress() {
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/");
    s.duration = Some(Duration::from_millis(300));
    s.connections = 2;
    let progress = Progress::new();
    let r = run(s, Some(progress.clone())).await.expect("run");
    assert!(r.requests > 10, "{}", r.requests);
    assert_eq!(r.failed, 0);
    assert!(
        r.duration_s >= 0.3 && r.duration_s < 1.5,
        "{}",
        r.duration_s
    );
    assert_eq!(progress.completed(), r.requests);
    assert_eq!(progress.errors(), 0);
    assert!(progress.started().is_some());
    assert_eq!(seen.requests.load(Ordering::Relaxed), r.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_holds_the_rate() {
    let (addr, _seen) = server().await;
    let mut s = spec(addr, "/");
    s.rate = Some(500.0);
    s.duration = Some(Duration::from_secs(2));
    s.connections = 8;
    let r = run(s, None).await.expect("run");
    assert_eq!(r.mode, "open");
    assert_eq!(r.target_rps, Some(500.0));
    assert!(
        (950..=1050).contains(&r.requests),
        "requests {}",
        r.requests
    );
    assert!(
        (r.achieved_rps - 500.0).abs() <= 25.0,
        "achieved {} req/s",
        r.achieved_rps
    );
    assert_eq!(r.missed, 0);
    assert_eq!(r.failed, 0);
    assert!(r.send_lag_us.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_by_request_count_is_exact() {
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/");
    s.rate = Some(1000.0);
    s.requests = Some(250);
    s.connections = 3;
    let r = run(s, None).await.expect("run");
    assert_eq!(r.requests, 250);
    assert_eq!(seen.requests.load(Ordering::Relaxed), 250);
    // 250 sends at 1000/s: the last is due at 249 ms.
    assert!(
        r.duration_s >= 0.249 && r.duration_s < 1.0,
        "{}",
        r.duration_s
    );
}

/// The coordinated-omission test: every 10th answer takes 50 ms. One lane at 150 req/s has a send
/// due every 6.7 ms, so a slow answer holds back the next ~7 sends; measured from their intended
/// times they wait 43, 37, 30, … ms. A generator that measured from the actual send (or the closed
/// model) would put the median well under a millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_latency_includes_queueing() {
    let (addr, _seen) = server().await;
    let mut s = spec(addr, "/slow10");
    s.rate = Some(150.0);
    s.duration = Some(Duration::from_secs(2));
    s.connections = 1;
    let r = run(s, None).await.expect("run");
    assert!(r.requests >= 250, "requests {}", r.requests);
    assert!(
        r.latency_us.p99 >= 50_000,
        "p99 {}µs should show the 50 ms stalls",
        r.latency_us.p99
    );
    assert!(
        r.latency_us.p50 >= 5_000,
        "p50 {}µs should show the queueing behind the stalls",
        r.latency_us.p50
    );

    // The same server in the closed model: only the slow answers themselves are slow.
    let (addr, _seen) = server().await;
    let mut s = spec(addr, "/slow10");
    s.requests = Some(100);
    s.connections = 1;
    let closed = run(s, None).await.expect("run");
    assert!(closed.latency_us.p99 >= 50_000);
    assert!(
        closed.latency_us.p50 < 5_000,
        "closed p50 {}µs",
        closed.latency_us.p50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_spreads_streams_over_connections() {
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/mixed");
    s.http2 = true;
    s.connections = 2;
    s.concurrency = 8;
    s.requests = Some(400);
    let r = run(s, None).await.expect("run");
    assert!(r.http2);
    assert_eq!((r.connections, r.concurrency), (2, 8));
    assert_eq!(r.requests, 400);
    assert_eq!(count(&r.status, "200"), 300);
    assert_eq!(count(&r.status, "500"), 100);
    assert_eq!(seen.h2_requests.load(Ordering::Relaxed), 400);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 2);
    let hosts = seen.hosts.lock().expect("hosts").clone();
    assert!(hosts.iter().all(|h| *h == addr.to_string()), "{hosts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_open_model() {
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/");
    s.http2 = true;
    s.connections = 1;
    s.concurrency = 4;
    s.rate = Some(400.0);
    s.requests = Some(100);
    let r = run(s, None).await.expect("run");
    assert_eq!(r.requests, 100);
    assert_eq!(r.succeeded, 100);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_counted() {
    // A port nothing listens on: bind, note it, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut s = spec(addr, "/");
    s.requests = Some(10);
    s.connections = 2;
    let r = run(s, None).await.expect("run");
    assert_eq!(r.requests, 10);
    assert_eq!(count(&r.errors, "connect"), 10);
    assert_eq!(r.failed, 10);
    assert_eq!(r.succeeded, 0);
    assert_eq!(r.success_ratio, 0.0);
    assert_eq!(r.latency_us.count, 0);
    assert!(r.status.is_empty());

    // The open model counts them too, one per scheduled send.
    let mut s = spec(addr, "/");
    s.rate = Some(200.0);
    s.requests = Some(20);
    s.connections = 2;
    let r = run(s, None).await.expect("run");
    assert_eq!(count(&r.errors, "connect"), 20);
}

#[tokio::test]
async fn host_names_and_ipv6_literals_resolve() {
    // Nothing listens on port 1: the point is that the URL parses and resolves, and the failure
    // is a counted connect error rather than a spec error.
    for url in ["http://[::1]:1/", "http://localhost:1/x?y=z"] {
        let mut s = LoadSpec::new(url.parse().expect("url"));
        s.requests = Some(1);
        s.connections = 1;
        let r = run(s, None).await.expect(url);
        assert_eq!(count(&r.errors, "connect"), 1, "{url}");
    }
    // A name that does not resolve is an error before anything is sent.
    let mut s = LoadSpec::new("http://no-such-host.invalid/".parse().expect("url"));
    s.requests = Some(1);
    let err = run(s, None).await.expect_err("unresolvable");
    assert!(matches!(err, LoadError::Resolve { .. }), "{err}");
}

#[tokio::test]
async fn localhost_reaches_an_ipv4_listener() {
    let (addr, seen) = server().await;
    let mut s = LoadSpec::new(
        format!("http://localhost:{}/", addr.port())
            .parse()
            .expect("url"),
    );
    s.requests = Some(5);
    s.connections = 1;
    let r = run(s, None).await.expect("run");
    assert_eq!(r.succeeded, 5, "{:?}", r.errors);
    assert_eq!(seen.requests.load(Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_counted() {
    let (addr, _seen) = server().await;
    let mut s = spec(addr, "/hang");
    s.requests = Some(4);
    s.connections = 2;
    s.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let r = run(s, None).await.expect("run");
    let took = started.elapsed();
    assert_eq!(r.requests, 4);
    assert_eq!(count(&r.errors, "timeout"), 4);
    assert_eq!(r.failed, 4);
    // Two lanes, two 200 ms timeouts each.
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // HTTP/2: a timed-out stream does not take the connection down.
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/hang");
    s.http2 = true;
    s.connections = 1;
    s.concurrency = 3;
    s.requests = Some(6);
    s.timeout = Duration::from_millis(200);
    let r = run(s, None).await.expect("run");
    assert_eq!(count(&r.errors, "timeout"), 6);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_are_replaced_without_errors() {
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/close");
    s.requests = Some(30);
    s.connections = 2;
    let r = run(s, None).await.expect("run");
    assert_eq!(r.requests, 30);
    assert_eq!(r.succeeded, 30, "errors {:?}", r.errors);
    // A fresh connection per request (the warm-up ones included).
    assert!(seen.connections.load(Ordering::Relaxed) >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_headers_and_body_are_sent() {
    let (addr, seen) = server().await;
    let mut s = spec(addr, "/");
    s.method = Method::POST;
    s.body = Bytes::from_static(b"0123456789");
    s.headers = vec![(
        HeaderName::from_static("host"),
        HeaderValue::from_static("example.test"),
    )];
    s.requests = Some(7);
    s.connections = 1;
    let r = run(s.clone(), None).await.expect("run");
    assert_eq!(r.succeeded, 7);
    assert_eq!(r.method, "POST");
    assert_eq!(seen.body_bytes.load(Ordering::Relaxed), 70);
    let hosts = seen.hosts.lock().expect("hosts").clone();
    assert!(hosts.iter().all(|h| h == "example.test"), "{hosts:?}");

    // HTTP/2 carries the Host as :authority.
    let (addr, seen) = server().await;
    s.url = format!("http://{addr}/").parse().expect("url");
    s.http2 = true;
    let r = run(s, None).await.expect("run");
    assert_eq!(r.succeeded, 7);
    assert_eq!(seen.body_bytes.load(Ordering::Relaxed), 70);
    let hosts = seen.hosts.lock().expect("hosts").clone();
    assert!(hosts.iter().all(|h| h == "example.test"), "{hosts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_early() {
    let (addr, _seen) = server().await;
    let mut s = spec(addr, "/");
    s.rate = Some(100.0);
    s.duration = Some(Duration::from_secs(30));
    s.connections = 2;
    let progress = Progress::new();
    let p = progress.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.cancel();
    });
    let started = std::time::Instant::now();
    let r = run(s, Some(progress)).await.expect("run");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(r.interrupted);
    assert!(r.requests >= 10 && r.requests <= 60, "{}", r.requests);
    assert!(r.to_text().contains("interrupted"));
}

#[test]
fn run_blocking_works_outside_a_runtime() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (addr, seen) = rt.block_on(server());
    let mut s = spec(addr, "/");
    s.requests = Some(50);
    s.connections = 2;
    let r = run_blocking(s, None).expect("run");
    assert_eq!(r.succeeded, 50);
    assert_eq!(seen.requests.load(Ordering::Relaxed), 50);
}

#[tokio::test]
async fn bad_specs_are_rejected() {
    let base = || LoadSpec::new("http://127.0.0.1:1/".parse().expect("url"));
    let cases: Vec<(LoadSpec, &str)> = vec![
        (
            LoadSpec::new("https://127.0.0.1/".parse().expect("url")),
            "https",
        ),
        (
            LoadSpec::new("/just/a/path".parse().expect("url")),
            "http://",
        ),
        (
            LoadSpec {
                rate: Some(0.0),
                ..base()
            },
            "rate",
        ),
        (
            LoadSpec {
                rate: Some(f64::NAN),
                ..base()
            },
            "rate",
        ),
        (
            LoadSpec {
                connections: 0,
                ..base()
            },
            "connections",
        ),
        (
            LoadSpec {
                http2: true,
                connections: 4,
                concurrency: 2,
                ..base()
            },
            "concurrency",
        ),
        (
            LoadSpec {
                requests: Some(0),
                ..base()
            },
            "requests",
        ),
        (
            LoadSpec {
                duration: Some(Duration::ZERO),
                ..base()
            },
            "duration",
        ),
        (
            LoadSpec {
                timeout: Duration::ZERO,
                ..base()
            },
            "timeout",
        ),
    ];
    for (spec, word) in cases {
        let err = run(spec, None).await.expect_err("invalid");
        assert!(
            err.to_string().contains(word),
            "{err} should mention {word}"
        );
    }
}

#[test]
fn schedule_spreads_lanes_evenly() {
    // 4 lanes at 100 req/s: lane i sends at i/100 + n·4/100.
    let rate = 100.0;
    let lanes = 4u64;
    for lane in 0..lanes {
        for n in 0..5u64 {
            let at = intended_offset(lane + n * lanes, rate).expect("offset");
            let want = lane as f64 / rate + n as f64 * lanes as f64 / rate;
            assert!((at.as_secs_f64() - want).abs() < 1e-9, "{at:?} vs {want}");
        }
    }
    assert!(intended_offset(u64::MAX, 1e-300).is_none());
}

fn sample_report() -> Report {
    Report {
        schema: SCHEMA.to_string(),
        url: "http://127.0.0.1:8080/".to_string(),
        method: "GET".to_string(),
        mode: "open".to_string(),
        target_rps: Some(100.0),
        connections: 4,
        concurrency: 4,
        http2: false,
        duration_s: 10.0,
        requests: 1000,
        succeeded: 990,
        failed: 10,
        success_ratio: 0.99,
        achieved_rps: 100.0,
        status: [("200".to_string(), 990), ("503".to_string(), 5)]
            .into_iter()
            .collect(),
        errors: [
            ("connect".to_string(), 0),
            ("timeout".to_string(), 5),
            ("io".to_string(), 0),
        ]
        .into_iter()
        .collect(),
        latency_us: Latency {
            count: 995,
            min: 100,
            mean: 2_000.0,
            stdev: 500.0,
            p50: 1_500,
            p90: 3_000,
            p95: 4_000,
            p99: 12_000,
            p999: 40_000,
            max: 50_000,
        },
        missed: 0,
        send_lag_us: None,
        interrupted: false,
    }
}

#[test]
fn slo_gates() {
    let r = sample_report();
    let pass = Slo {
        max_p99: Some(Duration::from_millis(20)),
        min_success: Some(0.99),
    };
    assert!(pass.check(&r).is_empty(), "{:?}", pass.check(&r));
    assert!(Slo::default().check(&r).is_empty());

    let fail = Slo {
        max_p99: Some(Duration::from_millis(10)),
        min_success: Some(0.995),
    };
    let v = fail.check(&r);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].contains("p99") && v[0].contains("12.00ms") && v[0].contains("10.00ms"));
    assert!(v[1].contains("99%") && v[1].contains("99.50%"), "{}", v[1]);

    // Nothing answered: both gates fail rather than pass vacuously.
    let mut empty = r.clone();
    empty.requests = 0;
    empty.succeeded = 0;
    empty.failed = 0;
    empty.success_ratio = 0.0;
    empty.latency_us = Latency::default();
    assert_eq!(pass.check(&empty).len(), 2);
}

#[test]
fn success_ratio_parses_both_ways() {
    assert_eq!(parse_success("0.99"), Ok(0.99));
    assert_eq!(parse_success("99%"), Ok(0.99));
    assert_eq!(parse_success(" 99.5 %"), Ok(0.995));
    assert_eq!(parse_success("1"), Ok(1.0));
    assert_eq!(parse_success("100%"), Ok(1.0));
    assert_eq!(parse_success("0%"), Ok(0.0));
    let hint = parse_success("99").expect_err("ambiguous");
    assert!(hint.contains("99%"), "{hint}");
    for bad in ["", "%", "abc", "-0.1", "101%", "1.5", "NaN", "inf", "0.9x"] {
        assert!(parse_success(bad).is_err(), "{bad:?} should not parse");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_round_trips_as_json() {
    let (addr, _seen) = server().await;
    let mut s = spec(addr, "/");
    s.requests = Some(20);
    s.connections = 2;
    let r = run(s, None).await.expect("run");
    let json = serde_json::to_string(&r).expect("serialize");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["schema"], "weft.load/v1");
    assert_eq!(value["requests"], 20);
    assert_eq!(value["status"]["200"], 20);
    assert_eq!(value["errors"]["timeout"], 0);
    assert!(value["latency_us"]["p99"].is_u64());
    let back: Report = serde_json::from_str(&json).expect("deserialize");
    // serde_json may round a float's last bit on the way back; compare those approximately.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    assert!(close(back.duration_s, r.duration_s) && close(back.achieved_rps, r.achieved_rps));
    assert!(close(back.latency_us.mean, r.latency_us.mean));
    assert!(close(back.latency_us.stdev, r.latency_us.stdev));
    let exact = |mut x: Report| {
        (x.duration_s, x.achieved_rps) = (0.0, 0.0);
        (x.latency_us.mean, x.latency_us.stdev) = (0.0, 0.0);
        x
    };
    assert_eq!(exact(back.clone()), exact(r));
    assert_eq!(back.schema, SCHEMA);
}

#[test]
fn text_summary_reads_well() {
    let text = sample_report().to_text();
    for want in [
        "GET http://127.0.0.1:8080/",
        "open model at 100 req/s",
        "4 connections",
        "requests   1000 in 10.00s, 100 req/s",
        "succeeded  990 (99.00%)",
        "p99    12.00ms",
        "503  5",
        "timeout  5",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

/// A TCP echo on 127.0.0.1: every byte back, then a close after the client's half-close.
/// `corrupt`: every echoed chunk has its first byte changed; `silent`: reads and never answers.
async fn tcp_echo(corrupt: bool, silent: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if silent {
                        continue;
                    }
                    if corrupt {
                        buf[0] ^= 0xff;
                    }
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A run bounded by a count ends after exactly that many chunks, every byte sent came back
/// intact, and every connection saw the server close after its half-close.
#[tokio::test]
async fn tcp_load_counts_exact_chunks_and_bytes() {
    let addr = tcp_echo(false, false).await;
    let mut spec = TcpSpec::new(addr);
    spec.connections = 4;
    spec.chunk = 16 * 1024;
    spec.exchanges = Some(300);
    spec.duration = Duration::from_secs(60);
    let r = run_tcp(spec).await.unwrap();
    assert_eq!(r.exchanges, 300, "{r:?}");
    assert_eq!(r.bytes_sent, 300 * 16 * 1024, "{r:?}");
    assert_eq!(r.bytes_echoed, r.bytes_sent, "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(r.failed(), 0);
    assert_eq!(r.latency_us.count, 300);
    assert!(r.mib_per_s > 0.0 && r.exchanges_per_s > 0.0, "{r:?}");
    assert!(r.latency_us.p50 <= r.latency_us.p99, "{r:?}");
}

/// A run bounded by time stops by itself; chunks larger than the socket buffers (4 MiB) still
/// go round, since each is written and read at once.
#[tokio::test]
async fn tcp_load_stops_at_its_duration_with_large_chunks() {
    let addr = tcp_echo(false, false).await;
    let mut spec = TcpSpec::new(addr);
    spec.connections = 2;
    spec.chunk = 4 << 20;
    spec.duration = Duration::from_millis(300);
    let t = std::time::Instant::now();
    let r = run_tcp(spec).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(r.exchanges >= 2, "{r:?}");
    assert_eq!(r.bytes_echoed, r.exchanges * (4 << 20));
    assert!(r.errors.is_empty(), "{r:?}");
}

/// An echo that changes bytes is counted as `mismatch` (none of its bytes as echoed); one that
/// never answers, as `timeout`; a target nobody listens on, as `connect`. Each run ends by
/// itself.
#[tokio::test]
async fn tcp_load_counts_corrupt_silent_and_refused_targets() {
    let mut spec = TcpSpec::new(tcp_echo(true, false).await);
    spec.connections = 2;
    spec.chunk = 1024;
    spec.exchanges = Some(10);
    let r = run_tcp(spec.clone()).await.unwrap();
    assert_eq!(count(&r.errors, "mismatch"), 2, "{r:?}");
    assert_eq!(r.bytes_echoed, 0, "{r:?}");

    spec.target = tcp_echo(false, true).await;
    spec.timeout = Duration::from_millis(200);
    let r = run_tcp(spec.clone()).await.unwrap();
    assert_eq!(count(&r.errors, "timeout"), 2, "{r:?}");
    assert_eq!(r.exchanges, 0);

    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    spec.target = unused.local_addr().unwrap();
    drop(unused);
    let r = run_tcp(spec).await.unwrap();
    assert_eq!(count(&r.errors, "connect"), 2, "{r:?}");
}
