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
use crate::filters;
use crate::flags::{self, Flag};
use crate::headers::{
    finish_response, new_request_id, strip_hop_by_hop, CLIENT_ID, REQUEST_ID, REQUEST_ID_HEADER,
};
use crate::metrics::{Direction, Metrics};
use crate::policy::Outcome;
use crate::server::{Drain, Handler, PeerInfo};
use crate::settings::Mode;
use crate::table::{Backend, RouteTable};
use crate::upstream::{ConnectError, Transport};
use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use model::route::RetryPolicy;
use model::{Authority, HashOn};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per request: the first plus Istio's default of two retries.
pub const MAX_ATTEMPTS: usize = 3;

pub struct Outbound {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub mode: Mode,
    /// The namespace a bare service name resolves in.
    pub namespace: String,
    pub client_id: HeaderValue,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    /// How peers are reached (credentials, edge records).
    pub peers: Arc<Peers>,
    /// The ingress gateway enforces JWT and authorization on what enters the mesh (Istio
    /// policies select it by its labels); `None` for sidecars' outbound side.
    pub security: Option<Arc<crate::security::Security>>,
    /// Istio metrics (`reporter="source"`) and the metadata exchange.
    pub observe: Arc<crate::observe::Observe>,
}

/// What opening a connection to a peer needs.
pub struct Peers {
    /// `Some`: peers are reached over mTLS with these credentials (never plaintext, even
    /// before the first certificate arrives). `None`: a mesh without a CA, plaintext.
    pub tls: Option<Arc<crate::identity::Slot>>,
    pub metrics: Arc<Metrics>,
    pub edges: Arc<crate::edges::Edges>,
    /// This proxy's identity, for edge records.
    pub identity: String,
}

/// How to reach `ep`, given the proxy's credentials slot.
fn transport_for(
    tls: &Option<Arc<crate::identity::Slot>>,
    ep: &EndpointState,
) -> Result<Transport, ConnectError> {
    if ep.plaintext.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(Transport::Plain);
    }
    match tls {
        None => Ok(Transport::Plain),
        Some(slot) => match slot.get() {
            Some(creds) => Ok(Transport::Mtls {
                creds: creds.clone(),
                expected: ep.endpoint.identity.clone(),
            }),
            None => Err(ConnectError::NoCertificate),
        },
    }
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
    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        info: Arc<PeerInfo>,
    ) -> Response<Body> {
        let peer = info.addr;
        let version = req.version();
        // Before anything is recorded, so that the access log and the span carry it.
        if !req.headers().contains_key(REQUEST_ID_HEADER) {
            req.headers_mut().insert(REQUEST_ID, new_request_id());
        }
        let side = match self.mode {
            Mode::Ingress => crate::trace::Side::Ingress,
            _ => crate::trace::Side::Outbound,
        };
        // Continues the request's trace: the new span's context goes upstream with it.
        let started = self.observe.start(&mut req, side, peer);
        let mut upstream = None;
        let (mut rsp, service) = self.route(req, &info, &mut upstream).await;
        self.observe
            .source(started, service.as_ref(), upstream, &mut rsp);
        finish_response(&mut rsp, version, &self.drain);
        if let Some(flag) = flags::of(&rsp) {
            self.metrics.flag(flag);
        }
        self.metrics
            .request(Direction::outbound, rsp.status().as_u16());
        rsp
    }
}

/// A request body as the retry and mirror logic see it.
enum ReqBody {
    /// No body: the request can be sent any number of times.
    Empty,
    /// A small body read in full (≤ [`MAX_BUFFERED_BODY`]): it can be sent again too.
    Buffered(bytes::Bytes),
    /// Anything else streams through once.
    Streaming(Incoming),
}

impl ReqBody {
    fn replayable(&self) -> bool {
        !matches!(self, ReqBody::Streaming(_))
    }

