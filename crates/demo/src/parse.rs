//! Small parsers shared with the CLI: durations and the `http_proxy` environment variable.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Parses "1s", "250ms", "1.5s", "2m", "1h", or a bare number meaning milliseconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (number, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1)
    };
    let number = number.trim_end();
    // Digits and at most one dot: no signs, exponents, "inf" or "nan".
    if number.is_empty()
        || number == "."
        || !number.chars().all(|c| c.is_ascii_digit() || c == '.')
        || number.matches('.').count() > 1
    {
        return None;
    }
    match number.parse::<u64>() {
        Ok(n) => n.checked_mul(unit_ms).map(Duration::from_millis),
        Err(_) => {
            let secs = number.parse::<f64>().ok()? * unit_ms as f64 / 1_000.0;
            Duration::try_from_secs_f64(secs).ok()
        }
    }
}

/// The sidecar's outbound address from `http_proxy`, else `HTTP_PROXY`
/// ("http://127.0.0.1:4140" or "127.0.0.1:4140"; a host name is resolved).
pub fn proxy_from_env() -> Option<SocketAddr> {
    ["http_proxy", "HTTP_PROXY"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .and_then(|value| parse_proxy(&value))
}

pub(crate) fn parse_proxy(value: &str) -> Option<SocketAddr> {
    let value = value.trim();
    let value = value.strip_prefix("http://").unwrap_or(value);
    let authority = value.split('/').next().unwrap_or(value);
    authority
        .parse()
        .ok()
        .or_else(|| authority.to_socket_addrs().ok()?.next())
}
