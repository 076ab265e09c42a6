//! What every hop does to HTTP messages alike, outbound and inbound: weft's own header names,
//! request ids, the hop-by-hop headers a proxy must not forward, and fitting a response to the
//! downstream connection it goes back on.

use crate::body::Body;
use crate::server::Drain;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, Version};

/// The header the outbound side adds, naming the calling workload's identity.
pub const CLIENT_ID_HEADER: &str = "x-weft-client";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The names above as [`HeaderName`]s made at compile time: inserting by `&str` copies a
/// non-standard name into a new allocation on every request.
pub const CLIENT_ID: HeaderName = HeaderName::from_static(CLIENT_ID_HEADER);
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The body length a message's head declares (`content-length`), if it declares one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The hop-by-hop headers (RFC 9110 §7.6.1) besides `TE`, which [`strip_hop_by_hop`] keeps
/// when it says `trailers`.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the ones the
/// `Connection` header names. `TE: trailers` stays, as Envoy keeps it: gRPC requires it end to
/// end (servers refuse a call without it), and it is the one `TE` HTTP/2 allows.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (comparisons, no hashing) instead of a
    // lookup of each hop-by-hop name, on every message of every hop.
    if !headers
        .iter()
        .any(|(name, value)| is_hop_by_hop(name, value))
    {
        return;
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP.iter().chain([&header::TE]) {
        headers.remove(n);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a header is one [`strip_hop_by_hop`] removes (or, for `Connection`, one whose
/// value names headers it removes); `TE: trailers` is kept as it is.
fn is_hop_by_hop(name: &HeaderName, value: &HeaderValue) -> bool {
    if name == header::TE {
        return !value.as_bytes().eq_ignore_ascii_case(b"trailers");
    }
    HOP_BY_HOP.contains(name)
}

/// Makes a response fit the downstream connection it goes back on.
pub fn finish_response(rsp: &mut Response<Body>, downstream: Version, drain: &Drain) {
    if rsp.version() != downstream {
        strip_hop_by_hop(rsp.headers_mut());
        *rsp.version_mut() = downstream;
    }
    if drain.is_draining() && downstream < Version::HTTP_2 {
        rsp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// A random UUID (version 4 layout), as Envoy generates for `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    let v: u128 = rand::random();
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    // 8-4-4-4-12 hex digits, written in place (no formatting machinery on the hot path).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = [b'-'; 36];
    let mut digits = (0..32).rev().map(|i| HEX[((v >> (i * 4)) & 0xf) as usize]);
    for (i, c) in s.iter_mut().enumerate() {
        if ![8, 13, 18, 23].contains(&i) {
            *c = digits.next().unwrap_or(b'0');
        }
    }
    HeaderValue::from_bytes(&s).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_random_uuid_v4s() {
        let a = new_request_id();
        let a = a.to_str().unwrap();
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(&a[14..15], "4", "version 4: {a}");
        assert!("89ab".contains(&a[19..20]), "RFC 4122 variant: {a}");
        assert_ne!(new_request_id(), new_request_id());
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    /// Each hop-by-hop header goes, alone or among end-to-end ones, and so do the headers a
    /// `Connection` header names; the end-to-end ones stay as they were, repeated values too.
    #[test]
    fn the_hop_by_hop_strip_removes_each_hop_by_hop_header_and_nothing_else() {
        let kept = [
            ("accept", "*/*"),
            ("x-custom", "1"),
            ("x-custom", "2"),
            ("te", "trailers"),
        ];
        for hop in [
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("proxy-authorization", "Basic eDp5"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
        ] {
            let mut h = map(&[kept[0], kept[1], hop, kept[2]]);
            strip_hop_by_hop(&mut h);
            assert!(
                !h.get_all(hop.0).iter().any(|v| v == hop.1),
                "{hop:?} stayed: {h:?}"
            );
            assert_eq!(h.get_all("x-custom").iter().count(), 2, "{h:?}");
            assert_eq!(h["accept"], "*/*");
        }
        let mut h = map(&[("connection", "x-hop, close"), ("x-hop", "1"), kept[0]]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h, map(&[kept[0]]), "what Connection names goes too");
        let mut h = map(&kept);
        strip_hop_by_hop(&mut h);
        assert_eq!(h, map(&kept), "no hop-by-hop header: untouched");
    }
}
