//! `weft bench`: one workload, several paths, measured side by side in the same run.
//!
//! Paths: `direct` (load generator → app), `weft` (→ client proxy → HTTP/2 → sidecar → app) and,
//! when an `envoy` binary is available, `envoy` (the same two hops through two Envoys). Rounds
//! interleave the paths, every other round in reverse (A B C C B A …), and every figure quoted
//! is the median over rounds, as a noisy 2-core VM needs (see docs/benchmarks.md). Per step:
//! latency at fixed rates (open model, coordinated-omission corrected), peak throughput (closed
//! model), proxy CPU time per request (`/proc/PID/task/*/schedstat`), proxy RSS idle and under
//! load.
//!
//! TCP paths (`tcp`, module `tcp`): `tcp-direct` (load generator → TCP echo app), `tcp-weft` (→ a
//! weft sidecar's local client port → mTLS HTTP/2 CONNECT → the echo's sidecar → app) and
//! `tcp-envoy` (→ Envoy `tcp_proxy` → mTLS → Envoy `tcp_proxy` → app). Per round and path: a
//! throughput step (chunks echoed in a closed loop; MiB/s, proxy CPU per MiB) and a ping-pong
//! step (64-byte messages; messages/s, p50/p99 round trip), interleaved like the HTTP steps.
//!
//! With `pin`, the load generator runs on CPU 0 and everything else on CPU 1.

mod envoy;
mod procs;
mod tcp;
mod tls;
mod transparent;

use crate::{run_blocking, LoadSpec, Report};
use procs::{cpu_time, first_line, free_port, rss_kib, sched, spawn, Proc, Sched};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use tcp::{Spread, TcpPathResult};

pub const SCHEMA: &str = "weft.bench/v1";

/// How long the proxies rest after the warm-up before idle CPU is measured, and for how long.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
const IDLE_WINDOW: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct BenchSpec {
    /// The weft executable (app, control plane and proxies are started from it).
    pub weft: PathBuf,
    /// The command that runs a weft proxy, to which its flags are appended: `weft-proxy`, or
    /// `weft proxy` (the command `weft up` uses).
    pub proxy: Vec<String>,
    pub envoy: Option<PathBuf>,
    /// Fixed rates (requests/s) at which latency is measured.
    pub rates: Vec<f64>,
    /// How long each fixed-rate step runs.
    pub step: Duration,
    /// How long each peak-throughput step runs.
    pub peak: Duration,
    pub rounds: usize,
    pub connections: usize,
    pub pin: bool,
    pub workdir: PathBuf,
    /// mTLS between the two hops, for weft and Envoy alike (the default); false: plaintext.
    pub mtls: bool,
    /// Which workloads run: the HTTP paths, the TCP paths, or both.
    pub protocol: Protocols,
    /// Bytes per chunk of the TCP throughput steps.
    pub tcp_chunk: usize,
    /// The HTTP steps' response size and client protocol.
    pub shape: Shape,
    /// Also the transparent path (`weft-transparent`): the two hops in pods of a transparent
    /// mesh (needs root).
    pub transparent: bool,
}

/// The workloads a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols {
    pub http: bool,
    pub tcp: bool,
}

/// Bytes per chunk of the TCP throughput steps unless told otherwise: the size of one TLS
/// record's payload and of one HTTP/2 DATA frame by default, a typical bulk write.
pub const DEFAULT_TCP_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
    #[error("load: {0}")]
    Load(#[from] crate::LoadError),
}

#[derive(Clone, Debug, Serialize)]
pub struct RateResult {
    pub rate: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    /// This path's latency minus its baseline's (no proxies, same network: `direct`, or
    /// `pods-direct` for paths between pods), in the same round (median over rounds).
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    /// Proxy CPU time (all of this path's proxies) per request.
    pub cpu_us_per_request: Option<f64>,
    /// The app's CPU time per request in the same step (`None` where the benchmark did not
    /// start the app itself): about what one wake of a small HTTP server costs on this machine,
    /// the yardstick `scripts/bench-floor` holds each of a proxy's wakes against.
    pub app_cpu_us_per_request: Option<f64>,
    /// Time slices the proxies ran in per request (schedstat): wakes, and returns to the CPU
    /// after being preempted.
    pub slices_per_request: Option<f64>,
    /// The app's time slices per request.
    pub app_slices_per_request: Option<f64>,
    pub achieved_rps: f64,
    pub failed: u64,
    /// The figures of each round, in order (the medians above are over these).
    pub rounds: Vec<RateRound>,
}

/// One fixed-rate step of one round.
#[derive(Clone, Debug, Serialize)]
pub struct RateRound {
    pub p50_us: f64,
    pub p99_us: f64,
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
    pub cpu_us_per_request: Option<f64>,
    pub app_cpu_us_per_request: Option<f64>,
    pub slices_per_request: Option<f64>,
    pub app_slices_per_request: Option<f64>,
}

