//! The live views against a running mesh: `weft stat` agrees with `weft load` over the same
//! window, `weft tap` streams the right requests with their identities and honours its filters,
//! and `weft top --once` prints the busiest paths in count order.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests take turns: each runs a mesh and load on a 2-core machine, and `weft stat` vs
/// `weft load` must not share the CPU with another mesh.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const INGRESS_ID: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway";
const HELLO_ID: &str = "spiffe://cluster.local/ns/default/sa/hello";
const SLOW_ID: &str = "spiffe://cluster.local/ns/default/sa/slow";

/// `weft ARGS` in the mesh's home, started now (not waited for).
fn spawn_weft(mesh: &Mesh, args: &[&str]) -> std::process::Child {
    Command::new(WEFT)
        .args(args)
        .env("WEFT_HOME", &mesh.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weft")
}

fn finish(child: std::process::Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `le` bounds of `istio_request_duration_milliseconds` a proxy exports, ascending.
fn latency_bounds(mesh: &Mesh) -> Vec<f64> {
    let admin = mesh.status["workloads"][0]["admin"].as_str().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(async {
        let r = get(&client(), admin.parse().unwrap(), "admin", "/metrics")
            .await
            .expect("admin /metrics");
        r.text
    });
    let mut bounds: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("istio_request_duration_milliseconds_bucket{le=\""))
        .filter_map(|l| l.split('"').next())
        .map(|le| {
            if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            }
        })
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    assert!(bounds.len() > 5, "no latency buckets in:\n{text}");
    bounds
}

/// The index of the bucket `(le[i-1], le[i]]` holding `v`.
fn bucket(bounds: &[f64], v: f64) -> usize {
    bounds
        .iter()
        .position(|&le| v <= le)
        .unwrap_or(bounds.len())
}

