//! The retry loop: the request goes to an endpoint the backend's balancer picks, and again to
//! another one when an attempt fails in a way the route's retry policy (or, without one, the
//! proxy's default: connect failures only) says to retry — within the backend's retry limits
//! and budget, with Envoy's back-off, each attempt within the per-try timeout.

use super::replay::{clone_request, empty_parts, mark_skipped, Replay, Unreplayable};
use super::send::{leased_sender, ready_sender, send, AttemptError, NoLease, Peers};
use crate::balance::EndpointState;
use crate::body::{self, Body};
use crate::flags::{self, Flag};
use crate::metrics::{Metrics, Skipped};
use crate::observe::{Observe, Upstream};
use crate::policy::Outcome;
use crate::route::RouteStats;
use crate::table::Backend;
use http::{Request, Response};
use model::route::RetryPolicy;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per request: the first plus Istio's default of two retries.
pub const MAX_ATTEMPTS: usize = 3;

/// One request's attempts and what they go by.
pub(super) struct Attempts<'a> {
    pub backend: &'a Arc<Backend>,
    /// The route's retry policy; `None`: retry connect failures only.
    pub retry: Option<&'a RetryPolicy>,
    /// The route's response classes (Linkerd's `isFailure`).
    pub classes: &'a [model::ResponseClass],
    /// The consistent-hash key, when the balancer hashes.
    pub hash: Option<u64>,
    /// The route's counters.
    pub stats: Option<&'a RouteStats>,
    pub peers: &'a Arc<Peers>,
    pub metrics: &'a Metrics,
    pub observe: &'a Observe,
}

