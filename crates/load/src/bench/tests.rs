//! The benchmark's Envoy configurations, checked with `envoy --mode validate` when an Envoy
//! binary is at hand (`ENVOY=PATH`, or `envoy` on PATH), its TCP figures' arithmetic, and the
//! HTTP steps' request shape.

use super::envoy::{self, Tls};
use super::tcp::Spread;
use super::tls::EnvoyCerts;
use super::{load_spec, Shape};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn envoy_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("envoy"))
        .find(|p| p.is_file())
}

/// Both Envoys of the TCP path, with mTLS and without: a `tcp_proxy` on every listener, the
/// inbound one terminating TLS with a client certificate required and the client's SAN
/// checked, the outbound one originating it with the server's SAN checked, TLS 1.3 only, no
/// ALPN (raw bytes); and Envoy accepts each file.
#[test]
fn envoy_tcp_configs_proxy_tcp_over_mtls_and_validate() {
    let dir = std::env::temp_dir().join(format!("weft-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certs = EnvoyCerts::write(&dir).unwrap();
    let inbound = envoy::tcp_config(10001, 10002, 10003, Some(Tls::Server(&certs)));
    let outbound = envoy::tcp_config(10004, 10001, 10005, Some(Tls::Client(&certs)));
    let plain = envoy::tcp_config(10006, 10007, 10008, None);
    for c in [&inbound, &outbound, &plain] {
        assert!(c.contains("name: envoy.filters.network.tcp_proxy"), "{c}");
        assert!(
            c.contains(
                "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
            ),
            "{c}"
        );
        assert!(!c.contains("alpn_protocols"), "{c}");
        assert!(!c.contains("http_connection_manager"), "{c}");
    }
    assert!(
        inbound.contains("DownstreamTlsContext")
            && inbound.contains("require_client_certificate: true")
    );
    assert!(inbound.contains(super::tls::CLIENT_ID), "{inbound}");
    assert!(outbound.contains("UpstreamTlsContext") && outbound.contains(super::tls::SERVER_ID));
    assert!(inbound.contains("tls_minimum_protocol_version: TLSv1_3"));
    assert!(!plain.contains("transport_socket"), "{plain}");
    // The HTTP path still offers h2.
    let http = envoy::config(10009, 10010, true, 10011, Some(Tls::Client(&certs)));
    assert!(http.contains("alpn_protocols: [h2]"), "{http}");

    if let Some(envoy) = envoy_binary() {
        for (name, c) in [
            ("inbound", &inbound),
            ("outbound", &outbound),
            ("plain", &plain),
            ("http", &http),
        ] {
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, c).unwrap();
            let out = std::process::Command::new(&envoy)
                .args(["--mode", "validate", "-c"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn spreads_are_the_median_and_the_extremes() {
    let s = Spread::of(&[3.0, 1.0, 2.0]);
    assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    let s = Spread::of(&[4.0, 1.0]);
    assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
}

fn spread(v: f64) -> Spread {
    Spread::of(&[v])
}

fn tcp_path(name: &str, mib_s: f64, cpu: f64, added_p99: f64) -> super::TcpPathResult {
    super::TcpPathResult {
        name: name.into(),
        description: String::new(),
        proxies: 2,
        throughput_mib_s: spread(mib_s),
        cpu_us_per_mib: Some(spread(cpu)),
        chunk_p50_us: spread(100.0),
        chunk_p99_us: spread(200.0),
        failed: 0,
        ping_messages_per_s: spread(1000.0),
        ping_p50_us: spread(100.0),
        ping_p99_us: spread(200.0),
        ping_added_p50_us: Some(spread(50.0)),
        ping_added_p99_us: Some(spread(added_p99)),
        ping_cpu_us_per_message: Some(spread(10.0)),
        ping_failed: 0,
        rss_idle_kib: Some(1000),
        rss_load_kib: Some(2000),
        idle_cpu_ms_per_s: Some(0.1),
    }
}

/// weft ÷ Envoy on the TCP figures, under `tcp_` keys; an excess latency that a noisy direct
/// round made negative gives no ratio rather than a negative one.
#[test]
fn tcp_ratios_divide_weft_by_envoy() {
    let paths = [
        tcp_path("tcp-direct", 1000.0, 0.0, 0.0),
        tcp_path("tcp-weft", 300.0, 2000.0, -40.0),
        tcp_path("tcp-envoy", 150.0, 4000.0, 400.0),
    ];
    let r = super::tcp::ratios(&paths).unwrap();
    assert_eq!(r["tcp_throughput"], 2.0);
    assert_eq!(r["tcp_cpu_per_mib"], 0.5);
    assert_eq!(r["tcp_ping_added_p50"], 1.0);
    assert_eq!(r["tcp_ping_added_p99"], serde_json::Value::Null);
    assert_eq!(r["tcp_rss_load"], 1.0);
    assert!(
        super::tcp::ratios(&paths[..2]).is_none(),
        "no Envoy, no ratios"
    );
}

#[test]
fn the_request_shape_sets_the_path_and_the_protocol() {
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let plain = load_spec(
        target,
        Some(500.0),
        Duration::from_secs(1),
        32,
        Shape::default(),
    );
    assert_eq!(plain.url.path(), "/bench");
    assert_eq!(
        (plain.http2, plain.connections, plain.concurrency),
        (false, 32, 32)
    );
    let big = Shape {
        body_size: 16 * 1024,
        h2: true,
    };
    let s = load_spec(target, None, Duration::from_secs(1), 32, big);
    assert_eq!(s.url.path(), "/bytes/16384");
    assert_eq!((s.http2, s.connections, s.concurrency), (true, 2, 32));
}

/// An HTTP path with one rate step: its peak and added p50 in each round.
fn http_path(name: &str, peaks: &[f64], added: &[f64]) -> super::PathResult {
    let round = |a: &f64| super::RateRound {
        p50_us: a + 100.0,
        p99_us: a + 200.0,
        added_p50_us: Some(*a),
        added_p99_us: Some(a * 2.0),
        cpu_us_per_request: Some(a / 2.0),
        app_cpu_us_per_request: Some(a / 4.0),
        slices_per_request: Some(4.0),
        app_slices_per_request: Some(1.0),
    };
    super::PathResult {
        name: name.into(),
        description: String::new(),
        proxies: 2,
        peak_rps: super::median(peaks.to_vec()),
        peak_cpu_us_per_request: Some(10.0),
        peak_app_cpu_us_per_request: Some(4.0),
        peak_failed: 0,
        peak_rounds: peaks
            .iter()
            .map(|&rps| super::PeakRound {
                rps,
                cpu_us_per_request: Some(1e6 / rps),
                app_cpu_us_per_request: None,
            })
            .collect(),
        rates: vec![super::RateResult {
            rate: 500.0,
            p50_us: 0.0,
            p95_us: 0.0,
            p99_us: 0.0,
            added_p50_us: Some(super::median(added.to_vec())),
            added_p99_us: None,
            cpu_us_per_request: None,
            app_cpu_us_per_request: Some(25.0),
            slices_per_request: None,
            app_slices_per_request: None,
            achieved_rps: 500.0,
            failed: 0,
            rounds: added.iter().map(round).collect(),
        }],
        rss_idle_kib: None,
        rss_load_kib: None,
        idle_cpu_ms_per_s: None,
    }
}

#[test]
fn ratios_are_given_round_by_round_too() {
    let weft = http_path(
        "weft",
        &[30_000.0, 26_000.0, 20_000.0],
        &[100.0, 90.0, 60.0],
    );
    let envoy = http_path(
        "envoy",
        &[10_000.0, 13_000.0, 8_000.0],
        &[200.0, 300.0, -5.0],
    );
    let r = super::path_ratios(&weft, &envoy);
    assert_eq!(r["peak_rps"], 2.6);
    assert_eq!(r["peak_rps_rounds"], serde_json::json!([3.0, 2.0, 2.5]));
    assert_eq!(
        r["peak_cpu_per_request_rounds"],
        serde_json::json!([0.33, 0.5, 0.4])
    );
    let rate = &r["rates"]["500"];
    // A round whose baseline came out negative has no ratio.
    assert_eq!(
        rate["added_p50_rounds"],
        serde_json::json!([0.5, 0.3, null])
    );
    assert_eq!(
        rate["cpu_per_request_rounds"],
        serde_json::json!([0.5, 0.3, null])
    );
    let text = super::BenchReport {
        schema: super::SCHEMA.into(),
        rounds: 3,
        step_s: 1.0,
        peak_s: 1.0,
        connections: 1,
        pinned: false,
        paths: vec![weft],
        weft_vs_envoy: None,
        transparent_vs_explicit: None,
        tcp_paths: Vec::new(),
        tcp_chunk_bytes: 0,
        tcp_ping_bytes: 0,
        body_bytes: 0,
        h2: false,
    }
    .to_text();
    assert!(
        text.contains("peak 26000 rps (rounds 20000–30000, 0 failed), proxy CPU 10 µs/request at peak, app CPU 4 µs/request"),
        "{text}"
    );
    assert!(
        text.contains("proxy CPU    - µs/request, app CPU 25 µs/request"),
        "{text}"
    );
}

/// Every other round runs the paths in reverse, each round all of them once.
#[test]
fn odd_rounds_run_the_paths_in_reverse() {
    assert_eq!(super::round_order(0, 3), [0, 1, 2]);
    assert_eq!(super::round_order(1, 3), [2, 1, 0]);
    assert_eq!(super::round_order(2, 3), [0, 1, 2]);
    assert_eq!(super::round_order(3, 1), [0]);
}
