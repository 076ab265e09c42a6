//! App → mesh: the outbound side of a sidecar, and (after its own first step, [`crate::ingress`])
//! the ingress gateway.
//!
//! A request names its service in the absolute-form URI (`GET http://hello:80/ HTTP/1.1`, as sent
//! to an `HTTP_PROXY`) or in `Host`/`:authority`. [`Forward::forward`] is the request's path,
//! read top to bottom, one step per file:
//! 1. [`resolve`]: the authority and the service (or gateway virtual host) it names, the rule
//!    the request falls under and the destination drawn, in the state in force (one load).
//! 2. [`answer`]: what a rule answers by itself: CORS preflight, redirect, fixed response.
//! 3. [`fault`]: injected delays and aborts.
//! 4. [`admit`]: the backend's in-flight limit and its retry budget.
//! 5. [`hash`]: the consistent-hash key, when the backend's balancer hashes.
//! 6. [`edit`]: the request as it goes upstream (hop-by-hop headers, header edits, rewrites).
//! 7. [`replay`]: the body kept (up to a limit) as it streams, for a retry or a mirror;
//!    [`mirror`] sends the copies.
//! 8. [`retry`]: attempts on endpoints the balancer picks, within the route's timeout, each
//!    over the endpoint's pooled connection ([`send`]); attempts that provably never reached the
//!    app go to another endpoint, as Istio's default retry policy does for connect failures.
//! 9. [`edit`] again: the response's header edits, CORS headers, a hash cookie.

mod admit;
mod answer;
mod edit;
mod fault;
mod hash;
mod mirror;
mod replay;
pub mod resolve;
mod retry;
pub mod send;
pub mod tunnel;
mod upgrade;

pub use mirror::shadow_uri;
pub use resolve::{request_authority, Resolve, Sidecar};
pub use retry::MAX_ATTEMPTS;
pub use send::Peers;

use crate::body::Body;
use crate::body::RequestBody;
use crate::flags::{self, Flag};
use crate::headers::{finish_response, new_request_id, REQUEST_ID, REQUEST_ID_HEADER};
use crate::metrics::{Direction, Metrics};
use crate::observe::{Observe, Upstream};
use crate::server::{Drain, Handler, PeerInfo};
use crate::state::StateHandle;
use crate::telemetry::DestinationService;
use http::header::HeaderValue;
use http::{Request, Response};
use std::sync::Arc;

/// The handler of a listener that sends requests into the mesh; `R` is its first step (a
/// sidecar's [`Sidecar`], the gateway's [`crate::ingress::Ingress`]).
pub struct Forward<R> {
    pub resolve: R,
    pub state: StateHandle,
    pub client_id: HeaderValue,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    /// How peers are reached (credentials, edge records).
    pub peers: Arc<Peers>,
    /// Istio metrics (`reporter="source"`) and the metadata exchange.
    pub observe: Arc<Observe>,
    /// Bytes of a request body kept for a retry or a mirror ([`replay`]).
    pub max_buffered_body: u64,
    /// A `CONNECT` tunnel that carries nothing this long is closed ([`tunnel`]).
    pub tunnel_idle: std::time::Duration,
    /// Hosts the snapshot lacks, asked for from the control plane ([`crate::on_demand`]).
    pub on_demand: Arc<crate::on_demand::OnDemand>,
}

/// A sidecar's (or `weft exec`'s client proxy's) outbound handler.
pub type Outbound = Forward<Sidecar>;

impl<R: Resolve> Handler for Forward<R> {
    async fn handle(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
        info: Arc<PeerInfo>,
    ) -> Response<Body> {
        if req.method() == http::Method::CONNECT {
            if let Some(namespace) = self.resolve.tunnels() {
                let namespace = namespace.to_string();
                return tunnel::open(self, req, &namespace).await;
            }
        }
        if let Some(protocol) = crate::upgrade::requested(&req) {
            // The handshake is a request of its own in the metrics, the access log and tap.
            let started = self.observe.start(&mut req, R::SIDE, info.addr);
            let (mut service, mut upstream) = (None, None);
            let mut rsp =
                upgrade::open(&self, req, &info, protocol, &mut service, &mut upstream).await;
            self.observe
                .source(started, service.as_ref(), upstream, &mut rsp);
            self.metrics.answered(Direction::outbound, &rsp);
            return rsp;
        }
        let peer = info.addr;
        let version = req.version();
        // Before anything is recorded, so that the access log and the span carry it.
        if !req.headers().contains_key(REQUEST_ID_HEADER) {
            req.headers_mut().insert(REQUEST_ID, new_request_id());
        }
        // Continues the request's trace: the new span's context goes upstream with it.
        let mut started = self.observe.start(&mut req, R::SIDE, peer);
        let (mut service, mut upstream) = (None, None);
        let mut operation = started.span.as_ref().map(|_| None);
        let mut rsp = self
            .forward(req, &info, &mut service, &mut upstream, &mut operation)
            .await;
        if let (Some(span), Some(Some(op))) = (&mut started.span, &operation) {
            span.rename(op);
        }
        // A gRPC client gets the proxy's own answers as gRPC statuses.
        if started.protocol == crate::telemetry::Protocol::Grpc {
            crate::grpc::answer(&mut rsp);
        }
        self.observe
            .source(started, service.as_ref(), upstream, &mut rsp);
        finish_response(&mut rsp, version, &self.drain);
        self.metrics.answered(Direction::outbound, &rsp);
        rsp
    }
}

