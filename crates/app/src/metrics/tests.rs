use super::*;
use crate::testing::{serve, text};
use axum::routing::post;
use std::net::SocketAddr;
use tokio::sync::{oneshot, Mutex};

async fn get_text(addr: SocketAddr, path: &str) -> (http::StatusCode, String, String) {
    let client = crate::client::Client::builder()
        .sidecar(crate::client::Sidecar::None)
        .build();
    let r = client.get(&format!("http://{addr}{path}")).await.unwrap();
    let ct = r
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), ct, text(r).await)
}

#[tokio::test]
async fn red_metrics_by_method_route_and_status_class() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    // `/hold` answers when told to, so the in-flight gauge can be read while it waits.
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let hold = move || {
        let release = release.clone();
        async move {
            let rx = release.lock().await.take().unwrap();
            rx.await.ok();
            "held"
        }
    };
    let app = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route(
            "/fail",
            post(|| async { http::StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route("/hold", get(hold))
        // axum runs `Router::layer` around a fallback the app sets, not its implicit 404.
        .fallback(|| async { http::StatusCode::NOT_FOUND })
        .layer(metrics.layer())
        .merge(router(Arc::new(registry)));
    let addr = serve(app).await;
    for id in [1, 2, 3] {
        assert_eq!(get_text(addr, &format!("/items/{id}")).await.0, 200);
    }
    assert_eq!(get_text(addr, "/nowhere").await.0, 404);
    let client = crate::client::Client::builder()
        .sidecar(crate::client::Sidecar::None)
        .build();
    let mut req = http::Request::new(Default::default());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = format!("http://{addr}/fail").parse().unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), 503);
    let held = tokio::spawn(get_text(addr, "/hold"));
    // Wait for the held request to be counted in flight.
    let in_flight = r#"http_server_requests_in_flight{method="GET",route="/hold"} 1"#;
    let body = loop {
        let (status, ct, body) = get_text(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(ct, CONTENT_TYPE_OPENMETRICS);
        if body.contains(in_flight) {
            break body;
        }
        tokio::task::yield_now().await;
    };
    for line in [
        r#"http_server_requests_total{method="GET",route="/items/{id}",status="2xx"} 3"#,
        r#"http_server_requests_total{method="POST",route="/fail",status="5xx"} 1"#,
        r#"http_server_requests_total{method="GET",route="unmatched",status="4xx"} 1"#,
        r#"http_server_request_duration_seconds_count{method="GET",route="/items/{id}",status="2xx"} 3"#,
        r#"http_server_request_duration_seconds_bucket{le="10.0",method="POST",route="/fail",status="5xx"} 1"#,
        "# TYPE http_server_request_duration_seconds histogram",
        "# UNIT http_server_request_duration_seconds seconds",
        "# TYPE http_server_requests_in_flight gauge",
        "# EOF",
    ] {
        assert!(body.contains(line), "missing {line}\n{body}");
    }
    release_tx.send(()).unwrap();
    assert_eq!(held.await.unwrap().2, "held");
    let (_, _, body) = get_text(addr, "/metrics").await;
    assert!(
        body.contains(r#"http_server_requests_in_flight{method="GET",route="/hold"} 0"#),
        "{body}"
    );
}
