//! Validates a [`LoadSpec`] into a [`Plan`]: the resolved address, the prebuilt request parts and
//! the stop rule, so the send loops do no parsing or lookups.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

use crate::{LoadError, LoadSpec, DEFAULT_DURATION};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// A fixed total rate (requests per second), split evenly over the lanes.
    Open { rate: f64 },
    /// Back-to-back on every lane.
    Closed,
}

/// A validated spec. Shared by every lane.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The URL as given, for the report.
    pub url: String,
    /// The target's addresses, tried in order on every connect (so `localhost` reaches a server
    /// listening on either 127.0.0.1 or ::1).
    pub addrs: Vec<SocketAddr>,
    pub template: Template,
    pub mode: Mode,
    /// When to stop sending (from the start of the run); `None` only when `requests` bounds the run.
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    /// TCP connections actually opened.
    pub connections: usize,
    /// Requests in flight at once.
    pub lanes: usize,
    pub http2: bool,
    pub timeout: Duration,
}

impl Plan {
    pub async fn new(spec: &LoadSpec) -> Result<Arc<Plan>, LoadError> {
        let invalid = |m: &str| Err(LoadError::InvalidSpec(m.to_string()));
        if spec.connections == 0 {
            return invalid("connections must be at least 1");
        }
        if spec.http2 && spec.concurrency == 0 {
            return invalid("concurrency must be at least 1");
        }
        if spec.http2 && spec.concurrency < spec.connections {
            return Err(LoadError::InvalidSpec(format!(
                "concurrency ({}) must be at least connections ({}) with HTTP/2: each connection carries at least one stream",
                spec.concurrency, spec.connections
            )));
        }
        let mode = match spec.rate {
            None => Mode::Closed,
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e9 => Mode::Open { rate },
            Some(rate) => {
                return Err(LoadError::InvalidSpec(format!(
                    "rate must be a positive number of requests per second, not {rate}"
                )))
            }
        };
        if spec.duration.is_some_and(|d| d.is_zero()) {
            return invalid("duration must be greater than zero");
        }
        if spec.requests == Some(0) {
            return invalid("requests must be at least 1");
        }
        if spec.timeout.is_zero() {
            return invalid("timeout must be greater than zero");
        }
        let duration = match (spec.duration, spec.requests) {
            (None, None) => Some(DEFAULT_DURATION),
            (d, _) => d,
        };

        let target = Target::from_uri(&spec.url)?;
        let addrs = resolve(&target.host, target.port).await?;
        let template = Template::new(spec, &target)?;
        let lanes = if spec.http2 {
            spec.concurrency
        } else {
            spec.connections
        };
        Ok(Arc::new(Plan {
            url: spec.url.to_string(),
            addrs,
            template,
            mode,
            duration,
            requests: spec.requests,
            connections: spec.connections,
            lanes,
            http2: spec.http2,
            timeout: spec.timeout,
        }))
    }
}

/// The parts of the URL the load needs.
struct Target {
    authority: Authority,
    host: String,
    port: u16,
    path_and_query: PathAndQuery,
}

impl Target {
    fn from_uri(uri: &Uri) -> Result<Target, LoadError> {
        let unsupported = |reason: &str| LoadError::UnsupportedUrl {
            url: uri.to_string(),
            reason: reason.to_string(),
        };
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(unsupported("https is not supported; use http://")),
            Some(_) => return Err(unsupported("the scheme must be http://")),
            None => return Err(unsupported("expected http://host:port/path")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| unsupported("no host"))?;
        if authority.as_str().contains('@') {
            return Err(unsupported("user info in the URL is not supported"));
        }
        let host = authority.host().to_string();
        if host.is_empty() {
            return Err(unsupported("no host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let path_and_query = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Target {
            authority,
            host,
            port,
            path_and_query,
        })
    }
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, LoadError> {
    // `Authority::host` keeps the brackets of an IPv6 literal.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let fail = |reason: String| LoadError::Resolve {
        host: host.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| fail(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(fail("no addresses".to_string()));
    }
    Ok(addrs)
}

/// The request every lane sends, built once; [`Template::request`] only clones shared parts.
#[derive(Debug)]
pub(crate) struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// The whole HTTP/1.1 request as it goes on the wire.
    wire: Bytes,
}

impl Template {
    fn new(spec: &LoadSpec, target: &Target) -> Result<Template, LoadError> {
        let mut headers = HeaderMap::with_capacity(spec.headers.len() + 1);
        for (name, value) in &spec.headers {
            headers.append(name.clone(), value.clone());
        }
        let uri = if spec.http2 {
            // HTTP/2 carries the host in `:authority`; a `Host` header given by the user sets it.
            let mut authority = target.authority.clone();
            if let Some(host) = headers.get(HOST) {
                if let Some(a) = host.to_str().ok().and_then(|h| h.parse::<Authority>().ok()) {
                    authority = a;
                    headers.remove(HOST);
                }
            }
            Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(target.path_and_query.clone())
                .build()
                .map_err(|e| LoadError::InvalidSpec(format!("cannot build the request URI: {e}")))?
        } else {
            if !headers.contains_key(HOST) {
                let value = HeaderValue::from_str(target.authority.as_str()).map_err(|e| {
                    LoadError::InvalidSpec(format!("the URL's authority is not a valid Host: {e}"))
                })?;
                headers.insert(HOST, value);
            }
            // HTTP/1.1 to an origin server: the request line carries only the path (origin form).
            Uri::from(target.path_and_query.clone())
        };
        let wire = serialize(&spec.method, &uri, &headers, &spec.body);
        Ok(Template {
            method: spec.method.clone(),
            uri,
            headers,
            body: spec.body.clone(),
            wire,
        })
    }

    /// The request serialized for HTTP/1.1.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// A fresh request: reference-counted clones of the prebuilt parts, no parsing.
    pub fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// An HTTP/1.1 request on the wire: request line, headers (a `Content-Length` added when the
/// request has a body or a method that expects one, unless given), blank line, body.
fn serialize(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Bytes {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {target} HTTP/1.1\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let expects_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if !headers.contains_key(http::header::CONTENT_LENGTH) && (!body.is_empty() || expects_body) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}
