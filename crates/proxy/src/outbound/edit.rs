//! Header and target edits both ways: the request as it goes upstream (hop-by-hop headers
//! dropped, weft's headers added, the rule's and destination's header edits, rewrites, HTTP/2
//! to the peer sidecar), and the answer as it comes back.

use crate::body::Body;
use crate::flags::{self, Flag};
use crate::headers::{strip_hop_by_hop, CLIENT_ID};
use crate::table::Routed;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, Uri, Version};

/// What this proxy adds to every request it sends on.
pub(super) struct Upstream<'a> {
    /// Our identity, for the peer's `x-weft-client-id`.
    pub client_id: &'a HeaderValue,
    /// The metadata exchange header (`x-weft-peer`).
    pub peer: &'a HeaderValue,
}

/// Turns the request into the one that goes upstream to `authority` (or the rewrite's).
/// `Err`: a rewrite made it invalid (400).
pub(super) fn request(
    parts: &mut http::request::Parts,
    authority: String,
    routed: &Routed<'_>,
    ours: Upstream<'_>,
) -> Result<(), Box<Response<Body>>> {
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.insert(CLIENT_ID, ours.client_id.clone());
    parts
        .headers
        .insert(crate::telemetry::PEER, ours.peer.clone());
    // The upstream target: the parsed path as it is (no copy) unless a rewrite changes it, and
    // the authority string moved into the URI.
    let mut target = http::uri::Parts::default();
    target.scheme = Some(http::uri::Scheme::HTTP);
    target.path_and_query = parts.uri.path_and_query().cloned();
    let mut upstream_authority = authority;
    if let Some(r) = routed.rule {
        r.request_headers.apply(&mut parts.headers);
        if let Some(w) = &r.rewrite {
            let pq = w.path_and_query(path_of(&target), routed.prefix);
            let pq = pq
                .parse()
                .map_err(|e| bad(format!("bad rewritten path: {e}")))?;
            target.path_and_query = Some(pq);
            if let Some(a) = &w.authority {
                upstream_authority = a.clone();
            }
        }
    }
    if let Some(d) = routed.dest {
        d.request_headers.apply(&mut parts.headers);
    }
    let authority = http::uri::Authority::from_maybe_shared(bytes::Bytes::from(upstream_authority))
        .map_err(|e| bad(format!("bad authority: {e}")))?;
    target.authority = Some(authority);
    if target.path_and_query.is_none() {
        target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(target).map_err(|e| bad(format!("bad request target: {e}")))?;
    parts.version = Version::HTTP_2;
    Ok(())
}

/// The answer's edits: the rule's and the destination's response headers, CORS headers fitted
/// to the request's own (`downstream`), and a made-up hash cookie.
pub(super) fn response(
    rsp: &mut Response<Body>,
    routed: &Routed<'_>,
    downstream: Option<&HeaderMap>,
    set_cookie: Option<HeaderValue>,
) {
    if let Some(r) = routed.rule {
        r.response_headers.apply(rsp.headers_mut());
        if let (Some(c), Some(h)) = (&r.cors, downstream) {
            c.decorate(h, rsp.headers_mut());
        }
    }
    if let Some(d) = routed.dest {
        d.response_headers.apply(rsp.headers_mut());
    }
    if let Some(c) = set_cookie {
        rsp.headers_mut().append(header::SET_COOKIE, c);
    }
}

/// 400 `DPE`: a rewrite made the request invalid.
fn bad(message: String) -> Box<Response<Body>> {
    Box::new(flags::respond(Flag::BadRequest, message))
}

/// The path and query of an upstream target being built (`/` when it has none).
fn path_of(t: &http::uri::Parts) -> &str {
    t.path_and_query.as_ref().map_or("/", |p| p.as_str())
}
