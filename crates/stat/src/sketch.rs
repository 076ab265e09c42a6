//! A latency sketch for quantiles of single observations (such as tapped requests) in bounded
//! memory: counts per logarithmic bucket, nearest-rank quantiles with 1% relative error.

use std::collections::BTreeMap;

/// Latency quantiles with 1% relative error in bounded memory: counts per logarithmic bucket
/// `(γ^(i-1), γ^i]` with γ = 1.02, for 1 µs to 1 h.
#[derive(Clone, Debug, Default)]
pub struct Sketch {
    buckets: BTreeMap<i32, u64>,
    n: u64,
}

const GAMMA: f64 = 1.02;
const MIN_MS: f64 = 0.001;
const MAX_MS: f64 = 3_600_000.0;

impl Sketch {
    /// Counts one observation of `ms` milliseconds (clamped to 1 µs..1 h; not finite: 1 h).
    pub fn add(&mut self, ms: f64) {
        let ms = if ms.is_finite() {
            ms.clamp(MIN_MS, MAX_MS)
        } else {
            MAX_MS
        };
        let i = (ms.ln() / GAMMA.ln()).ceil() as i32;
        *self.buckets.entry(i).or_insert(0) += 1;
        self.n += 1;
    }

    /// The `q` quantile (nearest rank), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&i, &c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(2.0 * GAMMA.powi(i) / (GAMMA + 1.0));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_quantiles_within_two_percent() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        for i in 1..=1000 {
            s.add(i as f64 / 10.0);
        }
        for (q, want) in [(0.5, 50.0), (0.99, 99.0), (0.0, 0.1), (1.0, 100.0)] {
            let got = s.quantile(q).unwrap();
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        s.add(f64::NAN);
        s.add(-1.0);
        s.add(1e12);
        assert!(s.buckets.len() < 1200);
    }
}
