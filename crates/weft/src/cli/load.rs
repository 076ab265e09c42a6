//! `weft load`: drive HTTP load at a URL (fixed rate or as fast as it answers) and report
//! throughput, status codes, errors and latency percentiles; optional SLO gates set the exit code.

use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Uri};

use super::{parse_duration, Output};

/// Exit code when an SLO gate is missed.
const SLO_MISSED: i32 = 3;

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Target URL: http://host:port/path?query (h2c with --http2; https is not supported)
    url: String,
    /// Requests per second over all connections (open model: latency is measured from each
    /// request's intended send time, so queueing behind slow answers shows)
    #[arg(long, conflicts_with = "max")]
    rate: Option<f64>,
    /// Send as fast as the target answers (closed model; the default)
    #[arg(long)]
    max: bool,
    /// How long to send [default: 10s unless --requests is given]
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Stop after this many requests
    #[arg(long)]
    requests: Option<u64>,
    /// TCP connections [default: 16 for HTTP/1.1, 1 for HTTP/2]
    #[arg(long)]
    connections: Option<usize>,
    /// Requests in flight at once; with HTTP/1.1 this is the number of connections
    /// [default: the connections for HTTP/1.1, 16 for HTTP/2]
    #[arg(long)]
    concurrency: Option<usize>,
    /// Use HTTP/2 with prior knowledge (h2c)
    #[arg(long)]
    http2: bool,
    /// Request method [default: GET, or POST when --body is given]
    #[arg(long)]
    method: Option<String>,
    /// A request header, 'Name: value' (repeatable)
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The request body, or @FILE to send a file's contents
    #[arg(long)]
    body: Option<String>,
    /// Per-request timeout (counted as a `timeout` error)
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    /// Fail (exit 3) when the p99 latency is above this
    #[arg(long, value_parser = parse_duration)]
    max_p99: Option<Duration>,
    /// Fail (exit 3) when the success ratio (2xx/3xx) is below this: 0.99 or 99%
    #[arg(long, value_parser = load::parse_success)]
    min_success: Option<f64>,
}

pub fn run(a: LoadArgs) -> anyhow::Result<i32> {
    let spec = spec(&a)?;
    let total = match (spec.requests, spec.duration) {
        (Some(n), _) => load::ProgressTotal::Requests(n),
        (None, d) => load::ProgressTotal::Duration(d.unwrap_or(load::DEFAULT_DURATION)),
    };
    let progress = load::Progress::new();
    stop_on_ctrl_c(progress.clone());
    let printer = load::spawn_progress_printer(progress.clone(), total);
    let report = load::run_blocking(spec, Some(progress));
    printer.finish();
    let report = report?;

    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report.to_text()),
    }
    let slo = load::Slo {
        max_p99: a.max_p99,
        min_success: a.min_success,
    };
    let violations = slo.check(&report);
    for v in &violations {
        eprintln!("weft load: SLO missed: {v}");
    }
    Ok(if violations.is_empty() { 0 } else { SLO_MISSED })
}

fn spec(a: &LoadArgs) -> anyhow::Result<load::LoadSpec> {
    let url = if a.url.contains("://") {
        a.url.clone()
    } else {
        format!("http://{}", a.url)
    };
    let url: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{:?} is not a URL: {e}", a.url))?;
    let mut spec = load::LoadSpec::new(url);

    if let Some(rate) = a.rate {
        if !(rate.is_finite() && rate > 0.0) {
            anyhow::bail!("--rate must be a positive number of requests per second, not {rate}");
        }
    }
    spec.rate = a.rate;
    spec.duration = a.duration;
    spec.requests = a.requests;
    spec.timeout = a.timeout;
    spec.http2 = a.http2;
    if spec.requests == Some(0) {
        anyhow::bail!("--requests must be at least 1");
    }

    (spec.connections, spec.concurrency) = if a.http2 {
        let connections = a.connections.unwrap_or(1);
        (connections, a.concurrency.unwrap_or(connections.max(16)))
    } else {
        // One request in flight per HTTP/1.1 connection: the two flags name the same thing.
        match (a.connections, a.concurrency) {
            (Some(c), Some(k)) if c != k => anyhow::bail!(
                "with HTTP/1.1 each connection carries one request at a time, so --concurrency \
                 ({k}) must equal --connections ({c}); use --http2 to multiplex"
            ),
            (Some(c), _) | (None, Some(c)) => (c, c),
            (None, None) => (16, 16),
        }
    };
    if spec.connections == 0 || spec.concurrency == 0 {
        anyhow::bail!("--connections and --concurrency must be at least 1");
    }

    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header {h:?} is not 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| anyhow::anyhow!("header {h:?}: bad name: {e}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| anyhow::anyhow!("header {h:?}: bad value: {e}"))?;
        spec.headers.push((name, value));
    }

    if let Some(body) = &a.body {
        spec.body = match body.strip_prefix('@') {
            Some("") => anyhow::bail!("--body @ needs a file name (@path/to/file)"),
            Some(path) => std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read the body from {path}: {e}"))?
                .into(),
            None => body.clone().into_bytes().into(),
        };
    }
    spec.method = match &a.method {
        Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| anyhow::anyhow!("{m:?} is not an HTTP method"))?,
        None if a.body.is_some() => Method::POST,
        None => Method::GET,
    };
    Ok(spec)
}

/// The first Ctrl-C (or SIGTERM) stops the load early and still prints the report; a second one
/// exits at once.
fn stop_on_ctrl_c(progress: std::sync::Arc<load::Progress>) {
    let watcher = std::thread::Builder::new()
        .name("load-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let token = tokio_util::sync::CancellationToken::new();
                tokio::spawn(super::on_signal(token.clone()));
                token.cancelled().await;
                progress.cancel();
                eprintln!("weft load: stopping (again to quit now)");
                let again = tokio_util::sync::CancellationToken::new();
                tokio::spawn(super::on_signal(again.clone()));
                again.cancelled().await;
                std::process::exit(130);
            });
        });
    // Without the watcher Ctrl-C simply ends the process, as it would for any command.
    drop(watcher);
}
