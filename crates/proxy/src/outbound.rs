//! App → mesh: the outbound side of a sidecar, and the ingress gateway.
//!
//! A request names its service in the absolute-form URI (`GET http://hello:80/ HTTP/1.1`, as sent
//! to an `HTTP_PROXY`) or in `Host`/`:authority`. The route is looked up in the snapshot in force,
//! an endpoint is chosen by the service's balancer, and the request goes to that endpoint's
//! sidecar over the pooled HTTP/2 connection. Attempts that provably never reached the app
//! (connection refused, stream refused, the peer sidecar could not reach its app) are retried on
//! another endpoint, as Istio's default retry policy does for connect failures.

use crate::balance::{EndpointState, InFlight};
use crate::body::{self, Body};
use crate::flags::{self, Flag};
use crate::metrics::{Direction, Metrics};
use crate::server::{Drain, Handler};
use crate::settings::Mode;
use crate::table::{Backend, RouteTable};
use crate::upstream::ConnectError;
use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use model::route::RetryPolicy;
use model::Authority;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per request: the first plus Istio's default of two retries.
pub const MAX_ATTEMPTS: usize = 3;

/// The header the outbound side adds, naming the calling workload's identity.
pub const CLIENT_ID_HEADER: &str = "x-weft-client";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub struct Outbound {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub mode: Mode,
    /// The namespace a bare service name resolves in.
    pub namespace: String,
    pub client_id: HeaderValue,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
}

/// Why one attempt failed.
enum AttemptError {
    /// The request never reached the peer: safe to send elsewhere.
    Retryable(String),
    /// No answer within the route's per-try timeout.
    PerTryTimeout(String),
    /// The request may have reached the app: answering is all that is left.
    Final(Flag, String),
}

impl Handler for Outbound {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let version = req.version();
        let mut rsp = self.route(req).await;
        finish_response(&mut rsp, version, &self.drain);
        if let Some(flag) = flags::of(&rsp) {
            self.metrics.flag(flag);
        }
        self.metrics
            .request(Direction::outbound, rsp.status().as_u16());
        rsp
    }
}

impl Outbound {
    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let Some(authority) = request_authority(&parts.uri, &parts.headers) else {
            return flags::respond(Flag::BadRequest, "request names no host");
        };
        let auth = Authority::parse(&authority);
        let service = {
            let table = self.table.load();
            table.resolve(&auth, &self.namespace).cloned()
        };
        let Some(service) = service else {
            return flags::respond(
                Flag::NoRoute,
                format!("no service in the mesh for host {authority:?}"),
            );
        };
        if self.mode != Mode::Ingress {
            let port = auth.port.unwrap_or(80);
            if port != service.port {
                return flags::respond(
                    Flag::NoRoute,
                    format!(
                        "no service in the mesh for host {authority:?}: {} listens on port {}",
                        service.key, service.port
                    ),
                );
            }
        }
        let Some((rule, backend)) = service.route(&parts) else {
            return flags::respond(
                Flag::NoRoute,
                format!(
                    "no route of {} matches {} {}",
                    service.key,
                    parts.method,
                    parts.uri.path()
                ),
            );
        };

        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        if !parts.headers.contains_key(REQUEST_ID_HEADER) {
            parts.headers.insert(REQUEST_ID_HEADER, new_request_id());
        }
        parts
            .headers
            .insert(CLIENT_ID_HEADER, self.client_id.clone());
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = match Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
        {
            Ok(u) => u,
            Err(e) => return flags::respond(Flag::BadRequest, format!("bad request target: {e}")),
        };
        parts.version = Version::HTTP_2;

