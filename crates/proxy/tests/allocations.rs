//! Heap allocations per request of the proxy's per-request steps, counted by a counting global
//! allocator (this thread's allocations only), so that a change that makes the hot path
//! allocate more fails here. The steps and the mesh are those of `benches/hot_path.rs` (the
//! shop's snapshot). The whole path's allocations per request, as a running proxy makes them,
//! are counted by `scripts/allocs` (docs/benchmarks.md).

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use fixtures::{charge, labels, peer, snapshot};
use http::HeaderValue;
use model::{Authority, Identity, ServiceKey};
use proxy::authz::{Authorizer, AuthzStats, HttpAttributes, RequestContext, Workload};
use proxy::filters::HeaderOps;
use proxy::table::RouteTable;
use proxy::telemetry::{
    DestinationService, Protocol, Reporter, RequestRecord, ResponseFlags, Telemetry,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations per call of `f`, over 1,000 calls after 100 to warm up.
fn per_call(mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..1_000 {
        f();
    }
    (ALLOCATIONS.with(Cell::get) - before) as f64 / 1_000.0
}

/// What each step may allocate per request: what it does today. Lower them when a change
/// removes allocations; a step that allocates more fails the test.
const ROUTE: f64 = 0.0;
const AUTHZ: f64 = 0.0;
const METRICS: f64 = 0.0;
const HEADERS: f64 = 1.0;

#[test]
fn the_per_request_steps_allocate_no_more_than_they_do_today() {
    let table = RouteTable::compile(snapshot(), &RouteTable::default()).unwrap();
    let (parts, ()) = charge().into_parts();
    let route = per_call(|| {
        let svc = table
            .resolve(&Authority::parse(black_box("payment")), "default")
            .unwrap();
        black_box(svc.route(&parts).unwrap().backend.is_some());
    });

    let spec = snapshot().security;
    let mut registry = prometheus_client::registry::Registry::default();
    let stats = AuthzStats::register(&mut registry);
    let payment = labels("payment");
    let authz = Authorizer::compile(
        &spec,
        Workload {
            namespace: "default",
            labels: &payment,
            service_port: 80,
            trust_domain: "cluster.local",
        },
        &stats,
    );
    let order = Identity::spiffe("default", "order");
    let req = charge();
    let decided = per_call(|| {
        let ctx = RequestContext {
            peer_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            peer_identity: Some(&order),
            destination_ip: None,
            destination_port: 80,
            sni: None,
            http: Some(HttpAttributes::of(&req, None)),
        };
        assert!(black_box(authz.authorize(&ctx)).allowed);
    });

    let t = Telemetry::new();
    let (src, dst) = (peer("order"), peer("payment"));
    let svc = DestinationService::new(&ServiceKey::new("payment", "default"));
    let metrics = per_call(|| {
        let mut r = RequestRecord::new(Reporter::Destination, &src, &dst, &svc);
        r.protocol = Protocol::Http;
        r.response_code = 200;
        r.flags = ResponseFlags::NONE;
        r.mtls = true;
        r.duration = Duration::from_micros(850);
        t.request(black_box(&r));
    });

    let ops = HeaderOps::compile(
        &model::HeaderEdits {
            set: vec![("x-canary".into(), "false".into())],
            add: vec![],
            remove: vec!["x-debug".into()],
        },
        "payment",
    )
    .unwrap();
    // A map with room already (a received request's): what the hop adds and edits.
    let mut h = charge().headers().clone();
    h.reserve(16);
    let headers = per_call(|| {
        proxy::headers::strip_hop_by_hop(&mut h);
        ops.apply(&mut h);
        h.insert(proxy::headers::REQUEST_ID, proxy::headers::new_request_id());
        h.insert(proxy::headers::CLIENT_ID, HeaderValue::from_static("order"));
    });

    let report = format!(
        "allocations per request: route {route}, authz {decided}, metrics {metrics}, headers {headers}"
    );
    println!("{report}");
    assert!(route <= ROUTE, "{report}");
    assert!(decided <= AUTHZ, "{report}");
    assert!(metrics <= METRICS, "{report}");
    assert!(headers <= HEADERS, "{report}");
}
