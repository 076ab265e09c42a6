//! Distributed tracing end to end: `weft up --otlp-endpoint` with a real OTLP receiver (built on
//! the collector's protobuf definitions, `opentelemetry-proto`) in this process, over gRPC and
//! over HTTP/protobuf. One request through ingress → A → B (A's echo calls B with `/fetch`, and
//! forwards the trace headers as an app must) is one trace of four spans, each the child of the
//! one before, with the HTTP semantic-convention attributes; a B3-headed request is continued.

mod common;

use common::otlp::*;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An OTLP/HTTP receiver (protobuf bodies) on 127.0.0.1:0.
async fn http_receiver() -> (SocketAddr, Collected) {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collected = Collected::default();
    let c = collected.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let c = c.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let ctype = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        c.http_requests.lock().unwrap().push((path, ctype));
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(r) => {
                                c.add(r);
                                200
                            }
                            Err(_) => 400,
                        };
                        let rsp = ExportTraceServiceResponse {
                            partial_success: None,
                        }
                        .encode_to_vec();
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(bytes::Bytes::from(rsp)))
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (addr, collected)
}

/// The span name of a request to B, which has no routes.
const B_DEFAULT: &str = "b.default.svc.cluster.local:80/*";

fn two_services(name: &str) -> String {
    mesh_yaml(name, &[("a", 1, ""), ("b", 1, "")])
}

/// GET through the ingress with extra headers; the echo's JSON answer.
async fn get_with(
    mesh: &Mesh,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    use http_body_util::BodyExt;
    let mut req = http::Request::get(format!("http://{}{path}", mesh.ingress))
        .header("host", host)
        .header("user-agent", "weft-trace-test/1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = client()
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The one span of `spans` from `service` of `kind`.
fn one<'a>(spans: &'a [Received], service: &str, kind: SpanKind) -> &'a Span {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|r| r.service == service && r.span.kind == kind as i32)
        .collect();
    assert_eq!(found.len(), 1, "{service} {kind:?} spans in {spans:#?}");
    &found[0].span
}

