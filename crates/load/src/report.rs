//! The result of a run: lanes merged into one report, serializable as `weft.load/v1` JSON and
//! printable as a short text summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::lane::{is_success, ErrorKind, LaneResult, MAX_LATENCY_US, SIGFIG};
use crate::plan::{Mode, Plan};

/// The `schema` of every [`Report`].
pub const SCHEMA: &str = "weft.load/v1";

/// What a run did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub url: String,
    #[serde(default)]
    pub method: String,
    /// `"open"` (fixed rate) or `"closed"` (back-to-back).
    pub mode: String,
    /// Requests per second asked for (open model).
    pub target_rps: Option<f64>,
    pub connections: usize,
    /// Requests in flight at once (lanes).
    pub concurrency: usize,
    pub http2: bool,
    /// Seconds from the start (connections already open) to the end of the last request; in the
    /// open model at least the span of the schedule (`requests / target_rps`, or the duration).
    pub duration_s: f64,
    /// Requests finished: `succeeded + failed`.
    pub requests: u64,
    /// Answered 2xx or 3xx.
    pub succeeded: u64,
    /// Transport errors plus 4xx/5xx answers.
    pub failed: u64,
    /// `succeeded / requests` (0 when nothing was sent).
    pub success_ratio: f64,
    /// `requests / duration_s`.
    pub achieved_rps: f64,
    /// Answers by status code ("200").
    pub status: BTreeMap<String, u64>,
    /// Requests without an answer, by kind: "connect", "timeout", "io" (all three always present).
    pub errors: BTreeMap<String, u64>,
    /// Over the answered requests, in µs: from the intended send time in the open model
    /// (coordinated-omission corrected), from the actual send in the closed model.
    pub latency_us: Latency,
    /// Open model with a duration: sends that were due before the end but never made because the
    /// lanes were still waiting for earlier answers (the target could not keep up).
    #[serde(default)]
    pub missed: u64,
    /// Open model: how late the generator itself sent, in µs, measured from the moment a lane was
    /// both due and free (timer slack, a busy generator). Taken out of `latency_us`; a large value
    /// means the generator, not the target, was the bottleneck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<SendLag>,
    /// The run was cancelled before its end.
    #[serde(default)]
    pub interrupted: bool,
}

/// The generator's own sending lateness, in µs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SendLag {
    pub mean: f64,
    pub max: u64,
}