impl<R: Resolve> Forward<R> {
    /// The state to route a request for `authority` with, once the control plane was asked
    /// for the host `state` lacks and a snapshot carrying it is in force; `None`: `state` may
    /// not have it on demand, or the host was refused, or the wait ran out.
    async fn asked(
        &self,
        state: &crate::state::ProxyState,
        authority: &str,
    ) -> Option<Arc<crate::state::ProxyState>> {
        let host = self.resolve.lacks(&state.routes, authority)?;
        let found = self
            .on_demand
            .wait(&host, &self.state, |s| {
                self.resolve.lacks(&s.routes, authority).is_none()
            })
            .await;
        found.then(|| self.state.load_full())
    }

    /// Routes a request and sends it on; says which service it went to (`service_out`, once
    /// known) and which endpoint gave the answer (`upstream_out`), for the metrics, and, when
    /// `operation_out` is `Some` (the request has a span), the span name of its route.
    async fn forward(
        &self,
        mut req: Request<RequestBody>,
        info: &PeerInfo,
        service_out: &mut Option<DestinationService>,
        upstream_out: &mut Option<Upstream>,
        operation_out: &mut Option<Option<Arc<str>>>,
    ) -> Response<Body> {
        let t0 = std::time::Instant::now();
        // One state for the whole request.
        let state = self.state.load_full();
        if let Err(rsp) = self.resolve.check(&state, &mut req, info) {
            return *rsp;
        }
        let (mut parts, body) = req.into_parts();
        let Some(authority) = request_authority(&parts.uri, &parts.headers) else {
            return flags::respond(Flag::BadRequest, "request names no host");
        };
        // The state a host asked for on demand arrived in, if the request had to wait for it.
        let grown: Arc<crate::state::ProxyState>;
        let routed = match self.resolve.route(&state.routes, &authority, &parts) {
            Ok(r) => r,
            // A captured connection to a service's virtual IP whose requests name no service
            // (`Host: 10.235.0.7:9080`, or a name only the app knows): the service it was for.
            Err(rsp) => match &info.captured {
                Some(to) => match self.resolve.route(&state.routes, to, &parts) {
                    Ok(r) => r,
                    Err(rsp) => return *rsp,
                },
                // Boxed: the rare path adds nothing to every request's future.
                None => match Box::pin(self.asked(&state, &authority)).await {
                    Some(next) => {
                        grown = next;
                        match self.resolve.route(&grown.routes, &authority, &parts) {
                            Ok(r) => r,
                            Err(rsp) => return *rsp,
                        }
                    }
                    None => return *rsp,
                },
            },
        };
        let rule = routed.rule;
        if let Some(op) = operation_out {
            *op = Some(routed.operation.clone());
        }
        if let Some(rsp) = answer::local(&routed, &parts, &authority) {
            return rsp;
        }
        let Some(backend) = routed.backend else {
            return flags::respond_with(
                Flag::NoRoute,
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the route has no destination",
            );
        };
        *service_out = Some(backend.service.clone());

        let fault = rule.and_then(|r| r.fault.as_ref());
        let delayed = match fault::inject(fault).await {
            Ok(delayed) => delayed,
            Err(rsp) => return rsp,
        };
        // As in Istio, a route that injects faults has no client-side timeout or retries.
        let timeout = rule.and_then(|r| r.timeout).filter(|_| fault.is_none());
        // A gRPC client's deadline bounds the route's timeout (Istio's `grpcTimeoutHeaderMax`
        // is the route's timeout: without one, the deadline alone applies).
        let timeout = match (timeout, crate::grpc::timeout(&parts.headers)) {
            (Some(t), Some(g)) => Some(t.min(g)),
            (t, g) => t.or(g),
        };
        let retry = rule
            .and_then(|r| r.retry.as_ref())
            .filter(|_| fault.is_none());
        let _admitted = match admit::admit(backend) {
            Ok(a) => a,
            Err(rsp) => return *rsp,
        };
        let mut set_cookie = None;
        let hash = backend
            .policy
            .hash
            .as_ref()
            .and_then(|on| hash::key(on, &parts, info.addr, &mut set_cookie));

        // CORS fits the response to the request's own headers, before they are edited.
        let downstream_headers = rule
            .and_then(|r| r.cors.as_ref())
            .map(|_| parts.headers.clone());
        let upstream = edit::Upstream {
            client_id: &self.client_id,
            peer: &self.observe.local_header,
        };
        if let Err(rsp) = edit::request(&mut parts, authority, &routed, upstream) {
            return *rsp;
        }
        let mirrors = rule.map(|r| r.mirrors.as_slice()).unwrap_or_default();
        let drawn = mirror::draw(mirrors);
        let mirrored = !drawn.is_empty();
        let (body, replay) =
            replay::prepare(body, retry.is_some() || mirrored, self.max_buffered_body);
        mirror::send_copies(drawn, &parts, &replay, &self.metrics, &self.peers);

        let attempts = async {
            let mut rsp = retry::Attempts {
                backend,
                retry,
                classes: rule
                    .map(|r| r.response_classes.as_slice())
                    .unwrap_or_default(),
                hash,
                stats: rule.map(|r| &*r.stats),
                peers: &self.peers,
                metrics: &self.metrics,
                observe: &self.observe,
            }
            .run(parts, body, &replay, upstream_out)
            .await;
            if delayed {
                fault::mark_delayed(&mut rsp);
            }
            // The mirrors' copies were skipped (they count it themselves): say so here too.
            if mirrored && replay.check() == Err(replay::Unreplayable::TooLarge) {
                replay::mark_skipped(&mut rsp);
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
            // A gRPC call by the grpc-status of a trailers-only answer (one in trailers: 200).
            let status = crate::grpc::head_status(&rsp).unwrap_or(200);
            let failure = model::route::is_failure(&r.response_classes, status);
            r.stats.request(!failure, t0.elapsed());
        }
        edit::response(&mut rsp, &routed, downstream_headers.as_ref(), set_cookie);
        rsp
    }
}