    /// A copy for one more send, when the body allows it.
    fn copy(&self) -> Option<Body> {
        match self {
            ReqBody::Empty => Some(body::empty()),
            ReqBody::Buffered(b) => Some(body::full(b.clone())),
            ReqBody::Streaming(_) => None,
        }
    }
}

/// Request bodies up to this size are buffered so that a retry or a mirror can resend them
/// (Linkerd's limit); bigger ones stream and are never retried.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Reads a small body in full when it will be needed again.
async fn prepare_body(b: Incoming, keep: bool) -> Result<ReqBody, Response<Body>> {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    if b.is_end_stream() {
        return Ok(ReqBody::Empty);
    }
    let small = b
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_BUFFERED_BODY);
    if !(keep && small) {
        return Ok(ReqBody::Streaming(b));
    }
    match b.collect().await {
        Ok(c) => Ok(ReqBody::Buffered(c.to_bytes())),
        Err(e) => Err(flags::respond(
            Flag::BadRequest,
            format!("reading the request body: {e}"),
        )),
    }
}

impl Outbound {
    /// Routes a request; also says which service it went to (for metrics), once known.
    async fn route(
        &self,
        req: Request<Incoming>,
        peer: &PeerInfo,
        upstream: &mut Option<crate::observe::Upstream>,
    ) -> (Response<Body>, Option<crate::telemetry::DestinationService>) {
        let mut service = None;
        let rsp = self.route_to(req, peer, &mut service, upstream).await;
        (rsp, service)
    }