/// Latency summary in microseconds (all zero when nothing was answered).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Latency {
    /// Answers measured.
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl Report {
    pub(crate) fn build(
        plan: &Plan,
        elapsed: Duration,
        lanes: Vec<LaneResult>,
        interrupted: bool,
    ) -> Report {
        let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, SIGFIG)
            .unwrap_or_else(|_| unreachable!("1 µs..3600 s with 3 significant figures is valid"));
        let mut status = BTreeMap::new();
        let mut errors: BTreeMap<String, u64> = ErrorKind::NAMES
            .iter()
            .map(|k| (k.to_string(), 0))
            .collect();
        let (mut succeeded, mut failed, mut missed) = (0u64, 0u64, 0u64);
        let (mut lag_sum, mut lag_max, mut lag_count) = (Duration::ZERO, Duration::ZERO, 0u64);
        for lane in &lanes {
            // Lanes record clamped values into the same range, so adding cannot fail.
            let _ = latency.add(&lane.latency);
            for &(code, n) in &lane.status {
                *status.entry(code.as_u16().to_string()).or_insert(0) += n;
                if is_success(code) {
                    succeeded += n;
                } else {
                    failed += n;
                }
            }
            for (name, &n) in ErrorKind::NAMES.iter().zip(&lane.errors) {
                *errors.entry(name.to_string()).or_insert(0) += n;
                failed += n;
            }
            missed += lane.missed;
            lag_sum += lane.lag_sum;
            lag_max = lag_max.max(lane.lag_max);
            lag_count += lane.lag_count;
        }
        let send_lag_us = (lag_count > 0).then(|| SendLag {
            mean: lag_sum.as_secs_f64() * 1e6 / lag_count as f64,
            max: u64::try_from(lag_max.as_micros()).unwrap_or(u64::MAX),
        });
        let requests = succeeded + failed;
        let secs = elapsed.as_secs_f64();
        Report {
            schema: SCHEMA.to_string(),
            url: plan.url.clone(),
            method: plan.template.method().to_string(),
            mode: match plan.mode {
                Mode::Open { .. } => "open",
                Mode::Closed => "closed",
            }
            .to_string(),
            target_rps: match plan.mode {
                Mode::Open { rate } => Some(rate),
                Mode::Closed => None,
            },
            connections: plan.connections,
            concurrency: plan.lanes,
            http2: plan.http2,
            duration_s: secs,
            requests,
            succeeded,
            failed,
            success_ratio: if requests == 0 {
                0.0
            } else {
                succeeded as f64 / requests as f64
            },
            achieved_rps: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            status,
            errors,
            latency_us: Latency::from_histogram(&latency),
            missed,
            send_lag_us,
            interrupted,
        }
    }

    /// A readable summary, in the spirit of wrk2 and oha.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let proto = if self.http2 {
            "HTTP/2 (h2c)"
        } else {
            "HTTP/1.1"
        };
        let method = if self.method.is_empty() {
            "GET"
        } else {
            &self.method
        };
        let _ = writeln!(s, "{method} {}", self.url);
        let model = match self.target_rps {
            Some(rate) => format!("open model at {} req/s", fmt_num(rate)),
            None => "closed model (max)".to_string(),
        };
        let _ = writeln!(
            s,
            "  {model}, {} connection{}, {} in flight, {proto}{}",
            self.connections,
            plural(self.connections),
            self.concurrency,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "Summary");
        let _ = writeln!(
            s,
            "  requests   {} in {:.2}s, {} req/s",
            self.requests,
            self.duration_s,
            fmt_num(self.achieved_rps)
        );
        let _ = writeln!(
            s,
            "  succeeded  {} ({:.2}%)",
            self.succeeded,
            self.success_ratio * 100.0
        );
        let _ = writeln!(s, "  failed     {}", self.failed);
        let _ = writeln!(s);
        let l = &self.latency_us;
        let from = if self.target_rps.is_some() {
            "from the intended send time"
        } else {
            "from the send"
        };
        let _ = writeln!(s, "Latency ({from}, {} answers)", l.count);
        if l.count > 0 {
            for (name, v) in [
                ("min", l.min as f64),
                ("mean", l.mean),
                ("p50", l.p50 as f64),
                ("p90", l.p90 as f64),
                ("p95", l.p95 as f64),
                ("p99", l.p99 as f64),
                ("p99.9", l.p999 as f64),
                ("max", l.max as f64),
            ] {
                let _ = writeln!(s, "  {name:<6} {}", fmt_us(v));
            }
        } else {
            let _ = writeln!(s, "  (no answers)");
        }
        if let Some(lag) = &self.send_lag_us {
            let _ = writeln!(
                s,
                "  (generator send lag, excluded: mean {}, max {})",
                fmt_us(lag.mean),
                fmt_us(lag.max as f64)
            );
        }
        if !self.status.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "Status codes");
            for (code, n) in &self.status {
                let _ = writeln!(s, "  {code}  {n}");
            }
        }
        if self.errors.values().any(|&n| n > 0) {
            let _ = writeln!(s);
            let _ = writeln!(s, "Errors");
            for (kind, n) in self.errors.iter().filter(|(_, &n)| n > 0) {
                let _ = writeln!(s, "  {kind:<8} {n}");
            }
        }
        if self.missed > 0 {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "warning: {} scheduled request{} never sent: the target did not keep up with the rate",
                self.missed,
                plural(self.missed as usize)
            );
        } else if let Some(rate) = self.target_rps {
            if !self.interrupted && self.requests > 0 && self.achieved_rps < rate * 0.95 {
                let _ = writeln!(s);
                let _ = writeln!(
                    s,
                    "warning: achieved {} req/s, below the {} req/s target",
                    fmt_num(self.achieved_rps),
                    fmt_num(rate)
                );
            }
        }
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `1234.5` → "1234.5", `500.0` → "500".
fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Microseconds in the most readable unit.
pub(crate) fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1_000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}