impl Attempts<'_> {
    /// Sends the request; `upstream_out` is set to the endpoint whose answer is returned.
    pub async fn run(
        self,
        mut parts: http::request::Parts,
        body: Body,
        replay: &Replay,
        upstream_out: &mut Option<Upstream>,
    ) -> Response<Body> {
        // Only a request whose body is kept can be sent twice (and only once it has all
        // arrived, within the buffer limit); any request can move on to another endpoint while
        // no connection would take it, its body still unread.
        let once = matches!(replay, Replay::Once);
        let idempotent_method = parts.method.is_idempotent();
        let max_attempts = self.retry.map_or(MAX_ATTEMPTS, |p| 1 + p.attempts as usize);
        let per_try = self
            .retry
            .and_then(|p| p.per_try_timeout_ms)
            .map(Duration::from_millis);
        let mut first_body = Some(body);
        let mut tried: Vec<usize> = Vec::with_capacity(max_attempts);
        let mut last_error = None;
        let mut last_response: Option<Response<Body>> = None;
        let mut _retry_slot = None;
        for attempt in 0..max_attempts {
            if tried.len() >= self.backend.endpoints.len() {
                // Every endpoint had its turn: a retry policy may go round again.
                tried.clear();
            }
            let Some((idx, ep)) = self.backend.pick(&tried, self.hash) else {
                break;
            };
            let ep = ep.clone();
            tried.push(idx);
            if attempt > 0 {
                match self
                    .backend
                    .counters
                    .admit_retry(self.backend.policy.max_retries)
                {
                    Ok(slot) => _retry_slot = Some(slot),
                    Err(why) => {
                        tracing::debug!(backend = %self.backend.name, why, "no retry");
                        self.metrics.retries_refused.inc();
                        break;
                    }
                }
                self.metrics.retries.inc();
                if self.retry.is_some() {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            let in_flight = ep.start();
            let (sender, mut lease) = match &self.backend.counters.conns {
                None => {
                    match ready_sender(&ep, self.backend.policy.connect_timeout, self.peers).await {
                        Ok(s) => (s, None),
                        Err(msg) => {
                            tracing::debug!(backend = %self.backend.name, %msg, "attempt failed");
                            self.backend.record(&ep, Outcome::Error);
                            // Nothing reached the app: any attempt left may go elsewhere.
                            last_error = Some((Flag::UpstreamConnectFailure, msg));
                            continue;
                        }
                    }
                }
                // Boxed: only backends with their own pool carry its state.
                Some(pool) => match Box::pin(leased_sender(
                    pool,
                    &ep,
                    self.backend.policy.connect_timeout,
                    self.peers,
                ))
                .await
                {
                    Ok((s, lease)) => (s, Some(lease)),
                    Err(NoLease::Overflow(why)) => {
                        return flags::respond(
                            Flag::Overflow,
                            format!(
                                "upstream overflow: {} is at its connectionPool limit ({why})",
                                self.backend.name
                            ),
                        );
                    }
                    Err(NoLease::Failed(msg)) => {
                        tracing::debug!(backend = %self.backend.name, %msg, "attempt failed");
                        self.backend.record(&ep, Outcome::Error);
                        last_error = Some((Flag::UpstreamConnectFailure, msg));
                        continue;
                    }
                },
            };
            let shared = lease.is_none();
            let req = match first_body.take() {
                // The request's own head goes with its own body when it can go only once.
                Some(b) if once => {
                    Request::from_parts(std::mem::replace(&mut parts, empty_parts()), b)
                }
                Some(b) => clone_request(&parts, b),
                None => match replay.copy() {
                    Ok(b) => clone_request(&parts, b),
                    Err(why) => {
                        self.skipped(why);
                        break;
                    }
                },
            };
            // A peer's app that died mid-request may have seen it: only idempotent methods go
            // again, and only with a body that can be sent again.
            let idempotent = idempotent_method && replay.may_replay();
            let sent = send(&ep, sender, req, in_flight, idempotent, shared);
            let outcome = match per_try {
                None => sent.await,
                Some(t) => match tokio::time::timeout(t, sent).await {
                    Ok(o) => o,
                    Err(_) => Err(AttemptError::PerTryTimeout(format!(
                        "{}: no answer within the per-try timeout {t:?}",
                        ep.endpoint.instance
                    ))),
                },
            };
            // A connection of the backend's own pool is held until the answer has been read (it
            // carries one request at a time); one whose request failed is not used again.
            let outcome = match (outcome, lease.take()) {
                (Ok(rsp), Some(lease)) => Ok(hold(rsp, lease)),
                (Err(e), Some(mut lease)) => {
                    lease.retire();
                    Err(e)
                }
                (o, None) => o,
            };
            match outcome {
                Ok(rsp) => {
                    *upstream_out = Some(self.upstream(&ep, &rsp));
                    // A gRPC call is judged by its grpc-status, read as Envoy reads it (as the
                    // HTTP status it maps to); one that comes in trailers is judged when they do.
                    let Some(status) = crate::grpc::head_status(&rsp) else {
                        return self.judge_at_trailers(ep, rsp);
                    };
                    let failure = model::route::is_failure(self.classes, status);
                    if let Some(st) = self.stats {
                        st.attempt(!failure);
                    }
                    self.backend
                        .record(&ep, Outcome::Response { status, failure });
                    let more = attempt + 1 < max_attempts;
                    if more && self.retry.is_some_and(|p| retry_response(p, &rsp, failure)) {
                        if let Err(why) = replay.check() {
                            let mut rsp = rsp;
                            if self.skipped(why) {
                                mark_skipped(&mut rsp);
                            }
                            return rsp;
                        }
                        tracing::debug!(backend = %self.backend.name, status = %rsp.status(), "retrying on status");
                        last_response = Some(rsp);
                        continue;
                    }
                    return rsp;
                }
                Err(AttemptError::Final(flag, msg)) => {
                    self.failed(&ep);
                    let reset = flag == Flag::UpstreamConnectionTermination;
                    if reset
                        && attempt + 1 < max_attempts
                        && self.retry.is_some_and(|p| p.on.reset || p.on.server_error)
                    {
                        match replay.check() {
                            Ok(()) => {
                                last_error = Some((flag, msg));
                                continue;
                            }
                            Err(why) => {
                                self.skipped(why);
                            }
                        }
                    }
                    return flags::respond(flag, msg);
                }
                Err(AttemptError::PerTryTimeout(msg)) => {
                    if let Some(t) = per_try {
                        ep.timed_out(t);
                    }
                    self.failed(&ep);
                    last_error = Some((Flag::UpstreamTimeout, msg));
                    last_response = None;
                }
                Err(AttemptError::Retryable(msg)) => {
                    self.failed(&ep);
                    tracing::debug!(backend = %self.backend.name, %msg, "attempt failed");
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
                format!("no ready endpoint for {}", self.backend.name),
            ),
            Some((Flag::UpstreamConnectFailure, msg)) => flags::respond(
                Flag::UpstreamConnectFailure,
                format!(
                    "no endpoint of {} could be reached: {msg}",
                    self.backend.name
                ),
            ),
            Some((flag, msg)) => flags::respond(flag, msg),
        }
    }
}

impl Attempts<'_> {
    /// A retry was due and the body could not be sent again: counted (and `true`: the answer is
    /// to say so) when the body was kept for it and turned out too large or incomplete.
    fn skipped(&self, why: Unreplayable) -> bool {
        if why == Unreplayable::NotKept {
            return false;
        }
        tracing::debug!(backend = %self.backend.name, ?why, "request body cannot be sent again: not retried");
        self.metrics.replay_skipped(Skipped::retry);
        true
    }

    /// `rsp`, a gRPC answer whose status is in its trailers, with outlier detection and failure
    /// accrual told the outcome once they arrive (an answer that ends without a status counts
    /// as a failure, as a reset stream does). Such an answer is not retried: as in Envoy, the
    /// gRPC retry conditions read the response headers, and the messages have gone downstream.
    fn judge_at_trailers(&self, ep: Arc<EndpointState>, rsp: Response<Body>) -> Response<Body> {
        if self.backend.policy.outlier.is_none() && self.backend.policy.accrual.is_none() {
            return rsp;
        }
        let backend = self.backend.clone();
        let classes: Arc<[model::ResponseClass]> = self.classes.into();
        crate::grpc::OnStatus::wrap(rsp, move |code| {
            let outcome = match code {
                Some(code) => {
                    let status = crate::grpc::http_status(code);
                    let failure = model::route::is_failure(&classes, status);
                    Outcome::Response { status, failure }
                }
                None => Outcome::Error,
            };
            backend.record(&ep, outcome);
        })
    }

    /// Counts a failed attempt on `ep` (outlier detection, failure accrual, route counters).
    fn failed(&self, ep: &EndpointState) {
        self.backend.record(ep, Outcome::Error);
        if let Some(st) = self.stats {
            st.attempt(false);
        }
    }

    /// Who answered, for the metrics: the peer the answer's metadata names, over mTLS or not.
    fn upstream(&self, ep: &Arc<EndpointState>, rsp: &Response<Body>) -> Upstream {
        let mtls = self.peers.tls.is_some() && !ep.plaintext;
        let peer = self.observe.telemetry.peer_from_header(
            rsp.headers()
                .get(crate::telemetry::PEER_HEADER)
                .map(|v| v.as_bytes()),
            mtls.then_some(ep.endpoint.identity.0.as_str()),
        );
        Upstream {
            peer,
            mtls,
            endpoint: ep.clone(),
        }
    }
}

/// `rsp` with `guard` held until its body has been read to the end (or dropped).
fn hold<G: Send + Sync + Unpin + 'static>(rsp: Response<Body>, guard: G) -> Response<Body> {
    rsp.map(|inner| {
        body::boxed(Holding {
            inner,
            guard: Some(guard),
        })
    })
}

/// A response body that holds a guard until it ends.
struct Holding<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G: Unpin> http_body::Body for Holding<G> {
    type Data = bytes::Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, body::BoxError>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            std::task::Poll::Ready(None | Some(Err(_))) => true,
            std::task::Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            std::task::Poll::Pending => false,
        };
        if ended {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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

#[cfg(test)]
mod tests {
    //! Unit tests: which answers call for another attempt.
    use super::*;

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
