//! Tests of the Istio metrics: exported names, types and labels (pinned), recorded values,
//! the `x-weft-peer` codec against hostile input, concurrency and the cardinality guard.

use super::*;
use crate::metrics::Metrics;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use model::{Identity, Labels, ServiceKey};

/// Istio's label names, in the order weft writes them.
const HTTP_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// The same without `response_code` and `grpc_response_status`, as Istio's TCP metrics.
fn tcp_labels() -> Vec<&'static str> {
    HTTP_LABELS
        .into_iter()
        .filter(|l| *l != "response_code" && *l != "grpc_response_status")
        .collect()
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no label {name} in {self:?}"))
    }

    fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

/// Parses OpenMetrics sample lines. Label values never contain `"` or `\` (the recorder
/// refuses them), so a value ends at the next `"`.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, mut rest)) => {
                let mut labels = Vec::new();
                while let Some((k, after)) = rest.split_once("=\"") {
                    let (v, after) = after.split_once('"').expect("closing quote");
                    labels.push((k.trim_start_matches(',').to_owned(), v.to_owned()));
                    rest = after;
                }
                assert_eq!(rest, "}", "label set of {line}");
                (name, labels)
            }
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

fn encode(t: &Telemetry) -> String {
    let mut registry = Registry::default();
    t.register(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && s.has(want))
        .collect()
}

/// The one sample of `name` with labels `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, want);
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].value
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn productpage() -> Peer {
    Peer::new(PeerMetadata::from_labels(
        "productpage-v1",
        "bookinfo",
        &labels(&[("app", "productpage"), ("version", "v1")]),
        Some(&Identity::spiffe("bookinfo", "productpage")),
    ))
}

fn reviews() -> Peer {
    Peer::new(PeerMetadata::from_labels(
        "reviews-v2",
        "bookinfo",
        &labels(&[("app", "reviews"), ("version", "v2")]),
        Some(&Identity::spiffe("bookinfo", "reviews")),
    ))
}

fn reviews_service() -> DestinationService {
    DestinationService::new(&ServiceKey::new("reviews", "bookinfo"))
}

/// Renaming a metric, changing its type or a label name breaks this test.
#[test]
fn names_types_and_labels_are_pinned() {
    let t = Telemetry::new();
    let (src, dst, svc) = (productpage(), reviews(), reviews_service());
    let mut r = RequestRecord::new(Reporter::Source, &src, &dst, &svc);
    r.protocol = Protocol::Grpc;
    r.response_code = 200;
    r.grpc_status = Some(0);
    t.request(&r);
    let c = ConnectionRecord {
        reporter: Reporter::Destination,
        source: &src,
        destination: &dst,
        service: &svc,
        flags: ResponseFlags::NONE,
        mtls: true,
    };
    drop(t.tcp_connection(&c));
    t.tcp_bytes(&c, 1, 1);
    let text = encode(&t);

    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
    assert_eq!(
        types,
        [
            "# TYPE istio_requests counter",
            "# TYPE istio_request_duration_milliseconds histogram",
            "# TYPE istio_request_bytes histogram",
            "# TYPE istio_response_bytes histogram",
            "# TYPE istio_request_messages counter",
            "# TYPE istio_response_messages counter",
            "# TYPE istio_tcp_sent_bytes counter",
            "# TYPE istio_tcp_received_bytes counter",
            "# TYPE istio_tcp_connections_opened counter",
            "# TYPE istio_tcp_connections_closed counter",
            "# TYPE weft_telemetry_dropped_series counter",
            "# TYPE weft_telemetry_series gauge",
        ]
    );
    let helps: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| l.split_once(' ').expect("help text").0)
        .collect();
    let typed: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
    assert_eq!(helps, typed, "one # HELP per # TYPE, same names");
    assert!(text.ends_with("# EOF\n"));

    let samples = parse(&text);
    let names_of = |name: &str| -> Vec<String> {
        let s = samples
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no sample {name}"));
        s.labels
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| k != "le")
            .collect()
    };
    for name in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_request_duration_milliseconds_sum",
        "istio_request_duration_milliseconds_count",
        "istio_request_bytes_bucket",
        "istio_request_bytes_sum",
        "istio_request_bytes_count",
        "istio_response_bytes_bucket",
        "istio_response_bytes_sum",
        "istio_response_bytes_count",
        "istio_request_messages_total",
        "istio_response_messages_total",
    ] {
        assert_eq!(names_of(name), HTTP_LABELS, "{name}");
    }
    for name in [
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
    ] {
        assert_eq!(names_of(name), tcp_labels(), "{name}");
    }
    assert!(names_of("weft_telemetry_dropped_series_total").is_empty());
    assert!(names_of("weft_telemetry_series").is_empty());

    // Istio's bucket bounds.
    let les = |name: &str| -> Vec<String> {
        find(&samples, name, &[])
            .iter()
            .map(|s| s.label("le").to_owned())
            .collect()
    };
    let bounds = |s: Vec<String>| -> Vec<f64> {
        s.iter()
            .map(|v| match v.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            })
            .collect()
    };
    let duration = [
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ];
    let bytes = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7];
    let with_inf = |b: &[f64]| [b, &[f64::INFINITY]].concat();
    assert_eq!(
        bounds(les("istio_request_duration_milliseconds_bucket")),
        with_inf(&duration)
    );
    assert_eq!(bounds(les("istio_request_bytes_bucket")), with_inf(&bytes));
    assert_eq!(bounds(les("istio_response_bytes_bucket")), with_inf(&bytes));
}

