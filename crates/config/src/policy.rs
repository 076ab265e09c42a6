//! Timeouts and retries shared by the translations: the two duration syntaxes (Istio's, which
//! Linkerd's profile timeouts and RequestAuthentication timeouts use too, and the Gateway
//! API's) and Istio's `retryOn` list.

use model::{RetryOn, RetryPolicy};

const NS_PER_MS: u128 = 1_000_000;

/// An Istio (protobuf) duration such as `1s`, `0.5s`, `100ms`, `1m`, `1h` or `1m30s`, in
/// milliseconds; `Ok(None)` for a zero duration (disabled).
pub(crate) fn istio_duration(text: &str) -> Result<Option<u64>, String> {
    let bad = || format!("`{text}` is not a duration like 1s, 0.5s, 100ms or 1m");
    let nanos =
        parse_duration(text, true, &["h", "m", "s", "ms", "us", "µs", "ns"]).ok_or_else(bad)?;
    to_ms(text, nanos)
}

/// A Gateway API Duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`: `500ms`, `10s`, `1h30m`), in
/// milliseconds; `Ok(None)` for a zero duration (disabled).
pub(crate) fn gateway_duration(text: &str) -> Result<Option<u64>, String> {
    let bad = || format!("`{text}` is not a Gateway API duration like 500ms, 10s or 1h30m");
    let nanos = parse_duration(text, false, &["h", "m", "s", "ms"]).ok_or_else(bad)?;
    to_ms(text, nanos)
}

fn to_ms(text: &str, nanos: u128) -> Result<Option<u64>, String> {
    match nanos {
        0 => Ok(None),
        n if n < NS_PER_MS => Err(format!("`{text}` is shorter than 1ms")),
        n => u64::try_from(n / NS_PER_MS)
            .map(Some)
            .map_err(|_| format!("`{text}` is too long")),
    }
}

/// One or more `NUMBER UNIT` components (unit required). `decimal`: Istio's fractional numbers
/// and any count of digits and components; otherwise the Gateway API's 1–5 digit integers, 1–4
/// components.
fn parse_duration(text: &str, decimal: bool, units: &[&str]) -> Option<u128> {
    let mut rest = text;
    let mut total: u128 = 0;
    let mut components = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || (decimal && c == '.')))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() > 18 {
            return None;
        }
        if !decimal && !(1..=5).contains(&int.len()) {
            return None;
        }
        // The longest unit that fits (`ms` before `m`).
        let unit = units
            .iter()
            .filter(|u| after.starts_with(**u))
            .max_by_key(|u| u.len())?;
        let unit_ns: u128 = match *unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            _ => 1,
        };
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_digits = &frac[..frac.len().min(18)];
        let frac_ns = if frac_digits.is_empty() {
            0
        } else {
            frac_digits.parse::<u128>().ok()? * unit_ns / 10u128.pow(frac_digits.len() as u32)
        };
        total = total.checked_add(int.checked_mul(unit_ns)?.checked_add(frac_ns)?)?;
        rest = &after[unit.len()..];
        components += 1;
    }
    (components > 0 && (decimal || components <= 4)).then_some(total)
}

/// Envoy `retry-on` values Istio accepts that weft does not implement (yet).
const UNSUPPORTED_RETRY_ON: [&str; 3] = ["retriable-4xx", "retriable-headers", "envoy-ratelimited"];

/// Envoy's gRPC `retry-on` values and the `grpc-status` each retries. As in Envoy, the status
/// is read from the response headers: a trailers-only response (the usual shape of a call that
/// fails before any message) is retried, a status that arrives in trailers after messages is not.
const GRPC_RETRY_ON: [(&str, u32); 5] = [
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

/// Istio's default `retryOn`: `connect-failure,refused-stream,unavailable,cancelled,
/// retriable-status-codes` with 503.
pub(crate) fn istio_default_retry_on() -> RetryOn {
    RetryOn {
        connect_failure: true,
        refused_stream: true,
        status_codes: vec![503],
        grpc_statuses: vec![1, 14],
        ..RetryOn::default()
    }
}

/// Istio's retry policy for a route whose VirtualService sets no `retries` (pilot's
/// `retry.DefaultPolicy`): 2 retries, on [`istio_default_retry_on`], no per-try timeout. Its
/// `previous_hosts` predicate (a retry prefers an endpoint not tried yet) is what the proxy
/// always does.
pub(crate) const ISTIO_DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// [`ISTIO_DEFAULT_RETRY_ATTEMPTS`] on [`istio_default_retry_on`], as a policy.
pub(crate) fn istio_default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: ISTIO_DEFAULT_RETRY_ATTEMPTS,
        per_try_timeout_ms: None,
        on: istio_default_retry_on(),
    }
}

