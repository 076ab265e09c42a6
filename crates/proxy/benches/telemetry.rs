//! Cost of recording Istio's metrics: `cargo bench -p proxy --bench telemetry -- --ignored
//! --nocapture` (plain timing loops under the test harness; criterion is not a dependency).

use model::ServiceKey;
use proxy::telemetry::{
    DestinationService, Peer, PeerMetadata, Protocol, Reporter, RequestRecord, ResponseFlags,
    Telemetry,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const N: u64 = 5_000_000;

fn peer(workload: &str) -> Peer {
    let labels = [("app", workload), ("version", "v1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let id = model::Identity::spiffe("default", workload);
    Peer::new(PeerMetadata::from_labels(
        workload,
        "default",
        &labels,
        Some(&id),
    ))
}

/// Records `n` requests spread over 8 label sets (2 sources × 2 codes × 2 reporters) from one
/// thread; returns ns per record.
fn record_loop(
    t: &Telemetry,
    sources: &[Peer],
    dst: &Peer,
    svc: &DestinationService,
    n: u64,
) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        let mut r = RequestRecord::new(
            if i & 4 == 0 {
                Reporter::Source
            } else {
                Reporter::Destination
            },
            &sources[(i & 1) as usize],
            dst,
            svc,
        );
        r.protocol = Protocol::Http;
        r.response_code = if i & 2 == 0 { 200 } else { 503 };
        r.flags = ResponseFlags::NONE;
        r.mtls = true;
        r.duration = Duration::from_micros(i % 100_000);
        r.request_bytes = i % 4096;
        r.response_bytes = i % 65536;
        t.request(black_box(&r));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

#[test]
#[ignore = "timing loop: run with --ignored --nocapture"]
fn ns_per_record() {
    let t = Telemetry::new();
    let sources = [peer("productpage"), peer("ratings")];
    let dst = peer("reviews");
    let svc = DestinationService::new(&ServiceKey::new("reviews", "default"));
    record_loop(&t, &sources, &dst, &svc, 100_000); // warm up: creates the series
    let one = record_loop(&t, &sources, &dst, &svc, N);
    println!("telemetry.request: {one:.1} ns/record (1 thread, 8 label sets)");

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| record_loop(&t, &sources, &dst, &svc, N));
        }
    });
    let per = start.elapsed().as_nanos() as f64 / (N * threads as u64) as f64;
    println!(
        "telemetry.request: {:.1} ns/record wall, {:.1} ns/record per thread ({threads} threads, same 8 label sets)",
        per,
        per * threads as f64
    );

    // A destination-side request also looks its peer up from the header.
    let header = sources[0].header_value();
    let principal = Some("cluster.local/ns/default/sa/productpage");
    let start = Instant::now();
    for _ in 0..N {
        black_box(t.peer_from_header(Some(black_box(header.as_bytes())), principal));
    }
    let lookup = start.elapsed().as_nanos() as f64 / N as f64;
    println!(
        "telemetry.peer_from_header: {lookup:.1} ns (cached, {}-byte value)",
        header.len()
    );

    scrape(&t, "8 label sets");
}

/// Times one scrape (encoding the whole registry), best of 5.
fn scrape(t: &Telemetry, what: &str) {
    let mut registry = prometheus_client::registry::Registry::default();
    t.register(&mut registry);
    let mut best = Duration::MAX;
    let mut len = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        best = best.min(start.elapsed());
        len = out.len();
    }
    println!(
        "scrape ({what}, {} series): {best:?}, {len} bytes, {:.1} µs/series",
        t.series(),
        best.as_secs_f64() * 1e6 / t.series() as f64
    );
}

#[test]
#[ignore = "timing loop: run with --ignored --nocapture"]
fn scrape_cost() {
    let t = Telemetry::new();
    let dst = peer("reviews");
    let svc = DestinationService::new(&ServiceKey::new("reviews", "default"));
    for i in 0..500 {
        let src = peer(&format!("client-{i}"));
        for code in [200, 503] {
            let mut r = RequestRecord::new(Reporter::Destination, &src, &dst, &svc);
            r.response_code = code;
            r.mtls = true;
            r.duration = Duration::from_millis(i);
            t.request(&r);
        }
    }
    scrape(&t, "1,000 HTTP label sets");
}

#[test]
#[ignore = "timing loop: run with --ignored --nocapture"]
fn new_label_set_cost() {
    let t = Telemetry::new();
    let dst = peer("reviews");
    let svc = DestinationService::new(&ServiceKey::new("reviews", "default"));
    let sources: Vec<Peer> = (0..10_000).map(|i| peer(&format!("c-{i}"))).collect();
    let mut last = Duration::ZERO;
    let start = Instant::now();
    for (i, src) in sources.iter().enumerate() {
        let one = Instant::now();
        t.request(&RequestRecord::new(Reporter::Source, src, &dst, &svc));
        if i == sources.len() - 1 {
            last = one.elapsed();
        }
    }
    println!(
        "first record of a new label set: {:.1} µs on average up to 10,000 series, {last:?} for the 10,000th",
        start.elapsed().as_secs_f64() * 1e6 / sources.len() as f64
    );
}
