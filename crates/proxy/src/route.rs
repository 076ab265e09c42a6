//! Route matching: which rule a request falls under and which destination of that rule it goes
//! to. Compiled from a snapshot's `model::HttpRoute`s off the data path (regexes built once);
//! per request it only reads.

use crate::filters::{CorsOp, HeaderOps, RedirectOp, RewriteOp};
use crate::table::Backend;
use http::request::Parts;
use model::route::{
    DirectResponse, HeaderMatch, HttpRoute, PathMatch, QueryMatch, ResponseClass, RouteMatch,
    StringMatch,
};
use rand::Rng;
use regex::Regex;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("route {route}: {why}")]
pub struct RouteError {
    pub route: String,
    pub why: String,
}

pub(crate) enum Str {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present,
}

impl Str {
    pub(crate) fn compile(m: &StringMatch, route: &str) -> Result<Str, RouteError> {
        Ok(match m {
            StringMatch::Exact(s) => Str::Exact(s.clone()),
            StringMatch::Prefix(s) => Str::Prefix(s.clone()),
            StringMatch::Regex(r) => Str::Regex(full_regex(r, route)?),
            StringMatch::Present => Str::Present,
        })
    }

    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            Str::Exact(s) => v == s,
            Str::Prefix(s) => v.starts_with(s.as_str()),
            Str::Regex(r) => r.is_match(v),
            Str::Present => true,
        }
    }
}

/// RE2-style full match, as Istio and the Gateway API mean it.
fn full_regex(r: &str, route: &str) -> Result<Regex, RouteError> {
    model::valid::full_regex(r).map_err(|why| RouteError {
        route: route.to_string(),
        why,
    })
}

/// A path match compiled for the hot path; the route table and Linkerd's per-route
/// authorization both use it.
#[derive(Debug)]
pub(crate) enum Path {
    Exact(String),
    Prefix(String),
    SegmentPrefix(String),
    Regex(Regex),
}

impl Path {
    pub(crate) fn compile(m: &PathMatch, route: &str) -> Result<Path, RouteError> {
        Ok(match m {
            PathMatch::Exact(p) => Path::Exact(p.clone()),
            PathMatch::Prefix(p) => Path::Prefix(p.clone()),
            PathMatch::SegmentPrefix(p) => Path::SegmentPrefix(p.trim_end_matches('/').to_string()),
            PathMatch::Regex(r) => Path::Regex(full_regex(r, route)?),
        })
    }

    /// Whether `path` (without its query) matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Path::Exact(e) => path == e,
            Path::Prefix(e) => path.starts_with(e.as_str()),
            // Segment-wise: `/v2` matches `/v2` and `/v2/x`, not `/v2x`.
            Path::SegmentPrefix(e) => {
                e.is_empty()
                    || path
                        .strip_prefix(e.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            Path::Regex(r) => r.is_match(path),
        }
    }
}

/// The workload a route table is compiled for: Istio's `sourceLabels` / `sourceNamespace`
/// matches are about it, so they are decided once, at compile time.
#[derive(Clone, Copy, Debug)]
pub struct Me<'a> {
    pub namespace: &'a str,
    pub labels: &'a model::Labels,
}

impl Me<'_> {
    /// No workload (tests, and proxies that are nobody's sidecar): source matches never hold.
    pub fn nobody() -> Me<'static> {
        static EMPTY: std::sync::OnceLock<model::Labels> = std::sync::OnceLock::new();
        Me {
            namespace: "",
            labels: EMPTY.get_or_init(Default::default),
        }
    }
}

/// What a match asks of the request itself: its path, method, headers and query parameters.
/// Compiled once; route matching and Linkerd's per-route authorization both use it.
pub(crate) struct RequestMatch {
    pub path: Option<Path>,
    pub method: Option<http::Method>,
    pub headers: Vec<(http::HeaderName, Str, bool)>,
    pub query: Vec<(String, Str)>,
}

