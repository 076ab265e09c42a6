//! TCP echo load: `connections` connections to an echo service, each writing a chunk, reading
//! it back whole, and writing the next one (a closed loop), for a duration or a number of
//! chunks, whichever ends first. Every chunk read back is compared with what was written, and
//! each connection ends with a half-close and waits for the server's close, so a run also proves
//! that the path in between carries bytes intact and passes half-closes on.
//!
//! With large chunks (16 KiB) the figure is throughput; with small ones (64 B) it is a
//! request/response ping-pong whose exchanges per second and round-trip latency are the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::lane::{MAX_LATENCY_US, SIGFIG};
use crate::{Latency, LoadError};

/// How long a connection waits for the server's close after its own half-close: the run's
/// figures are taken by then, this only decides whether the close is counted as missing.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What to send where, and for how long.
#[derive(Clone, Debug)]
pub struct TcpSpec {
    pub target: SocketAddr,
    pub connections: usize,
    /// Bytes per chunk; each connection has one chunk in flight at a time.
    pub chunk: usize,
    /// Stop starting new chunks after this long.
    pub duration: Duration,
    /// Stop after this many chunks in total (over all connections); `None`: by duration only.
    pub exchanges: Option<u64>,
    /// For connecting, and for each chunk's round trip; a connection that exceeds it stops,
    /// counted under `timeout`.
    pub timeout: Duration,
}

