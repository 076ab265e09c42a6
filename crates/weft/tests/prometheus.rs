//! e2e: `weft up --prometheus` runs the real Prometheus (Debian package `prometheus`), which finds
//! every proxy through the targets file the control plane keeps; PromQL over its HTTP API gives
//! the numbers a known load implies. Plus the scrape-cost benchmark of a 20-replica mesh
//! (ignored; see docs/benchmarks.md).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// The load of the e2e test: `RATE` requests/s to frontend's `/fetch` for `LOAD_SECONDS`, each
/// making one request to backend.
const RATE: u32 = 20;
const LOAD_SECONDS: u32 = 20;
/// Every wait on Prometheus gives up after this long.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A Prometheus HTTP API client.
struct Prom {
    addr: SocketAddr,
    client: HttpClient,
    /// `weft up`'s output so far, told when a wait runs out.
    log: Arc<std::sync::Mutex<String>>,
}

impl Prom {
    fn of(mesh: &Mesh) -> Prom {
        let url = mesh.status["prometheus"]
            .as_str()
            .unwrap_or_else(|| panic!("status has no prometheus: {}", mesh.status));
        let addr = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("prometheus {url:?} is not http://ADDR"))
            .parse()
            .unwrap();
        Prom {
            addr,
            client: client(),
            log: mesh.stderr.clone(),
        }
    }

    /// `GET /api/v1/query`: the instant vector `expr` evaluates to at `time` (unix seconds; now
    /// when `None`), as (labels, value) pairs.
    async fn query(&self, expr: &str, time: Option<f64>) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("query", expr);
        if let Some(t) = time {
            q.append_pair("time", &format!("{t:.3}"));
        }
        let path = format!("/api/v1/query?{}", q.finish());
        let r = get(&self.client, self.addr, "prometheus", &path)
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        assert_eq!(r.status, 200, "{expr}: {}", r.text);
        assert_eq!(r.body["status"], "success", "{expr}: {}", r.text);
        r.body["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{expr}: not a vector: {}", r.text))
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The single value of `expr` (a `sum(…)`, `count(…)`, …); `None` while it has no series.
    async fn scalar(&self, expr: &str, time: Option<f64>) -> Option<f64> {
        let v = self.query(expr, time).await;
        assert!(v.len() <= 1, "{expr}: more than one series: {v:?}");
        v.first().map(|(_, x)| *x)
    }

    /// Every target Prometheus scrapes, one line each: its address, health and last error.
    async fn targets(&self) -> String {
        let r = match get(&self.client, self.addr, "prometheus", "/api/v1/targets").await {
            Ok(r) => r,
            Err(e) => return format!("  /api/v1/targets: {e:?}"),
        };
        r.body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "  {} {} {}: {} (last scrape {} taking {}s)",
                    t["labels"]["job"],
                    t["labels"]["instance"],
                    t["health"],
                    t["lastError"],
                    t["lastScrape"],
                    t["lastScrapeDuration"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `expr` until `ok` holds for its value, for at most [`PROMETHEUS_WAIT`].
    async fn wait_for(&self, expr: &str, ok: impl Fn(Option<f64>) -> bool) -> Option<f64> {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            let v = self.scalar(expr, None).await;
            if ok(v) {
                return v;
            }
            if Instant::now() >= deadline {
                let log = self.log.lock().unwrap().clone();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                panic!(
                    "{expr} is still {v:?} after {PROMETHEUS_WAIT:?}; Prometheus's targets:\n{}\n\
                     the end of weft up's output:\n{}",
                    self.targets().await,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What one request of the load got: when it completed (unix seconds), frontend's status, and
/// the status backend gave frontend.
#[derive(Clone, Copy, Debug)]
struct Done {
    at: f64,
    status: u16,
    downstream: u16,
    /// How long the request took as the test saw it (ms): an upper bound of what any proxy on
    /// its path measured.
    took_ms: f64,
}

/// A fixed-rate, bounded load: `count` GETs of `path` with `Host: host` through the ingress,
/// one every `1/rate` s on a tokio interval (a tick missed under load is caught up at once, so
/// the average rate holds), each in its own task so a slow response never delays the next send.
/// Returns when every request has completed (or failed, counted with status 0).
async fn paced_load(
    ingress: SocketAddr,
    host: &str,
    path: &str,
    rate: u32,
    count: u32,
) -> Vec<Done> {
    let c = client();
    let done = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        tick.tick().await;
        let (c, done, host, path) = (c.clone(), done.clone(), host.to_string(), path.to_string());
        tasks.spawn(async move {
            let sent = Instant::now();
            let r = get(&c, ingress, &host, &path).await;
            let took_ms = sent.elapsed().as_secs_f64() * 1000.0;
            let (status, downstream) = match &r {
                Ok(r) => (
                    r.status,
                    r.body["downstream"]["status"].as_u64().unwrap_or(0) as u16,
                ),
                Err(_) => (0, 0),
            };
            done.lock().await.push(Done {
                at: unix_now(),
                status,
                downstream,
                took_ms,
            });
        });
    }
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    assert!(
        drained.is_ok(),
        "requests still running 30 s after the last send"
    );
    let v = done.lock().await.clone();
    v
}

/// How many of `done` completed within `[from, to]`, over the window's length: the request rate
/// the load achieved over exactly the window a PromQL `rate()` evaluates.
fn achieved_rate(done: &[Done], from: f64, to: f64) -> f64 {
    done.iter().filter(|d| d.at > from && d.at <= to).count() as f64 / (to - from)
}

fn assert_close(what: &str, got: f64, want: f64, tolerance: f64) {
    let err = (got - want).abs() / want;
    println!(
        "{what}: Prometheus {got:.3}, the load {want:.3} ({:+.1}%)",
        (got / want - 1.0) * 100.0
    );
    assert!(
        err <= tolerance,
        "{what}: Prometheus says {got:.3}, the load implies {want:.3} (off by {:.1}%, tolerance {:.0}%)",
        err * 100.0,
        tolerance * 100.0
    );
}

/// frontend (1 replica) calls backend (2 replicas, each answering after 20 ms) through the mesh;
/// a known load through the ingress; Prometheus, scraping every proxy each second, agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_proxy_and_promql_matches_the_load() {
    let yaml = mesh_yaml(
        "prom",
        &[("frontend", 1, ""), ("backend", 2, "--delay 20ms")],
    );
    let mesh = Mesh::up_with(
        &yaml,
        &["--prometheus", "127.0.0.1:0", "--scrape-interval", "1s"],
    );
    let prom = Prom::of(&mesh);
    let replicas = mesh.status["workloads"].as_array().unwrap().len();
    assert_eq!(replicas, 3);

    // Readiness: Prometheus has read the targets file and scraped every proxy (3 sidecars and
    // the ingress) successfully.
    let targets = (replicas + 1) as f64;
    prom.wait_for(r#"count(up{job="weft-proxies"} == 1)"#, |v| {
        v == Some(targets)
    })
    .await;
    // Every target carries the labels dashboards filter on.
    let by_mode = prom
        .query(
            r#"count by (mode) (up{job="weft-proxies",mesh="prom"})"#,
            None,
        )
        .await;
    let by_mode: BTreeMap<String, f64> = by_mode
        .into_iter()
        .map(|(l, v)| (l["mode"].clone(), v))
        .collect();
    assert_eq!(
        by_mode,
        BTreeMap::from([("ingress".into(), 1.0), ("sidecar".into(), 3.0)])
    );
    let backend = prom
        .query(
            r#"up{job="weft-proxies",mode="sidecar",service="backend",namespace="default",workload="backend-v1"}"#,
            None,
        )
        .await;
    let instances: Vec<&str> = backend
        .iter()
        .map(|(l, _)| l["instance"].as_str())
        .collect();
    assert_eq!(instances, ["backend-v1-0", "backend-v1-1"]);

    // The load: RATE requests/s for LOAD_SECONDS, each one frontend request and one backend
    // request.
    let count = RATE * LOAD_SECONDS;
    let start = unix_now();
    let done = paced_load(
        mesh.ingress,
        "frontend",
        "/fetch?url=http://backend/work",
        RATE,
        count,
    )
    .await;
    let end = done.iter().map(|d| d.at).fold(start, f64::max);
    let failed: Vec<&Done> = done
        .iter()
        .filter(|d| d.status != 200 || d.downstream != 200)
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let sent_rate = count as f64 / (end - start);
    println!(
        "load: {count} requests in {:.2} s ({sent_rate:.2}/s)",
        end - start
    );
    assert!(
        sent_rate > RATE as f64 * 0.9,
        "the load generator fell behind: {sent_rate:.2}/s"
    );

    // Readiness again: Prometheus has scraped the final counts of both services.
    for svc in ["frontend", "backend"] {
        let expr = format!(
            r#"sum(istio_requests_total{{reporter="destination",destination_service_name="{svc}"}})"#
        );
        prom.wait_for(&expr, |v| v == Some(count as f64)).await;
    }
    let now = unix_now();
    assert!(
        now - start < 55.0,
        "the load and the waits took {:.0} s: a 1m window at `now` no longer holds all of it",
        now - start
    );

    // 1. `rate(…[1m])`, as dashboards and alerts use it, evaluated now: the window [now-60s,
    //    now] holds the whole load, so the rate it implies is the requests served in the window
    //    over 60 s (≈ count/60, not RATE: the load lasted a third of the window).
    //    Why 20%: rate() takes the increase between the first and the last sample in the window
    //    and extrapolates it to the window's edges. At the start, each series was born with the
    //    load, and Prometheus extrapolates a counter back to where it would have been zero (about
    //    the first request): close. At the end, the last sample is up to one scrape interval
    //    before `now`, and the increase is extrapolated over that gap at the average slope of the
    //    sampled interval (the load plus the quiet seconds after it), adding up to ~1.1 s / ~21 s
    //    ≈ 5%; each series (per backend replica and label set) is extrapolated on its own. The
    //    measured error is a few percent; 20% leaves room for a loaded CI machine's scrape
    //    jitter without letting a wrong count (a missed proxy is -50% for backend, a
    //    double-counted request +100%) pass.
    for svc in ["backend", "frontend"] {
        let expr = format!(
            r#"sum(rate(istio_requests_total{{reporter="destination",destination_service_name="{svc}"}}[1m]))"#
        );
        let got = prom.scalar(&expr, Some(now)).await.unwrap_or(0.0);
        let want = achieved_rate(&done, now - 60.0, now);
        assert_close(&format!("{svc} rate[1m]"), got, want, 0.2);
    }

    // 2. The rate in the middle of the load, over a window inside it: what the load achieved
    //    there, ≈ RATE. Each 10 s window holds ~10 samples per series; the extrapolation to the
    //    window's edges follows the steady slope, so the error is a request or two at the edges
    //    (a few percent) plus scrape jitter; same tolerance.
    let mid = start + 15.0;
    for svc in ["backend", "frontend"] {
        let expr = format!(
            r#"sum(rate(istio_requests_total{{reporter="destination",destination_service_name="{svc}"}}[10s]))"#
        );
        let got = prom.scalar(&expr, Some(mid)).await.unwrap_or(0.0);
        let want = achieved_rate(&done, mid - 10.0, mid);
        assert_close(&format!("{svc} rate[10s] mid-load"), got, want, 0.2);
    }

    // 3. p99 of backend as its own sidecars saw it: every request waits 20 ms in the app, plus
    //    the proxy's own time, so the observations fall in Istio's (10, 25] or (25, 50] buckets
    //    and histogram_quantile interpolates within them: between 20 and 50 ms.
    let p99 = prom
        .scalar(
            r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="backend"}[1m])) by (le))"#,
            Some(now),
        )
        .await
        .expect("backend p99");
    // How the observations spread over the buckets, to read a failure by.
    let mut buckets: Vec<(f64, f64)> = prom
        .query(
            r#"sum by (le) (istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="backend"})"#,
            Some(now),
        )
        .await
        .into_iter()
        .map(|(l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), v))
        .filter(|(le, _)| (10.0..=250.0).contains(le))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("backend p99: {p99:.2} ms; cumulative buckets (le, count): {buckets:?}");
    // The bound: 50 ms (the bucket the delay implies), or — on a machine so loaded that the
    // test itself saw slower answers — the upper bound of the Istio bucket holding the p99
    // the client measured end to end, which no sidecar on the way can exceed.
    let mut took: Vec<f64> = done.iter().map(|d| d.took_ms).collect();
    took.sort_by(f64::total_cmp);
    let client_p99 = took[took.len() * 99 / 100];
    // Past a second for a 20 ms answer nothing is being measured any more: that fails too.
    let bounds = [50.0, 100.0, 250.0, 500.0, 1000.0];
    let bound = bounds
        .into_iter()
        .find(|b| client_p99 <= *b)
        .unwrap_or_else(|| panic!("the client's own p99 is {client_p99:.0} ms for 20 ms answers"));
    assert!(
        (20.0..=bound).contains(&p99),
        "backend p99 {p99} ms (client p99 {client_p99:.1} ms, bound {bound}); cumulative buckets (le, count): {buckets:?}"
    );

    // 4. Metadata exchange and mTLS: every backend series reported by its sidecars names the
    //    caller's workload and principal, and says the connection was mutual TLS.
    let all = prom
        .scalar(
            r#"count(istio_requests_total{reporter="destination",destination_service_name="backend"})"#,
            Some(now),
        )
        .await;
    let from_frontend = prom
        .scalar(
            r#"count(istio_requests_total{reporter="destination",destination_service_name="backend",source_workload="frontend-v1",source_principal="spiffe://cluster.local/ns/default/sa/frontend",connection_security_policy="mutual_tls"})"#,
            Some(now),
        )
        .await;
    assert!(all.is_some_and(|n| n > 0.0), "no backend series");
    assert_eq!(
        from_frontend, all,
        "backend series without frontend's metadata or mTLS"
    );

    // 5. The targets still list every proxy, each scraped successfully.
    let up = prom
        .scalar(r#"count(up{job="weft-proxies"} == 1)"#, None)
        .await;
    assert_eq!(up, Some(targets));
}

