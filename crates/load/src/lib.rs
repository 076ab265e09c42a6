//! The load generator behind `weft load` and `weft bench`: drives HTTP/1.1 or h2c traffic at
//! a fixed rate (open model, coordinated-omission corrected like wrk2) or as fast as the target
//! answers (closed model), and reports throughput, status codes, errors and an HDR latency histogram.
//!
//! Layout:
//! - [`LoadSpec`], [`LoadError`], [`run`], [`run_blocking`] (here): what to send and the entry points.
//! - `plan`: validates a spec into a `Plan` — resolved address, prebuilt request parts, the stop rule.
//! - `conn`: connections — one keep-alive HTTP/1.1 connection per lane, or h2c connections shared by
//!   several lanes — built on hyper's low-level `client::conn` API with `TCP_NODELAY`.
//! - `lane`: the per-lane send loops (open schedule or back-to-back), timeouts, error kinds, and the
//!   per-lane histogram.
//! - `timer`: a precise timer thread that finishes the open model's waits, since tokio's
//!   millisecond timers would add up to ~2 ms to latencies measured from the intended send time.
//! - [`Report`], [`Latency`] (`report`): merging lanes into one result, JSON and text renderings.
//! - [`Slo`], [`parse_success`] (`slo`): pass/fail gates over a report.
//! - [`Progress`], [`spawn_progress_printer`] (`progress`): live counters and the stderr progress bar.
//! - [`TcpSpec`], [`run_tcp`], [`TcpReport`] (`tcp`): TCP echo load — connections that each write a
//!   chunk and read it back, in a closed loop; throughput, round trips, intact bytes, half-closes.
//! - [`bench`]: `weft bench` — the same workload direct, through weft's two-hop path and through
//!   Envoy's, interleaved in rounds, with proxy CPU and memory read from `/proc`.
//!
//! The crate does not depend on any other weft crate.

pub mod bench;
mod conn;
mod h1;
mod lane;
mod plan;
mod progress;
mod report;
mod slo;
mod tcp;
#[cfg(test)]
mod tests;
mod timer;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};

pub use progress::{spawn_progress_printer, Progress, ProgressPrinter, ProgressTotal};
pub use report::{Latency, Report, SendLag, SCHEMA};
pub use slo::{parse_success, Slo};
pub use tcp::{run_tcp, run_tcp_blocking, TcpReport, TcpSpec};

/// The run length when a spec gives neither `duration` nor `requests`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// The per-request timeout `weft load` uses unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to send, how fast, and for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `http://host:port/path?query` (`https` is not supported).
    pub url: Uri,
    pub method: Method,
    /// Sent with every request. A `Host` header here overrides the URL's authority.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Sent with every request (empty: no body).
    pub body: Bytes,
    /// Requests per second over all lanes (open model); `None` sends back-to-back (closed model).
    pub rate: Option<f64>,
    /// Stop sending after this long. With `requests` too, whichever comes first; with neither, 10 s.
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// TCP connections. With HTTP/1.1 each is one lane (one request in flight at a time).
    pub connections: usize,
    /// Requests in flight at once (lanes). HTTP/2 only: the lanes share the `connections` as
    /// streams; with HTTP/1.1 it is ignored and the number of lanes is `connections`.
    pub concurrency: usize,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    pub http2: bool,
    /// Per request, from the moment it is sent (including any reconnect) to the end of its body.
    pub timeout: Duration,
}

impl LoadSpec {
    /// A `GET` of `url` in the closed model for 10 s over 16 HTTP/1.1 connections.
    pub fn new(url: Uri) -> LoadSpec {
        LoadSpec {
            url,
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            rate: None,
            duration: None,
            requests: None,
            connections: 16,
            concurrency: 16,
            http2: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why a run could not start (failed requests are counted in the [`Report`], never returned here).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load spec: {0}")]
    InvalidSpec(String),
    #[error("unsupported URL {url}: {reason}")]
    UnsupportedUrl { url: String, reason: String },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot start the load runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("a load lane failed: {0}")]
    Lane(String),
}

/// Runs `spec` on the current tokio runtime (one task per lane) and returns the merged report.
///
/// Connections are opened before the clock starts. A request that fails is counted in the report by
/// kind; only a spec that cannot run at all is an error. `progress`, when given, is updated after
/// every request and can cancel the run early ([`Progress::cancel`]).
pub async fn run(spec: LoadSpec, progress: Option<Arc<Progress>>) -> Result<Report, LoadError> {
    let plan = plan::Plan::new(&spec).await?;
    let lanes = plan.lanes;
    let h2 = conn::H2Pool::new(&plan);
    // Open the connections first so the handshakes do not count against the first requests.
    let mut conns: Vec<Option<conn::LaneConn>> = (0..lanes).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let (plan, c) = (plan.clone(), conn::LaneConn::new(h2.clone(), lane));
        set.spawn(async move { (lane, c.warm(&plan).await) });
    }
    while let Some(joined) = set.join_next().await {
        let (lane, c) = joined.map_err(|e| LoadError::Lane(e.to_string()))?;
        conns[lane] = Some(c);
    }

    let start = Instant::now();
    if let Some(p) = &progress {
        p.mark_started();
    }
    let shared = Arc::new(lane::Shared::new(plan.clone(), start, progress.clone()));
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in conns.into_iter().enumerate() {
        let c = c.unwrap_or_else(|| conn::LaneConn::new(h2.clone(), i));
        set.spawn(lane::run_lane(shared.clone(), i, c));
    }
    let mut results = Vec::with_capacity(lanes);
    while let Some(joined) = set.join_next().await {
        results.push(joined.map_err(|e| LoadError::Lane(e.to_string()))?);
    }
    let mut elapsed = start.elapsed();
    let interrupted = progress.as_ref().is_some_and(|p| p.is_cancelled());
    if let (plan::Mode::Open { rate }, false) = (plan.mode, interrupted) {
        // A schedule of n sends at rate r spans n / r seconds even though the last one goes out
        // at (n - 1) / r: count the whole span, so a run that kept up reports exactly the rate.
        let mut span = plan.duration.map_or(f64::INFINITY, |d| d.as_secs_f64());
        if let Some(n) = plan.requests {
            span = span.min(n as f64 / rate);
        }
        if let Ok(span) = Duration::try_from_secs_f64(span) {
            elapsed = elapsed.max(span);
        }
    }
    Ok(report::Report::build(&plan, elapsed, results, interrupted))
}

/// [`run`] on a new current-thread runtime (the whole load on one core); blocks until done.
pub fn run_blocking(spec: LoadSpec, progress: Option<Arc<Progress>>) -> Result<Report, LoadError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    rt.block_on(run(spec, progress))
}
