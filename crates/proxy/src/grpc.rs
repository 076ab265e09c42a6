//! gRPC as the proxy judges and answers it, as Envoy does: a call's outcome is its
//! `grpc-status` (in the response headers of a trailers-only response, else in the trailers),
//! read through Envoy's gRPC↔HTTP status mappings; the `grpc-timeout` a client sends bounds the
//! route's timeout; and an answer the proxy makes itself reaches a gRPC client as a gRPC status.

use crate::body::{self, Body};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::Frame;
use std::time::Duration;

/// `grpc-status`: the call's status code.
pub const STATUS: &str = "grpc-status";
/// `grpc-message`: the status's description, percent-encoded.
pub const MESSAGE: &str = "grpc-message";
/// `grpc-timeout`: the client's deadline for the call.
pub const TIMEOUT: &str = "grpc-timeout";

/// Status codes the proxy answers with.
pub const OK: u32 = 0;
pub const DEADLINE_EXCEEDED: u32 = 4;
pub const UNAVAILABLE: u32 = 14;

/// Whether a message with these headers is gRPC (`content-type: application/grpc…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` in `headers` (a trailers-only response's headers, or trailers).
pub fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get(STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// The HTTP status a gRPC status stands for (Envoy's `Grpc::Utility::grpcToHttpStatus`, after
/// gRPC's own mapping): what outlier detection and route statistics judge a call by.
pub fn http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// The gRPC status an HTTP status stands for (Envoy's `Grpc::Utility::httpToGrpcStatus`, the
/// mapping gRPC documents).
pub fn from_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => 2,
    }
}

/// The status a response head says the call ended with, as an HTTP status: a trailers-only
/// gRPC response's `grpc-status` mapped by [`http_status`], else the response's own status.
/// `None`: a gRPC response whose status is still to come in its trailers.
pub fn head_status<B>(rsp: &Response<B>) -> Option<u16> {
    let status = rsp.status().as_u16();
    if status != 200 || !is_grpc(rsp.headers()) {
        return Some(status);
    }
    status_of_head(rsp.headers()).map(http_status)
}

fn status_of_head(headers: &HeaderMap) -> Option<u32> {
    // A value gRPC does not define reads UNKNOWN (2), as gRPC clients read it.
    headers.get(STATUS).map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(2)
    })
}

/// The deadline a request's `grpc-timeout` sets (`1S`, `250m`, `100000u`…: at most 8 digits
/// and a unit of H, M, S, m, u or n).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(TIMEOUT)?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Turns an answer the proxy made itself (it carries `x-weft-flag` and is not gRPC already)
/// into a gRPC trailers-only answer for a gRPC client: HTTP 200, `grpc-status` as Envoy maps the
/// HTTP status ([`from_http`]; a timeout is DEADLINE_EXCEEDED, as Envoy answers gRPC timeouts)
/// and the message as `grpc-message`. The flag header stays.
pub fn answer(rsp: &mut Response<Body>) {
    let Some(flag) = crate::flags::of(rsp) else {
        return;
    };
    if is_grpc(rsp.headers()) {
        return;
    }
    let code = match flag {
        crate::flags::Flag::UpstreamTimeout => DEADLINE_EXCEEDED,
        _ => from_http(rsp.status()),
    };
    let message = rsp
        .extensions()
        .get::<crate::flags::Message>()
        .map(|m| encode_message(m.0.trim_end()));
    *rsp.status_mut() = StatusCode::OK;
    *rsp.body_mut() = body::empty();
    let h = rsp.headers_mut();
    h.remove(CONTENT_LENGTH);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(STATUS, HeaderValue::from(code));
    if let Some(m) = message.and_then(|m| HeaderValue::from_str(&m).ok()) {
        h.insert(MESSAGE, m);
    }
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable ASCII, and `%`.
fn encode_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Watches a gRPC response body and reports the call's `grpc-status` once it is known: from
/// the trailers, or `None` if the body ended (or failed, or was dropped) without one.
pub struct OnStatus<F: FnOnce(Option<u32>)> {
    report: Option<F>,
}

impl<F: FnOnce(Option<u32>) + Send + Sync + Unpin + 'static> OnStatus<F> {
    /// `rsp` with its body reporting through `report`.
    pub fn wrap(rsp: Response<Body>, report: F) -> Response<Body> {
        rsp.map(|inner| {
            body::boxed(body::Watched::new(
                inner,
                OnStatus {
                    report: Some(report),
                },
            ))
        })
    }
}

impl<F: FnOnce(Option<u32>)> OnStatus<F> {
    fn done(&mut self, status: Option<u32>) {
        if let Some(f) = self.report.take() {
            f(status);
        }
    }
}

impl<F: FnOnce(Option<u32>)> body::Watch for OnStatus<F> {
    fn frame(&mut self, frame: &Frame<Bytes>, last: bool) {
        if let Some(t) = frame.trailers_ref() {
            self.done(status_of_head(t));
        } else if last {
            self.done(None);
        }
    }

    fn ended(&mut self, _broke_off: bool) {
        self.done(None);
    }
}

impl<F: FnOnce(Option<u32>)> Drop for OnStatus<F> {
    fn drop(&mut self) {
        self.done(None);
    }
}

#[cfg(test)]
mod tests;