/// Without the `prometheus` executable, `weft up --prometheus` says which package to install,
/// and nothing starts.
#[test]
fn without_prometheus_installed_up_names_the_debian_package() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mesh.yaml");
    std::fs::write(&file, mesh_yaml("noprom", &[("hello", 1, "")])).unwrap();
    let out = std::process::Command::new(WEFT)
        .args(["up", "--prometheus", "127.0.0.1:0"])
        .arg(&file)
        .env("WEFT_HOME", home.path())
        .env("PATH", files.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no `prometheus` executable on PATH")
            && err.contains("Debian package `prometheus`"),
        "{err}"
    );
    assert!(!home.path().join("meshes/noprom.json").exists());
}

// ---------------------------------------------------------------------------------------------
// The scrape-cost benchmark (docs/benchmarks.md, "Scraping cost"): not a timed test.

/// CPU time (ns) a process has run, over all its threads (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The children of `parent` whose command line satisfies `pred`.
fn children(parent: i32, pred: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if pred(&argv) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Continues a stopped process when dropped (a panicking benchmark must not leave Prometheus
/// stopped).
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The benchmark's mesh: frontend ×10 calling backend ×10, both round-robin so that every replica
/// gets the same share of the traffic in every window (peak-EWMA's choices would make the
/// per-proxy traffic, and so its CPU, differ from window to window by more than scraping costs).
fn bench_mesh_yaml() -> String {
    let mut y = String::from(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: scrapebench}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n",
    );
    for svc in ["frontend", "backend"] {
        y.push_str(&format!(
            "  - name: {svc}\n    port: 80\n    lb: round-robin\n    workloads:\n    - name: {svc}-v1\n      labels: {{app: {svc}, version: v1}}\n      replicas: 10\n      command: [weft, demo, echo, --service, {svc}, --version, v1]\n"
        ));
    }
    y
}

/// "Scraping all proxies of a 20-replica mesh every second costs each proxy under 1% of one
/// core." A 20-replica mesh (frontend ×10 calling backend ×10, round-robin) with Prometheus
/// scraping every proxy every second and steady light traffic (40 requests/s through the
/// ingress: 4 requests/s per replica, each side).
///
/// Windows with Prometheus running and stopped (SIGSTOP: no scrapes, everything else
/// identical) alternate; each proxy's CPU comes from its schedstat; what scraping costs a proxy
/// = its CPU/s with scraping − without, the median over rounds. (Scraping a proxy in a tight
/// loop instead would measure a warm proxy: a scrape that wakes a proxy once a second costs it
/// several times more (cold caches, thread wake-ups), so only the real scrape rate gives the
/// real cost.)
///
/// `cargo test --release -p weft --test prometheus -- --ignored --nocapture scrape_cost`
/// (`WEFT_BENCH_ROUNDS`, `WEFT_BENCH_WINDOW_SECONDS` change the 3 rounds of 20 s windows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (~3 minutes): run it with --ignored --nocapture, see docs/benchmarks.md"]
async fn scrape_cost_of_a_20_replica_mesh() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rounds = env("WEFT_BENCH_ROUNDS", 3) as usize;
    let window = Duration::from_secs(env("WEFT_BENCH_WINDOW_SECONDS", 20));
    let mesh = Mesh::up_with(
        &bench_mesh_yaml(),
        &["--prometheus", "127.0.0.1:0", "--scrape-interval", "1s"],
    );
    let prom = Prom::of(&mesh);
    let up_pid = mesh.child.id() as i32;

    // (instance, proxy pid)
    let mut proxies: Vec<(String, i32)> = mesh.status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["instance"].as_str().unwrap().to_string(),
                w["pid"].as_i64().unwrap() as i32,
            )
        })
        .collect();
    let ingress = children(up_pid, |a| {
        a.windows(2).any(|w| w[0] == "--mode" && w[1] == "ingress")
    });
    assert_eq!(ingress.len(), 1, "ingress proxy pid");
    proxies.push(("ingress".into(), ingress[0]));
    assert_eq!(proxies.len(), 21);
    let prometheus = children(up_pid, |a| {
        a.first()
            .is_some_and(|p| p.ends_with("/prometheus") || p == "prometheus")
    });
    assert_eq!(prometheus.len(), 1, "prometheus pid");
    let prometheus = prometheus[0];
    let _resume = Resume(prometheus);

    prom.wait_for(r#"count(up{job="weft-proxies"} == 1)"#, |v| v == Some(21.0))
        .await;

    // Steady traffic for the whole run, from its own task: longer than the warm-up, every
    // window with its settling time, with room to spare.
    let settle = Duration::from_millis(1500);
    let total = (window + settle) * (2 * rounds as u32) + Duration::from_secs(20);
    let load_rate = 40;
    let ingress_addr = mesh.ingress;
    let load = tokio::spawn(async move {
        paced_load(
            ingress_addr,
            "frontend",
            "/fetch?url=http://backend/work",
            load_rate,
            load_rate * total.as_secs() as u32,
        )
        .await
    });
    // Warm-up: every series exists and every pool is open before measuring.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let sample =
        |pids: &[(String, i32)]| -> Vec<u64> { pids.iter().map(|(_, p)| cpu_ns(*p)).collect() };
    let stop_prometheus = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(prometheus),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        Resume(prometheus)
    };
    // Per proxy, per round: CPU share of one core with scraping and without.
    let mut on: Vec<Vec<f64>> = vec![Vec::new(); proxies.len()];
    let mut off: Vec<Vec<f64>> = vec![Vec::new(); proxies.len()];
    let mut prom_cpu = Vec::new();
    let mut scrape_stats = Vec::new();
    for round in 0..rounds {
        for scraping in [true, false] {
            let stopped = (!scraping).then(stop_prometheus);
            // Let a scrape in flight finish (or the first one after SIGCONT start).
            tokio::time::sleep(settle).await;
            let (t0, c0, p0) = (Instant::now(), sample(&proxies), cpu_ns(prometheus));
            tokio::time::sleep(window).await;
            let (secs, c1, p1) = (
                t0.elapsed().as_secs_f64(),
                sample(&proxies),
                cpu_ns(prometheus),
            );
            for (i, (a, b)) in c0.iter().zip(&c1).enumerate() {
                let share = (b - a) as f64 / 1e9 / secs;
                let into = if scraping { &mut on } else { &mut off };
                into[i].push(share);
            }
            if scraping {
                prom_cpu.push((p1 - p0) as f64 / 1e9 / secs);
            }
            drop(stopped);
            println!(
                "round {}: scraping {}: {:.1} s measured",
                round + 1,
                if scraping { "on " } else { "off" },
                secs
            );
        }
        // What one scrape of a proxy is like (while Prometheus runs).
        let dur = prom
            .scalar(r#"avg(scrape_duration_seconds{job="weft-proxies"})"#, None)
            .await
            .unwrap_or(0.0);
        let samples = prom
            .scalar(r#"avg(scrape_samples_scraped{job="weft-proxies"})"#, None)
            .await
            .unwrap_or(0.0);
        scrape_stats.push((dur, samples));
    }

    let done = load.await.unwrap();
    let failed = done.iter().filter(|d| d.status != 200).count();

    println!();
    println!(
        "{:<14} {:>10} {:>10} {:>14}",
        "proxy", "on %core", "off %core", "on-off %core"
    );
    let mut costs = Vec::new();
    for (i, (name, _)) in proxies.iter().enumerate() {
        let per_round: Vec<f64> = on[i].iter().zip(&off[i]).map(|(a, b)| a - b).collect();
        let cost = median(per_round);
        costs.push((name.clone(), cost));
        println!(
            "{name:<14} {:>10.3} {:>10.3} {:>14.3}",
            median(on[i].clone()) * 100.0,
            median(off[i].clone()) * 100.0,
            cost * 100.0,
        );
    }
    let values: Vec<f64> = costs.iter().map(|(_, c)| *c).collect();
    let max = costs.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    println!();
    println!(
        "scraping every second costs a proxy, % of one core: median {:.3}, mean {:.3}, max {:.3} ({}); \
         per scrape: {:.0} µs of CPU (median)",
        median(values.clone()) * 100.0,
        values.iter().sum::<f64>() / values.len() as f64 * 100.0,
        max.1 * 100.0,
        max.0,
        median(values.clone()) * 1e6,
    );
    println!(
        "Prometheus: scrape duration {:.2} ms, {:.0} samples per proxy; itself {:.1}% of one core while scraping 21 proxies every second",
        median(scrape_stats.iter().map(|s| s.0).collect()) * 1e3,
        median(scrape_stats.iter().map(|s| s.1).collect()),
        median(prom_cpu) * 100.0
    );
    println!(
        "traffic: {} requests at {load_rate}/s, {failed} failed",
        done.len()
    );
    assert_eq!(failed, 0, "requests failed while Prometheus scraped");
    assert!(
        max.1 < 0.01,
        "the bar: scraping costs a proxy under 1% of one core; {} costs {:.3}%",
        max.0,
        max.1 * 100.0
    );
}
