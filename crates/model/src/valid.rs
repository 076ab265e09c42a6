//! The value checks every side shares, so that what `weft check` and `weft apply` accept is
//! exactly what a proxy puts in force. The proxy builds real headers, URIs, methods, regexes
//! and verification keys from a snapshot; these functions build (or try) the same values with
//! the same libraries (`http`, `regex`, `jsonwebtoken`), and the proxy uses the values they
//! return. Three callers:
//!
//! - the configuration translators (`config`) check each field as they read it, and every
//!   route, policy and JWT rule they produce as a whole, with the file, line and field;
//! - the wire decoding (`api`'s `TryFrom<pb::Snapshot>`), which the proxy runs on every snapshot
//!   and the control plane runs on the snapshot a change would produce before committing it,
//!   checks whole routes ([`route`]), traffic policies ([`traffic_policy`]) and JWT rules
//!   ([`jwt_rule`]);
//! - the proxy compiles its hot-path forms with [`header_name`], [`header_value`], [`method`],
//!   [`full_regex`], [`regex`] and [`crate::jwks::KeySet`].
//!
//! Each check returns why a value is refused, without saying where: callers add the place.

use crate::policy::{HashOn, TrafficPolicy};
use crate::route::{HeaderEdits, HttpRoute, PathMatch, PathRewrite, RouteMatch, StringMatch};
use crate::security::JwtRule;
use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

/// The most replicas one workload may ask for. `weft up` runs each replica as two processes on
/// this machine (the app and its sidecar), so 64 replicas are already 128 processes, more than a
/// local mesh needs; a larger number is a typo (an extra digit, a negative count read as
/// unsigned) that would fork the machine to a halt rather than a mesh anyone means to run.
pub const MAX_REPLICAS: u32 = 64;

/// Redirect statuses Istio and the Gateway API allow.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The highest gRPC status code (`unauthenticated`).
pub const MAX_GRPC_STATUS: u32 = 16;

/// An HTTP header name, as the proxy builds it: the `http` crate's rules (an RFC 9110 token:
/// letters, digits and ``!#$%&'*+-.^_`|~``; not empty), any case (names are case-insensitive;
/// the proxy uses them lowercase).
pub fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
        format!(
            "{name:?} is not an HTTP header name (a token of letters, digits and !#$%&'*+-.^_`|~)"
        )
    })
}

/// An HTTP header value, as the proxy builds it: no control characters but tabs (a CR or LF
/// would split the header in two), no DEL.
pub fn header_value(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| {
        format!("{value:?} is not an HTTP header value (no CR, LF or other control characters)")
    })
}

/// An HTTP method (a token: `GET`, `PURGE`, …).
pub fn method(m: &str) -> Result<Method, String> {
    Method::from_bytes(m.as_bytes()).map_err(|_| format!("{m:?} is not an HTTP method"))
}

/// A regex as written (a rewrite's pattern), compiled as the proxy compiles it.
pub fn regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| regex_error(&e))
}

/// A regex that must match a whole string (Istio's and the Gateway API's `regex` matches, RE2
/// full match), compiled as the proxy compiles it.
pub fn full_regex(pattern: &str) -> Result<Regex, String> {
    // The pattern as written first, so that an error points into what the user wrote.
    regex(pattern)?;
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| regex_error(&e))
}

/// The regex crate's error on one line: `invalid regex: regex parse error: ( ^ error: …`.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    format!("invalid regex: {}", words.join(" "))
}

/// A path a rewrite or a redirect puts in place of the request's: a URI path (starting with `/`,
/// characters a URI path may hold, no fragment) by the `http` crate's rules.
pub fn uri_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{path:?} is not a URI path: {why}"));
    if !path.starts_with('/') {
        return bad("it must start with /");
    }
    if path.contains('#') {
        return bad("a fragment (#) is never sent");
    }
    match http::uri::PathAndQuery::try_from(path) {
        Ok(_) => Ok(()),
        Err(e) => bad(&e.to_string()),
    }
}