impl RequestMatch {
    pub fn compile(m: &RouteMatch, route: &str) -> Result<RequestMatch, RouteError> {
        let bad = |why: String| RouteError {
            route: route.to_string(),
            why,
        };
        let path = m
            .path
            .as_ref()
            .map(|p| Path::compile(p, route))
            .transpose()?;
        let method = match &m.method {
            None => None,
            Some(s) => Some(model::valid::method(s).map_err(bad)?),
        };
        let mut headers = Vec::new();
        for HeaderMatch {
            name,
            value,
            invert,
        } in &m.headers
        {
            let n = model::valid::header_name(name).map_err(bad)?;
            headers.push((n, Str::compile(value, route)?, *invert));
        }
        let mut query = Vec::new();
        for QueryMatch { name, value } in &m.query {
            query.push((name.clone(), Str::compile(value, route)?));
        }
        Ok(RequestMatch {
            path,
            method,
            headers,
            query,
        })
    }

    /// Whether a request with `method`, `path` (without its query), the raw `query` string and
    /// `headers` satisfies every condition.
    pub fn matches(
        &self,
        method: &http::Method,
        path: &str,
        query: &str,
        headers: &http::HeaderMap,
    ) -> bool {
        if self.path.as_ref().is_some_and(|p| !p.matches(path)) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        for (name, value, invert) in &self.headers {
            let found = headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| value.matches(v)));
            if found == *invert {
                return false;
            }
        }
        for (name, value) in &self.query {
            // The first occurrence of a parameter decides, as in the Gateway API.
            let v = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name);
            if !v.is_some_and(|(_, v)| value.matches(&v)) {
                return false;
            }
        }
        true
    }
}

struct Match {
    request: RequestMatch,
    negated: Vec<Match>,
    scheme: Option<Str>,
    authority: Option<Str>,
    port: Option<u16>,
    /// The calling workload satisfies the match's `sourceLabels` / `sourceNamespace`.
    source_ok: bool,
}

impl Match {
    fn compile(m: &RouteMatch, route: &str, me: Me<'_>) -> Result<Match, RouteError> {
        let request = RequestMatch::compile(m, route)?;
        let negated = m
            .negated
            .iter()
            .map(|n| Match::compile(n, route, me))
            .collect::<Result<_, _>>()?;
        let source_ok = m
            .source_labels
            .iter()
            .all(|(k, v)| me.labels.get(k) == Some(v))
            && m.source_namespace
                .as_deref()
                .is_none_or(|ns| ns == me.namespace);
        Ok(Match {
            request,
            negated,
            scheme: m
                .scheme
                .as_ref()
                .map(|v| Str::compile(v, route))
                .transpose()?,
            authority: m
                .authority
                .as_ref()
                .map(|v| Str::compile(v, route))
                .transpose()?,
            port: m.port,
            source_ok,
        })
    }

    /// The prefix a prefix path match matched, for prefix rewrites.
    fn prefix(&self) -> Option<&str> {
        match &self.request.path {
            Some(Path::Prefix(p) | Path::SegmentPrefix(p)) => Some(p),
            _ => None,
        }
    }

    fn matches(&self, req: &Parts) -> bool {
        if !self.source_ok {
            return false;
        }
        if let Some(s) = &self.scheme {
            if !s.matches(req.uri.scheme_str().unwrap_or("http")) {
                return false;
            }
        }
        if self.authority.is_some() || self.port.is_some() {
            let authority = req
                .uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| {
                    req.headers
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                })
                .unwrap_or("");
            if let Some(a) = &self.authority {
                if !a.matches(authority) {
                    return false;
                }
            }
            if let Some(p) = self.port {
                if model::Authority::parse(authority).port.unwrap_or(80) != p {
                    return false;
                }
            }
        }
        let query = req.uri.query().unwrap_or("");
        if !self
            .request
            .matches(&req.method, req.uri.path(), query, &req.headers)
        {
            return false;
        }
        !self.negated.iter().any(|n| n.matches(req))
    }
}