/// Checks the trace of one request ingress → A → B and returns its spans in order (ingress,
/// A inbound, A outbound, B inbound).
/// Every span is named as Istio names them: `HOST:PORT/PATH` of the route the request fell
/// under (`/*` for a service without routes); A's outbound span is named `a_out_name`.
fn check_chain(spans: &[Received], path_a: &str, path_b: &str, a_out_name: &str) -> [Span; 4] {
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let ingress = one(spans, "istio-ingressgateway", SpanKind::Server);
    let a_in = one(spans, "a", SpanKind::Server);
    let a_out = one(spans, "a", SpanKind::Client);
    let b_in = one(spans, "b", SpanKind::Server);
    let chain = [ingress, a_in, a_out, b_in];
    for pair in chain.windows(2) {
        let (parent, child) = (pair[0], pair[1]);
        assert_eq!(
            hex(&child.parent_span_id),
            hex(&parent.span_id),
            "{} is the child of {}",
            string_attr(&child.attributes, "weft.upstream.instance").unwrap_or_default(),
            string_attr(&parent.attributes, "weft.upstream.instance").unwrap_or_default(),
        );
        assert!(
            parent.start_time_unix_nano <= child.start_time_unix_nano,
            "a child starts after its parent"
        );
        assert!(
            child.end_time_unix_nano <= parent.end_time_unix_nano,
            "a child ends before its parent"
        );
    }

    // The HTTP semantic conventions, and weft's own attributes.
    let default = |svc: &str| format!("{svc}.default.svc.cluster.local:80/*");
    for (s, path, host, version, name) in [
        (ingress, path_a, "a", "1.1", default("a")),
        (a_in, path_a, "a", "2", default("a")),
        (a_out, path_b, "b", "1.1", a_out_name.to_string()),
        (b_in, path_b, "b", "2", default("b")),
    ] {
        let a = &s.attributes;
        assert_eq!(s.name, name);
        assert_eq!(
            string_attr(a, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(
            string_attr(a, "url.path").as_deref(),
            Some(path.split('?').next().unwrap())
        );
        assert_eq!(string_attr(a, "url.scheme").as_deref(), Some("http"));
        assert_eq!(string_attr(a, "server.address").as_deref(), Some(host));
        assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
        assert_eq!(
            string_attr(a, "network.protocol.version").as_deref(),
            Some(version)
        );
        assert!(string_attr(a, "weft.request_id").is_some_and(|id| !id.is_empty()));
        assert_eq!(
            s.status.as_ref().map_or(0, |st| st.code),
            StatusCode::Unset as i32
        );
    }
    assert_eq!(
        string_attr(&ingress.attributes, "user_agent.original").as_deref(),
        Some("weft-trace-test/1")
    );
    let instance = |s: &Span| string_attr(&s.attributes, "weft.upstream.instance");
    let peer = |s: &Span| string_attr(&s.attributes, "weft.peer.identity");
    assert_eq!(instance(ingress).as_deref(), Some("a-v1-0"));
    assert_eq!(instance(a_in).as_deref(), Some("a-v1-0"));
    assert_eq!(instance(a_out).as_deref(), Some("b-v1-0"));
    assert_eq!(instance(b_in).as_deref(), Some("b-v1-0"));
    // Identities the mTLS handshakes proved: the server's on the client side, the client's on
    // the server side.
    assert_eq!(
        peer(ingress).as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/a")
    );
    assert_eq!(
        peer(a_in).as_deref(),
        Some("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway")
    );
    assert_eq!(
        peer(a_out).as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/b")
    );
    assert_eq!(
        peer(b_in).as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/a")
    );
    [ingress.clone(), a_in.clone(), a_out.clone(), b_in.clone()]
}

/// The `traceparent` an app saw names its sidecar's inbound span.
fn saw_span(echo: &serde_json::Value, span: &Span) {
    let tp = echo["headers"]["traceparent"].as_str().unwrap_or_default();
    assert_eq!(
        tp,
        format!("00-{}-{}-01", hex(&span.trace_id), hex(&span.span_id)),
        "{echo:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_through_ingress_a_b_is_one_trace_over_otlp_grpc() {
    let (addr, collected) = grpc_receiver().await;
    let endpoint = format!("http://{addr}");
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: default}\nspec:\n  hosts: [b]\n  http:\n  - match: [{uri: {prefix: /hel}}]\n    route: [{destination: {host: b}}]\n  - route: [{destination: {host: b}}]\n";
    let mesh = Mesh::up_with(
        &format!("{}---\n{vs}", two_services("trace-grpc")),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--trace-sampling",
            "1",
        ],
    );
    let path = "/fetch?url=http://b/hello";
    let echo = get_with(&mesh, "a", path, &[]).await;
    let trace = collected.trace_of("/fetch").await;
    let spans = collected.trace(&trace, 4).await;
    // A's call to B falls under a VirtualService rule with a prefix match: the span says so.
    let [ingress, a_in, _, b_in] = check_chain(
        &spans,
        path,
        "/hello",
        "b.default.svc.cluster.local:80/hel*",
    );
    assert!(
        ingress.parent_span_id.is_empty(),
        "a new trace starts at the ingress"
    );
    saw_span(&echo, &a_in);
    saw_span(&echo["downstream"]["body"], &b_in);
    // No more spans than the four of that one request. A marker request through the same four
    // proxies: each proxy exports its spans in order, so once the marker's four arrived, any
    // further span of the first request would have too.
    get_with(&mesh, "a", "/fetch?url=http://b/marker", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let marker = loop {
        let other = collected
            .spans
            .lock()
            .unwrap()
            .iter()
            .find_map(|r| (r.span.trace_id != trace).then(|| r.span.trace_id.clone()));
        if let Some(t) = other {
            break t;
        }
        assert!(Instant::now() < deadline, "the marker's spans never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    collected.trace(&marker, 4).await;
    let all = collected.spans.lock().unwrap().clone();
    let of_first = all.iter().filter(|r| r.span.trace_id == trace).count();
    assert_eq!(of_first, 4, "{all:#?}");
    assert_eq!(all.len(), 8, "{all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_otlp_http_protobuf_and_a_b3_request_is_continued() {
    let (addr, collected) = http_receiver().await;
    let endpoint = format!("http://{addr}");
    let mesh = Mesh::up_with(
        &two_services("trace-http"),
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "http"],
    );
    let path = "/fetch?url=http://b/plain";
    get_with(&mesh, "a", path, &[]).await;
    let trace = collected.trace_of("/fetch").await;
    check_chain(&collected.trace(&trace, 4).await, path, "/plain", B_DEFAULT);
    let requests = collected.http_requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for (p, ctype) in requests {
        assert_eq!(
            (p.as_str(), ctype.as_str()),
            ("/v1/traces", "application/x-protobuf")
        );
    }

    // A request that arrives in a Zipkin (B3) trace stays in it.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3_span = "e457b5a2e4d86bd1";
    let path = "/fetch?url=http://b/b3";
    let echo = get_with(
        &mesh,
        "a",
        path,
        &[
            ("x-b3-traceid", b3_trace),
            ("x-b3-spanid", b3_span),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&b3_trace[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let spans = collected.trace(&trace, 4).await;
    let [ingress, a_in, a_out, b_in] = check_chain(&spans, path, "/b3", B_DEFAULT);
    assert_eq!(hex(&ingress.parent_span_id), b3_span);
    // The apps saw the B3 headers rewritten for the span before them.
    let b3 = |echo: &serde_json::Value, k: &str| {
        echo["headers"][k].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(b3(&echo, "x-b3-traceid"), b3_trace);
    assert_eq!(b3(&echo, "x-b3-spanid"), hex(&a_in.span_id));
    let at_b = &echo["downstream"]["body"];
    assert_eq!(b3(at_b, "x-b3-traceid"), b3_trace);
    assert_eq!(b3(at_b, "x-b3-spanid"), hex(&b_in.span_id));
    assert_eq!(b3(at_b, "x-b3-parentspanid"), hex(&a_out.span_id));
    assert_eq!(b3(at_b, "x-b3-sampled"), "1");
}

/// `--trace-sampling 0`: a new trace is not sampled (no span leaves, and the apps see the
/// decision in `traceparent`'s flags), an incoming W3C `traceparent` that was not sampled stays
/// so, and one that was sampled upstream is continued and exported whatever the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_rate_for_new_traces_and_the_caller_for_continued_ones() {
    let (addr, collected) = grpc_receiver().await;
    let endpoint = format!("http://{addr}");
    let mesh = Mesh::up_with(
        &two_services("trace-rate"),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--trace-sampling",
            "0",
        ],
    );
    let path = "/fetch?url=http://b/w3c";
    // A new trace: not sampled.
    let echo = get_with(&mesh, "a", path, &[]).await;
    let tp = echo["headers"]["traceparent"].as_str().unwrap_or_default();
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{echo:#}");
    // A caller's unsampled trace: continued (same trace id), still not sampled.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let echo = get_with(&mesh, "a", path, &[("traceparent", unsampled)]).await;
    let tp = echo["headers"]["traceparent"].as_str().unwrap_or_default();
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && tp.ends_with("-00"),
        "{echo:#}"
    );
    // A caller's sampled trace: continued and exported, the ingress span its child.
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let sampled = format!("00-{trace_hex}-{parent}-01");
    let echo = get_with(&mesh, "a", path, &[("traceparent", &sampled)]).await;
    let trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let spans = collected.trace(&trace, 4).await;
    let [ingress, a_in, _, _] = check_chain(&spans, path, "/w3c", B_DEFAULT);
    assert_eq!(hex(&ingress.parent_span_id), parent);
    saw_span(&echo, &a_in);
    // Nothing else was exported: each proxy exports in order, and the sampled request came
    // last through the same four proxies.
    let all = collected.spans.lock().unwrap().clone();
    assert_eq!(all.len(), 4, "only the sampled request's spans: {all:#?}");
}