/// A URI scheme (`http`, `https`).
pub fn scheme(s: &str) -> Result<(), String> {
    let ok = s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a URI scheme"))
    }
}

/// A URI authority as a request or a redirect names it: `HOST` or `HOST:PORT` (no user info),
/// by the `http` crate's rules.
pub fn authority(a: &str) -> Result<http::uri::Authority, String> {
    let bad = |why: String| format!("{a:?} is not HOST or HOST:PORT: {why}");
    if a.is_empty() {
        return Err(bad("empty".into()));
    }
    if a.contains('@') {
        return Err(bad("user info (@) is not allowed".into()));
    }
    a.parse::<http::uri::Authority>()
        .map_err(|e| bad(e.to_string()))
}

/// How many replicas a workload may run: 0 to [`MAX_REPLICAS`].
pub fn replicas(n: u32) -> Result<(), String> {
    if n <= MAX_REPLICAS {
        Ok(())
    } else {
        Err(format!(
            "{n} replicas: at most {MAX_REPLICAS} (each replica is an app and a sidecar process on this machine)"
        ))
    }
}

/// An HTTP status (100..=599).
pub fn http_status(s: u16) -> Result<(), String> {
    if (100..=599).contains(&s) {
        Ok(())
    } else {
        Err(format!("{s}: not an HTTP status (100..=599)"))
    }
}