#[test]
fn registered_next_to_the_proxy_metrics() {
    let t = Telemetry::new();
    let m = Metrics::with_telemetry(&t);
    let (src, dst, svc) = (productpage(), reviews(), reviews_service());
    t.request(&RequestRecord::new(Reporter::Source, &src, &dst, &svc));
    let text = m.encode();
    assert!(text.contains("# TYPE weft_requests counter"), "{text}");
    assert!(
        text.contains("istio_requests_total{reporter=\"source\""),
        "{text}"
    );
    assert_eq!(text.matches("# EOF").count(), 1);
}

#[test]
fn records_known_requests_from_both_reporters() {
    let t = Telemetry::new();
    let (src, dst, svc) = (productpage(), reviews(), reviews_service());
    let request = |reporter, ms: f64, code, req: u64, resp: u64, mtls| {
        let mut r = RequestRecord::new(reporter, &src, &dst, &svc);
        r.response_code = code;
        r.duration = Duration::from_secs_f64(ms / 1000.0);
        r.request_bytes = req;
        r.response_bytes = resp;
        r.mtls = mtls;
        t.request(&r);
    };
    // Source side: 0.3 ms, 7 ms, 2 s, and one 503.
    request(Reporter::Source, 0.3, 200, 0, 5, true);
    request(Reporter::Source, 7.0, 200, 10, 150, true);
    request(Reporter::Source, 2000.0, 200, 1000, 20_000_000, true);
    request(Reporter::Source, 1.0, 503, 0, 19, true);
    // Destination side: the same three 200s arrive over mTLS.
    request(Reporter::Destination, 0.25, 200, 0, 5, true);
    request(Reporter::Destination, 6.5, 200, 10, 150, true);
    request(Reporter::Destination, 1999.0, 200, 1000, 20_000_000, true);

    let s = parse(&encode(&t));
    let src_ok = [("reporter", "source"), ("response_code", "200")];
    let dst_ok = [("reporter", "destination"), ("response_code", "200")];
    assert_eq!(value(&s, "istio_requests_total", &src_ok), 3.0);
    assert_eq!(
        value(
            &s,
            "istio_requests_total",
            &[("reporter", "source"), ("response_code", "503")]
        ),
        1.0
    );
    assert_eq!(value(&s, "istio_requests_total", &dst_ok), 3.0);
    assert_eq!(find(&s, "istio_requests_total", &[]).len(), 3);

    // Duration buckets are cumulative, `le` inclusive.
    let bucket = |want: &[(&str, &str)], le: &str| {
        let mut w = want.to_vec();
        w.push(("le", le));
        value(&s, "istio_request_duration_milliseconds_bucket", &w)
    };
    assert_eq!(bucket(&src_ok, "0.5"), 1.0);
    assert_eq!(bucket(&src_ok, "5.0"), 1.0);
    assert_eq!(bucket(&src_ok, "10.0"), 2.0);
    assert_eq!(bucket(&src_ok, "1000.0"), 2.0);
    assert_eq!(bucket(&src_ok, "2500.0"), 3.0);
    assert_eq!(bucket(&src_ok, "+Inf"), 3.0);
    let src_503 = [("reporter", "source"), ("response_code", "503")];
    assert_eq!(bucket(&src_503, "0.5"), 0.0);
    assert_eq!(bucket(&src_503, "1.0"), 1.0, "1 ms falls in le=1");
    let sum = value(&s, "istio_request_duration_milliseconds_sum", &src_ok);
    assert!((sum - 2007.3).abs() < 1e-6, "{sum}");
    assert_eq!(
        value(&s, "istio_request_duration_milliseconds_count", &src_ok),
        3.0
    );
    let sum = value(&s, "istio_request_duration_milliseconds_sum", &dst_ok);
    assert!((sum - 2005.75).abs() < 1e-6, "{sum}");

    // Sizes.
    let size = |name: &str, le: &str| {
        value(
            &s,
            name,
            &[("reporter", "source"), ("response_code", "200"), ("le", le)],
        )
    };
    assert_eq!(size("istio_request_bytes_bucket", "1.0"), 1.0, "0 bytes");
    assert_eq!(size("istio_request_bytes_bucket", "10.0"), 2.0);
    assert_eq!(size("istio_request_bytes_bucket", "1000.0"), 3.0);
    assert_eq!(size("istio_response_bytes_bucket", "10.0"), 1.0);
    assert_eq!(size("istio_response_bytes_bucket", "1000.0"), 2.0);
    assert_eq!(size("istio_response_bytes_bucket", "10000000.0"), 2.0);
    assert_eq!(size("istio_response_bytes_bucket", "+Inf"), 3.0);
    assert_eq!(value(&s, "istio_request_bytes_sum", &src_ok), 1010.0);
    assert_eq!(value(&s, "istio_response_bytes_sum", &src_ok), 20_000_155.0);
    assert_eq!(value(&s, "istio_response_bytes_count", &src_ok), 3.0);

    // Labels as Istio fills them.
    let src_sample = find(&s, "istio_requests_total", &src_ok)[0];
    let dst_sample = find(&s, "istio_requests_total", &dst_ok)[0];
    for (sample, policy) in [(src_sample, "unknown"), (dst_sample, "mutual_tls")] {
        assert_eq!(sample.label("connection_security_policy"), policy);
        assert_eq!(sample.label("source_workload"), "productpage-v1");
        assert_eq!(sample.label("source_workload_namespace"), "bookinfo");
        assert_eq!(
            sample.label("source_principal"),
            "spiffe://cluster.local/ns/bookinfo/sa/productpage"
        );
        assert_eq!(sample.label("source_app"), "productpage");
        assert_eq!(sample.label("source_version"), "v1");
        assert_eq!(sample.label("source_canonical_service"), "productpage");
        assert_eq!(sample.label("source_canonical_revision"), "v1");
        assert_eq!(sample.label("source_cluster"), "Kubernetes");
        assert_eq!(sample.label("destination_workload"), "reviews-v2");
        assert_eq!(
            sample.label("destination_principal"),
            "spiffe://cluster.local/ns/bookinfo/sa/reviews"
        );
        assert_eq!(
            sample.label("destination_service"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(sample.label("destination_service_name"), "reviews");
        assert_eq!(sample.label("destination_service_namespace"), "bookinfo");
        assert_eq!(sample.label("request_protocol"), "http");
        assert_eq!(sample.label("grpc_response_status"), "");
        assert_eq!(sample.label("response_flags"), "-");
    }
    // Plain HTTP has no gRPC message counts.
    assert!(find(&s, "istio_request_messages_total", &[]).is_empty());
}

#[test]
fn plaintext_destination_reports_none_and_unknown_principal() {
    let t = Telemetry::new();
    let client = Peer::from_header(Some(productpage().encode().as_bytes()), None);
    let (dst, svc) = (reviews(), reviews_service());
    let mut r = RequestRecord::new(Reporter::Destination, &client, &dst, &svc);
    r.response_code = 200;
    t.request(&r);
    let s = parse(&encode(&t));
    let sample = find(&s, "istio_requests_total", &[])[0];
    assert_eq!(sample.label("connection_security_policy"), "none");
    assert_eq!(
        sample.label("source_principal"),
        "unknown",
        "never from the header"
    );
    assert_eq!(sample.label("source_workload"), "productpage-v1");
}

#[test]
fn grpc_status_messages_and_flags() {
    let t = Telemetry::new();
    let (src, dst, svc) = (productpage(), reviews(), reviews_service());
    let grpc = |status: Option<u32>, sent, received| {
        let mut r = RequestRecord::new(Reporter::Source, &src, &dst, &svc);
        r.protocol = Protocol::Grpc;
        r.response_code = 200;
        r.grpc_status = status;
        r.request_messages = sent;
        r.response_messages = received;
        t.request(&r);
    };
    grpc(Some(0), 1, 3);
    grpc(Some(0), 2, 4);
    grpc(Some(14), 1, 0);
    grpc(Some(4_000_000_000), 1, 0); // not a gRPC status: read as UNKNOWN (2)
    grpc(None, 0, 0);
    let mut r = RequestRecord::new(Reporter::Source, &src, &dst, &svc);
    r.response_code = 503;
    r.flags = ResponseFlags::from(Flag::RetryLimitExceeded).with(Flag::UpstreamConnectFailure);
    t.request(&r);

    let s = parse(&encode(&t));
    let grpc_ok = [("request_protocol", "grpc"), ("grpc_response_status", "0")];
    assert_eq!(value(&s, "istio_requests_total", &grpc_ok), 2.0);
    assert_eq!(value(&s, "istio_request_messages_total", &grpc_ok), 3.0);
    assert_eq!(value(&s, "istio_response_messages_total", &grpc_ok), 7.0);
    let status = |st: &str| value(&s, "istio_requests_total", &[("grpc_response_status", st)]);
    assert_eq!(status("14"), 1.0);
    assert_eq!(status("2"), 1.0);
    assert_eq!(
        value(
            &s,
            "istio_requests_total",
            &[("request_protocol", "grpc"), ("grpc_response_status", "")]
        ),
        1.0
    );
    assert_eq!(
        find(&s, "istio_request_messages_total", &[]).len(),
        4,
        "gRPC series only"
    );
    assert_eq!(
        value(
            &s,
            "istio_requests_total",
            &[("response_flags", "UF,URX"), ("response_code", "503")]
        ),
        1.0,
        "flags in Flag::ALL order"
    );
}

#[test]
fn response_flags_render_as_envoy() {
    assert_eq!(ResponseFlags::NONE.to_string(), "-");
    assert_eq!(ResponseFlags::from(Flag::NoRoute).to_string(), "NR");
    let f = ResponseFlags::from(Flag::UpstreamTimeout).with(Flag::NoHealthyUpstream);
    assert_eq!(f.to_string(), "UH,UT");
    assert!(f.contains(Flag::UpstreamTimeout));
    assert!(!f.contains(Flag::Rbac));
    for flag in Flag::ALL {
        assert_eq!(ResponseFlags::from(flag).to_string(), flag.as_str());
    }
}

#[test]
fn tcp_connections_and_bytes() {
    let t = Telemetry::new();
    let (src, dst, svc) = (productpage(), reviews(), reviews_service());
    let c = ConnectionRecord {
        reporter: Reporter::Destination,
        source: &src,
        destination: &dst,
        service: &svc,
        flags: ResponseFlags::NONE,
        mtls: true,
    };
    let conn = t.tcp_connection(&c);
    conn.sent(100);
    conn.received(40);
    let s = parse(&encode(&t));
    assert_eq!(value(&s, "istio_tcp_connections_opened_total", &[]), 1.0);
    assert_eq!(value(&s, "istio_tcp_connections_closed_total", &[]), 0.0);
    drop(conn);
    t.connection_opened(&c);
    t.tcp_bytes(&c, 1, 2);
    t.connection_closed(&c);
    let source = ConnectionRecord {
        reporter: Reporter::Source,
        ..c
    };
    t.connection_opened(&source);

    let s = parse(&encode(&t));
    let dst_side = [("reporter", "destination")];
    assert_eq!(
        value(&s, "istio_tcp_connections_opened_total", &dst_side),
        2.0
    );
    assert_eq!(
        value(&s, "istio_tcp_connections_closed_total", &dst_side),
        2.0
    );
    assert_eq!(value(&s, "istio_tcp_sent_bytes_total", &dst_side), 101.0);
    assert_eq!(value(&s, "istio_tcp_received_bytes_total", &dst_side), 42.0);
    let sample = find(&s, "istio_tcp_sent_bytes_total", &dst_side)[0];
    assert_eq!(sample.label("request_protocol"), "tcp");
    assert_eq!(sample.label("connection_security_policy"), "mutual_tls");
    let src_side = [
        ("reporter", "source"),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(
        value(&s, "istio_tcp_connections_opened_total", &src_side),
        1.0
    );
    assert!(find(&s, "istio_requests_total", &[]).is_empty());
}

#[test]
fn metadata_from_labels_follows_istio_fallbacks() {
    let id = Identity::spiffe("shop", "cart");
    let m = PeerMetadata::from_labels("cart-v3", "shop", &labels(&[]), Some(&id));
    assert_eq!(m.workload, "cart-v3");
    assert_eq!(m.namespace, "shop");
    assert_eq!(m.app, "unknown");
    assert_eq!(m.version, "unknown");
    assert_eq!(m.canonical_service, "cart-v3", "workload when no app");
    assert_eq!(m.canonical_revision, "latest");
    assert_eq!(m.principal, "cluster.local/ns/shop/sa/cart");
    assert_eq!(m.cluster, "Kubernetes");

    let k8s = labels(&[
        ("app.kubernetes.io/name", "cart"),
        ("app.kubernetes.io/version", "3.1"),
    ]);
    let m = PeerMetadata::from_labels("cart-v3", "shop", &k8s, None);
    assert_eq!((m.app.as_str(), m.version.as_str()), ("cart", "3.1"));
    assert_eq!(m.canonical_service, "cart");
    assert_eq!(m.canonical_revision, "3.1");
    assert_eq!(m.principal, "unknown");

    let istio = labels(&[
        ("app", "cart"),
        ("app.kubernetes.io/name", "ignored"),
        ("version", "v3"),
        ("service.istio.io/canonical-name", "shopping-cart"),
        ("service.istio.io/canonical-revision", "r42"),
    ]);
    let m = PeerMetadata::from_labels("cart-v3", "shop", &istio, None).with_cluster("east");
    assert_eq!(m.app, "cart");
    assert_eq!(m.version, "v3");
    assert_eq!(m.canonical_service, "shopping-cart");
    assert_eq!(m.canonical_revision, "r42");
    assert_eq!(m.cluster, "east");
}

#[test]
fn header_round_trips() {
    let m = productpage().metadata().clone();
    let value = m.header_value();
    assert!(value.len() < 400, "{} bytes", value.len());
    assert_eq!(PeerMetadata::decode(value.as_bytes()), Some(m.clone()));
    // The principal a peer claims is kept by `decode`, but a `Peer` takes the verified one.
    let peer = Peer::from_header(
        Some(value.as_bytes()),
        Some("spiffe://cluster.local/ns/bookinfo/sa/other"),
    );
    assert_eq!(peer.principal, "cluster.local/ns/bookinfo/sa/other");
    assert_eq!(peer.workload, m.workload);
    let peer = Peer::from_header(None, Some("cluster.local/ns/a/sa/b"));
    assert_eq!(peer.principal, "cluster.local/ns/a/sa/b");
    assert_eq!(peer.workload, "unknown");
    assert_eq!(Peer::from_header(None, None), Peer::unknown());
}

#[test]
fn hostile_headers_read_unknown() {
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let too_long = "A".repeat(MAX_HEADER_LEN + 1);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for bad in [
        String::new(),
        too_long,
        "%%%not base64%%%".to_owned(),
        b64("not json"),
        b64("[1,2,3]"),
        b64("\"a string\""),
        b64("{\"workload\": 5}"),
        b64(&format!("{{\"x\": {deep}}}")),
        b64("{\"workload\": \"a\""),
        "eyJ3b3JrbG9hZCI6ImEifQ==".to_owned(), // padded: this format has none
    ] {
        assert_eq!(PeerMetadata::decode(bad.as_bytes()), None, "{bad:.60}");
        let peer = Peer::from_header(Some(bad.as_bytes()), None);
        assert_eq!(*peer, PeerMetadata::unknown());
    }
    // Well-formed, but values that would corrupt the exposition or are absurd read unknown,
    // one field at a time; missing fields read unknown; unknown fields are ignored.
    let long = "x".repeat(MAX_VALUE_LEN + 1);
    let json = format!(
        r#"{{"workload":"a\"}} 1\nevil{{","namespace":"ns","app":"caf\u00e9","version":"{long}","cluster":"","principal":"spiffe://td/ns/x/sa/y","extra":{{"nested":[1]}}}}"#
    );
    let m = PeerMetadata::decode(b64(&json).as_bytes()).expect("well-formed");
    assert_eq!(m.workload, "unknown");
    assert_eq!(m.namespace, "ns");
    assert_eq!(m.app, "unknown");
    assert_eq!(m.version, "unknown");
    assert_eq!(m.cluster, "unknown");
    assert_eq!(m.canonical_service, "unknown");
    assert_eq!(m.principal, "td/ns/x/sa/y");

    // Random bytes never panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..2000 {
        let bytes: Vec<u8> = (0..len % 300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = PeerMetadata::decode(&bytes);
        let _ = PeerMetadata::decode(URL_SAFE_NO_PAD.encode(&bytes).as_bytes());
    }
}

#[test]
fn hostile_values_never_reach_the_exposition() {
    let t = Telemetry::new();
    let evil = PeerMetadata {
        workload: "w\"} 1\n# EOF\n".into(),
        namespace: "back\\slash".into(),
        app: "ok".into(),
        ..PeerMetadata::unknown()
    };
    let src = Peer::new(evil);
    let svc = DestinationService::from_parts("a b", "x\ny", "z");
    let dst = reviews();
    t.request(&RequestRecord::new(Reporter::Destination, &src, &dst, &svc));
    let text = encode(&t);
    assert_eq!(text.matches("# EOF").count(), 1);
    let s = parse(&text);
    let sample = find(&s, "istio_requests_total", &[])[0];
    assert_eq!(sample.label("source_workload"), "unknown");
    assert_eq!(sample.label("source_workload_namespace"), "unknown");
    assert_eq!(sample.label("source_app"), "ok");
    assert_eq!(sample.label("destination_service"), "unknown");
    assert_eq!(sample.label("destination_service_name"), "unknown");
    assert_eq!(sample.label("destination_service_namespace"), "z");
}

#[test]
fn peer_cache_shares_decoded_peers() {
    let t = Telemetry::new();
    let header = productpage().header_value();
    let a = t.peer_from_header(
        Some(header.as_bytes()),
        Some("cluster.local/ns/bookinfo/sa/productpage"),
    );
    let b = t.peer_from_header(
        Some(header.as_bytes()),
        Some("cluster.local/ns/bookinfo/sa/productpage"),
    );
    assert!(
        a.ptr_eq(&b),
        "one shared Peer per header value and principal"
    );
    assert_eq!(*a, *productpage());
    let plaintext = t.peer_from_header(Some(header.as_bytes()), None);
    assert_eq!(plaintext.principal, "unknown");
    assert!(!plaintext.ptr_eq(&a));
    assert!(t.peer_from_header(None, None).ptr_eq(&Peer::unknown()));
    // Equal content from different `Arc`s is the same series.
    let (dst, svc) = (reviews(), reviews_service());
    t.request(&RequestRecord::new(Reporter::Destination, &a, &dst, &svc));
    t.request(&RequestRecord::new(
        Reporter::Destination,
        &productpage(),
        &dst,
        &svc,
    ));
    assert_eq!(t.series(), 1);
    // The cache is bounded.
    for i in 0..PEER_CACHE_MAX + 10 {
        let m = PeerMetadata::from_labels(&format!("w{i}"), "ns", &Labels::new(), None);
        let p = t.peer_from_header(Some(m.encode().as_bytes()), None);
        assert_eq!(p.workload, format!("w{i}"));
    }
    assert_eq!(t.0.peers.len(), PEER_CACHE_MAX);
}

#[test]
fn concurrent_recording_and_scraping() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 20_000;
    let t = Telemetry::new();
    let (dst, svc) = (reviews(), reviews_service());
    let sources: Vec<Peer> = (0..3)
        .map(|i| {
            Peer::new(PeerMetadata::from_labels(
                &format!("client-{i}"),
                "ns",
                &Labels::new(),
                None,
            ))
        })
        .collect();
    std::thread::scope(|scope| {
        for th in 0..THREADS {
            let (t, sources, dst, svc) = (&t, &sources, &dst, &svc);
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    // A fresh `Peer` sometimes, so equal-but-distinct Arcs race to insert.
                    let fresh;
                    let src = if i % 1000 == th {
                        fresh = Peer::new(sources[i % 3].metadata().clone());
                        &fresh
                    } else {
                        &sources[i % 3]
                    };
                    let mut r = RequestRecord::new(Reporter::Source, src, dst, svc);
                    r.response_code = 200;
                    r.duration = Duration::from_micros(i as u64 % 20_000);
                    r.response_bytes = 7;
                    t.request(&r);
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..20 {
                let s = parse(&encode(&t));
                assert!(find(&s, "istio_requests_total", &[]).len() <= 3);
            }
        });
    });
    assert_eq!(t.series(), 3, "no label set inserted twice");
    let s = parse(&encode(&t));
    let total: f64 = find(&s, "istio_requests_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, (THREADS * PER_THREAD) as f64);
    let bytes: f64 = find(&s, "istio_response_bytes_sum", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(bytes, (THREADS * PER_THREAD * 7) as f64);
    assert_eq!(t.dropped(), 0);
}

#[test]
fn cardinality_guard_folds_new_label_sets_into_overflow() {
    let t = Telemetry::with_max_series(5);
    let (dst, svc) = (reviews(), reviews_service());
    for i in 0..20 {
        let src = Peer::new(PeerMetadata::from_labels(
            &format!("client-{i}"),
            "ns",
            &Labels::new(),
            None,
        ));
        let mut r = RequestRecord::new(Reporter::Destination, &src, &dst, &svc);
        r.response_code = 200;
        t.request(&r);
        t.request(&r);
    }
    assert_eq!(t.dropped(), 30, "15 label sets × 2 requests");
    assert_eq!(t.series(), 6, "5 kept + 1 overflow");
    let s = parse(&encode(&t));
    let total: f64 = find(&s, "istio_requests_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 40.0, "no request lost");
    let overflow = find(
        &s,
        "istio_requests_total",
        &[("source_workload", "overflow")],
    );
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].value, 30.0);
    assert_eq!(overflow[0].label("destination_service"), "overflow");
    assert_eq!(overflow[0].label("reporter"), "destination");
    assert_eq!(overflow[0].label("response_code"), "200");
    assert_eq!(value(&s, "weft_telemetry_dropped_series_total", &[]), 30.0);
    assert_eq!(value(&s, "weft_telemetry_series", &[]), 6.0);
    // Label sets already kept still get their own series.
    let first = Peer::new(PeerMetadata::from_labels(
        "client-0",
        "ns",
        &Labels::new(),
        None,
    ));
    t.request(&RequestRecord {
        response_code: 200,
        ..RequestRecord::new(Reporter::Destination, &first, &dst, &svc)
    });
    assert_eq!(t.dropped(), 30);
}

#[test]
fn overflow_series_are_bounded_too() {
    let t = Telemetry::with_max_series(0);
    let (src, dst, svc) = (productpage(), reviews(), reviews_service());
    let mut n = 0;
    for code in 0..1000u16 {
        for flags in [
            ResponseFlags::NONE,
            ResponseFlags::from(Flag::UpstreamTimeout),
        ] {
            let mut r = RequestRecord::new(Reporter::Source, &src, &dst, &svc);
            r.response_code = code;
            r.flags = flags;
            t.request(&r);
            n += 1;
        }
    }
    assert!(t.series() <= table::OVERFLOW_SERIES + 1, "{}", t.series());
    assert_eq!(t.dropped(), n);
    let s = parse(&encode(&t));
    let total: f64 = find(&s, "istio_requests_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, n as f64);
    let catch_all = find(
        &s,
        "istio_requests_total",
        &[("response_code", "0"), ("response_flags", "-")],
    );
    assert!(
        catch_all[0].value > 1.0,
        "code 0 and the catch-all share a series"
    );
}

#[test]
fn a_peer_spelling_overflow_never_duplicates_the_overflow_series() {
    let t = Telemetry::with_max_series(1);
    let (dst, svc) = (reviews(), reviews_service());
    let first = productpage();
    t.request(&RequestRecord::new(Reporter::Source, &first, &dst, &svc));
    // Fills the table: this one goes to the overflow series.
    t.request(&RequestRecord::new(Reporter::Source, &dst, &first, &svc));
    let fake = Peer::new(PeerMetadata {
        workload: "overflow".into(),
        namespace: "overflow".into(),
        app: "overflow".into(),
        version: "overflow".into(),
        canonical_service: "overflow".into(),
        canonical_revision: "overflow".into(),
        principal: "overflow".into(),
        cluster: "overflow".into(),
    });
    let fake_svc = DestinationService::from_parts("overflow", "overflow", "overflow");
    t.request(&RequestRecord::new(
        Reporter::Source,
        &fake,
        &fake,
        &fake_svc,
    ));
    let s = parse(&encode(&t));
    let overflow = find(
        &s,
        "istio_requests_total",
        &[("source_workload", "overflow")],
    );
    assert_eq!(overflow.len(), 1, "{overflow:?}");
    assert_eq!(overflow[0].value, 2.0);
    assert_eq!(t.dropped(), 1);
}

#[test]
fn rendered_labels_match_the_encoder() {
    let t = Telemetry::new();
    let (src, dst, svc) = (productpage(), reviews(), reviews_service());
    let mut r = RequestRecord::new(Reporter::Destination, &src, &dst, &svc);
    r.response_code = 404;
    r.mtls = true;
    t.request(&r);
    let text = encode(&t);
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .expect("a sample");
    assert_eq!(
        line,
        "istio_requests_total{reporter=\"destination\",source_workload=\"productpage-v1\",\
         source_canonical_service=\"productpage\",source_canonical_revision=\"v1\",\
         source_workload_namespace=\"bookinfo\",\
         source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/productpage\",\
         source_app=\"productpage\",source_version=\"v1\",source_cluster=\"Kubernetes\",\
         destination_workload=\"reviews-v2\",destination_workload_namespace=\"bookinfo\",\
         destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/reviews\",\
         destination_app=\"reviews\",destination_version=\"v2\",\
         destination_service=\"reviews.bookinfo.svc.cluster.local\",\
         destination_canonical_service=\"reviews\",destination_canonical_revision=\"v2\",\
         destination_service_name=\"reviews\",destination_service_namespace=\"bookinfo\",\
         destination_cluster=\"Kubernetes\",request_protocol=\"http\",response_code=\"404\",\
         grpc_response_status=\"\",response_flags=\"-\",\
         connection_security_policy=\"mutual_tls\"} 1"
    );
    assert_eq!(labels::NAMES, HTTP_LABELS);
}
