//! The client side of an HTTP/1.1 upgrade (WebSocket): the request is checked (the gateway's
//! JWT and authorization), routed and edited as any request, then sent to one endpoint the
//! backend's balancer draws as an HTTP/2 `CONNECT` stream carrying it ([`crate::upgrade`]).
//! When the server sidecar answers `200` (its app said `101`) the caller gets `101` with the
//! app's headers and the two streams are spliced. Retries, mirrors, faults and the route's
//! timeout do not apply: an upgraded connection is not a request that can be sent again.

use super::resolve::Resolve;
use super::{edit, request_authority, Forward};
use crate::body::{self, Body, RequestBody};
use crate::flags::{self, Flag};
use crate::observe::Upstream;
use crate::server::PeerInfo;
use crate::telemetry::DestinationService;
use crate::tunnel::splice;
use crate::upgrade::{without_upgrade, PATH, UPGRADE};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;

/// Routes the upgrade request `req` (asking for `protocol`) and opens it upstream; says which
/// service it went to (`service_out`) and which endpoint answered (`upstream_out`), for the
/// metrics.
pub(super) async fn open<R: Resolve>(
    fwd: &Forward<R>,
    mut req: Request<RequestBody>,
    info: &PeerInfo,
    protocol: HeaderValue,
    service_out: &mut Option<DestinationService>,
    upstream_out: &mut Option<Upstream>,
) -> Response<Body> {
    let state = fwd.state.load_full();
    if let Err(rsp) = fwd.resolve.check(&state, &mut req, info) {
        return *rsp;
    }
    let downstream = hyper::upgrade::on(&mut req);
    let (mut parts, _body) = req.into_parts();
    let Some(authority) = request_authority(&parts.uri, &parts.headers) else {
        return flags::respond(Flag::BadRequest, "request names no host");
    };
    let grown: std::sync::Arc<crate::state::ProxyState>;
    let routed = match fwd.resolve.route(&state.routes, &authority, &parts) {
        Ok(r) => r,
        // Boxed: the rare path adds nothing to every upgrade's future.
        Err(rsp) => match Box::pin(fwd.asked(&state, &authority)).await {
            Some(next) => {
                grown = next;
                match fwd.resolve.route(&grown.routes, &authority, &parts) {
                    Ok(r) => r,
                    Err(rsp) => return *rsp,
                }
            }
            None => return *rsp,
        },
    };
    let Some(backend) = routed.backend else {
        return flags::respond_with(
            Flag::NoRoute,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the route has no destination",
        );
    };
    *service_out = Some(backend.service.clone());
    let ours = edit::Upstream {
        client_id: &fwd.client_id,
        peer: &fwd.observe.local_header,
    };
    if let Err(rsp) = edit::request(&mut parts, authority, &routed, ours) {
        return *rsp;
    }
    // The CONNECT stream names the authority; the request's target and protocol ride along.
    let Some(target) = parts.uri.authority().cloned() else {
        return flags::respond(Flag::BadRequest, "request names no host");
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(path) = HeaderValue::from_str(&path) else {
        return flags::respond(Flag::BadRequest, "bad request target");
    };
    parts.headers.insert(UPGRADE, protocol.clone());
    parts.headers.insert(PATH, path);
    parts.method = Method::CONNECT;
    parts.uri = http::Uri::from(target);
    parts.version = Version::HTTP_2;

    let make = || {
        let mut connect = Request::new(body::empty());
        *connect.method_mut() = parts.method.clone();
        *connect.uri_mut() = parts.uri.clone();
        *connect.version_mut() = Version::HTTP_2;
        *connect.headers_mut() = parts.headers.clone();
        connect
    };
    let last_error = match super::tunnel::to_an_endpoint(fwd, backend, make).await {
        Ok(super::tunnel::Answered {
            ep,
            rsp,
            stream,
            in_flight,
        }) => {
            let mtls = fwd.peers.tls.is_some() && !ep.plaintext;
            *upstream_out = Some(Upstream {
                peer: fwd.observe.telemetry.peer_from_header(
                    rsp.headers()
                        .get(crate::telemetry::PEER_HEADER)
                        .map(|v| v.as_bytes()),
                    mtls.then_some(ep.endpoint.identity.0.as_str()),
                ),
                mtls,
                endpoint: ep.clone(),
            });
            in_flight.success();
            let Some(upstream) = stream.filter(|_| rsp.status() == StatusCode::OK) else {
                return rsp;
            };
            let open = ep.start();
            let (idle, drain) = (fwd.tunnel_idle, fwd.drain.clone());
            let instance = ep.endpoint.instance.clone();
            tokio::spawn(async move {
                let _open = open;
                match downstream.await {
                    Ok(c) => {
                        if let Err(e) = splice(TokioIo::new(c), upstream, idle, &drain, None).await
                        {
                            tracing::debug!(%instance, error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => tracing::debug!(%instance, error = %e, "upgrade not completed"),
                }
            });
            let mut switching = Response::new(body::empty());
            *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            *switching.headers_mut() = without_upgrade(rsp.headers());
            let h = switching.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, protocol);
            return switching;
        }
        Err(e) => e,
    };
    flags::respond(
        Flag::UpstreamConnectFailure,
        format!(
            "no endpoint of {} took the upgrade: {last_error}",
            backend.name
        ),
    )
}