/// An inline JWKS the proxy can verify tokens with: at least one usable signing key.
pub fn jwks(json: &str) -> Result<(), String> {
    crate::jwks::KeySet::parse(json)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Header edits: names and values the proxy can build headers from.
pub fn header_edits(e: &HeaderEdits) -> Result<(), String> {
    for (what, list) in [("set", &e.set), ("add", &e.add)] {
        for (name, value) in list {
            header_name(name).map_err(|why| format!("{what}: {why}"))?;
            header_value(value).map_err(|why| format!("{what} {name}: {why}"))?;
        }
    }
    for name in &e.remove {
        header_name(name).map_err(|why| format!("remove: {why}"))?;
    }
    Ok(())
}

fn string_match(m: &StringMatch) -> Result<(), String> {
    match m {
        StringMatch::Regex(r) => full_regex(r).map(|_| ()),
        StringMatch::Exact(_) | StringMatch::Prefix(_) | StringMatch::Present => Ok(()),
    }
}

/// A match block (and its negated blocks): regexes, the method, header names, the port.
pub fn route_match(m: &RouteMatch) -> Result<(), String> {
    if let Some(PathMatch::Regex(r)) = &m.path {
        full_regex(r).map_err(|why| format!("path: {why}"))?;
    }
    if let Some(x) = &m.method {
        method(x)?;
    }
    for h in &m.headers {
        header_name(&h.name).map_err(|why| format!("header match: {why}"))?;
        string_match(&h.value).map_err(|why| format!("header match {}: {why}", h.name))?;
    }
    for q in &m.query {
        string_match(&q.value).map_err(|why| format!("query match {}: {why}", q.name))?;
    }
    for (what, v) in [("scheme", &m.scheme), ("authority", &m.authority)] {
        if let Some(v) = v {
            string_match(v).map_err(|why| format!("{what} match: {why}"))?;
        }
    }
    if m.port == Some(0) {
        return Err("match on port 0: not a port".into());
    }
    m.negated.iter().try_for_each(route_match)
}

/// A whole route as the proxy compiles it: matches, destinations and their weights, header
/// edits, rewrite, redirect, fixed answer, mirrors, CORS, retries, faults, response classes.
pub fn route(r: &HttpRoute) -> Result<(), String> {
    let answers = r.redirect.is_some() || r.direct_response.is_some();
    if !answers {
        if r.destinations.is_empty() {
            return Err("no destination".into());
        }
        let total = r
            .destinations
            .iter()
            .fold(0u32, |t, d| t.saturating_add(d.weight));
        if total == 0 {
            return Err("every destination has weight 0".into());
        }
    }
    route_values(r)
}

/// [`route`] but for whether the route has somewhere to send requests: every value it holds
/// (for a translation that cannot resolve destinations without the mesh's services).
pub fn route_values(r: &HttpRoute) -> Result<(), String> {
    for m in &r.matches {
        route_match(m)?;
    }
    for d in r
        .destinations
        .iter()
        .chain(r.mirrors.iter().map(|m| &m.destination))
    {
        header_edits(&d.request_headers)
            .map_err(|why| format!("{}: request header edit {why}", d.service))?;
        header_edits(&d.response_headers)
            .map_err(|why| format!("{}: response header edit {why}", d.service))?;
    }
    header_edits(&r.request_headers).map_err(|why| format!("request header edit {why}"))?;
    header_edits(&r.response_headers).map_err(|why| format!("response header edit {why}"))?;
    if let Some(w) = &r.rewrite {
        match &w.path {
            Some(PathRewrite::Full(p)) => uri_path(p).map_err(|why| format!("rewrite: {why}"))?,
            // An empty prefix drops the matched one.
            Some(PathRewrite::Prefix(p)) if !p.is_empty() => {
                uri_path(p).map_err(|why| format!("rewrite: {why}"))?
            }
            Some(PathRewrite::Regex { pattern, .. }) => {
                regex(pattern).map_err(|why| format!("rewrite: {why}"))?;
            }
            Some(PathRewrite::Prefix(_)) | None => {}
        }
        if let Some(a) = &w.authority {
            authority(a).map_err(|why| format!("rewrite authority: {why}"))?;
        }
    }
    if let Some(d) = &r.redirect {
        if !REDIRECT_STATUSES.contains(&d.status) {
            return Err(format!(
                "redirect status {}: not 301, 302, 303, 307 or 308",
                d.status
            ));
        }
        if let Some(s) = &d.scheme {
            scheme(s).map_err(|why| format!("redirect: {why}"))?;
        }
        if let Some(h) = &d.host {
            let a = authority(h).map_err(|why| format!("redirect host: {why}"))?;
            if a.port().is_some() && d.port.is_some() {
                return Err(format!(
                    "redirect host {h:?} has a port, and the redirect sets one too"
                ));
            }
        }
        if d.port == Some(0) {
            return Err("redirect port 0: not a port".into());
        }
        match &d.path {
            Some(PathRewrite::Full(p)) => uri_path(p).map_err(|why| format!("redirect: {why}"))?,
            Some(PathRewrite::Prefix(p)) if !p.is_empty() => {
                uri_path(p).map_err(|why| format!("redirect: {why}"))?
            }
            Some(PathRewrite::Regex { pattern, .. }) => {
                regex(pattern).map_err(|why| format!("redirect: {why}"))?;
            }
            Some(PathRewrite::Prefix(_)) | None => {}
        }
    }
    if let Some(d) = &r.direct_response {
        http_status(d.status).map_err(|why| format!("direct response status {why}"))?;
    }
    if let Some(c) = &r.cors {
        for o in &c.allow_origins {
            string_match(o).map_err(|why| format!("CORS origin: {why}"))?;
        }
        for (what, list) in [
            ("allowMethods", &c.allow_methods),
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            if !list.is_empty() {
                header_value(&list.join(",")).map_err(|why| format!("CORS {what}: {why}"))?;
            }
        }
    }
    if let Some(p) = &r.retry {
        for c in &p.on.status_codes {
            http_status(*c).map_err(|why| format!("retry on status {why}"))?;
        }
        if let Some(s) = p.on.grpc_statuses.iter().find(|s| **s > MAX_GRPC_STATUS) {
            return Err(format!("retry on gRPC status {s}: not a gRPC status"));
        }
    }
    if let Some(s) = r.fault.as_ref().and_then(|f| f.abort_status) {
        if !(200..=599).contains(&s) {
            return Err(format!("fault abort status {s}: not 200..=599"));
        }
    }
    for c in &r.response_classes {
        if http_status(c.min).is_err() || http_status(c.max).is_err() || c.min > c.max {
            return Err(format!(
                "response class {}..={}: not a range of HTTP statuses",
                c.min, c.max
            ));
        }
    }
    Ok(())
}

/// A traffic policy (a service's or a subset's) the proxy can run.
pub fn traffic_policy(p: &TrafficPolicy) -> Result<(), String> {
    match &p.consistent_hash {
        Some(HashOn::Header(name)) => {
            header_name(name).map_err(|why| format!("consistent hash on a header: {why}"))?;
        }
        Some(HashOn::Cookie { name, path, .. }) => {
            if name.is_empty() {
                return Err("consistent hash on a cookie without a name".into());
            }
            // The proxy sets the cookie: `NAME=VALUE; Path=PATH` must be a header value.
            let cookie = |why: String| format!("consistent hash cookie: {why}");
            header_name(name).map_err(|_| {
                cookie(format!(
                    "{name:?} is not a cookie name (a token of letters, digits and !#$%&'*+-.^_`|~)"
                ))
            })?;
            if let Some(path) = path {
                if path.contains(';') {
                    return Err(cookie(format!("path {path:?} holds a `;`")));
                }
                header_value(path).map_err(|why| cookie(format!("path {why}")))?;
            }
        }
        Some(HashOn::QueryParam(name)) if name.is_empty() => {
            return Err("consistent hash on a query parameter without a name".into())
        }
        Some(HashOn::QueryParam(_) | HashOn::SourceIp) | None => {}
    }
    if let Some(o) = &p.outlier_detection {
        // A zero review period would make the proxy's ejection timer spin (or panic, for
        // tokio's).
        if o.interval_ms == 0 {
            return Err("outlier detection interval of 0 ms".into());
        }
        for (what, pct) in [
            ("max ejection", o.max_ejection_percent),
            ("min health", o.min_health_percent),
        ] {
            if pct > 100 {
                return Err(format!(
                    "outlier detection {what} percent {pct} is above 100"
                ));
            }
        }
    }
    if let Some(f) = &p.failure_accrual {
        // `contains` is false for NaN too.
        if !(0.0..=100.0).contains(&f.jitter_ratio) {
            return Err(format!(
                "failure accrual jitter ratio {} is not within 0..=100",
                f.jitter_ratio
            ));
        }
        if f.min_penalty_ms > f.max_penalty_ms {
            return Err(format!(
                "failure accrual min penalty {} ms is above the max {} ms",
                f.min_penalty_ms, f.max_penalty_ms
            ));
        }
    }
    if let Some(b) = &p.retry_budget {
        if !(b.ratio.is_finite() && b.ratio >= 0.0) {
            return Err(format!(
                "retry budget ratio {} is not a finite ratio >= 0",
                b.ratio
            ));
        }
        // The budget is counted over this window; an empty window counts nothing.
        if b.ttl_ms == 0 {
            return Err("retry budget window of 0 ms".into());
        }
    }
    Ok(())
}

/// A RequestAuthentication JWT rule the proxy can enforce as written: inline keys it can verify
/// with, and header names it can read tokens from and write claims to.
pub fn jwt_rule(j: &JwtRule) -> Result<(), String> {
    let rule = |why: String| format!("issuer {}: {why}", j.issuer);
    if let Some(json) = &j.jwks {
        jwks(json).map_err(|why| rule(format!("jwks: {why}")))?;
    }
    for (name, _) in &j.from_headers {
        header_name(name.trim()).map_err(|why| rule(format!("fromHeaders: {why}")))?;
    }
    if let Some(h) = &j.output_payload_to_header {
        header_name(h.trim()).map_err(|why| rule(format!("outputPayloadToHeader: {why}")))?;
    }
    for (h, _) in &j.output_claim_to_headers {
        header_name(h.trim()).map_err(|why| rule(format!("outputClaimToHeaders: {why}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