/// Where a share of a rule's traffic goes, with that destination's own header edits.
pub struct Dest {
    pub backend: Arc<Backend>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// Istio's request-duration bucket bounds (ms), for per-route latency.
pub const LATENCY_BOUNDS_MS: [f64; 14] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// Per-route counters (as Linkerd's `route_*` metrics): requests and their effective success
/// (after retries), attempts and their actual success, and latency. Atomics only; carried over
/// when a snapshot keeps the route.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub requests: std::sync::atomic::AtomicU64,
    pub successes: std::sync::atomic::AtomicU64,
    pub attempts: std::sync::atomic::AtomicU64,
    pub attempt_successes: std::sync::atomic::AtomicU64,
    /// Counts per bucket of [`LATENCY_BOUNDS_MS`], the last one for anything slower.
    pub latency: [std::sync::atomic::AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

impl RouteStats {
    pub fn request(&self, success: bool, latency: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_add(1, Relaxed);
        if success {
            self.successes.fetch_add(1, Relaxed);
        }
        let ms = latency.as_secs_f64() * 1000.0;
        let i = LATENCY_BOUNDS_MS.partition_point(|b| *b < ms);
        self.latency[i].fetch_add(1, Relaxed);
    }

    pub fn attempt(&self, success: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.attempts.fetch_add(1, Relaxed);
        if success {
            self.attempt_successes.fetch_add(1, Relaxed);
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        serde_json::json!({
            "requests": self.requests.load(Relaxed),
            "successes": self.successes.load(Relaxed),
            "attempts": self.attempts.load(Relaxed),
            "attempt_successes": self.attempt_successes.load(Relaxed),
            "latency_bounds_ms": LATENCY_BOUNDS_MS,
            "latency_counts": self.latency.iter().map(|c| c.load(Relaxed)).collect::<Vec<_>>(),
        })
    }
}

/// One compiled rule.
pub struct Route {
    pub name: String,
    /// The span name of requests under this rule ([`operation`]); set for the port the rule
    /// serves by [`Route::on_port`].
    pub operation: Arc<str>,
    pub stats: Arc<RouteStats>,
    pub timeout: Option<std::time::Duration>,
    pub retry: Option<model::route::RetryPolicy>,
    pub fault: Option<model::route::Fault>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub rewrite: Option<RewriteOp>,
    pub redirect: Option<RedirectOp>,
    pub direct: Option<DirectResponse>,
    /// Mirror backends with their share in millionths.
    pub mirrors: Vec<(Arc<Backend>, u32)>,
    pub cors: Option<CorsOp>,
    pub response_classes: Vec<ResponseClass>,
    matches: Vec<Match>,
    /// Destinations with their cumulative weights.
    destinations: Vec<(Dest, u32)>,
    total: u32,
}

impl Route {
    /// `backend_for` gives the endpoints a destination selects.
    pub fn compile(
        r: &HttpRoute,
        mut backend_for: impl FnMut(&model::route::Destination) -> Arc<Backend>,
    ) -> Result<Route, RouteError> {
        Self::compile_for(r, Me::nobody(), &mut backend_for)
    }

    /// Compiles a rule for the workload `me` (which decides its source matches).
    pub fn compile_for(
        r: &HttpRoute,
        me: Me<'_>,
        mut backend_for: impl FnMut(&model::route::Destination) -> Arc<Backend>,
    ) -> Result<Route, RouteError> {
        let name = &r.name;
        let matches = r
            .matches
            .iter()
            .map(|m| Match::compile(m, name, me))
            .collect::<Result<_, _>>()?;
        let mut total = 0u32;
        let mut destinations = Vec::new();
        for d in &r.destinations {
            if d.weight == 0 {
                continue;
            }
            total = total.saturating_add(d.weight);
            let dest = Dest {
                backend: backend_for(d),
                request_headers: HeaderOps::compile(&d.request_headers, name)?,
                response_headers: HeaderOps::compile(&d.response_headers, name)?,
            };
            destinations.push((dest, total));
        }
        let answers_itself = r.redirect.is_some() || r.direct_response.is_some();
        if total == 0 && !answers_itself {
            return Err(RouteError {
                route: r.name.clone(),
                why: "every destination has weight 0".into(),
            });
        }
        Ok(Route {
            name: r.name.clone(),
            operation: operation(r, None).into(),
            stats: Arc::default(),
            timeout: r.timeout_ms.map(std::time::Duration::from_millis),
            retry: r.retry.clone(),
            fault: r.fault.clone(),
            request_headers: HeaderOps::compile(&r.request_headers, name)?,
            response_headers: HeaderOps::compile(&r.response_headers, name)?,
            rewrite: r
                .rewrite
                .as_ref()
                .map(|w| RewriteOp::compile(w, name))
                .transpose()?,
            redirect: r
                .redirect
                .as_ref()
                .map(|w| RedirectOp::compile(w, name))
                .transpose()?,
            direct: r.direct_response.clone(),
            mirrors: r
                .mirrors
                .iter()
                .filter(|m| m.per_million > 0)
                .map(|m| (backend_for(&m.destination), m.per_million))
                .collect(),
            cors: r
                .cors
                .as_ref()
                .map(|c| CorsOp::compile(c, name))
                .transpose()?,
            response_classes: r.response_classes.clone(),
            matches,
            destinations,
            total,
        })
    }

    /// The rule as served on `port` (its span name names the port).
    pub fn on_port(mut self, r: &HttpRoute, port: Option<u16>) -> Route {
        self.operation = operation(r, port).into();
        self
    }

    /// Whether the request falls under this rule: `Some(prefix)` when it does, with the path
    /// prefix its match matched (for prefix rewrites).
    pub fn matched(&self, req: &Parts) -> Option<Option<&str>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches
            .iter()
            .find(|m| m.matches(req))
            .map(|m| m.prefix())
    }

    pub fn matches(&self, req: &Parts) -> bool {
        self.matched(req).is_some()
    }

    /// Every backend the rule sends to or mirrors to.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.destinations
            .iter()
            .map(|(d, _)| &d.backend)
            .chain(self.mirrors.iter().map(|(b, _)| b))
    }

    /// A destination, drawn by weight; `None` for a rule that answers by itself.
    pub fn pick(&self) -> Option<&Dest> {
        pick_weighted(&self.destinations, self.total)
    }
}

/// One of `items` (each with its cumulative weight, the last being `total`), drawn by weight;
/// `None` when `total` is 0.
pub(crate) fn pick_weighted<T>(items: &[(T, u32)], total: u32) -> Option<&T> {
    if total == 0 || items.is_empty() {
        return None;
    }
    let n = rand::thread_rng().gen_range(0..total);
    let i = items.partition_point(|(_, cum)| *cum <= n);
    Some(&items[i.min(items.len() - 1)].0)
}

/// The span name of a request under rule `r` on `port`, as Istio names its sidecars' spans
/// (Envoy's route decorator): `HOST:PORT/PATH`. `HOST` is the destination service's FQDN when
/// the rule has one destination service, else the name of the resource the rule comes from
/// (`reviews` for `VirtualService default/reviews http[1]`). `PATH` is the rule's path match: a
/// prefix with `*` after it, an exact path, a regex; `/*` when the rule matches any path (or
/// its matches differ in path).
pub fn operation(r: &HttpRoute, port: Option<u16>) -> String {
    let path = |m: &model::route::RouteMatch| match &m.path {
        None => "/*".to_string(),
        Some(PathMatch::Exact(p)) => p.clone(),
        Some(PathMatch::Prefix(p)) | Some(PathMatch::SegmentPrefix(p)) => format!("{p}*"),
        Some(PathMatch::Regex(p)) => p.clone(),
    };
    let mut paths = r.matches.iter().map(path);
    let path = match paths.next() {
        Some(first) if paths.all(|p| p == first) => first,
        _ => "/*".to_string(),
    };
    let mut services = r.destinations.iter().map(|d| &d.service);
    let host = match services.next() {
        Some(first) if services.all(|s| s == first) => first.fqdn(),
        _ => resource_name(&r.name).to_string(),
    };
    match port {
        Some(port) => format!("{host}:{port}{path}"),
        None => format!("{host}{path}"),
    }
}

/// The span name of a request to `service` on `port` that falls under no rule: `HOST:PORT/*`.
pub fn default_operation(service: &model::ServiceKey, port: u16) -> String {
    format!("{}:{port}/*", service.fqdn())
}

/// `reviews` of `VirtualService default/reviews http[1]` (a rule's name: kind, namespace/name,
/// which rule); the whole name when it has no such form.
fn resource_name(rule: &str) -> &str {
    rule.split_whitespace()
        .nth(1)
        .and_then(|nn| nn.rsplit('/').next())
        .unwrap_or(rule)
}

pub mod connection;

#[cfg(test)]
mod tests;
