//! The outbound side of an HTTP `CONNECT` tunnel: `CONNECT NAME:PORT` from the app names a
//! mesh service (any name it is reachable by) and one of its ports (the destination's sidecar
//! knows which it has, and refuses others), or a local client port names one ([`serve_local`]).
//! The service's connection rules (VirtualService `tcp[]`, `tls[]`) pick where it goes, by the
//! port and, for `tls[]` rules, by the server name of the TLS ClientHello the client sends first
//! (then the app gets its `200` before the tunnel is routed: a tunnel no rule takes is closed).
//! One endpoint of the destination is drawn by its balancer (per tunnel, as for a TCP
//! connection) and an HTTP/2 `CONNECT` stream is opened on the pooled mTLS connection to its
//! sidecar (`crate::tunnel::accept` answers it);
//! endpoints that cannot be reached, or whose app refuses, are skipped as for a request. Once
//! the peer answers `200` the app gets its own `200`, and the two streams are spliced
//! ([`crate::tunnel::splice`]).

use super::resolve::{lacks, no_service};
use super::send::ready_sender;
use super::MAX_ATTEMPTS;
use crate::body::{self, Body, RequestBody};
use crate::flags::{self, Flag};
use crate::outbound::Forward;
use crate::route::connection::{self, ConnRoute};
use crate::telemetry::{ConnectionRecord, Reporter, ResponseFlags, TcpConnection};
use crate::tunnel::{established, splice};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use model::Authority;
use std::sync::Arc;

/// How long a client of a service with `tls[]` rules gets to send its first bytes before the
/// tunnel is routed without a server name (a protocol whose server speaks first).
const HELLO_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens a tunnel for the app's `CONNECT` request `req`; a bare service name means the one in
/// `namespace`.
pub(crate) async fn open<R: Send + Sync + 'static>(
    fwd: Arc<Forward<R>>,
    mut req: Request<RequestBody>,
    namespace: &str,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return flags::respond(Flag::BadRequest, "CONNECT needs a host:port target");
    };
    let target = match Target::resolve(&fwd, &authority, namespace).await {
        Ok(t) => t,
        Err(rsp) => return *rsp,
    };
    let downstream = hyper::upgrade::on(&mut req);
    if target.needs_sni {
        // Routed by what the client sends once it has its `200`.
        tokio::spawn(async move {
            match downstream.await {
                Ok(client) => carry(&fwd, &target, TokioIo::new(client), Vec::new()).await,
                Err(e) => tracing::debug!(error = %e, "tunnel not established"),
            }
        });
        return established();
    }
    let dialed = match dial(&fwd, &target, None).await {
        Ok(d) => d,
        Err(rsp) => return *rsp,
    };
    let (idle, drain) = (fwd.tunnel_idle, fwd.drain.clone());
    tokio::spawn(async move {
        match downstream.await {
            Ok(client) => dialed.carry(TokioIo::new(client), idle, &drain).await,
            Err(e) => tracing::debug!(error = %e, "tunnel not established"),
        }
    });
    established()
}

/// Serves connections accepted on a local client port for `target` (`NAME:PORT`): each one is
/// tunnelled as if its client had sent `CONNECT target`; one no endpoint takes is closed.
pub async fn serve_local<R: Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    fwd: Arc<Forward<R>>,
    target: String,
    namespace: String,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = fwd.drain.started() => return,
            r = listener.accept() => r,
        };
        let Ok((client, peer)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        let (fwd, target, namespace) = (fwd.clone(), target.clone(), namespace.clone());
        // Resolved in the connection's own task: one waiting for its service (on demand)
        // holds up no other.
        tokio::spawn(async move {
            match Target::resolve(&fwd, &target, &namespace).await {
                Ok(t) => carry(&fwd, &t, client, Vec::new()).await,
                Err(rsp) => {
                    tracing::info!(%peer, %target, why = %refusal(&rsp), "local client port: no tunnel")
                }
            }
        });
    }
}

/// Routes a client connection already accepted (`first`: bytes already read from it; reading
/// its ClientHello first when the service's rules need its server name), opens its tunnel and
/// carries it; closes it when no rule or endpoint takes it.
pub(crate) async fn carry<R, C>(fwd: &Forward<R>, target: &Target, mut client: C, first: Vec<u8>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hello = if target.needs_sni {
        match crate::sni::read_hello(&mut client, first, HELLO_WAIT).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel client left before it was routed");
                return;
            }
        }
    } else {
        crate::sni::Hello {
            bytes: first,
            server_name: None,
        }
    };
    let dialed = match dial(fwd, target, hello.server_name.as_deref()).await {
        Ok(d) => d,
        Err(rsp) => {
            tracing::info!(service = %target.service.key, why = %refusal(&rsp), "no tunnel");
            return;
        }
    };
    let client = crate::sni::Prefixed::new(hello.bytes, client);
    dialed.carry(client, fwd.tunnel_idle, &fwd.drain).await;
}

