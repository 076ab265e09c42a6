//! `/fetch`: one downstream call, through the sidecar when there is one, propagating the request
//! headers a mesh app is expected to forward (request id, trace context, end user, auth).

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{HeaderMap, HeaderName, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// The pooled keep-alive client, created once per server.
pub(crate) type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers copied from the incoming request onto the downstream one; plus every `x-b3-*`.
const PROPAGATED: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "end-user",
    "authorization",
    "x-ot-span-context",
    "baggage",
];

pub(crate) fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// What the callee answered: its body as JSON, or as a string when it is not JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Downstream {
    pub status: u16,
    pub body: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("missing `url` query parameter")]
    MissingUrl,
    #[error("invalid url {0:?}: expected http://host[:port][/path]")]
    InvalidUrl(String),
    #[error("request failed: {}", chain(.0))]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("reading response body failed: {0}")]
    Body(#[from] hyper::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl FetchError {
    /// The status the echo answers with: the caller's fault, or a bad gateway.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            FetchError::MissingUrl | FetchError::InvalidUrl(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// GETs `url`, via `proxy` (origin-form, routed by `Host`) when set, else directly.
pub(crate) async fn fetch(
    client: &Client,
    proxy: Option<SocketAddr>,
    incoming: &HeaderMap,
    url: Option<&str>,
) -> Result<Downstream, FetchError> {
    let url = url.ok_or(FetchError::MissingUrl)?;
    let req =
        build_request(proxy, incoming, url).ok_or_else(|| FetchError::InvalidUrl(url.into()))?;
    let call = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, FetchError>((status, body))
    };
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, call)
        .await
        .map_err(|_| FetchError::Timeout(FETCH_TIMEOUT))??;
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(Downstream {
        status: status.as_u16(),
        body,
    })
}

fn build_request(
    proxy: Option<SocketAddr>,
    incoming: &HeaderMap,
    url: &str,
) -> Option<Request<Full<Bytes>>> {
    let target: Uri = url.parse().ok()?;
    if target.scheme_str() != Some("http") {
        return None;
    }
    let authority = target.authority()?;
    let host = match authority.port_u16() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    let path = target.path_and_query().map_or("/", |p| p.as_str());
    let connect_to = proxy.map_or_else(|| host.clone(), |p| p.to_string());

    let mut req = Request::new(Full::default());
    *req.uri_mut() = format!("http://{connect_to}{path}").parse().ok()?;
    let headers = req.headers_mut();
    headers.insert(HOST, HeaderValue::from_str(&host).ok()?);
    for (name, value) in incoming.iter().filter(|(name, _)| propagated(name)) {
        headers.append(name.clone(), value.clone());
    }
    Some(req)
}

fn propagated(name: &HeaderName) -> bool {
    let name = name.as_str();
    PROPAGATED.contains(&name) || name.starts_with("x-b3-")
}

/// An error with its sources, e.g. "client error (Connect): tcp connect error: Connection refused".
fn chain(e: &hyper_util::client::legacy::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