/// One peak step of one round.
#[derive(Clone, Debug, Serialize)]
pub struct PeakRound {
    pub rps: f64,
    pub cpu_us_per_request: Option<f64>,
    pub app_cpu_us_per_request: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PathResult {
    pub name: String,
    pub description: String,
    pub proxies: usize,
    pub peak_rps: f64,
    pub peak_cpu_us_per_request: Option<f64>,
    /// The app's CPU time per request at peak (see [`RateResult::app_cpu_us_per_request`]).
    pub peak_app_cpu_us_per_request: Option<f64>,
    pub peak_failed: u64,
    /// Each round's peak step, in order (the medians above are over these).
    pub peak_rounds: Vec<PeakRound>,
    pub rates: Vec<RateResult>,
    /// Largest single proxy's RSS, idle and at peak load.
    pub rss_idle_kib: Option<u64>,
    pub rss_load_kib: Option<u64>,
    /// CPU the path's proxies burn with no traffic, ms per second.
    pub idle_cpu_ms_per_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema: String,
    pub rounds: usize,
    pub step_s: f64,
    pub peak_s: f64,
    pub connections: usize,
    pub pinned: bool,
    /// The HTTP paths (empty when only TCP ran).
    pub paths: Vec<PathResult>,
    /// weft ÷ envoy for each figure (lower is better, except throughput); the TCP figures
    /// under keys starting `tcp_`.
    pub weft_vs_envoy: Option<serde_json::Value>,
    /// The transparent path ÷ the explicit `weft` path, when the transparent path ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transparent_vs_explicit: Option<serde_json::Value>,
    /// The TCP paths (empty when only HTTP ran).
    pub tcp_paths: Vec<TcpPathResult>,
    /// Bytes per chunk of the TCP throughput steps, and per message of the ping-pong steps.
    pub tcp_chunk_bytes: usize,
    pub tcp_ping_bytes: usize,
    /// The HTTP steps' response body size (0: the echo app's small JSON answer).
    #[serde(default)]
    pub body_bytes: usize,
    /// Whether the load generator spoke HTTP/2 (h2c) to the first hop.
    #[serde(default)]
    pub h2: bool,
}

/// One path under test: where to send, which processes are its proxies.
struct Path {
    name: &'static str,
    description: &'static str,
    target: SocketAddr,
    proxies: Vec<u32>,
    /// The app this path ends at, when the benchmark started it (its CPU per request is
    /// reported beside the proxies'); empty otherwise.
    app: Vec<u32>,
    /// The network namespace the load runs in (the transparent path's client pod); `None`:
    /// this one.
    netns: Option<String>,
    /// The path without proxies whose latency, in the same round, this path's "added" latency
    /// is counted from: `direct` on loopback, `pods-direct` for paths between pods (the same
    /// network, with no mesh in it). `None` for such a baseline path itself.
    base: Option<&'static str>,
    _procs: Vec<Proc>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What each request of the HTTP steps is: the response body's size and the client's protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    /// The app answers this many bytes (`/bytes/N`); 0: its small JSON echo.
    pub body_size: usize,
    /// HTTP/2 (h2c) from the load generator to the first hop; else HTTP/1.1.
    pub h2: bool,
}

/// With HTTP/2, the requests in flight share this many connections.
const H2_CONNECTIONS: usize = 2;

fn load_spec(
    target: SocketAddr,
    rate: Option<f64>,
    d: Duration,
    connections: usize,
    shape: Shape,
) -> LoadSpec {
    let path = if shape.body_size > 0 {
        format!("/bytes/{}", shape.body_size)
    } else {
        "/bench".into()
    };
    let mut spec = LoadSpec::new(
        format!("http://{target}{path}")
            .parse()
            .expect("a socket address makes a URI"),
    );
    spec.headers
        .push((http::header::HOST, http::HeaderValue::from_static("bench")));
    spec.rate = rate;
    spec.duration = Some(d);
    spec.http2 = shape.h2;
    spec.connections = if shape.h2 {
        H2_CONNECTIONS.min(connections)
    } else {
        connections
    };
    spec.concurrency = connections;
    spec.timeout = Duration::from_secs(10);
    spec
}

/// Waits until a request through `target` succeeds.
fn wait_path(target: SocketAddr, what: &str) -> Result<(), BenchError> {
    wait_path_in(target, what, None)
}

/// [`wait_path`] from inside the network namespace `netns`, when given.
fn wait_path_in(target: SocketAddr, what: &str, netns: Option<&str>) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut spec = load_spec(target, None, Duration::from_secs(1), 1, Shape::default());
        spec.duration = None;
        spec.requests = Some(1);
        spec.timeout = Duration::from_secs(2);
        let answered = match netns {
            Some(ns) => transparent::in_netns(ns, move || run_blocking(spec, None))?,
            None => run_blocking(spec, None),
        };
        if answered.is_ok_and(|r| r.succeeded == 1) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{what} never answered through {target}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn parse_bound(line: &str, key: &str) -> Result<SocketAddr, BenchError> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| BenchError::Setup(format!("proxy said {line:?}: {e}")))?;
    v[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Setup(format!("proxy did not report {key}: {line}")))
}

