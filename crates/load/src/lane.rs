//! The send loops. A lane has at most one request in flight; the open model gives each lane its own
//! evenly spaced schedule and measures latency from the *intended* send time, so a late lane's
//! backlog shows up as latency (coordinated-omission correction, as in wrk2); the closed model
//! sends back-to-back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use http::StatusCode;
use tokio::time::Instant;

use crate::conn::{ExchangeFailed, LaneConn};
use crate::plan::{Mode, Plan};
use crate::timer::PreciseTimer;
use crate::Progress;

/// The largest latency recorded (3600 s in µs); longer ones are clamped to it.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant figures of every latency histogram.
pub(crate) const SIGFIG: u8 = 3;
/// Tokio's timers have millisecond granularity and fire up to ~2 ms after their deadline: an
/// open-model lane sleeps on tokio's timer until this long before its send time and finishes the
/// wait on the [`PreciseTimer`], so timer slack does not show up as latency.
const COARSE: Duration = Duration::from_millis(2);
/// A lane checks for cancellation at least this often while it waits.
const CANCEL_POLL: Duration = Duration::from_millis(100);
/// In the closed model, how long a lane waits after a failed connect before trying again.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Error kinds, in the order of [`ErrorKind::NAMES`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ErrorKind {
    Connect = 0,
    Timeout = 1,
    Io = 2,
}

impl ErrorKind {
    pub const NAMES: [&'static str; 3] = ["connect", "timeout", "io"];
}

/// State every lane reads.
pub(crate) struct Shared {
    plan: Arc<Plan>,
    start: Instant,
    deadline: Option<Instant>,
    /// Closed model with a request budget: requests claimed so far.
    tickets: AtomicU64,
    progress: Option<Arc<Progress>>,
    /// Open model: finishes each wait precisely.
    timer: Option<PreciseTimer>,
}

impl Shared {
    pub fn new(plan: Arc<Plan>, start: Instant, progress: Option<Arc<Progress>>) -> Shared {
        let deadline = plan.duration.and_then(|d| start.checked_add(d));
        let timer = match plan.mode {
            Mode::Open { .. } => PreciseTimer::start(),
            Mode::Closed => None,
        };
        Shared {
            timer,
            plan,
            start,
            deadline,
            tickets: AtomicU64::new(0),
            progress,
        }
    }

    fn cancelled(&self) -> bool {
        self.progress.as_ref().is_some_and(|p| p.is_cancelled())
    }

    fn past_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

/// What one lane measured.
#[derive(Debug)]
pub(crate) struct LaneResult {
    pub latency: Histogram<u64>,
    /// Responses by status code (few distinct codes: a short list beats a map).
    pub status: Vec<(StatusCode, u64)>,
    pub errors: [u64; 3],
    /// Open model: sends scheduled before the deadline that the lane was too late to make.
    pub missed: u64,
    /// Open model: the generator's own sending lateness (excluded from latency).
    pub lag_sum: Duration,
    pub lag_max: Duration,
    pub lag_count: u64,
}

impl LaneResult {
    fn new() -> LaneResult {
        // Auto-resizing from the smallest size: memory follows the largest latency seen, which
        // matters with thousands of lanes. Values are clamped to 1 µs..3600 s before recording.
        let mut latency = Histogram::new_with_bounds(1, 2, SIGFIG)
            .unwrap_or_else(|_| unreachable!("1..2 with 3 significant figures is a valid range"));
        latency.auto(true);
        LaneResult {
            latency,
            status: Vec::with_capacity(4),
            errors: [0; 3],
            missed: 0,
            lag_sum: Duration::ZERO,
            lag_max: Duration::ZERO,
            lag_count: 0,
        }
    }

    fn lag(&mut self, lag: Duration) {
        self.lag_sum += lag;
        self.lag_max = self.lag_max.max(lag);
        self.lag_count += 1;
    }