/// What an Istio `retryOn` list says.
#[derive(Debug, Default)]
pub(crate) struct RetryOnList {
    pub on: RetryOn,
    /// Known Envoy values weft ignores.
    pub unsupported: Vec<String>,
    /// Error messages for values that are not retry conditions.
    pub invalid: Vec<String>,
}

/// Parses `5xx,gateway-error,retriable-status-codes,503`: names and status codes.
pub(crate) fn istio_retry_on(text: &str) -> RetryOnList {
    let mut out = RetryOnList::default();
    for value in text.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        match value {
            "5xx" => out.on.server_error = true,
            "gateway-error" => out.on.gateway_error = true,
            "connect-failure" => out.on.connect_failure = true,
            "reset" => out.on.reset = true,
            "refused-stream" => out.on.refused_stream = true,
            // The codes are listed alongside, as numbers.
            "retriable-status-codes" => {}
            v if UNSUPPORTED_RETRY_ON.contains(&v) => out.unsupported.push(v.to_string()),
            v if GRPC_RETRY_ON.iter().any(|(name, _)| *name == v) => {
                let code = GRPC_RETRY_ON
                    .iter()
                    .find(|(name, _)| *name == v)
                    .map(|c| c.1);
                if let Some(code) = code.filter(|c| !out.on.grpc_statuses.contains(c)) {
                    out.on.grpc_statuses.push(code);
                }
            }
            v if v.bytes().all(|c| c.is_ascii_digit()) => match status_code(v) {
                Some(code) => {
                    if !out.on.status_codes.contains(&code) {
                        out.on.status_codes.push(code);
                    }
                }
                None => out.invalid.push(format!(
                    "retryOn status code {v} must be between 100 and 599"
                )),
            },
            v => out.invalid.push(format!(
                "unknown retryOn `{v}`: use 5xx, gateway-error, connect-failure, reset, \
                 refused-stream, retriable-status-codes, status codes, or the gRPC cancelled, \
                 deadline-exceeded, internal, resource-exhausted, unavailable"
            )),
        }
    }
    out
}

fn status_code(v: &str) -> Option<u16> {
    v.parse::<u16>().ok().filter(|c| (100..=599).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_durations() {
        for (text, ms) in [
            ("1s", Some(1000)),
            ("0.5s", Some(500)),
            ("100ms", Some(100)),
            ("1m", Some(60_000)),
            ("1h", Some(3_600_000)),
            ("1m30s", Some(90_000)),
            ("1.5ms", Some(1)),
            ("0s", None),
            ("0ms", None),
        ] {
            assert_eq!(istio_duration(text), Ok(ms), "{text}");
        }
        for text in ["", "1", "s", "1x", "1.2.3s", "-1s", "1 s", "10ns", ".s"] {
            assert!(istio_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn gateway_durations() {
        for (text, ms) in [
            ("500ms", Some(500)),
            ("10s", Some(10_000)),
            ("1h", Some(3_600_000)),
            ("1h30m", Some(5_400_000)),
            ("0s", None),
        ] {
            assert_eq!(gateway_duration(text), Ok(ms), "{text}");
        }
        for text in ["", "0.5s", "100us", "123456s", "1h1m1s1ms1s", "10", "1d"] {
            assert!(gateway_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn retry_on_lists() {
        let l = istio_retry_on(
            "5xx, gateway-error,retriable-status-codes,503,504,503,retriable-headers",
        );
        assert_eq!(
            l.on,
            RetryOn {
                server_error: true,
                gateway_error: true,
                status_codes: vec![503, 504],
                ..RetryOn::default()
            }
        );
        assert_eq!(l.unsupported, ["retriable-headers"]);
        assert!(l.invalid.is_empty());
        let l = istio_retry_on("connect-failure,reset,refused-stream,42,bogus");
        assert!(l.on.connect_failure && l.on.reset && l.on.refused_stream);
        assert_eq!(l.invalid.len(), 2, "{:?}", l.invalid);
    }

    #[test]
    fn retry_on_grpc_statuses_as_envoy() {
        let l = istio_retry_on(
            "unavailable,cancelled,deadline-exceeded,resource-exhausted,internal,unavailable",
        );
        assert_eq!(l.on.grpc_statuses, [14, 1, 4, 8, 13]);
        assert!(l.unsupported.is_empty() && l.invalid.is_empty(), "{l:?}");
        // Istio's default policy retries UNAVAILABLE and CANCELLED as well.
        assert_eq!(istio_default_retry_on().grpc_statuses, [1, 14]);
    }
}