/// The mesh both weft paths run in: `bench` (HTTP, port 80) and `bench-tcp` (`protocol: tcp`,
/// port 9000), each with one replica whose sidecar the benchmark starts.
const MESH: &str = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: weft-bench}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: bench\n    port: 80\n    workloads:\n    - name: bench-v1\n      replicas: 1\n      command: [weft, demo, echo]\n  - name: bench-tcp\n    port: 9000\n    protocol: tcp\n    workloads:\n    - name: bench-tcp-v1\n      replicas: 1\n      command: [weft, demo, tcp-echo]\n";

/// The weft paths' control plane and what its proxies need to join the mesh.
struct Control {
    grpc: String,
    api: String,
    /// The API's admin credential, for join tokens.
    admin: String,
    /// The mesh's roots (mTLS only).
    anchors: String,
    _proc: Proc,
}

fn start_control(spec: &BenchSpec, cpu: Option<usize>) -> Result<Control, BenchError> {
    let mesh = spec.workdir.join("bench-mesh.yaml");
    std::fs::write(&mesh, MESH)?;
    let mut control_args: Vec<String> = [
        "control",
        &mesh.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    if !spec.mtls {
        control_args.push("--no-mtls".into());
    }
    let mut control = spawn(
        "control",
        &spec.weft,
        &control_args,
        &quiet(spec),
        cpu,
        true,
    )?;
    let line = first_line(&mut control)?;
    let grpc = line
        .split("connect to ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .ok_or_else(|| BenchError::Setup(format!("control plane said {line:?}")))?
        .to_string();
    let api = line
        .split("API on http://")
        .nth(1)
        .map(|a| a.trim().to_string())
        .ok_or_else(|| BenchError::Setup(format!("control plane said {line:?}")))?;
    // Each proxy proves who it is to the mesh CA with a one-time join token, which the API
    // gives to the holder of its admin credential (kept in WEFT_HOME by `weft control`).
    let admin = std::fs::read_to_string(spec.workdir.join("meshes").join("weft-bench.token"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let anchors = match spec.mtls {
        true => tls::trust_anchors(&api, &admin)?,
        false => String::new(),
    };
    Ok(Control {
        grpc,
        api,
        admin,
        anchors,
        _proc: control,
    })
}

/// The environment of weft's processes: quiet logs, the benchmark's WEFT_HOME.
fn quiet(spec: &BenchSpec) -> Vec<(&'static str, String)> {
    vec![
        ("WEFT_LOG", "warn".to_string()),
        ("WEFT_HOME", spec.workdir.display().to_string()),
    ]
}

impl Control {
    /// A proxy's environment: with mTLS, a fresh join token for the identity of service
    /// account `sa` and the mesh's roots.
    fn proxy_env(
        &self,
        spec: &BenchSpec,
        sa: &str,
    ) -> Result<Vec<(&'static str, String)>, BenchError> {
        let mut env = quiet(spec);
        if spec.mtls {
            let identity = format!("spiffe://cluster.local/ns/default/sa/{sa}");
            let token = tls::join_token(&self.api, &self.admin, &identity)?;
            env.push(("WEFT_JOIN_TOKEN", token));
            env.push(("WEFT_TRUST_ANCHORS", self.anchors.clone()));
        }
        Ok(env)
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

impl Control {
    /// Starts `weft-proxy --mode MODE --control … --service SA ARGS…` joined to this control
    /// plane under the service account `sa`, and waits for its first line (where it listens).
    fn proxy(
        &self,
        spec: &BenchSpec,
        name: &str,
        mode: &str,
        sa: &str,
        args: &[&str],
        cpu: Option<usize>,
    ) -> Result<(Proc, String), BenchError> {
        let (program, leading) = spec
            .proxy
            .split_first()
            .ok_or_else(|| BenchError::Setup("no command to run a proxy with".into()))?;
        let mut argv = leading.to_vec();
        argv.extend(strings(&[
            "--mode",
            mode,
            "--control",
            &self.grpc,
            "--service",
            sa,
        ]));
        argv.extend(strings(args));
        let mut p = spawn(
            name,
            std::path::Path::new(program),
            &argv,
            &self.proxy_env(spec, sa)?,
            cpu,
            true,
        )?;
        let line = first_line(&mut p)?;
        Ok((p, line))
    }
}

fn start_weft(
    spec: &BenchSpec,
    control: &Control,
    app: u16,
    cpu: Option<usize>,
) -> Result<Path, BenchError> {
    let app = format!("127.0.0.1:{app}");
    let (sidecar, _) = control.proxy(
        spec,
        "sidecar",
        "sidecar",
        "bench",
        &[
            "--workload",
            "bench-v1",
            "--instance",
            "bench-v1-0",
            "--app",
            &app,
            "--inbound",
            "127.0.0.1:0",
        ],
        cpu,
    )?;
    let (client, line) = control.proxy(
        spec,
        "client",
        "client",
        "loadgen",
        &["--instance", "loadgen-0", "--outbound", "127.0.0.1:0"],
        cpu,
    )?;
    let target = parse_bound(&line, "outbound")?;
    wait_path(target, "weft")?;
    Ok(Path {
        name: "weft",
        description: if spec.mtls {
            "client → weft outbound → mTLS HTTP/2 → weft inbound → app"
        } else {
            "client → weft outbound → HTTP/2 → weft inbound → app"
        },
        target,
        proxies: vec![client.pid(), sidecar.pid()],
        app: vec![],
        netns: None,
        base: Some("direct"),
        _procs: vec![client, sidecar],
    })
}

/// Starts one Envoy with the config `file` (one worker, as weft's proxies run one); its
/// listener's port names its shared-memory base, so several run side by side.
fn spawn_envoy(
    name: &str,
    envoy: &std::path::Path,
    file: &std::path::Path,
    listen: u16,
    cpu: Option<usize>,
) -> std::io::Result<Proc> {
    let args = strings(&[
        "-c",
        &file.display().to_string(),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warn",
        "--base-id",
        &listen.to_string(),
    ]);
    spawn(name, envoy, &args, &[], cpu, false)
}

fn start_envoy(
    spec: &BenchSpec,
    envoy: &std::path::Path,
    app: u16,
    cpu: Option<usize>,
) -> Result<Path, BenchError> {
    let (inbound, outbound) = (free_port()?, free_port()?);
    let certs = if spec.mtls {
        Some(tls::EnvoyCerts::write(&spec.workdir)?)
    } else {
        None
    };
    let mut procs = Vec::new();
    for (name, listen, upstream, h2) in [
        ("envoy-inbound", inbound, app, false),
        ("envoy-outbound", outbound, inbound, true),
    ] {
        let file = spec.workdir.join(format!("{name}.yaml"));
        let hop = certs.as_ref().map(|c| {
            if h2 {
                envoy::Tls::Client(c)
            } else {
                envoy::Tls::Server(c)
            }
        });
        std::fs::write(
            &file,
            envoy::config(listen, upstream, h2, free_port()?, hop),
        )?;
        procs.push(spawn_envoy(name, envoy, &file, listen, cpu)?);
    }
    let target = SocketAddr::from(([127, 0, 0, 1], outbound));
    wait_path(target, "envoy")?;
    Ok(Path {
        name: "envoy",
        description: if spec.mtls {
            "client → Envoy → mTLS HTTP/2 → Envoy → app"
        } else {
            "client → Envoy → HTTP/2 → Envoy → app"
        },
        target,
        proxies: procs.iter().map(Proc::pid).collect(),
        app: vec![],
        netns: None,
        base: Some("direct"),
        _procs: procs,
    })
}

/// What a step cost per request: the proxies' and the app's CPU time (µs) and time slices
/// (`None` where the path has no proxies, or the benchmark did not start its app).
#[derive(Clone, Copy)]
struct PerRequest {
    cpu: Option<f64>,
    app_cpu: Option<f64>,
    slices: Option<f64>,
    app_slices: Option<f64>,
}

/// One fixed-rate step's figures.
#[derive(Clone, Copy)]
struct Sample {
    p50: f64,
    p95: f64,
    p99: f64,
    per: PerRequest,
    rps: f64,
    failed: u64,
}

/// One peak step's figures.
#[derive(Clone)]
struct PeakSample {
    rps: f64,
    per: PerRequest,
    rss: u64,
    failed: u64,
}

fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().map(|p| cpu_time(*p)).sum()
}

fn sched_of(pids: &[u32]) -> Sched {
    pids.iter().map(|p| sched(*p)).sum()
}

/// What the processes a step watched did during it.
struct Watched {
    /// CPU time of the proxies, and of the app.
    cpu: Duration,
    app_cpu: Duration,
    /// Time slices of the proxies, and of the app.
    slices: u64,
    app_slices: u64,
    /// The largest RSS any proxy had (sampled every 100 ms).
    rss: u64,
}

/// Runs `work` while watching `proxies` and `app`: what it returned, and what they did.
fn measured<T>(proxies: &[u32], app: &[u32], work: impl FnOnce() -> T) -> (T, Watched) {
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss, pids) = (stop.clone(), max_rss.clone(), proxies.to_vec());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for p in &pids {
                    max_rss.fetch_max(rss_kib(*p), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (before, app_before) = (sched_of(proxies), sched_of(app));
    let out = work();
    let (after, app_after) = (sched_of(proxies), sched_of(app));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let watched = Watched {
        cpu: after.cpu.saturating_sub(before.cpu),
        app_cpu: app_after.cpu.saturating_sub(app_before.cpu),
        slices: after.slices.saturating_sub(before.slices),
        app_slices: app_after.slices.saturating_sub(app_before.slices),
        rss: max_rss.load(Ordering::Relaxed),
    };
    (out, watched)
}

/// One step's load report, what it cost per request, and the largest proxy RSS seen during it.
struct Stepped {
    report: Report,
    per: PerRequest,
    rss: u64,
}

/// Runs one step on `path`.
fn step(path: &Path, spec: LoadSpec) -> Result<Stepped, BenchError> {
    let (report, w) = measured(&path.proxies, &path.app, || match &path.netns {
        Some(ns) => transparent::in_netns(ns, move || run_blocking(spec, None))
            .and_then(|r| r.map_err(BenchError::from)),
        None => run_blocking(spec, None).map_err(BenchError::from),
    });
    let report = report?;
    let per_req = |pids: &[u32], v: f64| {
        (!pids.is_empty() && report.requests > 0).then(|| v / report.requests as f64)
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let per = PerRequest {
        cpu: per_req(&path.proxies, us(w.cpu)),
        app_cpu: per_req(&path.app, us(w.app_cpu)),
        slices: per_req(&path.proxies, w.slices as f64),
        app_slices: per_req(&path.app, w.app_slices as f64),
    };
    Ok(Stepped {
        report,
        per,
        rss: w.rss,
    })
}

/// The order the paths (`0..n`) run in round `round`: as given in even rounds, reversed in odd
/// ones.
fn round_order(round: usize, n: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

fn pin_self(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Runs the whole benchmark; `log` gets a line per step.
pub fn run(spec: &BenchSpec, mut log: impl FnMut(&str)) -> Result<BenchReport, BenchError> {
    let cpu = spec.pin.then_some(1);
    if spec.pin {
        pin_self(0);
    }
    // One control plane for weft's HTTP and TCP paths alike.
    let control = start_control(spec, cpu)?;
    let mut apps = Vec::new();
    let mut paths = Vec::new();
    if spec.protocol.http {
        let app_port = free_port()?;
        apps.push(spawn(
            "app",
            &spec.weft,
            &[
                "demo".into(),
                "echo".into(),
                "--service".into(),
                "bench".into(),
                "--port".into(),
                app_port.to_string(),
            ],
            &[
                ("WEFT_LOG", "warn".into()),
                ("WEFT_INSTANCE", "bench-0".into()),
            ],
            cpu,
            false,
        )?);
        let app_pid = apps.iter().map(Proc::pid).collect::<Vec<_>>();
        let app = SocketAddr::from(([127, 0, 0, 1], app_port));
        wait_path(app, "the app")?;
        paths.push(Path {
            name: "direct",
            description: "client → app",
            target: app,
            proxies: vec![],
            app: app_pid.clone(),
            netns: None,
            base: None,
            _procs: vec![],
        });
        paths.push(Path {
            app: app_pid.clone(),
            ..start_weft(spec, &control, app_port, cpu)?
        });
        if spec.transparent {
            paths.extend(transparent::start(spec, cpu)?);
        }
        if let Some(envoy) = &spec.envoy {
            paths.push(Path {
                app: app_pid,
                ..start_envoy(spec, envoy, app_port, cpu)?
            });
        }
    }
    let mut tcp_paths = Vec::new();
    if spec.protocol.tcp {
        let (echo, app) = tcp::start_app(spec, cpu)?;
        apps.push(app);
        tcp_paths.push(Path {
            name: "tcp-direct",
            description: "client → TCP echo",
            target: echo,
            proxies: vec![],
            app: vec![],
            netns: None,
            base: None,
            _procs: vec![],
        });
        tcp_paths.push(tcp::start_weft(spec, &control, echo, cpu)?);
        if let Some(envoy) = &spec.envoy {
            tcp_paths.push(tcp::start_envoy(spec, envoy, echo, cpu)?);
        }
    }

    // Warm up every path (connections, pools, caches), then measure idle cost.
    for p in &paths {
        step(
            p,
            load_spec(
                p.target,
                Some(500.0),
                Duration::from_secs(1),
                spec.connections,
                spec.shape,
            ),
        )?;
    }
    for p in &tcp_paths {
        tcp::step(p, spec.tcp_chunk, Duration::from_secs(1), spec.connections)?;
    }
    // Idle means steady idle: the warm-up's connections are closed and their teardown is done
    // before the window opens, so what is left is timers, keep-alives and the control stream.
    std::thread::sleep(IDLE_SETTLE);
    let mut idle = Vec::new();
    for p in paths.iter().chain(&tcp_paths) {
        let rss = p.proxies.iter().map(|pid| rss_kib(*pid)).max();
        let before = cpu_of(&p.proxies);
        idle.push((rss, before));
    }
    std::thread::sleep(IDLE_WINDOW);
    let mut idle: Vec<(Option<u64>, Option<f64>)> = paths
        .iter()
        .chain(&tcp_paths)
        .zip(idle)
        .map(|(p, (rss, before))| {
            let ms = (cpu_of(&p.proxies).saturating_sub(before)).as_secs_f64() * 1e3
                / IDLE_WINDOW.as_secs_f64();
            (rss, (!p.proxies.is_empty()).then_some(ms))
        })
        .collect();
    let tcp_idle = idle.split_off(paths.len());

    // fixed[path][rate]: one sample per round; added[path][rate]: (p50, p99) minus its
    // baseline's in the same round.
    let mut fixed: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); spec.rates.len()]; paths.len()];
    let mut added: Vec<Vec<Vec<(f64, f64)>>> =
        vec![vec![Vec::new(); spec.rates.len()]; paths.len()];
    let mut peak: Vec<Vec<PeakSample>> = vec![Vec::new(); paths.len()];
    let mut tcp_rounds: Vec<tcp::Rounds> = tcp_paths.iter().map(|_| Default::default()).collect();
    for round in 0..spec.rounds {
        // Every other round runs the paths in reverse (A B C, C B A, …), so no path always
        // runs first, last or right after the same other path: what a step leaves behind (or
        // a machine that drifts within a round) weighs on each path alike over the rounds.
        let order = |n: usize| round_order(round, n);
        for (ri, &rate) in spec.rates.iter().enumerate() {
            let mut this_round = vec![None; paths.len()];
            for pi in order(paths.len()) {
                let p = &paths[pi];
                let Stepped { report: r, per, .. } = step(
                    p,
                    load_spec(
                        p.target,
                        Some(rate),
                        spec.step,
                        spec.connections,
                        spec.shape,
                    ),
                )?;
                let l = &r.latency_us;
                log(&format!(
                    "round {} {:>6} @ {rate} rps: p50 {} µs p99 {} µs, {} failed",
                    round + 1,
                    p.name,
                    l.p50,
                    l.p99,
                    r.failed
                ));
                let s = Sample {
                    p50: l.p50 as f64,
                    p95: l.p95 as f64,
                    p99: l.p99 as f64,
                    per,
                    rps: r.achieved_rps,
                    failed: r.failed,
                };
                fixed[pi][ri].push(s);
                this_round[pi] = Some(s);
            }
            for (pi, p) in paths.iter().enumerate() {
                let base = p.base.and_then(|b| paths.iter().position(|q| q.name == b));
                if let (Some(s), Some(d)) = (this_round[pi], base.and_then(|b| this_round[b])) {
                    added[pi][ri].push((s.p50 - d.p50, s.p99 - d.p99));
                }
            }
        }
        for pi in order(paths.len()) {
            let p = &paths[pi];
            let Stepped {
                report: r,
                per,
                rss,
            } = step(
                p,
                load_spec(p.target, None, spec.peak, spec.connections, spec.shape),
            )?;
            log(&format!(
                "round {} {:>6} peak: {:.0} rps, {} failed",
                round + 1,
                p.name,
                r.achieved_rps,
                r.failed
            ));
            peak[pi].push(PeakSample {
                rps: r.achieved_rps,
                per,
                rss,
                failed: r.failed,
            });
        }
        for pi in order(tcp_paths.len()) {
            let p = &tcp_paths[pi];
            let s = tcp::step(p, spec.tcp_chunk, spec.peak, spec.connections)?;
            log(&format!(
                "round {} {:>10} throughput: {:.1} MiB/s, {} failed",
                round + 1,
                p.name,
                s.report.mib_per_s,
                s.report.failed()
            ));
            tcp_rounds[pi].bulk.push(s);
        }
        let mut ping: Vec<Option<(f64, f64)>> = vec![None; tcp_paths.len()];
        for pi in order(tcp_paths.len()) {
            let p = &tcp_paths[pi];
            let s = tcp::step(p, tcp::PING_BYTES, spec.step, spec.connections)?;
            let l = &s.report.latency_us;
            log(&format!(
                "round {} {:>10} ping-pong: {:.0} messages/s, p50 {} µs p99 {} µs, {} failed",
                round + 1,
                p.name,
                s.report.exchanges_per_s,
                l.p50,
                l.p99,
                s.report.failed()
            ));
            ping[pi] = Some((l.p50 as f64, l.p99 as f64));
            tcp_rounds[pi].ping.push(s);
        }
        // The first TCP path is the direct one, the others' baseline.
        if let Some(&Some(d)) = ping.first() {
            for (pi, p) in ping.iter().enumerate().skip(1) {
                if let Some((p50, p99)) = p {
                    tcp_rounds[pi].ping_added.push((p50 - d.0, p99 - d.1));
                }
            }
        }
    }

    let opt_median = |v: Vec<Option<f64>>| -> Option<f64> {
        let v: Vec<f64> = v.into_iter().flatten().collect();
        (!v.is_empty()).then(|| median(v))
    };
    let results: Vec<PathResult> = paths
        .iter()
        .enumerate()
        .map(|(pi, p)| PathResult {
            name: p.name.into(),
            description: p.description.into(),
            proxies: p.proxies.len(),
            peak_rps: median(peak[pi].iter().map(|x| x.rps).collect()),
            peak_cpu_us_per_request: opt_median(peak[pi].iter().map(|x| x.per.cpu).collect()),
            peak_app_cpu_us_per_request: opt_median(
                peak[pi].iter().map(|x| x.per.app_cpu).collect(),
            ),
            peak_failed: peak[pi].iter().map(|x| x.failed).sum(),
            peak_rounds: peak[pi]
                .iter()
                .map(|x| PeakRound {
                    rps: x.rps,
                    cpu_us_per_request: x.per.cpu,
                    app_cpu_us_per_request: x.per.app_cpu,
                })
                .collect(),
            rates: spec
                .rates
                .iter()
                .enumerate()
                .map(|(ri, &rate)| {
                    let s = &fixed[pi][ri];
                    let a = &added[pi][ri];
                    RateResult {
                        rate,
                        p50_us: median(s.iter().map(|x| x.p50).collect()),
                        p95_us: median(s.iter().map(|x| x.p95).collect()),
                        p99_us: median(s.iter().map(|x| x.p99).collect()),
                        added_p50_us: (!a.is_empty())
                            .then(|| median(a.iter().map(|x| x.0).collect())),
                        added_p99_us: (!a.is_empty())
                            .then(|| median(a.iter().map(|x| x.1).collect())),
                        cpu_us_per_request: opt_median(s.iter().map(|x| x.per.cpu).collect()),
                        app_cpu_us_per_request: opt_median(
                            s.iter().map(|x| x.per.app_cpu).collect(),
                        ),
                        slices_per_request: opt_median(s.iter().map(|x| x.per.slices).collect()),
                        app_slices_per_request: opt_median(
                            s.iter().map(|x| x.per.app_slices).collect(),
                        ),
                        achieved_rps: median(s.iter().map(|x| x.rps).collect()),
                        failed: s.iter().map(|x| x.failed).sum(),
                        rounds: s
                            .iter()
                            .enumerate()
                            .map(|(i, x)| RateRound {
                                p50_us: x.p50,
                                p99_us: x.p99,
                                added_p50_us: a.get(i).map(|a| a.0),
                                added_p99_us: a.get(i).map(|a| a.1),
                                cpu_us_per_request: x.per.cpu,
                                app_cpu_us_per_request: x.per.app_cpu,
                                slices_per_request: x.per.slices,
                                app_slices_per_request: x.per.app_slices,
                            })
                            .collect(),
                    }
                })
                .collect(),
            rss_idle_kib: idle[pi].0,
            rss_load_kib: (!p.proxies.is_empty())
                .then(|| peak[pi].iter().map(|x| x.rss).max().unwrap_or(0)),
            idle_cpu_ms_per_s: idle[pi].1,
        })
        .collect();
    let tcp_results: Vec<TcpPathResult> = tcp_paths
        .iter()
        .zip(&tcp_rounds)
        .zip(tcp_idle)
        .map(|((p, r), idle)| r.result(p, idle))
        .collect();
    let transparent_vs_explicit = transparent_ratios(&results);
    let mut weft_vs_envoy = ratios(&results);
    if let Some(t) = tcp::ratios(&tcp_results) {
        match &mut weft_vs_envoy {
            Some(serde_json::Value::Object(m)) => m.extend(t),
            _ => weft_vs_envoy = Some(serde_json::Value::Object(t)),
        }
    }
    Ok(BenchReport {
        schema: SCHEMA.into(),
        rounds: spec.rounds,
        step_s: spec.step.as_secs_f64(),
        peak_s: spec.peak.as_secs_f64(),
        connections: spec.connections,
        pinned: spec.pin,
        paths: results,
        weft_vs_envoy,
        transparent_vs_explicit,
        tcp_paths: tcp_results,
        tcp_chunk_bytes: spec.tcp_chunk,
        tcp_ping_bytes: tcp::PING_BYTES,
        body_bytes: spec.shape.body_size,
        h2: spec.shape.h2,
    })
}

/// The transparent path ÷ the explicit one (`weft-transparent` ÷ `weft`; each one's added
/// latency counted from the same network without the mesh: `pods-direct` and `direct`), and,
/// under `pods_explicit`, ÷ the explicit path in the same pods (`weft-pods-explicit`): what
/// capture itself costs; under `proxy_env`, ÷ the same two services in a `weft up` mesh without
/// pods (`weft-proxy-env`): what the mesh's interception mode costs, the rest of the mesh alike.
/// `pods_network_p50_us`, per rate: what the pods' network adds to a call with no mesh
/// (`pods-direct`'s p50 minus `direct`'s).
fn transparent_ratios(paths: &[PathResult]) -> Option<serde_json::Value> {
    let w = paths.iter().find(|p| p.name == "weft")?;
    let t = paths.iter().find(|p| p.name == "weft-transparent")?;
    let mut r = path_ratios(t, w);
    if let (Some(pd), Some(d), Some(o)) = (
        paths.iter().find(|p| p.name == "pods-direct"),
        paths.iter().find(|p| p.name == "direct"),
        r.as_object_mut(),
    ) {
        let net: serde_json::Map<String, serde_json::Value> = pd
            .rates
            .iter()
            .zip(&d.rates)
            .map(|(a, b)| {
                (
                    format!("{}", a.rate),
                    serde_json::json!(a.p50_us - b.p50_us),
                )
            })
            .collect();
        o.insert("pods_network_p50_us".into(), net.into());
    }
    if let (Some(e), Some(o)) = (
        paths.iter().find(|p| p.name == "weft-pods-explicit"),
        r.as_object_mut(),
    ) {
        o.insert("pods_explicit".into(), path_ratios(t, e));
    }
    if let (Some(e), Some(o)) = (
        paths.iter().find(|p| p.name == "weft-proxy-env"),
        r.as_object_mut(),
    ) {
        o.insert("proxy_env".into(), path_ratios(t, e));
    }
    Some(r)
}

/// weft ÷ Envoy.
fn ratios(paths: &[PathResult]) -> Option<serde_json::Value> {
    let w = paths.iter().find(|p| p.name == "weft")?;
    let e = paths.iter().find(|p| p.name == "envoy")?;
    Some(path_ratios(w, e))
}

/// `a` ÷ `b` for each figure of two paths: peak throughput, CPU per request at peak, RSS under
/// load, and per rate the latency added over the direct path and the CPU per request; the
/// medians' ratio, and under `…_rounds` the ratio in each round (the paths ran side by side in
/// it). A ratio of an added latency that came out negative (noise below the direct path's) is
/// null.
fn path_ratios(a: &PathResult, b: &PathResult) -> serde_json::Value {
    let div = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 && x >= 0.0 => {
            serde_json::json!((x / y * 100.0).round() / 100.0)
        }
        _ => serde_json::Value::Null,
    };
    // Round by round (the paths ran side by side in each round): `f` of each of a's rounds ÷
    // `f` of b's.
    fn rounds<R>(
        a: &[R],
        b: &[R],
        f: fn(&R) -> Option<f64>,
        div: impl Fn(Option<f64>, Option<f64>) -> serde_json::Value,
    ) -> Vec<serde_json::Value> {
        a.iter().zip(b).map(|(x, y)| div(f(x), f(y))).collect()
    }
    let mut per_rate = serde_json::Map::new();
    for (ar, br) in a.rates.iter().zip(&b.rates) {
        let (ars, brs) = (&ar.rounds[..], &br.rounds[..]);
        per_rate.insert(
            format!("{}", ar.rate),
            serde_json::json!({
                "added_p50": div(ar.added_p50_us, br.added_p50_us),
                "added_p99": div(ar.added_p99_us, br.added_p99_us),
                "cpu_per_request": div(ar.cpu_us_per_request, br.cpu_us_per_request),
                "added_p50_rounds": rounds(ars, brs, |r| r.added_p50_us, div),
                "cpu_per_request_rounds": rounds(ars, brs, |r| r.cpu_us_per_request, div),
            }),
        );
    }
    let (ap, bp) = (&a.peak_rounds[..], &b.peak_rounds[..]);
    serde_json::json!({
        "peak_rps": div(Some(a.peak_rps), Some(b.peak_rps)),
        "peak_rps_rounds": rounds(ap, bp, |r| Some(r.rps), div),
        "peak_cpu_per_request": div(a.peak_cpu_us_per_request, b.peak_cpu_us_per_request),
        "peak_cpu_per_request_rounds": rounds(ap, bp, |r| r.cpu_us_per_request, div),
        "rss_load": div(a.rss_load_kib.map(|v| v as f64), b.rss_load_kib.map(|v| v as f64)),
        "rates": per_rate,
    })
}

impl BenchReport {
    /// The guide's table: one row per path.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "weft bench: {} rounds, {}s per rate step, {}s peak steps, {} {}{}{}; medians over rounds",
            self.rounds,
            self.step_s,
            self.peak_s,
            self.connections,
            if self.h2 { "requests in flight over HTTP/2 (h2c)" } else { "connections" },
            if self.body_bytes > 0 { format!(", {}-byte responses", self.body_bytes) } else { String::new() },
            if self.pinned { ", load on CPU0, the rest on CPU1" } else { "" }
        );
        let f = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        for p in &self.paths {
            let _ = writeln!(out, "\n{} — {}", p.name, p.description);
            let rounds: Vec<f64> = p.peak_rounds.iter().map(|r| r.rps).collect();
            let spread = Spread::of(&rounds);
            let app = |v: Option<f64>| {
                v.map(|v| format!(", app CPU {v:.0} µs/request"))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                out,
                "  peak {:.0} rps (rounds {:.0}–{:.0}, {} failed), proxy CPU {} µs/request at peak{}",
                p.peak_rps,
                spread.min,
                spread.max,
                p.peak_failed,
                f(p.peak_cpu_us_per_request),
                app(p.peak_app_cpu_us_per_request)
            );
            for r in &p.rates {
                let _ = writeln!(
                    out,
                    "  @{:>6} rps: p50 {:>5.0} µs  p95 {:>5.0} µs  p99 {:>5.0} µs  added p50 {:>5} µs  p99 {:>5} µs  proxy CPU {:>4} µs/request{}  ({} failed)",
                    r.rate,
                    r.p50_us,
                    r.p95_us,
                    r.p99_us,
                    f(r.added_p50_us),
                    f(r.added_p99_us),
                    f(r.cpu_us_per_request),
                    app(r.app_cpu_us_per_request),
                    r.failed
                );
            }
            if p.proxies > 0 {
                let _ = writeln!(
                    out,
                    "  RSS per proxy: idle {} KiB, under load {} KiB; idle CPU {} ms/s ({} proxies)",
                    p.rss_idle_kib.map(|v| v.to_string()).unwrap_or_default(),
                    p.rss_load_kib.map(|v| v.to_string()).unwrap_or_default(),
                    p.idle_cpu_ms_per_s.map(|v| format!("{v:.2}")).unwrap_or_default(),
                    p.proxies
                );
            }
        }
        if !self.tcp_paths.is_empty() {
            tcp::text(
                &mut out,
                &self.tcp_paths,
                self.tcp_chunk_bytes,
                self.tcp_ping_bytes,
            );
        }
        if let Some(r) = &self.weft_vs_envoy {
            let _ = writeln!(out, "\nweft ÷ envoy: {r}");
        }
        if let Some(r) = &self.transparent_vs_explicit {
            let _ = writeln!(out, "\nweft-transparent ÷ weft: {r}");
        }
        out
    }
}

#[cfg(test)]
mod tests;