    async fn route_to(
        &self,
        mut req: Request<Incoming>,
        info: &PeerInfo,
        service_out: &mut Option<crate::telemetry::DestinationService>,
        upstream: &mut Option<crate::observe::Upstream>,
    ) -> Response<Body> {
        let t0 = std::time::Instant::now();
        let peer = info.addr;
        if let Some(sec) = &self.security {
            if let Err(rsp) = sec.check(&mut req, info) {
                return *rsp;
            }
        }
        let (mut parts, body) = req.into_parts();
        let Some(authority) = request_authority(&parts.uri, &parts.headers) else {
            return flags::respond(Flag::BadRequest, "request names no host");
        };
        let auth = Authority::parse(&authority);
        // One snapshot for the whole request.
        let table = self.table.load_full();
        let service;
        let vhost = match self.mode {
            Mode::Ingress => table.virtual_host(auth.host),
            _ => None,
        };
        let routed = if let Some(vh) = vhost {
            let Some(r) = vh.route(&parts) else {
                return flags::respond(
                    Flag::NoRoute,
                    format!(
                        "no route of {} matches {} {}",
                        vh.name,
                        parts.method,
                        parts.uri.path()
                    ),
                );
            };
            r
        } else {
            service = match table.resolve(&auth, &self.namespace) {
                Some(s) => s,
                None => {
                    return flags::respond(
                        Flag::NoRoute,
                        format!("no service in the mesh for host {authority:?}"),
                    )
                }
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
            let Some(r) = service.route(&parts) else {
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
            r
        };
        let rule = routed.rule;
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());

        if let Some(r) = rule {
            if let Some(rsp) = r
                .cors
                .as_ref()
                .and_then(|c| c.preflight(&parts.method, &parts.headers))
            {
                return rsp;
            }
            if let Some(redirect) = &r.redirect {
                return redirect.respond("http", &authority, path_and_query, routed.prefix);
            }
            if let Some(d) = &r.direct {
                return filters::direct(d);
            }
        }
        if let Some(b) = routed.backend {
            *service_out = Some(b.service.clone());
        }
        let Some(backend) = routed.backend.cloned() else {
            return flags::respond_with(
                Flag::NoRoute,
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the route has no destination",
            );
        };

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

        let Some(_admitted) = backend.counters.admit(backend.policy.max_in_flight) else {
            return flags::respond(
                Flag::Overflow,
                format!(
                    "upstream overflow: {} already has {} requests in flight (connectionPool limit)",
                    backend.name,
                    backend.policy.max_in_flight.unwrap_or_default()
                ),
            );
        };
        if let Some(b) = &backend.counters.budget {
            b.deposit();
        }

        let mut set_cookie = None;
        let hash = backend
            .policy
            .hash
            .as_ref()
            .and_then(|on| hash_key(on, &parts, peer, &mut set_cookie));

        // The request as it goes upstream.
        let downstream_headers = rule
            .and_then(|r| r.cors.as_ref())
            .map(|_| parts.headers.clone());
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts.headers.insert(CLIENT_ID, self.client_id.clone());
        parts
            .headers
            .insert(crate::telemetry::PEER, self.observe.local_header.clone());
        // The upstream target: the parsed path as it is (no copy) unless a rewrite changes it,
        // and the authority string moved into the URI.
        let mut target = http::uri::Parts::default();
        target.scheme = Some(http::uri::Scheme::HTTP);
        target.path_and_query = parts.uri.path_and_query().cloned();
        let mut upstream_authority = authority;
        if let Some(r) = rule {
            r.request_headers.apply(&mut parts.headers);
            if let Some(w) = &r.rewrite {
                let pq = w.path_and_query(path_of(&target), routed.prefix);
                target.path_and_query = match pq.parse() {
                    Ok(p) => Some(p),
                    Err(e) => {
                        return flags::respond(Flag::BadRequest, format!("bad rewritten path: {e}"))
                    }
                };
                if let Some(a) = &w.authority {
                    upstream_authority = a.clone();
                }
            }
        }
        if let Some(d) = routed.dest {
            d.request_headers.apply(&mut parts.headers);
        }
        target.authority =
            match http::uri::Authority::from_maybe_shared(bytes::Bytes::from(upstream_authority)) {
                Ok(a) => Some(a),
                Err(e) => return flags::respond(Flag::BadRequest, format!("bad authority: {e}")),
            };
        if target.path_and_query.is_none() {
            target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = match Uri::from_parts(target) {
            Ok(u) => u,
            Err(e) => return flags::respond(Flag::BadRequest, format!("bad request target: {e}")),
        };
        parts.version = Version::HTTP_2;

        let mirrors = rule.map(|r| r.mirrors.as_slice()).unwrap_or_default();
        let body = match prepare_body(body, retry.is_some() || !mirrors.is_empty()).await {
            Ok(b) => b,
            Err(rsp) => return rsp,
        };
        for (mirror, per_million) in mirrors {
            if chance(*per_million) {
                if let Some(b) = body.copy() {
                    self.mirror(mirror.clone(), clone_request(&parts, b));
                }
            }
        }

        let classes = rule
            .map(|r| r.response_classes.as_slice())
            .unwrap_or_default();
        let attempts = async {
            let mut rsp = self
                .attempts(
                    parts,
                    body,
                    &backend,
                    retry,
                    classes,
                    hash,
                    rule.map(|r| &*r.stats),
                    upstream,
                )
                .await;
            if delayed && flags::of(&rsp).is_none() {
                rsp.headers_mut().insert(
                    flags::FLAG_HEADER,
                    HeaderValue::from_static(Flag::DelayInjected.as_str()),
                );
            }
            rsp
        };
        // Pinned in place and awaited by reference: the attempts' state is then held once, not
        // once for each way of awaiting it (it is most of a request's future).
        tokio::pin!(attempts);
        let mut rsp = match timeout {
            None => attempts.await,
            Some(t) => match tokio::time::timeout(t, attempts).await {
                Ok(rsp) => rsp,
                Err(_) => flags::respond(
                    Flag::UpstreamTimeout,
                    format!("upstream request timeout ({t:?}) for {}", backend.name),
                ),
            },
        };
        if let Some(r) = rule {
            let failure = model::route::is_failure(&r.response_classes, rsp.status().as_u16());
            r.stats.request(!failure, t0.elapsed());
            r.response_headers.apply(rsp.headers_mut());
            if let (Some(c), Some(h)) = (&r.cors, &downstream_headers) {
                c.decorate(h, rsp.headers_mut());
            }
        }
        if let Some(d) = routed.dest {
            d.response_headers.apply(rsp.headers_mut());
        }
        if let Some(c) = set_cookie {
            rsp.headers_mut().append(header::SET_COOKIE, c);
        }
        rsp
    }

    /// Sends a copy of a request to a mirror, fire-and-forget: `-shadow` is appended to its
    /// host (as Envoy does), its answer is dropped, and its failure fails nothing.
    fn mirror(&self, backend: Arc<Backend>, mut req: Request<Body>) {
        let Some(u) = shadow_uri(req.uri()) else {
            return;
        };
        *req.uri_mut() = u;
        self.metrics.mirrors.inc();
        let peers = self.peers.clone();
        tokio::spawn(async move {
            let Some((_, ep)) = backend.pick(&[], None) else {
                return;
            };
            let ep = ep.clone();
            let in_flight = ep.start();
            let Ok(sender) = ready_sender(&ep, backend.policy.connect_timeout, &peers).await else {
                return;
            };
            let sent = send(&ep, sender, req, in_flight, false);
            if let Ok(Ok(rsp)) = tokio::time::timeout(MIRROR_TIMEOUT, sent).await {
                // Read the answer to the end so the stream closes cleanly, then drop it.
                let _ = tokio::time::timeout(
                    MIRROR_TIMEOUT,
                    http_body_util::BodyExt::collect(rsp.into_body()),
                )
                .await;
            }
        });
    }

    /// Sends the request to `backend`, again on another endpoint when an attempt fails in a
    /// way the route's retry policy (or, without one, the proxy's default) says to retry.
    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        mut parts: http::request::Parts,
        body: ReqBody,
        backend: &Arc<Backend>,
        retry: Option<&RetryPolicy>,
        classes: &[model::ResponseClass],
        hash: Option<u64>,
        stats: Option<&crate::route::RouteStats>,
        // Set to the endpoint that gave the response returned, for the metrics.
        upstream_out: &mut Option<crate::observe::Upstream>,
    ) -> Response<Body> {
        // Only a request whose body we hold can be sent twice; any request can move on to
        // another endpoint while no connection would take it.
        let replayable = body.replayable();
        // A peer's app that died mid-request may have seen it: only idempotent methods go again.
        let idempotent = replayable && parts.method.is_idempotent();
        let max_attempts = retry.map_or(MAX_ATTEMPTS, |p| 1 + p.attempts as usize);
        let per_try = retry
            .and_then(|p| p.per_try_timeout_ms)
            .map(Duration::from_millis);
        let (mut first_body, held) = match body {
            ReqBody::Streaming(b) => (Some(body::incoming(b)), None),
            held => (None, Some(held)),
        };
        let mut tried: Vec<usize> = Vec::with_capacity(max_attempts);
        let mut last_error = None;
        let mut last_response: Option<Response<Body>> = None;
        let mut _retry_slot = None;
        for attempt in 0..max_attempts {
            if tried.len() >= backend.endpoints.len() {
                // Every endpoint had its turn: a retry policy may go round again.
                tried.clear();
            }
            let Some((idx, ep)) = backend.pick(&tried, hash) else {
                break;
            };
            let ep = ep.clone();
            tried.push(idx);
            if attempt > 0 {
                match backend.counters.admit_retry(backend.policy.max_retries) {
                    Ok(slot) => _retry_slot = Some(slot),
                    Err(why) => {
                        tracing::debug!(backend = %backend.name, why, "no retry");
                        self.metrics.retries_refused.inc();
                        break;
                    }
                }
                self.metrics.retries.inc();
                if retry.is_some() {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            let in_flight = ep.start();
            let sender = match ready_sender(&ep, backend.policy.connect_timeout, &self.peers).await
            {
                Ok(s) => s,
                Err(msg) => {
                    tracing::debug!(backend = %backend.name, %msg, "attempt failed");
                    backend.record(&ep, Outcome::Error);
                    // Nothing reached the app: any attempt left may go elsewhere.
                    last_error = Some((Flag::UpstreamConnectFailure, msg));
                    continue;
                }
            };
            let req = match (&held, first_body.take()) {
                (Some(b), _) => clone_request(&parts, b.copy().unwrap_or_else(body::empty)),
                (None, Some(b)) => {
                    Request::from_parts(std::mem::replace(&mut parts, empty_parts()), b)
                }
                (None, None) => break,
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
                    let mtls = self.peers.tls.is_some()
                        && !ep.plaintext.load(std::sync::atomic::Ordering::Relaxed);
                    let upstream = self.observe.telemetry.peer_from_header(
                        rsp.headers()
                            .get(crate::telemetry::PEER_HEADER)
                            .map(|v| v.as_bytes()),
                        mtls.then_some(ep.endpoint.identity.0.as_str()),
                    );
                    *upstream_out = Some(crate::observe::Upstream {
                        peer: upstream,
                        mtls,
                        endpoint: ep.clone(),
                    });
                    let status = rsp.status().as_u16();
                    let failure = model::route::is_failure(classes, status);
                    if let Some(st) = stats {
                        st.attempt(!failure);
                    }
                    backend.record(&ep, Outcome::Response { status, failure });
                    let more = attempt + 1 < max_attempts && replayable;
                    if more && retry.is_some_and(|p| retry_response(p, &rsp, failure)) {
                        tracing::debug!(backend = %backend.name, status = %rsp.status(), "retrying on status");
                        last_response = Some(rsp);
                        continue;
                    }
                    return rsp;
                }
                Err(AttemptError::Final(flag, msg)) => {
                    backend.record(&ep, Outcome::Error);
                    if let Some(st) = stats {
                        st.attempt(false);
                    }
                    let reset = flag == Flag::UpstreamConnectionTermination;
                    if reset && replayable && retry.is_some_and(|p| p.on.reset || p.on.server_error)
                    {
                        last_error = Some((flag, msg));
                        continue;
                    }
                    return flags::respond(flag, msg);
                }
                Err(AttemptError::PerTryTimeout(msg)) => {
                    backend.record(&ep, Outcome::Error);
                    if let Some(st) = stats {
                        st.attempt(false);
                    }
                    last_error = Some((Flag::UpstreamTimeout, msg));
                    last_response = None;
                }
                Err(AttemptError::Retryable(msg)) => {
                    backend.record(&ep, Outcome::Error);
                    if let Some(st) = stats {
                        st.attempt(false);
                    }
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

/// The path and query of an upstream target being built (`/` when it has none).
fn path_of(t: &http::uri::Parts) -> &str {
    t.path_and_query.as_ref().map_or("/", |p| p.as_str())
}

/// The URI a mirrored copy goes to: the same, with `-shadow` appended to the host, as Envoy
/// does (`reviews:9080` → `reviews-shadow:9080`).
pub fn shadow_uri(uri: &Uri) -> Option<Uri> {
    let a = uri.authority()?;
    let shadow = match a.port_u16() {
        Some(p) => format!("{}-shadow:{p}", a.host()),
        None => format!("{}-shadow", a.host()),
    };
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Uri::builder()
        .scheme("http")
        .authority(shadow.as_str())
        .path_and_query(pq)
        .build()
        .ok()
}

/// How long a mirrored request may take before it is abandoned.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// The request's consistent-hash key under `on`, if it has one. A cookie policy with a TTL
/// makes up a cookie for a request without one and puts it in `set_cookie`, as Envoy does.
fn hash_key(
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

/// True for `per_million` out of a million calls.
fn chance(per_million: u32) -> bool {
    per_million >= 1_000_000 || rand::thread_rng().gen_range(0..1_000_000) < per_million
}

/// Whether a response calls for another attempt under `p`; `failure` says whether the route's
/// response classes count it as a failure.
fn retry_response<B>(p: &RetryPolicy, rsp: &Response<B>, failure: bool) -> bool {
    let status = rsp.status().as_u16();
    (p.on.server_error && status >= 500)
        || (p.on.gateway_error && matches!(status, 502..=504))
        || (p.on.retriable_4xx && status == 409)
        || (p.on.failure_class && failure)
        || p.on.status_codes.contains(&status)
        || (!p.on.grpc_statuses.is_empty()
            && rsp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|code| p.on.grpc_statuses.contains(&code)))
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
    connect_timeout: Option<Duration>,
    peers: &Peers,
) -> Result<hyper::client::conn::http2::SendRequest<Body>, String> {
    let metrics = &peers.metrics;
    // Called only when a new connection is opened.
    // 0: no new connection; 1: a new plaintext one; 2: a new mTLS one.
    let opened = std::sync::atomic::AtomicU8::new(0);
    let transport = || {
        let t = transport_for(&peers.tls, ep);
        if let Ok(t) = &t {
            let kind = if matches!(t, Transport::Mtls { .. }) {
                2
            } else {
                1
            };
            opened.store(kind, std::sync::atomic::Ordering::Relaxed);
        }
        t
    };
    let mut sender = match ep
        .conn
        .sender(ep.endpoint.address, connect_timeout, transport)
        .await
    {
        Ok(s) => {
            let kind = opened.load(std::sync::atomic::Ordering::Relaxed);
            if kind != 0 {
                peers.edges.record(crate::edges::Edge {
                    direction: "outbound",
                    client: peers.identity.clone(),
                    server: ep.endpoint.identity.0.clone(),
                    peer: ep.endpoint.address.to_string(),
                    mtls: kind == 2,
                });
            }
            s
        }
        Err(e) => {
            match &e {
                ConnectError::NoCertificate => {}
                ConnectError::Tls { kind, .. } => {
                    metrics.tls_failure("outbound", kind);
                    tracing::warn!(endpoint = %ep.endpoint.instance, error = %e, "mTLS handshake failed");
                    ep.connect_failed();
                }
                _ => ep.connect_failed(),
            }
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

#[cfg(test)]
mod tests {
    //! Unit tests: the pieces of outbound handling that need no sockets.
    use super::*;

    #[test]
    fn mirrors_go_to_the_shadow_host() {
        let u: Uri = "http://reviews:9080/a?b=1".parse().unwrap();
        assert_eq!(
            shadow_uri(&u).unwrap().to_string(),
            "http://reviews-shadow:9080/a?b=1"
        );
        let u: Uri = "http://reviews.default.svc.cluster.local/".parse().unwrap();
        assert_eq!(
            shadow_uri(&u).unwrap().to_string(),
            "http://reviews.default.svc.cluster.local-shadow/"
        );
    }

    #[test]
    fn retry_conditions_follow_envoy() {
        let p = |on: model::RetryOn| RetryPolicy {
            attempts: 1,
            per_try_timeout_ms: None,
            on,
        };
        let rsp = |status: u16, grpc: Option<&str>| {
            let mut r = Response::builder().status(status);
            if let Some(g) = grpc {
                r = r.header("grpc-status", g);
            }
            r.body(()).unwrap()
        };
        let gw = p(model::RetryOn {
            gateway_error: true,
            ..Default::default()
        });
        assert!(retry_response(&gw, &rsp(503, None), true));
        assert!(!retry_response(&gw, &rsp(500, None), true));
        let r4 = p(model::RetryOn {
            retriable_4xx: true,
            ..Default::default()
        });
        assert!(retry_response(&r4, &rsp(409, None), false));
        assert!(!retry_response(&r4, &rsp(404, None), false));
        let grpc = p(model::RetryOn {
            grpc_statuses: vec![14],
            ..Default::default()
        });
        assert!(retry_response(&grpc, &rsp(200, Some("14")), false));
        assert!(!retry_response(&grpc, &rsp(200, Some("0")), false));
        let class = p(model::RetryOn {
            failure_class: true,
            ..Default::default()
        });
        assert!(retry_response(&class, &rsp(429, None), true));
        assert!(!retry_response(&class, &rsp(500, None), false));
    }
}
