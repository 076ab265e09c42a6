//! The per-request work of a proxy, piece by piece, with criterion: `cargo bench -p proxy --bench
//! hot_path`. The mesh is the shop's (`benches/fixtures/shop-snapshot.json`, a snapshot as its
//! control plane sends it: seven services, STRICT mTLS, authorization policies, a JWT rule, a
//! weighted VirtualService with retries): route resolution for a call to payment, the payment
//! sidecar's authorization of the order service's call, recording Istio's metrics for it, and
//! the header work every hop does. `tests/allocations.rs` counts the same steps' allocations.

#[path = "fixtures/mod.rs"]
mod fixtures;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fixtures::{charge, labels, peer, snapshot};
use http::{HeaderMap, HeaderValue};
use model::{Authority, Identity, ServiceKey};
use proxy::authz::{Authorizer, AuthzStats, HttpAttributes, RequestContext, Workload};
use proxy::filters::HeaderOps;
use proxy::table::RouteTable;
use proxy::telemetry::{
    DestinationService, Protocol, Reporter, RequestRecord, ResponseFlags, Telemetry,
};
use std::time::Duration;

fn hot_path(c: &mut Criterion) {
    let table = RouteTable::compile(snapshot(), &RouteTable::default()).expect("compiles");
    let (parts, ()) = charge().into_parts();
    c.bench_function("route: resolve payment and pick its destination", |b| {
        b.iter(|| {
            let svc = table
                .resolve(&Authority::parse(black_box("payment")), "default")
                .expect("payment");
            let routed = svc.route(black_box(&parts)).expect("a rule");
            black_box(routed.backend.is_some())
        })
    });

    let spec = snapshot().security;
    let labels = labels("payment");
    let mut registry = prometheus_client::registry::Registry::default();
    let stats = AuthzStats::register(&mut registry);
    let authz = Authorizer::compile(
        &spec,
        Workload {
            namespace: "default",
            labels: &labels,
            service_port: 80,
            trust_domain: "cluster.local",
        },
        &stats,
    );
    let order = Identity::spiffe("default", "order");
    let req = charge();
    c.bench_function(
        "authz: payment's policies for the order service's call",
        |b| {
            b.iter(|| {
                let ctx = RequestContext {
                    peer_ip: std::net::Ipv4Addr::LOCALHOST.into(),
                    peer_identity: Some(black_box(&order)),
                    destination_ip: None,
                    destination_port: 80,
                    sni: None,
                    http: Some(HttpAttributes::of(black_box(&req), None)),
                };
                black_box(authz.authorize(&ctx).allowed)
            })
        },
    );

    let t = Telemetry::new();
    let (src, dst) = (peer("order"), peer("payment"));
    let svc = DestinationService::new(&ServiceKey::new("payment", "default"));
    let record = |t: &Telemetry| {
        let mut r = RequestRecord::new(Reporter::Destination, &src, &dst, &svc);
        r.protocol = Protocol::Http;
        r.response_code = 200;
        r.flags = ResponseFlags::NONE;
        r.mtls = true;
        r.duration = Duration::from_micros(850);
        r.request_bytes = 64;
        r.response_bytes = 180;
        t.request(black_box(&r));
    };
    record(&t); // the series exist from the first request on
    c.bench_function("metrics: record one request's Istio metrics", |b| {
        b.iter(|| record(&t))
    });

    let edits = model::HeaderEdits {
        set: vec![("x-canary".into(), "false".into())],
        add: vec![("x-route".into(), "payment-v1".into())],
        remove: vec!["x-debug".into()],
    };
    let ops = HeaderOps::compile(&edits, "payment").expect("compiles");
    let headers = charge().headers().clone();
    c.bench_function("headers: hop-by-hop strip, route edits, request id", |b| {
        b.iter(|| {
            let mut h: HeaderMap = headers.clone();
            proxy::headers::strip_hop_by_hop(&mut h);
            ops.apply(&mut h);
            h.insert(proxy::headers::REQUEST_ID, proxy::headers::new_request_id());
            h.insert(proxy::headers::CLIENT_ID, HeaderValue::from_static("order"));
            black_box(h.len())
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
