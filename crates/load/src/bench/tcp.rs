//! The benchmark's TCP paths: a TCP echo app (`weft demo tcp-echo`) reached directly, through
//! weft (a sidecar's local client port → mTLS HTTP/2 CONNECT → the app's sidecar) and through
//! two Envoys (`tcp_proxy` → mTLS → `tcp_proxy`); the steps that measure them, and the results.

use super::procs::{free_port, spawn, Proc};
use super::{envoy, measured, median, strings, tls, BenchError, BenchSpec, Control, Path};
use crate::tcp::{run_tcp_blocking, TcpReport, TcpSpec};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes per message of the ping-pong steps: a small request and its answer.
pub const PING_BYTES: usize = 64;

/// The service port the mesh gives `bench-tcp` (see `super::MESH`).
const SERVICE_PORT: u16 = 9000;

/// A figure over rounds: the median, and the spread from the lowest round to the highest.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub(super) fn of(v: &[f64]) -> Spread {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread {
            median: median(v.to_vec()),
            min: if v.is_empty() { f64::NAN } else { min },
            max: if v.is_empty() { f64::NAN } else { max },
        }
    }

    /// Over the rounds that have the figure; `None` when none has.
    fn of_some(v: &[Option<f64>]) -> Option<Spread> {
        let v: Vec<f64> = v.iter().flatten().copied().collect();
        (!v.is_empty()).then(|| Spread::of(&v))
    }

    fn text(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TcpPathResult {
    pub name: String,
    pub description: String,
    pub proxies: usize,
    /// Bytes echoed per second (one direction: each byte also crossed the path the other way),
    /// MiB (2^20 bytes), in the throughput steps.
    pub throughput_mib_s: Spread,
    /// Proxy CPU time (all of this path's proxies) per MiB echoed, in the throughput steps.
    pub cpu_us_per_mib: Option<Spread>,
    /// Round trip of one chunk in the throughput steps (µs).
    pub chunk_p50_us: Spread,
    pub chunk_p99_us: Spread,
    /// Connections that failed in the throughput steps (any error, summed over rounds).
    pub failed: u64,
    /// Messages echoed per second in the ping-pong steps.
    pub ping_messages_per_s: Spread,
    /// Round trip of one message (µs), and this path's minus the direct path's in the same
    /// round.
    pub ping_p50_us: Spread,
    pub ping_p99_us: Spread,
    pub ping_added_p50_us: Option<Spread>,
    pub ping_added_p99_us: Option<Spread>,
    pub ping_cpu_us_per_message: Option<Spread>,
    pub ping_failed: u64,
    /// Largest single proxy's RSS, idle and under load (either step).
    pub rss_idle_kib: Option<u64>,
    pub rss_load_kib: Option<u64>,
    /// CPU the path's proxies burn with no traffic, ms per second.
    pub idle_cpu_ms_per_s: Option<f64>,
}

/// One step of one TCP path, as measured.
#[derive(Clone)]
pub(super) struct TcpSample {
    pub report: TcpReport,
    /// Proxy CPU (µs) per MiB echoed and per chunk; `None` for the direct path.
    pub cpu_per_mib: Option<f64>,
    pub cpu_per_exchange: Option<f64>,
    pub rss: u64,
}

/// Runs one TCP step on `path`: `connections` connections echoing `chunk`-byte chunks for
/// `duration`.
pub(super) fn step(
    path: &Path,
    chunk: usize,
    duration: Duration,
    connections: usize,
) -> Result<TcpSample, BenchError> {
    let mut spec = TcpSpec::new(path.target);
    spec.connections = connections;
    spec.chunk = chunk;
    spec.duration = duration;
    let (report, w) = measured(&path.proxies, &path.app, || run_tcp_blocking(spec));
    let (cpu, rss) = (w.cpu, w.rss);
    let report = report?;
    let proxied = !path.proxies.is_empty();
    let us = cpu.as_secs_f64() * 1e6;
    let mib = report.bytes_echoed as f64 / (1u64 << 20) as f64;
    Ok(TcpSample {
        cpu_per_mib: (proxied && mib > 0.0).then(|| us / mib),
        cpu_per_exchange: (proxied && report.exchanges > 0).then(|| us / report.exchanges as f64),
        report,
        rss,
    })
}

/// Starts the TCP echo app on a free port; its address once it echoes.
pub(super) fn start_app(
    spec: &BenchSpec,
    cpu: Option<usize>,
) -> Result<(SocketAddr, Proc), BenchError> {
    let port = free_port()?;
    let app = spawn(
        "tcp-app",
        &spec.weft,
        &strings(&["demo", "tcp-echo", "--port", &port.to_string()]),
        &[("WEFT_LOG", "warn".into())],
        cpu,
        false,
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait(addr, "the TCP echo app")?;
    Ok((addr, app))
}

/// Waits until a byte sent to `target` comes back (the path is up end to end).
pub(super) fn wait(target: SocketAddr, what: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut spec = TcpSpec::new(target);
        spec.connections = 1;
        spec.chunk = 1;
        spec.exchanges = Some(1);
        spec.timeout = Duration::from_secs(2);
        if let Ok(r) = run_tcp_blocking(spec) {
            if r.exchanges == 1 && r.failed() == 0 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{what} never echoed through {target}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// weft's TCP path: the load generator connects to a local client port of a `loadgen`
/// sidecar, which tunnels each connection to `bench-tcp` as an HTTP/2 CONNECT stream on its
/// pooled (mTLS) connection to the `bench-tcp` sidecar, which connects to the echo app.
pub(super) fn start_weft(
    spec: &BenchSpec,
    control: &Control,
    app: SocketAddr,
    cpu: Option<usize>,
) -> Result<Path, BenchError> {
    let app = app.to_string();
    let (sidecar, _) = control.proxy(
        spec,
        "tcp-sidecar",
        "sidecar",
        "bench-tcp",
        &[
            "--workload",
            "bench-tcp-v1",
            "--instance",
            "bench-tcp-v1-0",
            "--app",
            &app,
            "--app-protocol",
            "tcp",
            "--inbound",
            "127.0.0.1:0",
        ],
        cpu,
    )?;
    let local = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let tcp_port = format!("bench-tcp:{SERVICE_PORT}@{local}");
    // A client's sidecar: its own app is never called here (the echo stands in for it, so
    // its readiness probe finds something), only its local client port is.
    let (client, _) = control.proxy(
        spec,
        "tcp-client",
        "sidecar",
        "loadgen",
        &[
            "--workload",
            "loadgen",
            "--instance",
            "loadgen-tcp-0",
            "--app",
            &app,
            "--app-protocol",
            "tcp",
            "--inbound",
            "127.0.0.1:0",
            "--tcp-port",
            &tcp_port,
        ],
        cpu,
    )?;
    wait(local, "weft's TCP path")?;
    Ok(Path {
        name: "tcp-weft",
        description: if spec.mtls {
            "client → weft local client port → mTLS HTTP/2 CONNECT → weft inbound → TCP echo"
        } else {
            "client → weft local client port → HTTP/2 CONNECT → weft inbound → TCP echo"
        },
        target: local,
        proxies: vec![client.pid(), sidecar.pid()],
        app: vec![],
        netns: None,
        base: Some("tcp-direct"),
        _procs: vec![client, sidecar],
    })
}

/// Envoy's TCP path: an outbound Envoy whose `tcp_proxy` listener sends each connection over
/// mTLS to an inbound Envoy, whose TLS-terminating `tcp_proxy` listener sends it to the app.
pub(super) fn start_envoy(
    spec: &BenchSpec,
    envoy: &std::path::Path,
    app: SocketAddr,
    cpu: Option<usize>,
) -> Result<Path, BenchError> {
    let (inbound, outbound) = (free_port()?, free_port()?);
    let certs = if spec.mtls {
        Some(tls::EnvoyCerts::write(&spec.workdir)?)
    } else {
        None
    };
    let mut procs = Vec::new();
    for (name, listen, upstream, client_side) in [
        ("envoy-tcp-inbound", inbound, app.port(), false),
        ("envoy-tcp-outbound", outbound, inbound, true),
    ] {
        let file = spec.workdir.join(format!("{name}.yaml"));
        let hop = certs.as_ref().map(|c| {
            if client_side {
                envoy::Tls::Client(c)
            } else {
                envoy::Tls::Server(c)
            }
        });
        std::fs::write(
            &file,
            envoy::tcp_config(listen, upstream, free_port()?, hop),
        )?;
        procs.push(super::spawn_envoy(name, envoy, &file, listen, cpu)?);
    }
    let target = SocketAddr::from(([127, 0, 0, 1], outbound));
    wait(target, "Envoy's TCP path")?;
    Ok(Path {
        name: "tcp-envoy",
        description: if spec.mtls {
            "client → Envoy tcp_proxy → mTLS → Envoy tcp_proxy → TCP echo"
        } else {
            "client → Envoy tcp_proxy → Envoy tcp_proxy → TCP echo"
        },
        target,
        proxies: procs.iter().map(Proc::pid).collect(),
        app: vec![],
        netns: None,
        base: Some("tcp-direct"),
        _procs: procs,
    })
}

/// One path's samples over the rounds: throughput steps and ping-pong steps, and the ping's
/// round trip minus the direct path's in the same round.
#[derive(Default)]
pub(super) struct Rounds {
    pub bulk: Vec<TcpSample>,
    pub ping: Vec<TcpSample>,
    pub ping_added: Vec<(f64, f64)>,
}

impl Rounds {
    pub(super) fn result(&self, path: &Path, idle: (Option<u64>, Option<f64>)) -> TcpPathResult {
        let f = |v: &[TcpSample], g: &dyn Fn(&TcpSample) -> f64| {
            Spread::of(&v.iter().map(g).collect::<Vec<_>>())
        };
        let proxied = !path.proxies.is_empty();
        let added = |i: usize| {
            (!self.ping_added.is_empty()).then(|| {
                Spread::of(
                    &self
                        .ping_added
                        .iter()
                        .map(|a| if i == 0 { a.0 } else { a.1 })
                        .collect::<Vec<_>>(),
                )
            })
        };
        TcpPathResult {
            name: path.name.into(),
            description: path.description.into(),
            proxies: path.proxies.len(),
            throughput_mib_s: f(&self.bulk, &|s| s.report.mib_per_s),
            cpu_us_per_mib: Spread::of_some(
                &self.bulk.iter().map(|s| s.cpu_per_mib).collect::<Vec<_>>(),
            ),
            chunk_p50_us: f(&self.bulk, &|s| s.report.latency_us.p50 as f64),
            chunk_p99_us: f(&self.bulk, &|s| s.report.latency_us.p99 as f64),
            failed: self.bulk.iter().map(|s| s.report.failed()).sum(),
            ping_messages_per_s: f(&self.ping, &|s| s.report.exchanges_per_s),
            ping_p50_us: f(&self.ping, &|s| s.report.latency_us.p50 as f64),
            ping_p99_us: f(&self.ping, &|s| s.report.latency_us.p99 as f64),
            ping_added_p50_us: added(0),
            ping_added_p99_us: added(1),
            ping_cpu_us_per_message: Spread::of_some(
                &self
                    .ping
                    .iter()
                    .map(|s| s.cpu_per_exchange)
                    .collect::<Vec<_>>(),
            ),
            ping_failed: self.ping.iter().map(|s| s.report.failed()).sum(),
            rss_idle_kib: idle.0,
            rss_load_kib: proxied.then(|| {
                self.bulk
                    .iter()
                    .chain(&self.ping)
                    .map(|s| s.rss)
                    .max()
                    .unwrap_or(0)
            }),
            idle_cpu_ms_per_s: idle.1,
        }
    }
}

/// weft ÷ Envoy for the TCP figures, under keys starting `tcp_` (throughput and messages/s:
/// higher is better; the rest: lower is better).
pub(super) fn ratios(
    paths: &[TcpPathResult],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let w = paths.iter().find(|p| p.name == "tcp-weft")?;
    let e = paths.iter().find(|p| p.name == "tcp-envoy")?;
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => serde_json::json!((a / b * 100.0).round() / 100.0),
        _ => serde_json::Value::Null,
    };
    let m = |s: &Option<Spread>| s.as_ref().map(|s| s.median);
    // An excess over the direct path is only comparable when both paths have one: a noisy
    // direct round can make it negative, and a ratio of that means nothing.
    let added = |s: &Option<Spread>| m(s).filter(|v| *v > 0.0);
    let mut out = serde_json::Map::new();
    out.insert(
        "tcp_throughput".into(),
        div(
            Some(w.throughput_mib_s.median),
            Some(e.throughput_mib_s.median),
        ),
    );
    out.insert(
        "tcp_cpu_per_mib".into(),
        div(m(&w.cpu_us_per_mib), m(&e.cpu_us_per_mib)),
    );
    out.insert(
        "tcp_ping_messages_per_s".into(),
        div(
            Some(w.ping_messages_per_s.median),
            Some(e.ping_messages_per_s.median),
        ),
    );
    out.insert(
        "tcp_ping_added_p50".into(),
        div(added(&w.ping_added_p50_us), added(&e.ping_added_p50_us)),
    );
    out.insert(
        "tcp_ping_added_p99".into(),
        div(added(&w.ping_added_p99_us), added(&e.ping_added_p99_us)),
    );
    out.insert(
        "tcp_ping_cpu_per_message".into(),
        div(m(&w.ping_cpu_us_per_message), m(&e.ping_cpu_us_per_message)),
    );
    out.insert(
        "tcp_rss_load".into(),
        div(
            w.rss_load_kib.map(|v| v as f64),
            e.rss_load_kib.map(|v| v as f64),
        ),
    );
    Some(out)
}

/// The text report's TCP section.
pub(super) fn text(out: &mut String, paths: &[TcpPathResult], chunk: usize, ping: usize) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "\nTCP echo: {chunk}-byte chunks (throughput: bytes echoed per second, one direction) and {ping}-byte ping-pong; medians over rounds (lowest–highest round)"
    );
    let opt = |v: &Option<Spread>, d: usize| v.as_ref().map(|s| s.text(d)).unwrap_or("-".into());
    for p in paths {
        let _ = writeln!(out, "\n{} — {}", p.name, p.description);
        let _ = writeln!(
            out,
            "  throughput {} MiB/s, proxy CPU {} µs/MiB, chunk p50 {} µs p99 {} µs ({} failed)",
            p.throughput_mib_s.text(1),
            opt(&p.cpu_us_per_mib, 0),
            p.chunk_p50_us.text(0),
            p.chunk_p99_us.text(0),
            p.failed
        );
        let _ = writeln!(
            out,
            "  ping-pong {} messages/s, p50 {} µs p99 {} µs, added p50 {} µs p99 {} µs, proxy CPU {} µs/message ({} failed)",
            p.ping_messages_per_s.text(0),
            p.ping_p50_us.text(0),
            p.ping_p99_us.text(0),
            opt(&p.ping_added_p50_us, 0),
            opt(&p.ping_added_p99_us, 0),
            opt(&p.ping_cpu_us_per_message, 1),
            p.ping_failed
        );
        if p.proxies > 0 {
            let _ = writeln!(
                out,
                "  RSS per proxy: idle {} KiB, under load {} KiB; idle CPU {} ms/s ({} proxies)",
                p.rss_idle_kib.map(|v| v.to_string()).unwrap_or_default(),
                p.rss_load_kib.map(|v| v.to_string()).unwrap_or_default(),
                p.idle_cpu_ms_per_s
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_default(),
                p.proxies
            );
        }
    }
}
