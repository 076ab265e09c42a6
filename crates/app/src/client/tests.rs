use super::*;
use crate::testing::{echo_headers, json, serve};
use axum::extract::State;
use axum::routing::{any, get};
use axum::Router;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A server that answers `statuses` in turn (the last one from then on) and counts requests.
async fn scripted(statuses: &'static [u16]) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let handler = move |State(count): State<Arc<AtomicUsize>>| async move {
        let n = count.fetch_add(1, Ordering::SeqCst);
        StatusCode::from_u16(statuses[n.min(statuses.len() - 1)]).unwrap()
    };
    let addr = serve(
        Router::new()
            .route("/", any(handler))
            .with_state(count.clone()),
    )
    .await;
    (addr, count)
}

const RETRY: Retry = Retry {
    retries: 2,
    backoff: Duration::from_millis(10),
};

#[tokio::test]
async fn through_the_sidecar_requests_are_routed_by_host() {
    // The "sidecar" here answers with what it received: the request went to it, for `inventory`.
    let sidecar = serve(
        Router::new().fallback(|uri: Uri, h: http::HeaderMap| async move {
            format!("{} {}", uri, h["host"].to_str().unwrap())
        }),
    )
    .await;
    let client = Client::builder().sidecar(Sidecar::Proxy(sidecar)).build();
    let r = client
        .get("http://inventory:8080/stock/42?x=1")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = crate::testing::text(r).await;
    assert_eq!(body, "/stock/42?x=1 inventory:8080");
}

#[tokio::test]
async fn no_proxy_hosts_are_reached_directly() {
    let direct = serve(Router::new().route("/", get(|| async { "direct" }))).await;
    // A sidecar address where nothing listens: a request sent there would fail.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let mut client = Client::builder().sidecar(Sidecar::Proxy(nowhere));
    client.no_proxy = vec!["127.0.0.1".into()];
    let r = client
        .build()
        .get(&format!("http://{direct}/"))
        .await
        .unwrap();
    assert_eq!(crate::testing::text(r).await, "direct");
    let c = Connector {
        http: HttpConnector::new(),
        proxy: None,
        no_proxy: vec!["example.com".to_string()].into(),
    };
    assert!(c.bypass("example.com") && c.bypass("api.EXAMPLE.com"));
    assert!(!c.bypass("badexample.com") && !c.bypass("inventory"));
}

#[tokio::test]
async fn behind_a_sidecar_an_opted_in_retry_never_runs() {
    let (sidecar, count) = scripted(&[503, 200]).await;
    for s in [Sidecar::Proxy(sidecar), Sidecar::Transparent] {
        let client = Client::builder().sidecar(s.clone()).retry(RETRY).build();
        assert!(!client.retries(), "{s:?}");
    }
    let client = Client::builder()
        .sidecar(Sidecar::Proxy(sidecar))
        .retry(RETRY)
        .build();
    let r = client.get("http://orders/").await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_a_sidecar_an_opted_in_retry_retries_idempotent_calls() {
    let (addr, count) = scripted(&[503, 502, 200]).await;
    let client = Client::builder()
        .sidecar(Sidecar::None)
        .retry(RETRY)
        .build();
    assert!(client.retries());
    let r = client.get(&format!("http://{addr}/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(count.load(Ordering::SeqCst), 3);

    // A POST may have had its effect: sent once.
    let (addr, count) = scripted(&[503, 200]).await;
    let mut req = Request::new(Body::from("order"));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
    let r = client.request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Not opted in: once.
    let (addr, count) = scripted(&[503, 200]).await;
    let plain = Client::builder().sidecar(Sidecar::None).build();
    let r = plain.get(&format!("http://{addr}/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_retry_resends_the_body_after_a_refused_connection() {
    // Each attempt finds the port closed until the server is there; the third gets through.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::builder()
        .sidecar(Sidecar::None)
        .retry(Retry {
            retries: 20,
            backoff: Duration::from_millis(50),
        })
        .build();
    let mut req = Request::new(Body::from("payload"));
    *req.method_mut() = Method::PUT;
    *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
    let call = tokio::spawn(async move { client.request(req).await });
    tokio::time::sleep(Duration::from_millis(120)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = Router::new().route("/", any(|body: String| async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = call.await.unwrap().unwrap();
    assert_eq!(crate::testing::text(r).await, "payload");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let addr = serve(Router::new().route("/", get(std::future::pending::<()>))).await;
    let client = Client::builder()
        .sidecar(Sidecar::None)
        .timeout(Duration::from_millis(100))
        .build();
    let err = client.get(&format!("http://{addr}/")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout(d) if d == Duration::from_millis(100)),
        "{err}"
    );
}

#[tokio::test]
async fn the_deadline_of_the_request_served_caps_the_call() {
    let (addr, count) = scripted(&[200]).await;
    let client = Client::builder().sidecar(Sidecar::None).build();
    let uri = format!("http://{addr}/");

    // Already past: not sent at all.
    let past = Propagated::default().with_deadline(Instant::now());
    let err = past.scope(client.get(&uri)).await.unwrap_err();
    assert!(matches!(err, ClientError::DeadlineExceeded), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 0);

    // 200 ms left: a silent server fails the call then, not after the client's 15 s.
    let silent = serve(Router::new().route("/", get(std::future::pending::<()>))).await;
    let soon = Propagated::default().with_deadline(Instant::now() + Duration::from_millis(200));
    let started = Instant::now();
    let err = soon
        .scope(client.get(&format!("http://{silent}/")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout(d) if d <= Duration::from_millis(200)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_callee_is_told_its_budget() {
    let addr = serve(Router::new().route("/", any(echo_headers))).await;
    let client = Client::builder()
        .sidecar(Sidecar::None)
        .timeout(Duration::from_secs(3))
        .build();
    let mut req = Request::new(Body::default());
    *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
    req.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let seen = json(client.request(req).await.unwrap()).await;
    assert_eq!(seen["x-request-timeout"], "3000");
    assert_eq!(seen["grpc-timeout"], "3000m");

    // A smaller budget set by the caller stays.
    let mut req = Request::new(Body::default());
    *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
    req.headers_mut()
        .insert(REQUEST_TIMEOUT, HeaderValue::from_static("500"));
    let seen = json(client.request(req).await.unwrap()).await;
    assert_eq!(seen["x-request-timeout"], "500");
    assert!(seen.get("grpc-timeout").is_none());
}

#[test]
fn proxy_addresses() {
    let a: SocketAddr = "127.0.0.1:4140".parse().unwrap();
    assert_eq!(parse_proxy("http://127.0.0.1:4140"), Some(a));
    assert_eq!(parse_proxy("http://127.0.0.1:4140/"), Some(a));
    assert_eq!(parse_proxy(" 127.0.0.1:4140 "), Some(a));
    assert_eq!(parse_proxy("not a proxy"), None);
}
