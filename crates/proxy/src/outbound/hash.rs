//! The consistent-hash key of a request (Istio `consistentHash`): a header, the source IP, a
//! query parameter or a cookie, which the balancer maps onto its ring.

use http::header::{self, HeaderValue};
use model::HashOn;
use std::net::SocketAddr;

/// The request's key under `on`, if it has one. A cookie policy with a TTL makes up a cookie
/// for a request without one and puts it in `set_cookie`, as Envoy does.
pub(super) fn key(
    on: &HashOn,
    parts: &http::request::Parts,
    peer: SocketAddr,
    set_cookie: &mut Option<HeaderValue>,
) -> Option<u64> {
    match on {
        HashOn::Header(name) => parts
            .headers
            .get(name.as_str())
            .map(|v| hash_bytes(v.as_bytes())),
        HashOn::SourceIp => Some(hash_bytes(peer.ip().to_string().as_bytes())),
        HashOn::QueryParam(name) => {
            let q = parts.uri.query()?;
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| hash_bytes(v.as_bytes()))
        }
        HashOn::Cookie { name, path, ttl_s } => {
            let found = parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| hash_bytes(v.as_bytes()));
            if found.is_some() {
                return found;
            }
            let ttl = (*ttl_s)?;
            let value = format!("{:016x}", rand::random::<u64>());
            let mut cookie = format!("{name}={value}; Max-Age={ttl}; HttpOnly");
            if let Some(p) = path {
                cookie.push_str(&format!("; Path={p}"));
            }
            *set_cookie = HeaderValue::from_str(&cookie).ok();
            Some(hash_bytes(value.as_bytes()))
        }
    }
}

fn hash_bytes(b: &[u8]) -> u64 {
    crate::balance::hash_str(&String::from_utf8_lossy(b))
}
