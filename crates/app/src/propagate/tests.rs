use super::*;
use crate::client::{Client, Sidecar};
use crate::testing::{echo_headers, json, serve};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;

#[test]
fn grpc_timeout_units() {
    assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
    assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
    assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_grpc_timeout("100u"), Some(Duration::from_micros(100)));
    for bad in ["", "S", "1", "1s", "123456789m", "-1S", "1.5S"] {
        assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
    }
    assert_eq!(grpc_timeout_value(Duration::from_micros(1500)), "2m");
}

#[test]
fn incoming_timeout_prefers_grpc_and_ignores_garbage() {
    let mut h = HeaderMap::new();
    h.insert(REQUEST_TIMEOUT, "750".parse().unwrap());
    assert_eq!(incoming_timeout(&h), Some(Duration::from_millis(750)));
    h.insert(GRPC_TIMEOUT, "2S".parse().unwrap());
    assert_eq!(incoming_timeout(&h), Some(Duration::from_secs(2)));
    h.insert(GRPC_TIMEOUT, "soon".parse().unwrap());
    h.insert(REQUEST_TIMEOUT, "-5".parse().unwrap());
    assert_eq!(incoming_timeout(&h), None);
}

/// A front service whose handler calls `downstream` with the SDK's client and answers with the
/// headers the downstream saw.
async fn front(downstream: SocketAddr, layer: PropagateLayer) -> SocketAddr {
    let client = Client::builder().sidecar(Sidecar::None).build();
    let call = move || {
        let client = client.clone();
        async move {
            let r = client.get(&format!("http://{downstream}/")).await.unwrap();
            axum::Json(json(r).await)
        }
    };
    serve(Router::new().route("/", get(call)).layer(layer)).await
}

#[tokio::test]
async fn the_mesh_headers_go_on_and_nothing_else() {
    let downstream = serve(Router::new().route("/", get(echo_headers))).await;
    let front = front(downstream, PropagateLayer::new()).await;
    let sent = [
        ("x-request-id", "req-1"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "vendor=x"),
        ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c"),
        ("x-b3-spanid", "b7ad6b7169203331"),
        ("x-b3-sampled", "1"),
        ("x-ot-span-context", "abc"),
        ("x-weft-end-user", "alice"),
        ("cookie", "session=secret"),
        ("authorization", "Bearer t"),
    ];
    let client = Client::builder().sidecar(Sidecar::None).build();
    let mut req = http::Request::new(Default::default());
    *req.uri_mut() = format!("http://{front}/").parse().unwrap();
    for (k, v) in sent {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let seen = json(client.request(req).await.unwrap()).await;
    for (k, v) in &sent[..8] {
        assert_eq!(seen[k], *v, "{k}");
    }
    assert!(seen.get("cookie").is_none(), "{seen}");
    assert!(seen.get("authorization").is_none(), "{seen}");
}

#[tokio::test]
async fn the_end_user_header_is_configurable() {
    let downstream = serve(Router::new().route("/", get(echo_headers))).await;
    let layer = PropagateLayer::new().end_user_header(HeaderName::from_static("x-user"));
    let front = front(downstream, layer).await;
    let client = Client::builder().sidecar(Sidecar::None).build();
    let mut req = http::Request::new(Default::default());
    *req.uri_mut() = format!("http://{front}/").parse().unwrap();
    req.headers_mut().insert("x-user", "bob".parse().unwrap());
    req.headers_mut()
        .insert("x-weft-end-user", "mallory".parse().unwrap());
    let seen = json(client.request(req).await.unwrap()).await;
    assert_eq!(seen["x-user"], "bob");
    assert!(seen.get("x-weft-end-user").is_none(), "{seen}");
}

#[tokio::test]
async fn the_deadline_shrinks_on_the_way() {
    let downstream = serve(Router::new().route("/", get(echo_headers))).await;
    let front = front(
        downstream,
        PropagateLayer::new().timeout(Duration::from_secs(20)),
    )
    .await;
    let ms = |seen: &serde_json::Value| -> u64 {
        seen["x-request-timeout"].as_str().unwrap().parse().unwrap()
    };
    let client = Client::builder().sidecar(Sidecar::None).build();
    for (header, value, most) in [
        ("x-request-timeout", "3000", 3000),
        ("grpc-timeout", "2S", 2000),
        // The app's own budget (20 s) is more than the client's default timeout (15 s).
        ("x-other", "1", 15_000),
    ] {
        let mut req = http::Request::new(Default::default());
        *req.uri_mut() = format!("http://{front}/").parse().unwrap();
        req.headers_mut().insert(header, value.parse().unwrap());
        let seen = json(client.request(req).await.unwrap()).await;
        let got = ms(&seen);
        assert!(got <= most && got > most / 2, "{header}: {got}");
    }
}

#[tokio::test]
async fn a_spawned_task_keeps_the_headers_with_scope() {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", "r-9".parse().unwrap());
    let p = Propagated::from_headers(&h, &DEFAULT_END_USER_HEADER, Instant::now());
    let seen = p
        .scope(async {
            let current = Propagated::current().unwrap();
            tokio::spawn(
                Propagated::current()
                    .unwrap()
                    .scope(async { Propagated::current().map(|p| p.headers().clone()) }),
            )
            .await
            .unwrap()
            .map(|h| (h, current.headers().clone()))
        })
        .await
        .unwrap();
    assert_eq!(seen.0["x-request-id"], "r-9");
    assert_eq!(seen.0, seen.1);
    assert!(Propagated::current().is_none());
}

#[test]
fn apply_keeps_what_the_outgoing_request_set() {
    let mut incoming = HeaderMap::new();
    incoming.insert("x-request-id", "in".parse().unwrap());
    incoming.insert("tracestate", "a=1".parse().unwrap());
    let p = Propagated::from_headers(&incoming, &DEFAULT_END_USER_HEADER, Instant::now());
    let mut out = HeaderMap::new();
    out.insert("x-request-id", "mine".parse().unwrap());
    p.apply(&mut out);
    assert_eq!(out["x-request-id"], "mine");
    assert_eq!(out["tracestate"], "a=1");
}
