//! Service-level gates over a [`Report`]: a p99 latency ceiling and a success-ratio floor.

use std::time::Duration;

use crate::report::fmt_us;
use crate::Report;

/// Pass/fail thresholds; a gate left `None` is not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slo {
    /// The p99 latency must not exceed this.
    pub max_p99: Option<Duration>,
    /// The success ratio (0..=1) must be at least this.
    pub min_success: Option<f64>,
}

impl Slo {
    /// The gates `r` misses, one human-readable line each; empty when it passes.
    pub fn check(&self, r: &Report) -> Vec<String> {
        let mut violations = Vec::new();
        if let Some(max) = self.max_p99 {
            let max_us = max.as_secs_f64() * 1e6;
            if r.latency_us.count == 0 {
                violations.push(format!(
                    "p99 latency: no answers to measure (gate {})",
                    fmt_us(max_us)
                ));
            } else if r.latency_us.p99 as f64 > max_us {
                violations.push(format!(
                    "p99 latency {} exceeds the {} gate",
                    fmt_us(r.latency_us.p99 as f64),
                    fmt_us(max_us)
                ));
            }
        }
        if let Some(min) = self.min_success {
            if r.requests == 0 {
                violations.push(format!(
                    "success ratio: no requests completed (gate {})",
                    percent(min)
                ));
            } else if r.success_ratio < min {
                violations.push(format!(
                    "success ratio {} ({} of {} requests) is below the {} gate",
                    percent(r.success_ratio),
                    r.succeeded,
                    r.requests,
                    percent(min)
                ));
            }
        }
        violations
    }
}

fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%")
    }
}

/// Parses a success ratio given as a fraction (`0.99`) or a percentage (`99%`, `99.5%`).
pub fn parse_success(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim_end(), 100.0),
        None => (t, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a success ratio (e.g. 0.99 or 99%)"))?;
    if !value.is_finite() || value < 0.0 || value > scale {
        return Err(if scale == 1.0 && value > 1.0 && value <= 100.0 {
            format!("{s:?} is not a ratio between 0 and 1; for a percentage write {value}%")
        } else if scale == 1.0 {
            format!("{s:?} is not a ratio between 0 and 1 (e.g. 0.99 or 99%)")
        } else {
            format!("{s:?} is not a percentage between 0% and 100%")
        });
    }
    Ok(value / scale)
}
