//! Quantiles of bucketed latency histograms, interpolated as Prometheus's `histogram_quantile`
//! does: over cumulative `(le, count)` buckets, or over per-bucket counts with their bounds.

/// Prometheus's `histogram_quantile(q, …)` over cumulative buckets `(le, count)`: the bucket
/// holding the rank, linear interpolation inside it (from 0 for the first bucket), the upper
/// bound of the highest finite bucket when the rank falls in `+Inf`. `None` where Prometheus
/// gives NaN (no `+Inf` bucket, fewer than two buckets, no observations).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    // Same bounds merged, sorted, and counts forced monotonic (as Prometheus does).
    let mut b: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
    for (le, n) in sorted {
        match b.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => b.push((le, n)),
        }
    }
    if b.len() < 2 || b.last().map(|x| x.0) != Some(f64::INFINITY) {
        return None;
    }
    let mut max = 0.0f64;
    for x in &mut b {
        max = max.max(x.1);
        x.1 = max;
    }
    let observations = b[b.len() - 1].1;
    if observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let i = b.iter().position(|x| x.1 >= rank).unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        return Some(b[b.len() - 2].0);
    }
    if i == 0 && b[0].0 <= 0.0 {
        return Some(b[0].0);
    }
    let (start, count, rank) = if i == 0 {
        (0.0, b[0].1, rank)
    } else {
        (b[i - 1].0, b[i].1 - b[i - 1].1, rank - b[i - 1].1)
    };
    if count <= 0.0 {
        return Some(start);
    }
    Some(start + (b[i].0 - start) * (rank / count))
}

/// The `q` quantile of per-bucket `counts` (one per bound in `bounds`, then the last one above
/// every bound), as [`histogram_quantile`] computes it over the cumulative buckets; `None`
/// without samples.
pub fn bucket_counts_quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let mut total = 0.0;
    let cumulative: Vec<(f64, f64)> = bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts)
        .map(|(le, n)| {
            total += *n as f64;
            (le, total)
        })
        .collect();
    histogram_quantile(q, &cumulative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn quantiles_interpolate_as_prometheus_does() {
        // 100 observations: 10 ≤ 1, 80 in (1, 5], 10 in (5, 10].
        let b = [
            (1.0, 10.0),
            (5.0, 90.0),
            (10.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!(close(
            histogram_quantile(0.5, &b),
            1.0 + 4.0 * (40.0 / 80.0)
        ));
        assert!(close(
            histogram_quantile(0.95, &b),
            5.0 + 5.0 * (5.0 / 10.0)
        ));
        assert!(close(
            histogram_quantile(0.99, &b),
            5.0 + 5.0 * (9.0 / 10.0)
        ));
        // The first bucket interpolates from 0.
        assert!(close(histogram_quantile(0.05, &b), 0.5));
        // Bucket order and duplicated bounds (one per series) do not matter.
        let split = [
            (f64::INFINITY, 60.0),
            (5.0, 50.0),
            (1.0, 5.0),
            (10.0, 60.0),
            (1.0, 5.0),
            (5.0, 40.0),
            (10.0, 40.0),
            (f64::INFINITY, 40.0),
        ];
        assert!(close(histogram_quantile(0.99, &split), 9.5));
    }

    #[test]
    fn quantile_edges() {
        // In +Inf: the highest finite bound.
        let b = [(1.0, 0.0), (5.0, 1.0), (f64::INFINITY, 100.0)];
        assert!(close(histogram_quantile(0.99, &b), 5.0));
        // No observations, no +Inf, one bucket: NaN in Prometheus.
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.5, &[(1.0, 3.0), (2.0, 4.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 4.0)]), None);
        assert_eq!(histogram_quantile(f64::NAN, &b), None);
        assert_eq!(histogram_quantile(-1.0, &b), Some(f64::NEG_INFINITY));
        assert_eq!(histogram_quantile(2.0, &b), Some(f64::INFINITY));
        // A non-monotonic count (a scrape racing an increment) is made monotonic.
        let b = [(1.0, 10.0), (5.0, 8.0), (10.0, 20.0), (f64::INFINITY, 20.0)];
        assert!(close(histogram_quantile(0.5, &b), 1.0 * (10.0 / 10.0)));
        // A negative first bound is returned as is.
        let b = [(-1.0, 5.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
        assert!(close(histogram_quantile(0.1, &b), -1.0));
    }

    #[test]
    fn bucket_counts_interpolate_within_buckets() {
        let bounds = [1.0, 10.0, 100.0];
        assert_eq!(bucket_counts_quantile(0.5, &bounds, &[0, 0, 0, 0]), None);
        assert_eq!(
            bucket_counts_quantile(0.5, &bounds, &[0, 10, 0, 0]),
            Some(5.5)
        );
        assert_eq!(
            bucket_counts_quantile(0.99, &bounds, &[5, 5, 0, 0]).map(|q| q.round()),
            Some(10.0)
        );
        assert_eq!(
            bucket_counts_quantile(0.5, &bounds, &[0, 0, 0, 3]),
            Some(100.0)
        );
    }
}