/// Why a tunnel was refused, as its answer's status and flag say it.
fn refusal(rsp: &Response<Body>) -> String {
    match flags::of(rsp) {
        Some(f) => format!("{} {f:?}", rsp.status()),
        None => rsp.status().to_string(),
    }
}

/// A `CONNECT` stream a peer sidecar answered: the endpoint, its answer (any status but a
/// refusal by its app), and the endpoint's in-flight count for the attempt.
pub(super) struct Answered {
    pub ep: Arc<crate::balance::EndpointState>,
    pub rsp: Response<Body>,
    /// The stream's bytes, when the peer accepted it (a 2xx answer).
    pub stream: Option<crate::upstream::client::Stream>,
    pub in_flight: crate::balance::InFlight,
}

/// Sends the `CONNECT` stream `make` builds to one endpoint of `backend` its balancer draws,
/// moving on to another (at most [`MAX_ATTEMPTS`]) when an endpoint cannot be reached or its app
/// refuses (nothing was carried then). `Err`: why none answered, for a 503 `UF`.
pub(super) async fn to_an_endpoint<R>(
    fwd: &Forward<R>,
    backend: &crate::table::Backend,
    make: impl Fn() -> Request<Body>,
) -> Result<Answered, String> {
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
        let (rsp, stream) = match sender.connect(make()).await {
            Ok(answered) => answered,
            Err(e) => {
                ep.conn.reset();
                last_error = format!("{}: {e}", ep.endpoint.instance);
                continue;
            }
        };
        if rsp.status() != StatusCode::OK && flags::of(&rsp) == Some(Flag::UpstreamConnectFailure) {
            last_error = format!("{}: its app refused", ep.endpoint.instance);
            continue;
        }
        return Ok(Answered {
            ep,
            rsp,
            stream,
            in_flight,
        });
    }
    Err(last_error)
}

fn report(instance: &str, r: Result<crate::tunnel::Carried, crate::tunnel::SpliceError>) {
    match r {
        Ok(c) => tracing::debug!(%instance, sent = c.sent, received = c.received, "tunnel closed"),
        Err(e) => tracing::debug!(%instance, error = %e, "tunnel ended"),
    }
}

/// A tunnel a peer sidecar has accepted: its stream, the
/// connection's TCP series (`reporter="source"`), and the endpoint it is counted in flight on.
struct Dialed {
    upstream: crate::upstream::client::Stream,
    counted: TcpConnection,
    instance: String,
    _open: crate::balance::InFlight,
    /// Its place under the backend's `tcp.maxConnections`.
    _slot: crate::policy::TunnelSlot,
}

/// The service a tunnel is for, the port its client addressed, and whether routing it needs
/// the client's TLS server name.
pub(crate) struct Target {
    service: Arc<crate::table::Service>,
    port: u16,
    needs_sni: bool,
}

impl Target {
    /// A connection to `service` on `port` (a captured connection to its virtual IP).
    pub(crate) fn to(service: Arc<crate::table::Service>, port: u16) -> Target {
        Target {
            needs_sni: service.tcp_routes.iter().any(ConnRoute::needs_sni),
            service,
            port,
        }
    }

    /// The service `authority` (`NAME:PORT`, any name form) names, asked for when the snapshot
    /// in force lacks it and may have it on demand. `Err`: the answer for the client (400,
    /// 404 `NR`).
    async fn resolve<R>(
        fwd: &Forward<R>,
        authority: &str,
        namespace: &str,
    ) -> Result<Target, Box<Response<Body>>> {
        let auth = Authority::parse(authority);
        let Some(port) = auth.port else {
            return Err(Box::new(flags::respond(
                Flag::BadRequest,
                "CONNECT needs a host:port target",
            )));
        };
        let state = fwd.state.load_full();
        if let Some(service) = state.routes.resolve(&auth, namespace) {
            return Ok(Target::to(service.clone(), port));
        }
        let Some(host) = lacks(&state.routes, &auth, namespace) else {
            return Err(no_service(authority));
        };
        drop(state);
        let has = |s: &crate::state::ProxyState| s.routes.resolve(&auth, namespace).is_some();
        if !fwd.on_demand.wait(&host, &fwd.state, has).await {
            return Err(no_service(authority));
        }
        let state = fwd.state.load_full();
        match state.routes.resolve(&auth, namespace) {
            Some(service) => Ok(Target::to(service.clone(), port)),
            None => Err(no_service(authority)),
        }
    }
}

