//! When to renew a certificate: about 70% into its lifetime (as Istio's agent and Linkerd's
//! proxy do), jittered so proxies that started together do not all ask the CA at once.

use rand::Rng;
use std::time::{Duration, SystemTime};

/// The share of the lifetime after which a certificate is renewed.
pub const RENEW_FRACTION: f64 = 0.7;
/// The jitter, as a share of the lifetime either side of [`RENEW_FRACTION`]: renewal falls
/// between 65% and 75%, leaving a quarter of the lifetime for retries.
pub const RENEW_JITTER: f64 = 0.05;

/// When to renew a certificate valid from `not_before` to `not_after`.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let jitter = rand::thread_rng().gen_range(-RENEW_JITTER..=RENEW_JITTER);
    renew_at_fraction(not_before, not_after, RENEW_FRACTION + jitter)
}

/// The point `fraction` (clamped to 0..=1) into the validity; `not_before` when the validity is
/// empty or inverted.
pub fn renew_at_fraction(
    not_before: SystemTime,
    not_after: SystemTime,
    fraction: f64,
) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime.mul_f64(fraction.clamp(0.0, 1.0))
}

/// How long from `now` until [`renew_at`]; zero when that moment has passed. Feed it to
/// `tokio::time::sleep` (certificate times are wall-clock; timers are monotonic).
pub fn renew_in(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> Duration {
    renew_at(not_before, not_after)
        .duration_since(now)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
