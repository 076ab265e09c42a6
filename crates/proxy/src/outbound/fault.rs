//! Fault injection (Istio's `fault`): a delay before the request goes on, or an
//! abort with a status, each for its share of requests. A route with faults has no timeout or
//! retries (as in Istio).

use crate::body::Body;
use crate::flags::{self, Flag};
use http::header::HeaderValue;
use http::Response;
use rand::Rng;
use std::time::Duration;

/// Applies `fault`: `Ok(true)` when the request was delayed, `Err` the aborted answer.
pub(super) async fn inject(fault: Option<&model::route::Fault>) -> Result<bool, Response<Body>> {
    let Some(f) = fault else {
        return Ok(false);
    };
    let mut delayed = false;
    if let Some(ms) = f.delay_ms.filter(|_| chance(f.delay_per_million)) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        delayed = true;
    }
    if let Some(status) = f.abort_status.filter(|_| chance(f.abort_per_million)) {
        let status =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
        return Err(flags::respond_with(
            Flag::FaultInjected,
            status,
            "fault filter abort",
        ));
    }
    Ok(delayed)
}

/// Flags a delayed request's answer `DI`, unless the proxy already flagged it otherwise.
pub(super) fn mark_delayed(rsp: &mut Response<Body>) {
    if flags::of(rsp).is_none() {
        rsp.headers_mut().insert(
            flags::FLAG_HEADER,
            HeaderValue::from_static(Flag::DelayInjected.as_str()),
        );
    }
}

/// True for `per_million` out of a million calls.
pub(super) fn chance(per_million: u32) -> bool {
    per_million >= 1_000_000 || rand::thread_rng().gen_range(0..1_000_000) < per_million
}