        let backend = backend.clone();
        let fault = rule.and_then(|r| r.fault.as_ref());
        let mut delayed = false;
        if let Some(f) = fault {
            if let Some(ms) = f.delay_ms.filter(|_| chance(f.delay_per_million)) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                delayed = true;
            }
            if let Some(status) = f.abort_status.filter(|_| chance(f.abort_per_million)) {
                let status = http::StatusCode::from_u16(status)
                    .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
                return flags::respond_with(Flag::FaultInjected, status, "fault filter abort");
            }
        }
        // As in Istio, a route that injects faults has no client-side timeout or retries.
        let timeout = rule.and_then(|r| r.timeout).filter(|_| fault.is_none());
        let retry = rule
            .and_then(|r| r.retry.as_ref())
            .filter(|_| fault.is_none());
        let attempts = async {
            let mut rsp = self.attempts(parts, body, &backend, retry).await;
            if delayed && flags::of(&rsp).is_none() {
                rsp.headers_mut().insert(
                    flags::FLAG_HEADER,
                    HeaderValue::from_static(Flag::DelayInjected.as_str()),
                );
            }
            rsp
        };
        match timeout {
            None => attempts.await,
            Some(t) => match tokio::time::timeout(t, attempts).await {
                Ok(rsp) => rsp,
                Err(_) => flags::respond(
                    Flag::UpstreamTimeout,
                    format!("upstream request timeout ({t:?}) for {}", backend.name),
                ),
            },
        }
    }

    /// Sends the request to `backend`, again on another endpoint when an attempt fails in a
    /// way the route's retry policy (or, without one, the proxy's default) says to retry.
    async fn attempts(
        &self,
        mut parts: http::request::Parts,
        body: Incoming,
        backend: &Arc<Backend>,
        retry: Option<&RetryPolicy>,
    ) -> Response<Body> {
        // Only a request without a body can be sent twice; any request can move on to another
        // endpoint while no connection would take it.
        let replayable = http_body::Body::is_end_stream(&body);
        // A peer's app that died mid-request may have seen it: only idempotent methods go again.
        let idempotent = replayable && parts.method.is_idempotent();
        let max_attempts = retry.map_or(MAX_ATTEMPTS, |p| 1 + p.attempts as usize);
        let per_try = retry
            .and_then(|p| p.per_try_timeout_ms)
            .map(Duration::from_millis);
        let mut first_body = Some(body::incoming(body));
        let mut tried: Vec<usize> = Vec::with_capacity(max_attempts);
        let mut last_error = None;
        let mut last_response: Option<Response<Body>> = None;
        for attempt in 0..max_attempts {
            if tried.len() >= backend.endpoints.len() {
                // Every endpoint had its turn: a retry policy may go round again.
                tried.clear();
            }
            let Some((idx, ep)) = backend.pick(&tried) else {
                break;
            };
            let ep = ep.clone();
            tried.push(idx);
            if attempt > 0 {
                self.metrics.retries.inc();
                if retry.is_some() {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            let in_flight = ep.start();
            let sender = match ready_sender(&ep).await {
                Ok(s) => s,
                Err(msg) => {
                    tracing::debug!(backend = %backend.name, %msg, "attempt failed");
                    // Nothing reached the app: any attempt left may go elsewhere.
                    last_error = Some((Flag::UpstreamConnectFailure, msg));
                    continue;
                }
            };
            let req = match (replayable, first_body.take()) {
                (true, b) => clone_request(&parts, b.unwrap_or_else(body::empty)),
                (false, Some(b)) => {
                    Request::from_parts(std::mem::replace(&mut parts, empty_parts()), b)
                }
                (false, None) => break,
            };
            let outcome = match per_try {
                None => send(&ep, sender, req, in_flight, idempotent).await,
                Some(t) => {
                    match tokio::time::timeout(t, send(&ep, sender, req, in_flight, idempotent))
                        .await
                    {
                        Ok(o) => o,
                        Err(_) => Err(AttemptError::PerTryTimeout(format!(
                            "{}: no answer within the per-try timeout {t:?}",
                            ep.endpoint.instance
                        ))),
                    }
                }
            };
            match outcome {
                Ok(rsp) => {
                    let more = attempt + 1 < max_attempts && replayable;
                    if more && retry.is_some_and(|p| retry_status(p, rsp.status().as_u16())) {
                        tracing::debug!(backend = %backend.name, status = %rsp.status(), "retrying on status");
                        last_response = Some(rsp);
                        continue;
                    }
                    return rsp;
                }
                Err(AttemptError::Final(flag, msg)) => {
                    let reset = flag == Flag::UpstreamConnectionTermination;
                    if reset && retry.is_some_and(|p| p.on.reset || p.on.server_error) {
                        last_error = Some((flag, msg));
                        continue;
                    }
                    return flags::respond(flag, msg);
                }
                Err(AttemptError::PerTryTimeout(msg)) => {
                    last_error = Some((Flag::UpstreamTimeout, msg));
                    last_response = None;
                }
                Err(AttemptError::Retryable(msg)) => {
                    tracing::debug!(backend = %backend.name, %msg, "attempt failed");
                    last_error = Some((Flag::UpstreamConnectFailure, msg));
                }
            }
        }
        if let Some(rsp) = last_response {
            return rsp;
        }
        match last_error {
            None => flags::respond(
                Flag::NoHealthyUpstream,
                format!("no ready endpoint for {}", backend.name),
            ),
            Some((Flag::UpstreamConnectFailure, msg)) => flags::respond(
                Flag::UpstreamConnectFailure,
                format!("no endpoint of {} could be reached: {msg}", backend.name),
            ),
            Some((flag, msg)) => flags::respond(flag, msg),
        }
    }
}

/// True for `per_million` out of a million calls.
fn chance(per_million: u32) -> bool {
    per_million >= 1_000_000 || rand::thread_rng().gen_range(0..1_000_000) < per_million
}

/// Whether a response status calls for another attempt under `p`.
fn retry_status(p: &RetryPolicy, status: u16) -> bool {
    (p.on.server_error && status >= 500)
        || (p.on.gateway_error && matches!(status, 502..=504))
        || p.on.status_codes.contains(&status)
}

/// Envoy's retry back-off: 25 ms doubling, capped at 250 ms, with full jitter.
fn backoff(attempt: usize) -> Duration {
    let base = Duration::from_millis(25) * 2u32.pow((attempt as u32 - 1).min(3));
    let cap = base.min(Duration::from_millis(250));
    cap.mul_f64(rand::random::<f64>())
}

/// A sender on an open, ready connection to `ep`.
async fn ready_sender(
    ep: &Arc<EndpointState>,
) -> Result<hyper::client::conn::http2::SendRequest<Body>, String> {
    let mut sender = match ep.conn.sender(ep.endpoint.address).await {
        Ok(s) => s,
        Err(e) => {
            ep.connect_failed();
            return Err(connect_message(&ep.endpoint.instance, &e));
        }
    };
    if sender.ready().await.is_err() {
        ep.conn.reset();
        return Err(format!("connection to {} closed", ep.endpoint.instance));
    }
    Ok(sender)
}

/// One attempt on a ready connection.
async fn send(
    ep: &Arc<EndpointState>,
    mut sender: hyper::client::conn::http2::SendRequest<Body>,
    req: Request<Body>,
    in_flight: InFlight,
    idempotent: bool,
) -> Result<Response<Body>, AttemptError> {
    match sender.send_request(req).await {
        Ok(rsp) => {
            // The peer sidecar could not reach its app: nothing was processed, try elsewhere.
            match flags::of(&rsp) {
                Some(Flag::UpstreamConnectFailure) => {
                    return Err(AttemptError::Retryable(format!(
                        "{}: its app refused the connection",
                        ep.endpoint.instance
                    )));
                }
                // The peer's app dropped the connection mid-request (it crashed, say).
                Some(Flag::UpstreamConnectionTermination) if idempotent => {
                    return Err(AttemptError::Retryable(format!(
                        "{}: its app dropped the connection",
                        ep.endpoint.instance
                    )));
                }
                _ => {}
            }
            in_flight.success();
            Ok(rsp.map(body::incoming))
        }
        Err(e) if never_processed(&e) => {
            ep.conn.reset();
            Err(AttemptError::Retryable(format!(
                "{}: request refused: {e}",
                ep.endpoint.instance
            )))
        }
        Err(e) => {
            ep.conn.reset();
            Err(AttemptError::Final(
                Flag::UpstreamConnectionTermination,
                format!("{}: upstream connection error: {e}", ep.endpoint.instance),
            ))
        }
    }
}

fn connect_message(instance: &str, e: &ConnectError) -> String {
    format!("{instance}: {e}")
}

/// True when hyper or h2 says the peer did not start processing the request.
fn never_processed(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            return h2e.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        src = s.source();
    }
    false
}

/// The authority a request is for: its absolute-form URI, else its Host header.
pub fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(a) = uri.authority() {
        return Some(a.as_str().to_owned());
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the ones the
/// `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for n in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(n);
    }
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

fn clone_request(parts: &http::request::Parts, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

fn empty_parts() -> http::request::Parts {
    Request::new(()).into_parts().0
}

/// A random UUID (version 4 layout), as Envoy generates for `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    let v: u128 = rand::random();
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let s = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (v >> 96) as u32,
        (v >> 80) as u16,
        (v >> 64) as u16,
        (v >> 48) as u16,
        v & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("0"))
}