    fn response(&mut self, status: StatusCode, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // `record` grows the histogram as needed (`saturating_record` would clamp to its current
        // size instead); it can only fail if growing does.
        let us = us.clamp(1, MAX_LATENCY_US);
        if self.latency.record(us).is_err() {
            self.latency.saturating_record(us);
        }
        match self.status.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.status.push((status, 1)),
        }
    }
}

/// Whether a status counts as success (2xx and 3xx).
pub(crate) fn is_success(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection()
}

/// The offset from the start at which request `index` (counted over all lanes) is due at `rate`
/// requests per second; lane `i` of `k` sends indices `i, i + k, i + 2k, …`, so each lane's own
/// sends are evenly spaced `k / rate` apart and the lanes are staggered `1 / rate` apart.
pub(crate) fn intended_offset(index: u64, rate: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(index as f64 / rate).ok()
}

pub(crate) async fn run_lane(shared: Arc<Shared>, lane: usize, mut conn: LaneConn) -> LaneResult {
    let mut out = LaneResult::new();
    match shared.plan.mode {
        Mode::Open { rate } => open(&shared, lane, rate, &mut conn, &mut out).await,
        Mode::Closed => closed(&shared, &mut conn, &mut out).await,
    }
    out
}

async fn open(shared: &Shared, lane: usize, rate: f64, conn: &mut LaneConn, out: &mut LaneResult) {
    let lanes = shared.plan.lanes as u64;
    let mut index = lane as u64;
    let mut free_at = shared.start;
    loop {
        if shared.plan.requests.is_some_and(|n| index >= n) || shared.cancelled() {
            return;
        }
        let Some(intended) = intended_offset(index, rate).and_then(|o| shared.start.checked_add(o))
        else {
            return;
        };
        if let Some(deadline) = shared.deadline {
            if intended >= deadline {
                return;
            }
            if Instant::now() >= deadline {
                out.missed += missed(shared, index, rate, deadline);
                return;
            }
        }
        if !wait_until(shared, intended).await {
            return;
        }
        // Latency counts from the intended time, so a lane held up by a slow answer shows the
        // wait. Only the generator's own lateness is taken out: the time between the moment the
        // lane was both due and free and the moment it actually sent (timer slack, a busy runtime).
        let sent = Instant::now();
        let lag = sent.saturating_duration_since(intended.max(free_at));
        out.lag(lag);
        let _ = send(shared, conn, out, Some(intended + lag)).await;
        free_at = Instant::now();
        index = match index.checked_add(lanes) {
            Some(i) => i,
            None => return,
        };
    }
}

/// How many of this lane's sends, from `index` on, were due before `deadline`.
fn missed(shared: &Shared, index: u64, rate: f64, deadline: Instant) -> u64 {
    let window = deadline
        .saturating_duration_since(shared.start)
        .as_secs_f64();
    // Indices due strictly before the deadline: index / rate < window.
    let mut due = (window * rate).ceil() as u64;
    if let Some(n) = shared.plan.requests {
        due = due.min(n);
    }
    let lanes = shared.plan.lanes as u64;
    due.saturating_sub(index).div_ceil(lanes)
}

/// Sleeps until `at`. False if the run was cancelled meanwhile.
async fn wait_until(shared: &Shared, at: Instant) -> bool {
    loop {
        let now = Instant::now();
        if now >= at {
            return true;
        }
        if at - now > COARSE {
            let mut wake = at - COARSE;
            if shared.progress.is_some() {
                wake = wake.min(now + CANCEL_POLL);
            }
            tokio::time::sleep_until(wake).await;
            if shared.cancelled() {
                return false;
            }
        } else {
            match &shared.timer {
                Some(timer) => timer.sleep_until(at).await,
                None => tokio::time::sleep_until(at).await,
            }
            return true;
        }
    }
}

async fn closed(shared: &Shared, conn: &mut LaneConn, out: &mut LaneResult) {
    loop {
        let now = Instant::now();
        if shared.past_deadline(now) || shared.cancelled() {
            return;
        }
        if let Some(n) = shared.plan.requests {
            if shared.tickets.fetch_add(1, Ordering::Relaxed) >= n {
                return;
            }
        }
        if let Err(ErrorKind::Connect) = send(shared, conn, out, None).await {
            // Do not hammer a port nothing listens on; the next attempt still counts.
            let mut until = Instant::now() + CONNECT_BACKOFF;
            if let Some(deadline) = shared.deadline {
                until = until.min(deadline);
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

#[derive(Debug, PartialEq)]
enum Attempt {
    NotSent,
    Failed(ErrorKind),
}

/// Connects if needed and makes one exchange, all before `deadline`.
async fn exchange(
    plan: &Plan,
    conn: &mut LaneConn,
    deadline: Instant,
) -> Result<(StatusCode, Instant), Attempt> {
    if conn.ensure(plan, deadline).await.is_err() {
        return Err(Attempt::Failed(ErrorKind::Connect));
    }
    match tokio::time::timeout_at(deadline, conn.exchange(&plan.template)).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(failure)) => {
            conn.failed();
            Err(match failure {
                ExchangeFailed::NotSent => Attempt::NotSent,
                ExchangeFailed::Io => Attempt::Failed(ErrorKind::Io),
            })
        }
        Err(_) => {
            conn.failed();
            Err(Attempt::Failed(ErrorKind::Timeout))
        }
    }
}

/// One request, recorded in `out` and in the shared progress. Timed from `intended` (the open
/// model's schedule, so that a late send counts against the target), or in the closed model
/// from the moment the request went on the wire, as wrk and oha time it.
async fn send(
    shared: &Shared,
    conn: &mut LaneConn,
    out: &mut LaneResult,
    intended: Option<Instant>,
) -> Result<(), ErrorKind> {
    let plan = &*shared.plan;
    let deadline = Instant::now() + plan.timeout;
    let mut outcome = exchange(plan, conn, deadline).await;
    if outcome == Err(Attempt::NotSent) {
        // The connection closed while idle and nothing was sent: reconnect and send once more.
        outcome = exchange(plan, conn, deadline).await;
    }
    let outcome = outcome.map_err(|a| match a {
        Attempt::Failed(kind) => kind,
        Attempt::NotSent => ErrorKind::Io,
    });
    let ok = match outcome {
        Ok((status, sent)) => {
            let from = intended.unwrap_or(sent);
            out.response(status, Instant::now().saturating_duration_since(from));
            is_success(status)
        }
        Err(kind) => {
            out.errors[kind as usize] += 1;
            false
        }
    };
    if let Some(p) = &shared.progress {
        p.record(ok);
    }
    outcome.map(|_| ())
}
