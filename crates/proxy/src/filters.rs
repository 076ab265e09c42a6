//! Route filters compiled for the hot path: header edits, path and authority rewrites,
//! redirects, fixed answers, CORS, and the mirror share. Built once per snapshot (header names
//! and values validated, regexes compiled); per request they only read.

use crate::body::{self, Body};
use crate::route::RouteError;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use model::route::{Cors, DirectResponse, HeaderEdits, PathRewrite, Redirect, Rewrite};
use model::StringMatch;
use regex::Regex;

fn bad(route: &str, why: String) -> RouteError {
    RouteError {
        route: route.to_string(),
        why,
    }
}

fn name(route: &str, n: &str) -> Result<HeaderName, RouteError> {
    model::valid::header_name(n).map_err(|why| bad(route, why))
}

fn value(route: &str, v: &str) -> Result<HeaderValue, RouteError> {
    model::valid::header_value(v).map_err(|why| bad(route, why))
}

/// Header edits: remove, then set, then add (Envoy's order).
#[derive(Debug, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn compile(e: &HeaderEdits, route: &str) -> Result<HeaderOps, RouteError> {
        let pairs = |list: &[(String, String)]| {
            list.iter()
                .map(|(n, v)| Ok((name(route, n)?, value(route, v)?)))
                .collect::<Result<Vec<_>, RouteError>>()
        };
        Ok(HeaderOps {
            set: pairs(&e.set)?,
            add: pairs(&e.add)?,
            remove: e
                .remove
                .iter()
                .map(|n| name(route, n))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

enum PathOp {
    Full(String),
    Prefix(String),
    Regex(Regex, String),
}

impl PathOp {
    fn compile(p: &PathRewrite, route: &str) -> Result<PathOp, RouteError> {
        Ok(match p {
            PathRewrite::Full(s) => PathOp::Full(s.clone()),
            PathRewrite::Prefix(s) => PathOp::Prefix(s.clone()),
            PathRewrite::Regex {
                pattern,
                substitution,
            } => PathOp::Regex(
                model::valid::regex(pattern)
                    .map_err(|why| bad(route, format!("rewrite: {why}")))?,
                // RE2/Envoy write groups as \1; the regex crate as ${1}.
                Regex::new(r"\\(\d)")
                    .expect("static regex")
                    .replace_all(substitution, "$${$1}")
                    .into_owned(),
            ),
        })
    }

    /// The new path for `path`, given the prefix the route matched (if it matched one).
    fn apply(&self, path: &str, matched_prefix: Option<&str>) -> String {
        match self {
            PathOp::Full(p) => p.clone(),
            PathOp::Prefix(new) => match matched_prefix {
                Some(old) => replace_prefix(path, old, new),
                None => new.clone(),
            },
            PathOp::Regex(re, sub) => re.replace_all(path, sub.as_str()).into_owned(),
        }
    }
}

/// `path` with its leading `old` replaced by `new`, without doubling or losing the slash
/// between them (Gateway API `ReplacePrefixMatch`: `/foo` → `/` makes `/foo/bar` `/bar`).
pub fn replace_prefix(path: &str, old: &str, new: &str) -> String {
    let rest = path.strip_prefix(old).unwrap_or(path);
    let out = match (new.ends_with('/'), rest.starts_with('/')) {
        (true, true) => format!("{new}{}", &rest[1..]),
        (false, false) if !rest.is_empty() && !new.is_empty() => format!("{new}/{rest}"),
        _ => format!("{new}{rest}"),
    };
    if out.is_empty() {
        "/".to_string()
    } else {
        out
    }
}

/// A compiled rewrite.
pub struct RewriteOp {
    path: Option<PathOp>,
    pub authority: Option<String>,
}

impl RewriteOp {
    pub fn compile(r: &Rewrite, route: &str) -> Result<RewriteOp, RouteError> {
        Ok(RewriteOp {
            path: r
                .path
                .as_ref()
                .map(|p| PathOp::compile(p, route))
                .transpose()?,
            authority: r.authority.clone(),
        })
    }

    /// The path and query to send upstream instead of `path_and_query`.
    pub fn path_and_query(&self, path_and_query: &str, matched_prefix: Option<&str>) -> String {
        let Some(op) = &self.path else {
            return path_and_query.to_string();
        };
        let (path, query) = split_query(path_and_query);
        let new = op.apply(path, matched_prefix);
        match query {
            Some(q) => format!("{new}?{q}"),
            None => new,
        }
    }
}

fn split_query(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

/// A compiled redirect.
pub struct RedirectOp {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<PathOp>,
    status: StatusCode,
}

impl RedirectOp {
    pub fn compile(r: &Redirect, route: &str) -> Result<RedirectOp, RouteError> {
        let status = StatusCode::from_u16(r.status)
            .ok()
            .filter(|s| s.is_redirection())
            .ok_or_else(|| bad(route, format!("redirect status {} is not 3xx", r.status)))?;
        Ok(RedirectOp {
            scheme: r.scheme.clone(),
            host: r.host.clone(),
            port: r.port,
            path: r
                .path
                .as_ref()
                .map(|p| PathOp::compile(p, route))
                .transpose()?,
            status,
        })
    }

    /// The redirect for a request to `authority` + `path_and_query` (received as `scheme`).
    pub fn respond(
        &self,
        scheme: &str,
        authority: &str,
        path_and_query: &str,
        matched_prefix: Option<&str>,
    ) -> Response<Body> {
        let a = model::Authority::parse(authority);
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = self.host.as_deref().unwrap_or(a.host);
        // Gateway API: with a new scheme and no port, the scheme's well-known port; else the
        // request's own. Well-known ports are left out of Location.
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => a.port,
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = port.filter(|p| *p != default_port);
        let (path, query) = split_query(path_and_query);
        let path = match &self.path {
            Some(op) => op.apply(path, matched_prefix),
            None => path.to_string(),
        };
        let mut location = format!("{scheme}://{host}");
        if let Some(p) = port {
            location.push_str(&format!(":{p}"));
        }
        location.push_str(&path);
        if let Some(q) = query {
            location.push('?');
            location.push_str(q);
        }
        let mut rsp = Response::new(body::empty());
        *rsp.status_mut() = self.status;
        if let Ok(v) = HeaderValue::from_str(&location) {
            rsp.headers_mut().insert(header::LOCATION, v);
        }
        rsp
    }
}

/// A fixed answer.
pub fn direct(d: &DirectResponse) -> Response<Body> {
    let mut rsp = Response::new(body::full(d.body.clone()));
    *rsp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
    if !d.body.is_empty() {
        rsp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    rsp
}

/// A compiled CORS policy.
pub struct CorsOp {
    origins: Vec<crate::route::Str>,
    any_origin: bool,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

impl CorsOp {
    pub fn compile(c: &Cors, route: &str) -> Result<CorsOp, RouteError> {
        let list = |l: &[String]| -> Result<Option<HeaderValue>, RouteError> {
            if l.is_empty() {
                Ok(None)
            } else {
                value(route, &l.join(",")).map(Some)
            }
        };
        Ok(CorsOp {
            any_origin: c
                .allow_origins
                .iter()
                .any(|o| matches!(o, StringMatch::Exact(s) if s == "*")),
            origins: c
                .allow_origins
                .iter()
                .map(|o| crate::route::Str::compile(o, route))
                .collect::<Result<_, _>>()?,
            methods: list(&c.allow_methods)?,
            headers: list(&c.allow_headers)?,
            expose: list(&c.expose_headers)?,
            max_age: c.max_age_s.map(HeaderValue::from),
            credentials: c.allow_credentials,
        })
    }

    fn allowed<'a>(&self, req: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = req.get(header::ORIGIN)?;
        let s = origin.to_str().ok()?;
        (self.any_origin || self.origins.iter().any(|o| o.matches(s))).then_some(origin)
    }

    /// The answer to a CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), which the proxy gives itself, as Envoy does.
    pub fn preflight(&self, method: &Method, req: &HeaderMap) -> Option<Response<Body>> {
        if method != Method::OPTIONS
            || !req.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            || !req.contains_key(header::ORIGIN)
        {
            return None;
        }
        // Not an allowed origin: not this policy's preflight to answer. As Envoy's CORS filter
        // does, the request goes on to the app, which may answer it (or not) itself; the
        // browser blocks the cross-origin call unless the app allows it.
        let origin = self.allowed(req)?;
        let mut rsp = Response::new(body::empty());
        let h = rsp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Some(m) = &self.methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
        }
        if let Some(v) = &self.headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        Some(rsp)
    }

    /// Adds the CORS headers to an actual (non-preflight) response for an allowed origin.
    pub fn decorate(&self, req: &HeaderMap, rsp: &mut HeaderMap) {
        let Some(origin) = self.allowed(req) else {
            return;
        };
        rsp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Some(v) = &self.expose {
            rsp.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if self.credentials {
            rsp.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