impl Dialed {
    /// Once the peer's stream is open, splices `client` to it until both sides are done.
    async fn carry<C>(self, client: C, idle: std::time::Duration, drain: &crate::server::Drain)
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let Dialed {
            upstream,
            counted,
            instance,
            _open,
            _slot,
        } = self;
        report(
            &instance,
            splice(client, upstream, idle, drain, Some(&counted)).await,
        );
    }
}

/// Opens a tunnel to `target`'s service on its port, or where its first connection rule that
/// takes it (by port and the client's server name `sni`) sends it: one endpoint drawn per
/// tunnel, others tried when it cannot be reached or its app refuses. `Err`: the answer for the
/// client (404 `NR`, 403 from the peer, 503 `UO`/`UF`).
async fn dial<R>(
    fwd: &Forward<R>,
    target: &Target,
    sni: Option<&str>,
) -> Result<Dialed, Box<Response<Body>>> {
    let service = &target.service;
    // Any port: the destination's sidecar knows its app's ports and refuses others (404).
    let (backend, port) = if service.tcp_routes.is_empty() {
        (service.all.clone(), target.port)
    } else {
        let Some(rule) = connection::first(&service.tcp_routes, target.port, sni) else {
            return Err(Box::new(flags::respond(
                Flag::NoRoute,
                format!(
                    "no connection rule of {} takes port {}{}",
                    service.key,
                    target.port,
                    sni.map(|n| format!(" with server name {n}"))
                        .unwrap_or_default()
                ),
            )));
        };
        let dest = rule.pick();
        (dest.backend.clone(), dest.port.unwrap_or(target.port))
    };
    // `tcp.maxConnections`: one slot per open tunnel, as Envoy's TCP proxy counts connections.
    let max_connections = backend.policy.pool.as_ref().and_then(|p| p.max_connections);
    let Some(slot) = backend.counters.admit_tunnel(max_connections) else {
        return Err(Box::new(flags::respond(
            Flag::Overflow,
            format!(
                "upstream overflow: {} has {} open tunnels (tcp.maxConnections)",
                backend.name,
                max_connections.unwrap_or_default()
            ),
        )));
    };
    let authority = format!("{}:{port}", backend.service_key);
    let Ok(uri) = authority.parse::<http::Uri>() else {
        return Err(Box::new(flags::respond(
            Flag::BadRequest,
            "CONNECT target is not an authority",
        )));
    };
    let make = || {
        let mut connect = Request::new(body::empty());
        *connect.method_mut() = Method::CONNECT;
        *connect.uri_mut() = uri.clone();
        let h = connect.headers_mut();
        h.insert(crate::headers::CLIENT_ID, fwd.client_id.clone());
        h.insert(crate::telemetry::PEER, fwd.observe.local_header.clone());
        connect
    };
    let last_error = match to_an_endpoint(fwd, &backend, make).await {
        Ok(Answered {
            ep,
            rsp,
            stream,
            in_flight,
        }) => {
            let Some(stream) = stream.filter(|_| rsp.status() == StatusCode::OK) else {
                return Err(Box::new(rsp));
            };
            in_flight.success();
            let mtls = fwd.peers.tls.is_some() && !ep.plaintext;
            let telemetry = &fwd.observe.telemetry;
            let destination = telemetry.peer_from_header(
                rsp.headers()
                    .get(crate::telemetry::PEER_HEADER)
                    .map(|v| v.as_bytes()),
                mtls.then_some(ep.endpoint.identity.0.as_str()),
            );
            let counted = telemetry.tcp_connection(&ConnectionRecord {
                reporter: Reporter::Source,
                source: &fwd.observe.local,
                destination: &destination,
                service: &backend.service,
                flags: ResponseFlags::NONE,
                mtls,
            });
            return Ok(Dialed {
                upstream: stream,
                counted,
                instance: ep.endpoint.instance.clone(),
                // Counted as in flight for as long as it is open: least-request balances
                // tunnels too.
                _open: ep.start(),
                _slot: slot,
            });
        }
        Err(e) => e,
    };
    Err(Box::new(flags::respond(
        Flag::UpstreamConnectFailure,
        format!(
            "no endpoint of {} took the tunnel: {last_error}",
            backend.name
        ),
    )))
}