/// Sends requests through the ingress from a thread until dropped: each round, `(method, host,
/// path, times)` in order, then a pause.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(mesh: &Mesh, round: &[(&str, &str, &str, usize)], pause: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let ingress = mesh.ingress;
        let round: Vec<(String, String, String, usize)> = round
            .iter()
            .map(|(m, h, p, n)| (m.to_string(), h.to_string(), p.to_string(), *n))
            .collect();
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let c = client();
                // Bounded: at most 10 minutes however the test goes.
                let end = Instant::now() + Duration::from_secs(600);
                while !s.load(Ordering::Relaxed) && Instant::now() < end {
                    for (method, host, path, times) in &round {
                        for _ in 0..*times {
                            let req = http::Request::builder()
                                .method(method.as_str())
                                .uri(format!("http://{ingress}{path}"))
                                .header("host", host.as_str())
                                .body(http_body_util::Empty::new())
                                .unwrap();
                            // Counted as sent only when answered: a stream of failures
                            // must not pass for traffic.
                            if let Ok(rsp) = c.request(req).await {
                                if http_body_util::BodyExt::collect(rsp.into_body())
                                    .await
                                    .is_ok()
                                {
                                    n.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            });
        });
        Traffic {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Waits until at least `n` requests were sent.
    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sent.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "traffic does not flow");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn f(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// `weft stat hello --window 10s` started together with `weft load --rate 200 --duration 10s`
/// through the ingress: RPS and success rate within 5%, p99 within one histogram bucket.
///
/// Alignment: both processes are started back to back. `weft stat` reads the counters at the
/// midpoint of its first round of reads (after starting, finding the mesh and one `/status`
/// call: tens of ms) and again `--window` later; `weft load` starts its schedule once its
/// connections are open (also tens of ms) and stops sending after `--duration`. The residual
/// skew is the difference of those start-up times at each end (a few tens of ms out of 10 s,
/// well under 1% of the requests) plus the requests in flight at the second reading (≈ rate ×
/// latency ≈ 5 requests, 0.25%). Success rates do not depend on the alignment (failures are
/// spread evenly). The latency compared is not quite the same: `weft load` measures from the
/// client (through the ingress, from each request's intended send time), the stat from the
/// replicas' sidecars (`reporter="destination"`): the 20 ms delay of the echo puts both in the
/// same bucket, and one bucket of slack covers the ingress hop.
#[test]
fn stat_agrees_with_load() {
    let _serial = serial();
    let yaml = mesh_yaml(
        "lvstat",
        &[
            ("hello", 2, "--fail-rate 0.1 --delay 20ms"),
            ("slow", 1, ""),
        ],
    );
    let mesh = Mesh::up(&yaml);
    // Warm up the path (connections, pools) before the window.
    let url = format!("http://{}/", mesh.ingress);
    mesh.weft_ok(&[
        "load",
        &url,
        "-H",
        "Host: hello",
        "--requests",
        "20",
        "--connections",
        "4",
    ]);

    let load = spawn_weft(
        &mesh,
        &[
            "load",
            &url,
            "-H",
            "Host: hello",
            "--rate",
            "200",
            "--duration",
            "10s",
            "-o",
            "json",
        ],
    );
    let stat = spawn_weft(&mesh, &["stat", "hello", "--window", "10s", "-o", "json"]);
    let load: Value = serde_json::from_str(&finish(load, "weft load")).unwrap();
    let stat_out = finish(stat, "weft stat");
    let stat: Value = serde_json::from_str(&stat_out).unwrap();

    assert_eq!(stat["schema"], "weft.stat/v1", "{stat_out}");
    assert_eq!(stat["kind"], "service");
    assert_eq!(
        stat["warnings"].as_array().map(Vec::len),
        Some(0),
        "{stat_out}"
    );
    let rows = stat["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{stat_out}");
    let row = &rows[0];
    assert_eq!(
        (&row["name"], &row["namespace"]),
        (&"hello".into(), &"default".into())
    );
    assert_eq!(
        (row["replicas"].as_u64(), row["sampled"].as_u64()),
        (Some(2), Some(2))
    );

    let window = f(&stat["window_s"], "window_s");
    assert!((9.9..10.5).contains(&window), "window {window}: {stat_out}");
    let (load_rps, stat_rps) = (
        f(&load["achieved_rps"], "achieved_rps"),
        f(&row["rps"], "rps"),
    );
    let (load_ok, stat_ok) = (
        f(&load["success_ratio"], "success_ratio"),
        f(&row["success_rate"], "success_rate"),
    );
    let load_p99 = f(&load["latency_us"]["p99"], "p99") / 1000.0;
    let stat_p99 = f(&row["latency_ms"]["p99"], "latency_ms.p99");
    let bounds = latency_bounds(&mesh);
    let (lb, sb) = (bucket(&bounds, load_p99), bucket(&bounds, stat_p99));
    eprintln!(
        "weft load: {} requests in {:.3}s = {load_rps:.2} rps, success {load_ok:.4}, p99 {load_p99:.2} ms (bucket ≤{})\n\
         weft stat: {} requests in {window:.3}s = {stat_rps:.2} rps, success {stat_ok:.4}, p99 {stat_p99:.2} ms (bucket ≤{})\n\
         RPS off by {:.2}%, success rate off by {:.2}% ({:.4} points), p99 buckets {lb} vs {sb}",
        load["requests"],
        f(&load["duration_s"], "duration_s"),
        bounds.get(lb).copied().unwrap_or(f64::INFINITY),
        row["requests"],
        bounds.get(sb).copied().unwrap_or(f64::INFINITY),
        100.0 * (stat_rps - load_rps).abs() / load_rps,
        100.0 * (stat_ok - load_ok).abs() / load_ok,
        (stat_ok - load_ok).abs(),
    );
    assert_eq!(load["errors"]["connect"], 0, "{load}");
    assert!(
        load_rps > 150.0,
        "the generator could not keep the rate: {load}"
    );
    assert!(
        (stat_rps - load_rps).abs() / load_rps <= 0.05,
        "RPS {stat_rps} vs {load_rps}"
    );
    assert!(
        (stat_ok - load_ok).abs() / load_ok <= 0.05,
        "success {stat_ok} vs {load_ok}"
    );
    assert!(
        (0.8..0.97).contains(&stat_ok),
        "the echo fails 10%: {stat_ok}"
    );
    assert!(
        lb.abs_diff(sb) <= 1,
        "p99 {stat_p99} ms vs {load_p99} ms: buckets {bounds:?}"
    );
    // The ingress calls the replicas over mTLS with its mesh identity.
    assert_eq!(f(&row["mtls_share"], "mtls_share"), 1.0, "{stat_out}");
    assert_eq!(f(&row["meshed_share"], "meshed_share"), 1.0, "{stat_out}");
    let lat = &row["latency_ms"];
    assert!(f(&lat["p50"], "p50") <= f(&lat["p95"], "p95"));
    assert!(f(&lat["p95"], "p95") <= stat_p99);

    // Every service, as a table: hello with its numbers, slow idle.
    let table = mesh.weft_ok(&["stat", "--window", "1s"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("SERVICE") && lines[0].contains("P99"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("hello ") && l.contains("2/2")),
        "{table}"
    );
    // Column by column (no cell has a space): slow has no requests in the window.
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    let slow: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("slow "))
        .unwrap_or_else(|| panic!("no slow row: {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(slow.len(), head.len(), "{table}");
    let cell = |name: &str| slow[head.iter().position(|h| *h == name).unwrap()];
    assert_eq!((cell("RPS"), cell("P99")), ("0.0", "-"), "{table}");
    // A workload; an unknown service is an error naming the ones there are.
    let wl: Value = serde_json::from_str(&mesh.weft_ok(&[
        "stat",
        "workload/hello-v1",
        "--window",
        "1s",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        (&wl["kind"], &wl["rows"][0]["name"]),
        (&"workload".into(), &"hello-v1".into())
    );
    assert_eq!(wl["rows"][0]["service"], "hello");
    let out = mesh.weft(&["stat", "nope", "--window", "1s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hello.default"));
}

fn events(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// `weft tap hello` while GET /a, GET /b, POST /c and a call to slow flow: events with the right
/// paths, identities and mTLS; `--path`, `--method` and `--to` select.
#[test]
fn tap_streams_requests_with_identities_and_filters() {
    let _serial = serial();
    let mesh = Mesh::up(&mesh_yaml("lvtap", &[("hello", 2, ""), ("slow", 1, "")]));
    let traffic = Traffic::start(
        &mesh,
        &[
            ("GET", "hello", "/a?x=1", 2),
            ("GET", "hello", "/b", 1),
            ("POST", "hello", "/c", 1),
            ("GET", "hello", "/fetch?url=http://slow/from-hello", 1),
        ],
        Duration::from_millis(20),
    );
    traffic.wait_for(10);

    let out = mesh.weft_ok(&[
        "tap",
        "hello",
        "--max",
        "20",
        "--duration",
        "60s",
        "-o",
        "json",
    ]);
    let evs = events(&out);
    assert_eq!(evs.len(), 20, "{out}");
    for e in &evs {
        let path = e["path"].as_str().unwrap();
        assert!(
            ["/a?x=1", "/b", "/c", "/fetch?url=http://slow/from-hello"].contains(&path),
            "{e}"
        );
        assert_eq!(e["direction"], "inbound", "{e}");
        assert_eq!(e["src_identity"], INGRESS_ID, "{e}");
        assert_eq!(e["dst_identity"], HELLO_ID, "{e}");
        assert_eq!(e["dst_service"], "hello.default.svc.cluster.local", "{e}");
        assert_eq!(e["mtls"], true, "{e}");
        assert_eq!(e["status"], 200, "{e}");
        assert!(
            e["dst_workload"] == "hello-v1" && e["authority"] == "hello",
            "{e}"
        );
    }
    // One event per request: merging the replicas' streams duplicates nothing.
    let replicas: std::collections::HashSet<&str> = evs
        .iter()
        .map(|e| e["request_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(replicas.len(), 20, "one event per request: {out}");

    // Five events of hello's that pass a filter.
    let five_of_hello = |filter: &[&str]| {
        let tail = ["--max", "5", "--duration", "60s", "-o", "json"];
        events(&mesh.weft_ok(&[&["tap", "hello"], filter, &tail].concat()))
    };
    let only_b = five_of_hello(&["--path", "/b"]);
    assert_eq!(only_b.len(), 5);
    assert!(only_b.iter().all(|e| e["path"] == "/b"), "{only_b:?}");

    let posts = five_of_hello(&["--method", "post"]);
    assert_eq!(posts.len(), 5);
    assert!(
        posts
            .iter()
            .all(|e| e["method"] == "POST" && e["path"] == "/c"),
        "{posts:?}"
    );

    // What hello's replicas send to slow.
    let to_slow = events(&mesh.weft_ok(&[
        "tap",
        "hello",
        "--to",
        "slow",
        "--max",
        "3",
        "--duration",
        "60s",
        "-o",
        "json",
    ]));
    assert_eq!(to_slow.len(), 3);
    for e in &to_slow {
        assert_eq!(e["direction"], "outbound", "{e}");
        assert_eq!(e["path"], "/from-hello", "{e}");
        assert_eq!(e["dst_service"], "slow.default.svc.cluster.local", "{e}");
        assert_eq!(
            (&e["src_identity"], &e["dst_identity"]),
            (&HELLO_ID.into(), &SLOW_ID.into())
        );
        assert_eq!(e["mtls"], true, "{e}");
    }

    // Text: one line per request.
    let text = mesh.weft_ok(&[
        "tap",
        "hello",
        "--path",
        "/b",
        "--max",
        "3",
        "--duration",
        "60s",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in lines {
        assert!(
            l.contains(" GET hello /b → 200 ")
                && l.contains(&format!("{INGRESS_ID} → {HELLO_ID} mtls")),
            "{l}"
        );
    }

    // --duration ends a tap that sees nothing.
    let t = Instant::now();
    let none = mesh.weft_ok(&["tap", "hello", "--path", "/never", "--duration", "2s"]);
    assert!(none.is_empty(), "{none}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(traffic);
}

/// `weft top hello --once --duration 3s` under traffic of 4:2:1 to three paths: the table lists
/// them busiest first, with counts in that order.
#[test]
fn top_once_prints_the_busiest_paths_in_count_order() {
    let _serial = serial();
    let mesh = Mesh::up(&mesh_yaml("lvtop", &[("hello", 2, "")]));
    let traffic = Traffic::start(
        &mesh,
        &[
            ("GET", "hello", "/busy?i=1", 4),
            ("GET", "hello", "/medium", 2),
            ("POST", "hello", "/rare", 1),
        ],
        Duration::from_millis(20),
    );
    traffic.wait_for(10);
    let t = Instant::now();
    let out = mesh.weft_ok(&["top", "hello", "--once", "--duration", "3s"]);
    let took = t.elapsed();
    drop(traffic);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("requests hello.default receives over 3."),
        "{out}"
    );
    assert!(
        lines[1].starts_with("METHOD") && lines[1].contains("COUNT"),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let paths: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        paths,
        vec![("GET", "/busy"), ("GET", "/medium"), ("POST", "/rare")],
        "{out}"
    );
    let counts: Vec<u64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(
        counts[0] > counts[1] && counts[1] > counts[2] && counts[2] > 0,
        "{out}"
    );
    // Roughly 4:2:1.
    assert!(counts[0] as f64 / counts[2] as f64 > 2.5, "{out}");
    for r in &rows {
        assert_eq!(r[3], "100.00%", "{out}");
        assert!(r[4].ends_with("ms") && r[5].ends_with("ms"), "{out}");
    }
}
