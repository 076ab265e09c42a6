//! One attempt: a ready sender on the endpoint's pooled HTTP/2 connection to its sidecar
//! (opened over mTLS, expecting the endpoint's identity, when there is none) — or, for a
//! backend whose `connectionPool` limits connections, on a connection leased from the
//! backend's own pool ([`crate::policy::pool`]) — and the request sent on it, its failure
//! classified as safe to send elsewhere or not.

use crate::balance::{EndpointState, InFlight};
use crate::body::{self, Body};
use crate::flags::{self, Flag};
use crate::metrics::Metrics;
use crate::policy::{ConnPool, Lease, Refused};
use crate::upstream::{ConnectError, PeerConn, Sender, Transport};
use http::{Request, Response};
use std::sync::Arc;
use std::time::Duration;

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
    if ep.plaintext {
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
pub(super) enum AttemptError {
    /// The request never reached the peer: safe to send elsewhere.
    Retryable(String),
    /// No answer within the route's per-try timeout.
    PerTryTimeout(String),
    /// The request may have reached the app: answering is all that is left.
    Final(Flag, String),
}

/// A sender on an open, ready connection to `ep`.
pub(super) async fn ready_sender(
    ep: &Arc<EndpointState>,
    connect_timeout: Option<Duration>,
    peers: &Peers,
) -> Result<Sender, String> {
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
                record_edge(peers, ep, kind == 2);
            }
            s
        }
        Err(e) => return Err(connect_failed(metrics, ep, &e)),
    };
    if sender.ready().await.is_err() {
        ep.conn.reset();
        return Err(format!("connection to {} closed", ep.endpoint.instance));
    }
    Ok(sender)
}

/// Why an attempt on a backend with its own connection pool got no connection.
pub(super) enum NoLease {
    /// Over `http1MaxPendingRequests` or `http2MaxRequests`: 503 `UO`.
    Overflow(&'static str),
    /// Opening a connection failed, or the one leased had closed: try elsewhere.
    Failed(String),
}

/// A ready sender on a connection of the backend's own `pool` to `ep`: an idle one, or a new
/// one opened for it (the request waits as pending meanwhile).
pub(super) async fn leased_sender(
    pool: &Arc<ConnPool<PeerConn>>,
    ep: &Arc<EndpointState>,
    connect_timeout: Option<Duration>,
    peers: &Peers,
) -> Result<(Sender, Lease<PeerConn>), NoLease> {
    let addr = ep.endpoint.address;
    let open = || async {
        let transport = transport_for(&peers.tls, ep)?;
        let mtls = matches!(transport, Transport::Mtls { .. });
        let conn = PeerConn::open(addr, connect_timeout, transport).await?;
        peers.metrics.pool_connections_opened.inc();
        record_edge(peers, ep, mtls);
        Ok::<_, ConnectError>(conn)
    };
    let mut lease = match pool.lease(|c: &PeerConn| c.addr == addr, open).await {
        Ok(l) => l,
        Err(Refused::Overflow(why)) => return Err(NoLease::Overflow(why)),
        Err(Refused::Connect(e)) => {
            return Err(NoLease::Failed(connect_failed(&peers.metrics, ep, &e)))
        }
    };
    let mut sender = lease.conn().send.clone();
    if sender.ready().await.is_err() {
        lease.retire();
        return Err(NoLease::Failed(format!(
            "connection to {} closed",
            ep.endpoint.instance
        )));
    }
    Ok((sender, lease))
}

/// Notes a new connection to `ep` in the proxy's edge records.
fn record_edge(peers: &Peers, ep: &EndpointState, mtls: bool) {
    peers.edges.record(crate::edges::Edge {
        direction: "outbound",
        client: peers.identity.clone(),
        server: ep.endpoint.identity.0.clone(),
        peer: ep.endpoint.address.to_string(),
        mtls,
    });
}

/// Counts a failed connect to `ep` (its backoff, a refused handshake) and says what happened.
fn connect_failed(metrics: &Metrics, ep: &EndpointState, e: &ConnectError) -> String {
    match e {
        ConnectError::NoCertificate => {}
        ConnectError::Tls { kind, .. } => {
            metrics.tls_failure("outbound", kind);
            tracing::warn!(endpoint = %ep.endpoint.instance, error = %e, "mTLS handshake failed");
            ep.connect_failed();
        }
        _ => ep.connect_failed(),
    }
    connect_message(&ep.endpoint.instance, e)
}

/// One attempt on a ready connection: the endpoint's shared one (`shared`: forgotten when it
/// fails, so that the next request opens another), or one of the backend's own.
pub(super) async fn send(
    ep: &Arc<EndpointState>,
    mut sender: Sender,
    req: Request<Body>,
    in_flight: InFlight,
    idempotent: bool,
    shared: bool,
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
            Ok(rsp)
        }
        // The client stalled its body: the upstream connection is fine.
        Err(e) if body::timed_out(&e) => Err(AttemptError::Final(
            Flag::StreamIdleTimeout,
            format!("the client's request body: {e}"),
        )),
        Err(e) if e.never_processed() => {
            if shared {
                ep.conn.reset();
            }
            Err(AttemptError::Retryable(format!(
                "{}: request refused: {e}",
                ep.endpoint.instance
            )))
        }
        Err(e) => {
            if shared {
                ep.conn.reset();
            }
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
