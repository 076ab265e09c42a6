use super::*;
use crate::client::{Client, Sidecar};
use crate::propagate::PropagateLayer;
use crate::testing::{echo_headers, json, serve};
use axum::routing::{get, post};
use axum::Router;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap()))
        .collect()
}

fn remote(cx: &Context) -> (String, String, bool) {
    let span = cx.span();
    let sc = span.span_context();
    (
        sc.trace_id().to_string(),
        sc.span_id().to_string(),
        sc.is_sampled(),
    )
}

#[test]
fn extracts_w3c_then_b3_multi_then_b3_single() {
    let w3c = format!("00-{TRACE}-{PARENT}-01");
    let cx = extract(&headers(&[
        ("traceparent", &w3c),
        ("x-b3-traceid", "1111111111111111"),
        ("x-b3-spanid", "2222222222222222"),
    ]));
    assert_eq!(remote(&cx), (TRACE.into(), PARENT.into(), true));

    let cx = extract(&headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "0"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ]));
    assert_eq!(
        remote(&cx),
        (
            "0000000000000000463ac35c9f6413ad".into(),
            "a2fb4a1d1a96d312".into(),
            false
        )
    );

    let cx = extract(&headers(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
    )]));
    assert_eq!(
        remote(&cx),
        (
            "80f198ee56343ba864fe8b2a57d3eff7".into(),
            "e457b5a2e4d86bd1".into(),
            true
        )
    );

    for bad in [
        headers(&[("b3", "0")]),
        headers(&[("b3", "xyz-e457b5a2e4d86bd1")]),
        headers(&[
            ("x-b3-traceid", "00000000000000000000000000000000"),
            ("x-b3-spanid", PARENT),
        ]),
        headers(&[("traceparent", "00-zz-yy-01")]),
    ] {
        assert!(!extract(&bad).span().span_context().is_valid(), "{bad:?}");
    }
}

struct Traced {
    front: SocketAddr,
    spans: InMemorySpanExporter,
    /// The headers the downstream service saw on the last call.
    seen: Arc<Mutex<serde_json::Value>>,
}

/// A front service under [`TraceLayer`] whose `/items/{id}` calls a downstream service with the
/// SDK's client, and whose `/fail` answers 500.
async fn traced() -> Traced {
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let downstream = serve(Router::new().route("/", get(echo_headers))).await;
    let client = Client::builder().sidecar(Sidecar::None).build();
    let seen = Arc::new(Mutex::new(serde_json::Value::Null));
    let keep = seen.clone();
    let call = move || {
        let (client, keep) = (client.clone(), keep.clone());
        async move {
            let r = client.get(&format!("http://{downstream}/")).await.unwrap();
            *keep.lock().unwrap() = json(r).await;
            "ok"
        }
    };
    let app = Router::new()
        .route("/items/{id}", get(call))
        .route(
            "/fail",
            post(|| async { http::StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .layer(TraceLayer::new(provider.tracer("test")))
        .layer(PropagateLayer::new());
    Traced {
        front: serve(app).await,
        spans,
        seen,
    }
}

async fn send(front: SocketAddr, method: &str, path: &str, h: HeaderMap) -> http::StatusCode {
    let client = Client::builder().sidecar(Sidecar::None).build();
    let mut req = http::Request::new(Default::default());
    *req.method_mut() = method.parse().unwrap();
    *req.uri_mut() = format!("http://{front}{path}").parse().unwrap();
    *req.headers_mut() = h;
    client.request(req).await.unwrap().status()
}

fn only_span(spans: &InMemorySpanExporter) -> SpanData {
    let mut all = spans.get_finished_spans().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[tokio::test]
async fn a_w3c_trace_continues_through_the_app() {
    let t = traced().await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let h = headers(&[("traceparent", &traceparent), ("tracestate", "vendor=1")]);
    assert_eq!(send(t.front, "GET", "/items/7", h).await, 200);

    let span = only_span(&t.spans);
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.span_context.trace_id().to_string(), TRACE);
    assert_eq!(span.parent_span_id.to_string(), PARENT);
    assert_eq!(attribute(&span, "http.route"), Some("/items/{id}".into()));
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(200i64.into())
    );
    assert_eq!(span.status, Status::Unset);

    // The call the handler made is a child of the app's span, with the trace state kept.
    let seen = t.seen.lock().unwrap().clone();
    let ours = span.span_context.span_id().to_string();
    assert_eq!(seen["traceparent"], format!("00-{TRACE}-{ours}-01"));
    assert_eq!(seen["tracestate"], "vendor=1");
}

#[tokio::test]
async fn b3_headers_are_rewritten_in_the_form_they_came() {
    let t = traced().await;
    let h = headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        ("x-b3-parentspanid", "1111111111111111"),
        ("x-b3-sampled", "1"),
        ("b3", &format!("{TRACE}-{PARENT}-1")),
    ]);
    assert_eq!(send(t.front, "GET", "/items/1", h).await, 200);
    let span = only_span(&t.spans);
    assert_eq!(span.parent_span_id.to_string(), PARENT);
    let ours = span.span_context.span_id().to_string();
    let seen = t.seen.lock().unwrap().clone();
    assert_eq!(seen["x-b3-traceid"], TRACE);
    assert_eq!(seen["x-b3-spanid"], ours);
    assert_eq!(seen["x-b3-sampled"], "1");
    assert!(seen.get("x-b3-parentspanid").is_none(), "{seen}");
    assert_eq!(seen["b3"], format!("{TRACE}-{ours}-1"));
    assert_eq!(seen["traceparent"], format!("00-{TRACE}-{ours}-01"));
}

#[tokio::test]
async fn a_request_without_context_starts_a_trace_and_5xx_is_an_error() {
    let t = traced().await;
    assert_eq!(send(t.front, "POST", "/fail", HeaderMap::new()).await, 500);
    let span = only_span(&t.spans);
    assert_eq!(span.name, "POST /fail");
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert!(matches!(span.status, Status::Error { .. }));
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(500i64.into())
    );
}

#[tokio::test]
async fn spans_are_exported_over_otlp_http() {
    // A collector that keeps what it is sent.
    let got = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let keep = got.clone();
    let collector = serve(Router::new().route(
        OTLP_HTTP_TRACES_PATH,
        post(move |h: HeaderMap, body: bytes::Bytes| {
            let keep = keep.clone();
            async move {
                let ct = h["content-type"].to_str().unwrap().to_string();
                keep.lock().unwrap().push((ct, body.to_vec()));
            }
        }),
    ))
    .await;
    let otlp = Otlp::start(
        &format!("http://{collector}/"),
        Protocol::HttpProtobuf,
        "orders",
    )
    .unwrap();
    let app = Router::new()
        .route("/checkout", get(|| async { "ok" }))
        .layer(TraceLayer::new(otlp.provider().tracer("test")));
    let front = serve(app).await;
    assert_eq!(send(front, "GET", "/checkout", HeaderMap::new()).await, 200);
    otlp.shutdown().await;
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    let (ct, body) = &got[0];
    assert_eq!(ct, "application/x-protobuf");
    let has = |s: &str| body.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("GET /checkout") && has("orders"));
}
