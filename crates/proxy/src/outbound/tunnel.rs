//! The outbound side of an HTTP `CONNECT` tunnel: `CONNECT NAME:PORT` from the app names a
//! mesh service (any name it is reachable by, on its port). One endpoint of the service is
//! drawn by its balancer (per tunnel, as for a TCP connection) and an HTTP/2 `CONNECT` stream is
//! opened on the pooled mTLS connection to its sidecar (`crate::tunnel::accept` answers it);
//! endpoints that cannot be reached, or whose app refuses, are skipped as for a request. Once
//! the peer answers `200` the app gets its own `200`, and the two streams are spliced
//! ([`crate::tunnel::splice`]).

use super::resolve::no_service;
use super::send::ready_sender;
use super::MAX_ATTEMPTS;
use crate::body::{self, Body, RequestBody};
use crate::flags::{self, Flag};
use crate::outbound::Forward;
use crate::tunnel::{established, splice};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use model::Authority;

/// Opens a tunnel for the app's `CONNECT` request `req`; a bare service name means the one in
/// `namespace`.
pub(crate) async fn open<R>(
    fwd: &Forward<R>,
    mut req: Request<RequestBody>,
    namespace: &str,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return flags::respond(Flag::BadRequest, "CONNECT needs a host:port target");
    };
    let auth = Authority::parse(&authority);
    let Some(port) = auth.port else {
        return flags::respond(Flag::BadRequest, "CONNECT needs a host:port target");
    };
    let state = fwd.state.load_full();
    let Some(service) = state.routes.resolve(&auth, namespace) else {
        return *no_service(&authority);
    };
    if port != service.port {
        return flags::respond(
            Flag::NoRoute,
            format!(
                "no service in the mesh for {authority:?}: {} listens on port {}",
                service.key, service.port
            ),
        );
    }
    let backend = service.all.clone();
    let target = format!("{}:{}", service.key, service.port);
    let downstream = hyper::upgrade::on(&mut req);
    let mut tried = Vec::with_capacity(MAX_ATTEMPTS);
    let mut last_error = String::from("the service has no endpoints");
    for _ in 0..MAX_ATTEMPTS {
        let Some((idx, ep)) = backend.pick(&tried, None) else {
            break;
        };
        let ep = ep.clone();
        tried.push(idx);
        let in_flight = ep.start();
        let mut sender = match ready_sender(&ep, backend.policy.connect_timeout, &fwd.peers).await {
            Ok(s) => s,
            Err(msg) => {
                last_error = msg;
                continue;
            }
        };
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri(target.as_str())
            .header(crate::headers::CLIENT_ID, fwd.client_id.clone())
            .body(body::empty());
        let Ok(connect) = connect else {
            return flags::respond(Flag::BadRequest, "CONNECT target is not an authority");
        };
        let mut rsp = match sender.send_request(connect).await {
            Ok(rsp) => rsp,
            Err(e) => {
                ep.conn.reset();
                last_error = format!("{}: {e}", ep.endpoint.instance);
                continue;
            }
        };
        if rsp.status() != StatusCode::OK {
            // The peer's app refused: nothing was carried, try another endpoint.
            if flags::of(&rsp) == Some(Flag::UpstreamConnectFailure) {
                last_error = format!("{}: its app refused the tunnel", ep.endpoint.instance);
                continue;
            }
            return rsp.map(body::incoming);
        }
        in_flight.success();
        let upstream = hyper::upgrade::on(&mut rsp);
        // Counted as in flight for as long as it is open: least-request balances tunnels too.
        let open = ep.start();
        let (idle, drain) = (fwd.tunnel_idle, fwd.drain.clone());
        let instance = ep.endpoint.instance.clone();
        tokio::spawn(async move {
            let (client, server) = match tokio::try_join!(downstream, upstream) {
                Ok((c, s)) => (TokioIo::new(c), TokioIo::new(s)),
                Err(e) => {
                    tracing::debug!(%instance, error = %e, "tunnel not established");
                    return;
                }
            };
            let _open = open;
            match splice(client, server, idle, &drain).await {
                Ok(c) => {
                    tracing::debug!(%instance, sent = c.sent, received = c.received, "tunnel closed")
                }
                Err(e) => tracing::debug!(%instance, error = %e, "tunnel ended"),
            }
        });
        return established();
    }
    flags::respond(
        Flag::UpstreamConnectFailure,
        format!(
            "no endpoint of {} took the tunnel: {last_error}",
            service.key
        ),
    )
}
