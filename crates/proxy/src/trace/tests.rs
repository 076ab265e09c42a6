//! Unit tests: trace-context extraction and injection, span parentage and attributes.

use super::*;
use opentelemetry::Value;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::Mutex;

/// Keeps every exported span.
#[derive(Clone, Debug, Default)]
struct Memory(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Memory {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        async { Ok(()) }
    }
}

impl Memory {
    fn spans(&self) -> Vec<SpanData> {
        self.0.lock().unwrap().clone()
    }
}

fn tracer(rate: f64) -> (Tracer, Memory) {
    let m = Memory::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(m.clone())
        .with_sampler(sampler(rate))
        .build();
    (Tracer::with_provider(provider, rate), m)
}

const PEER: &str = "10.0.0.7:41000";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn request(headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::get("/items/7?color=red")
        .header("host", "shop:8080")
        .header("user-agent", "curl/8")
        .header("x-request-id", "rid-1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn header<'a>(r: &'a Request<()>, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// `(trace id, span id, flags)` of a `traceparent`.
fn traceparent(r: &Request<()>) -> (String, String, String) {
    let v = header(r, "traceparent").expect("traceparent");
    let p: Vec<&str> = v.split('-').collect();
    assert_eq!((p.len(), p[0]), (4, "00"), "{v}");
    (p[1].into(), p[2].into(), p[3].into())
}

fn attr(s: &SpanData, key: &str) -> Option<Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[test]
fn a_w3c_context_is_continued_and_replaced_by_the_new_spans() {
    let (t, spans) = tracer(1.0);
    let mut req = request(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    let mut active = t
        .begin(&mut req, Side::Inbound, PEER.parse().unwrap())
        .expect("sampled");
    let (trace, span, flags) = traceparent(&req);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(span, SPAN, "the forwarded context names the new span");
    assert_eq!(header(&req, "tracestate"), Some("congo=t61rcWkgMzE"));
    assert!(
        header(&req, "x-b3-traceid").is_none(),
        "no B3 unless it came"
    );
    active.respond(&Outcome {
        status: 200,
        flags: None,
        upstream_instance: Some("shop-v1-0"),
        upstream_address: Some("127.0.0.1:9000".parse().unwrap()),
        peer_identity: Some("cluster.local/ns/default/sa/web"),
    });
    drop(active);

    let s = spans.spans();
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!(s.span_context.trace_id().to_string(), TRACE);
    assert_eq!(s.span_context.span_id().to_string(), span);
    assert_eq!(s.parent_span_id.to_string(), SPAN);
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(s.name, "GET");
    let expect: [(&str, Value); 13] = [
        (HTTP_REQUEST_METHOD, "GET".into()),
        (URL_PATH, "/items/7".into()),
        (URL_QUERY, "color=red".into()),
        (URL_SCHEME, "http".into()),
        (SERVER_ADDRESS, "shop".into()),
        (SERVER_PORT, 8080i64.into()),
        (NETWORK_PROTOCOL_VERSION, "1.1".into()),
        (USER_AGENT_ORIGINAL, "curl/8".into()),
        (CLIENT_ADDRESS, "10.0.0.7".into()),
        (HTTP_RESPONSE_STATUS_CODE, 200i64.into()),
        (WEFT_UPSTREAM_INSTANCE, "shop-v1-0".into()),
        (
            WEFT_PEER_IDENTITY,
            "spiffe://cluster.local/ns/default/sa/web".into(),
        ),
        (WEFT_REQUEST_ID, "rid-1".into()),
    ];
    for (k, v) in expect {
        assert_eq!(attr(s, k), Some(v), "attribute {k}");
    }
    assert_eq!(attr(s, WEFT_DIRECTION), Some("inbound".into()));
    assert_eq!(attr(s, ERROR_TYPE), None);
    assert_eq!(s.status, Status::Unset);
}

#[test]
fn b3_multi_headers_are_continued_and_rewritten_with_traceparent() {
    let (t, spans) = tracer(1.0);
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3_span = "e457b5a2e4d86bd1";
    let mut req = request(&[
        ("x-b3-traceid", b3_trace),
        ("x-b3-spanid", b3_span),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-sampled", "1"),
    ]);
    let active = t.begin(&mut req, Side::Outbound, PEER.parse().unwrap());
    let (trace, span, flags) = traceparent(&req);
    assert_eq!((trace.as_str(), flags.as_str()), (b3_trace, "01"));
    assert_eq!(header(&req, "x-b3-traceid"), Some(b3_trace));
    assert_eq!(header(&req, "x-b3-spanid"), Some(span.as_str()));
    assert_eq!(header(&req, "x-b3-parentspanid"), Some(b3_span));
    assert_eq!(header(&req, "x-b3-sampled"), Some("1"));
    assert!(header(&req, "b3").is_none());
    drop(active);
    let s = &spans.spans()[0];
    assert_eq!(s.parent_span_id.to_string(), b3_span);
    assert_eq!(s.span_kind, SpanKind::Client);
    assert_eq!(
        attr(s, URL_FULL),
        Some("http://shop:8080/items/7?color=red".into())
    );
}

#[test]
fn a_64_bit_b3_trace_id_is_the_low_half() {
    let (t, _) = tracer(1.0);
    let mut req = request(&[
        ("x-b3-traceid", "64fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ]);
    t.begin(&mut req, Side::Inbound, PEER.parse().unwrap());
    assert_eq!(traceparent(&req).0, "000000000000000064fe8b2a57d3eff7");
}

#[test]
fn a_b3_single_header_is_continued_and_rewritten() {
    let (t, spans) = tracer(1.0);
    let mut req = request(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    )]);
    drop(t.begin(&mut req, Side::Ingress, PEER.parse().unwrap()));
    let (trace, span, _) = traceparent(&req);
    assert_eq!(trace, "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(
        header(&req, "b3"),
        Some(format!("{trace}-{span}-1-e457b5a2e4d86bd1").as_str())
    );
    let s = &spans.spans()[0];
    assert_eq!(s.parent_span_id.to_string(), "e457b5a2e4d86bd1");
    assert_eq!(s.span_kind, SpanKind::Server, "the ingress serves");
    assert_eq!(attr(s, WEFT_DIRECTION), Some("outbound".into()));
}

#[test]
fn traceparent_wins_over_b3_and_b3_follows_it() {
    let (t, _) = tracer(1.0);
    let mut req = request(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ]);
    t.begin(&mut req, Side::Inbound, PEER.parse().unwrap());
    let (trace, span, _) = traceparent(&req);
    assert_eq!(trace, TRACE);
    assert_eq!(header(&req, "x-b3-traceid"), Some(TRACE));
    assert_eq!(header(&req, "x-b3-spanid"), Some(span.as_str()));
    assert_eq!(header(&req, "x-b3-parentspanid"), Some(SPAN));
}

#[test]
fn without_a_context_a_root_is_sampled_at_the_rate() {
    let (all, spans) = tracer(1.0);
    let mut req = request(&[]);
    drop(all.begin(&mut req, Side::Ingress, PEER.parse().unwrap()));
    assert_eq!(traceparent(&req).2, "01");
    let s = &spans.spans()[0];
    assert_eq!(s.parent_span_id, SpanId::INVALID, "a root");

    let (none, spans) = tracer(0.0);
    let mut req = request(&[]);
    assert!(none
        .begin(&mut req, Side::Ingress, PEER.parse().unwrap())
        .is_none());
    assert_eq!(
        traceparent(&req).2,
        "00",
        "the decision goes on with the context"
    );
    assert!(spans.spans().is_empty());
}

#[test]
fn an_upstream_decision_stands_and_a_deferred_b3_one_is_made_here() {
    let (t, spans) = tracer(1.0);
    let mut req = request(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]);
    assert!(t
        .begin(&mut req, Side::Inbound, PEER.parse().unwrap())
        .is_none());
    assert_eq!(traceparent(&req).2, "00");
    assert!(spans.spans().is_empty());

    let mut req = request(&[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ]);
    assert!(t
        .begin(&mut req, Side::Inbound, PEER.parse().unwrap())
        .is_some());
    assert_eq!(header(&req, "x-b3-sampled"), Some("1"));

    let (never, _) = tracer(0.0);
    let mut req = request(&[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-flags", "1"),
    ]);
    assert!(
        never
            .begin(&mut req, Side::Inbound, PEER.parse().unwrap())
            .is_some(),
        "debug is always sampled"
    );
}

#[test]
fn malformed_contexts_start_a_new_trace() {
    let (t, spans) = tracer(1.0);
    for bad in [
        ("traceparent", "00-xyz-00f067aa0ba902b7-01"),
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        ("b3", "1"),
        ("x-b3-traceid", "not-hex"),
    ] {
        let mut req = request(&[bad]);
        drop(t.begin(&mut req, Side::Inbound, PEER.parse().unwrap()));
        assert_ne!(traceparent(&req).0, "00000000000000000000000000000000");
    }
    for s in spans.spans() {
        assert_eq!(s.parent_span_id, SpanId::INVALID, "{:?}", s.attributes);
    }
}

#[test]
fn a_5xx_or_a_flag_is_an_error() {
    let (t, spans) = tracer(1.0);
    for (status, flags) in [(503, None), (404, Some("NR")), (200, None)] {
        let mut req = request(&[]);
        let mut a = t
            .begin(&mut req, Side::Outbound, PEER.parse().unwrap())
            .unwrap();
        a.respond(&Outcome {
            status,
            flags,
            upstream_instance: None,
            upstream_address: None,
            peer_identity: None,
        });
    }
    let s = spans.spans();
    assert_eq!(s[0].status, Status::error("503"));
    assert_eq!(attr(&s[0], ERROR_TYPE), Some("503".into()));
    assert_eq!(s[1].status, Status::error("NR"));
    assert_eq!(attr(&s[1], WEFT_RESPONSE_FLAGS), Some("NR".into()));
    assert_eq!(s[2].status, Status::Unset);
}

#[test]
fn an_http_endpoint_without_a_path_gets_the_traces_path() {
    assert_eq!(
        http_traces_url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        http_traces_url("http://127.0.0.1:4318/"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        http_traces_url("http://c:4318/custom/traces"),
        "http://c:4318/custom/traces"
    );
}
