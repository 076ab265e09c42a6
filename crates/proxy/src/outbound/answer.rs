//! What a rule answers by itself, without a backend: a CORS preflight, a redirect, a fixed
//! response.

use crate::body::Body;
use crate::filters;
use crate::table::Routed;
use http::request::Parts;
use http::Response;

/// The rule's own answer to this request, if it gives one.
pub(super) fn local(routed: &Routed<'_>, parts: &Parts, authority: &str) -> Option<Response<Body>> {
    let r = routed.rule?;
    if let Some(rsp) = r
        .cors
        .as_ref()
        .and_then(|c| c.preflight(&parts.method, &parts.headers))
    {
        return Some(rsp);
    }
    if let Some(redirect) = &r.redirect {
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        return Some(redirect.respond("http", authority, path_and_query, routed.prefix));
    }
    r.direct.as_ref().map(filters::direct)
}
