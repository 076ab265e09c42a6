//! HTTP/1.1 `Upgrade` (WebSocket and the like) through the mesh.
//!
//! An upgrade request is an HTTP request until it is answered `101`: the ingress and the
//! client sidecar route it (`outbound::upgrade`), the server sidecar authenticates and authorizes
//! it, all as for any request. Between the proxies it travels as an HTTP/2 `CONNECT` stream whose
//! headers carry the request: its headers as they are, the protocol in [`UPGRADE_HEADER`] and its
//! target in [`PATH_HEADER`] (a plain `CONNECT` rather than RFC 8441's extended `CONNECT`: it
//! needs no SETTINGS round trip on a new connection). The server sidecar turns it back into the
//! HTTP/1.1 request ([`restore`]), replays it to the app on a connection of its own
//! ([`to_app`]), answers the app's `101` with `200` (the app's headers kept), and splices the
//! stream with the app's connection; the client side answers its caller `101` and splices too.

use crate::body::{self, Body, RequestBody};
use crate::flags::{self, Flag};
use crate::server::Drain;
use crate::tunnel::splice;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// The protocol of an upgrade request carried over a `CONNECT` stream between proxies.
pub const UPGRADE_HEADER: &str = "x-weft-upgrade";
pub const UPGRADE: HeaderName = HeaderName::from_static(UPGRADE_HEADER);
/// The upgrade request's target (path and query).
pub const PATH_HEADER: &str = "x-weft-upgrade-path";
pub const PATH: HeaderName = HeaderName::from_static(PATH_HEADER);
/// How long the app gets to accept the upgrade's connection.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` and `Upgrade`).
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// An upgrade under way on the server sidecar: the protocol, and the stream from the peer.
#[derive(Clone)]
pub struct Upgrading {
    pub protocol: HeaderValue,
    pub peer: OnUpgrade,
}

/// Turns a `CONNECT` stream that carries an upgrade request (it has [`UPGRADE_HEADER`]) back
/// into that request, `GET` its target, marked [`Upgrading`]; `false`: `req` is a plain
/// tunnel, left as it is.
pub fn restore(req: &mut Request<RequestBody>) -> bool {
    let Some(protocol) = req.headers_mut().remove(UPGRADE) else {
        return false;
    };
    let path = req
        .headers_mut()
        .remove(PATH)
        .and_then(|p| http::uri::PathAndQuery::try_from(p.as_bytes()).ok())
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = req.uri().authority().cloned();
    uri.path_and_query = Some(path);
    if let Ok(u) = http::Uri::from_parts(uri) {
        *req.uri_mut() = u;
    }
    *req.method_mut() = Method::GET;
    let peer = hyper::upgrade::on(&mut *req);
    req.extensions_mut().insert(Upgrading { protocol, peer });
    true
}

/// Replays the upgrade request (`parts`, already fitted for the app) to the app at `app` on a
/// connection of its own. On `101` the app's connection is spliced with the peer's stream and
/// the peer gets `200` with the app's headers; any other answer goes back as it is.
pub async fn to_app(
    app: SocketAddr,
    mut parts: http::request::Parts,
    up: Upgrading,
    idle: Duration,
    drain: &Drain,
) -> Response<Body> {
    let tcp = match tokio::time::timeout(APP_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(app))
        .await
    {
        Ok(Ok(s)) => s,
        _ => {
            return flags::respond(
                Flag::UpstreamConnectFailure,
                format!("app at {app} refused the upgrade's connection"),
            )
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => {
            return flags::respond(
                Flag::UpstreamConnectionTermination,
                format!("app at {app}: {e}"),
            )
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, up.protocol.clone());
    let req = Request::from_parts(parts, body::empty());
    let mut rsp = match send.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            return flags::respond(
                Flag::UpstreamConnectionTermination,
                format!("app at {app}: {e}"),
            )
        }
    };
    if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return rsp.map(body::incoming);
    }
    let app_side = hyper::upgrade::on(&mut rsp);
    let peer_side = up.peer;
    let drain = drain.clone();
    tokio::spawn(async move {
        match tokio::try_join!(peer_side, app_side) {
            Ok((p, a)) => {
                if let Err(e) = splice(TokioIo::new(p), TokioIo::new(a), idle, &drain, None).await {
                    tracing::debug!(%app, error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(%app, error = %e, "upgrade not completed"),
        }
    });
    let mut ok = Response::new(body::empty());
    *ok.status_mut() = StatusCode::OK;
    *ok.headers_mut() = without_upgrade(rsp.headers());
    ok
}

/// `headers` without the ones naming the upgrade itself (the hop answers with its own).
pub fn without_upgrade(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    crate::headers::strip_hop_by_hop(&mut h);
    h.remove(header::CONTENT_LENGTH);
    h
}