impl TcpSpec {
    /// 16 connections of 16 KiB chunks for 10 s, 10 s per chunk at most.
    pub fn new(target: SocketAddr) -> TcpSpec {
        TcpSpec {
            target,
            connections: 16,
            chunk: 16 * 1024,
            duration: crate::DEFAULT_DURATION,
            exchanges: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a TCP run did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TcpReport {
    pub target: String,
    pub connections: usize,
    pub chunk_bytes: usize,
    /// Chunks written and read back whole.
    pub exchanges: u64,
    /// Bytes written, and bytes read back and found equal to them (the echo), over all
    /// connections.
    pub bytes_sent: u64,
    pub bytes_echoed: u64,
    /// From the start until the last connection's last chunk came back, in seconds.
    pub elapsed_s: f64,
    /// `bytes_echoed` per second in MiB (2^20 bytes): one direction; each byte also crossed the
    /// path the other way.
    pub mib_per_s: f64,
    pub exchanges_per_s: f64,
    /// Each chunk's round trip, from its write to the last byte of its echo (µs).
    pub latency_us: Latency,
    /// Connections that stopped early, by why: `connect`, `io`, `timeout`, `closed` (the server
    /// closed mid-chunk), `mismatch` (the echo differed); `no_close`: the server did not close
    /// within 5 s after the half-close.
    pub errors: BTreeMap<String, u64>,
}

impl TcpReport {
    /// Connections with any error.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How one connection ended.
struct ConnResult {
    exchanges: u64,
    sent: u64,
    echoed: u64,
    latency: Histogram<u64>,
    /// When its last chunk came back.
    last: Option<Instant>,
    error: Option<&'static str>,
}

/// Runs `spec` on the current tokio runtime: connects every connection first (so handshakes do
/// not count), then starts the clock.
pub async fn run_tcp(spec: TcpSpec) -> Result<TcpReport, LoadError> {
    if spec.connections == 0 || spec.chunk == 0 {
        return Err(LoadError::InvalidSpec(
            "connections and chunk must be at least 1".into(),
        ));
    }
    // The bytes sent: a fixed pattern, each chunk starting at another offset, so a chunk
    // echoed twice or out of order is seen.
    let pattern: Arc<Vec<u8>> = Arc::new((0..spec.chunk + 251).map(|i| (i % 251) as u8).collect());
    let mut streams = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let s = tokio::time::timeout(spec.timeout, TcpStream::connect(spec.target)).await;
        streams.push(match s {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            _ => None,
        });
    }
    let start = Instant::now();
    let deadline = start + spec.duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for (i, s) in streams.into_iter().enumerate() {
        let (spec, pattern, claimed) = (spec.clone(), pattern.clone(), claimed.clone());
        set.spawn(async move {
            match s {
                Some(s) => connection(s, i, &spec, &pattern, deadline, &claimed).await,
                None => ConnResult::failed("connect"),
            }
        });
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, SIGFIG)
        .map_err(|e| LoadError::Lane(e.to_string()))?;
    let mut report = TcpReport {
        target: spec.target.to_string(),
        connections: spec.connections,
        chunk_bytes: spec.chunk,
        exchanges: 0,
        bytes_sent: 0,
        bytes_echoed: 0,
        elapsed_s: 0.0,
        mib_per_s: 0.0,
        exchanges_per_s: 0.0,
        latency_us: Latency::default(),
        errors: BTreeMap::new(),
    };
    let mut last = start;
    while let Some(joined) = set.join_next().await {
        let c = joined.map_err(|e| LoadError::Lane(e.to_string()))?;
        report.exchanges += c.exchanges;
        report.bytes_sent += c.sent;
        report.bytes_echoed += c.echoed;
        let _ = latency.add(&c.latency);
        if let Some(t) = c.last {
            last = last.max(t);
        }
        if let Some(e) = c.error {
            *report.errors.entry(e.to_string()).or_default() += 1;
        }
    }
    let elapsed = last.duration_since(start).as_secs_f64();
    report.elapsed_s = elapsed;
    if elapsed > 0.0 {
        report.mib_per_s = report.bytes_echoed as f64 / elapsed / (1u64 << 20) as f64;
        report.exchanges_per_s = report.exchanges as f64 / elapsed;
    }
    report.latency_us = Latency::from_histogram(&latency);
    Ok(report)
}

/// [`run_tcp`] on a runtime of its own (one thread: the caller's), for callers outside tokio.
pub fn run_tcp_blocking(spec: TcpSpec) -> Result<TcpReport, LoadError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    rt.block_on(run_tcp(spec))
}

impl ConnResult {
    fn new() -> ConnResult {
        let mut latency = Histogram::new_with_bounds(1, 2, SIGFIG)
            .unwrap_or_else(|_| unreachable!("1..2 with 3 significant figures is a valid range"));
        latency.auto(true);
        ConnResult {
            exchanges: 0,
            sent: 0,
            echoed: 0,
            latency,
            last: None,
            error: None,
        }
    }

    fn failed(why: &'static str) -> ConnResult {
        ConnResult {
            error: Some(why),
            ..ConnResult::new()
        }
    }
}

/// One connection's closed loop, then its half-close and the wait for the server's close.
async fn connection(
    mut s: TcpStream,
    index: usize,
    spec: &TcpSpec,
    pattern: &[u8],
    deadline: Instant,
    claimed: &AtomicU64,
) -> ConnResult {
    let mut r = ConnResult::new();
    let mut buf = vec![0u8; spec.chunk];
    let mut seq = index;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(max) = spec.exchanges {
            if claimed.fetch_add(1, Ordering::Relaxed) >= max {
                break;
            }
        }
        let offset = seq % 251;
        seq += 1;
        let chunk = &pattern[offset..offset + spec.chunk];
        let sent = Instant::now();
        let (mut rd, mut wr) = s.split();
        // Written and read at once: a chunk larger than the socket buffers along the path
        // would otherwise stall with the echo blocked on writing back.
        let mut written = false;
        let write = async {
            wr.write_all(chunk).await?;
            written = true;
            Ok::<_, std::io::Error>(())
        };
        let exchange = async {
            tokio::try_join!(write, rd.read_exact(&mut buf))?;
            Ok::<_, std::io::Error>(())
        };
        let outcome = tokio::time::timeout(spec.timeout, exchange).await;
        if written {
            r.sent += spec.chunk as u64;
        }
        match outcome {
            Err(_) => {
                r.error = Some("timeout");
                return r;
            }
            Ok(Err(e)) => {
                r.error = Some(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "closed"
                } else {
                    "io"
                });
                return r;
            }
            Ok(Ok(())) => {}
        }
        let now = Instant::now();
        if buf != chunk {
            r.error = Some("mismatch");
            return r;
        }
        r.echoed += spec.chunk as u64;
        r.exchanges += 1;
        r.last = Some(now);
        let us = u64::try_from(now.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
        let us = us.clamp(1, MAX_LATENCY_US);
        if r.latency.record(us).is_err() {
            r.latency.saturating_record(us);
        }
    }
    // The half-close: the echo has nothing left to send back, so the next read is its close.
    let closed = async {
        s.shutdown().await?;
        let mut rest = [0u8; 64];
        s.read(&mut rest).await
    };
    match tokio::time::timeout(CLOSE_WAIT, closed).await {
        Ok(Ok(0)) => {}
        Ok(Ok(_)) => r.error = Some("mismatch"),
        Ok(Err(_)) | Err(_) => r.error = Some("no_close"),
    }
    r
}
