//! Byte streams through the mesh: HTTP `CONNECT` tunnels.
//!
//! An app asks its sidecar's outbound listener for `CONNECT NAME:PORT` (see
//! `outbound::tunnel`); the sidecar opens an HTTP/2 `CONNECT` stream on its pooled mTLS
//! connection to one endpoint of the service, and that endpoint's sidecar ([`accept`]) checks the
//! peer against its authorization rules as a TCP connection (no HTTP attributes), connects to
//! its app and splices the two. Both hops then carry raw bytes ([`splice`]): half-closes pass
//! through (an HTTP/2 `END_STREAM` for a TCP `FIN`), and a tunnel that carries nothing for the
//! listener's idle timeout is closed.

use crate::authz::RequestContext;
use crate::body::{self, Body};
use crate::flags::{self, Flag};
use crate::server::{Drain, PeerInfo};
use crate::telemetry::{ConnectionRecord, Reporter, ResponseFlags, TcpConnection};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
// Tokio's clock: the idle timeout follows paused time in tests.
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How long the app gets to accept a tunnel's connection.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes a tunnel reads (and writes on) at once, each way. tokio's default (8 KiB) cut every
/// 16 KiB write of an app, and every 16 KiB HTTP/2 DATA frame, in two: two CONNECT-stream
/// writes (each a copy and a hand-off to the HTTP/2 connection's task) on one side and two
/// socket writes, waking the app twice, on the other. 32 KiB carries a full frame or TLS
/// record in one go, at 64 KiB per open tunnel.
pub const SPLICE_BUFFER: usize = 32 * 1024;

/// Bytes a tunnel carried, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// From the side that opened the tunnel to the other.
    pub sent: u64,
    /// Back.
    pub received: u64,
}

/// Why a tunnel ended, besides both sides closing.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("no bytes either way for {0:?}")]
    Idle(Duration),
    #[error("the proxy is draining")]
    Drained,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Copies bytes both ways between `client` (the side that opened the tunnel) and `server` until
/// both directions have ended, passing each half-close on; ends early when neither side sends
/// anything for `idle`, or when the drain's grace has passed. `counted`: Istio's TCP byte
/// counters of the connection, added to as bytes arrive (payload bytes only: the framing of
/// the hop between proxies is not counted).
pub async fn splice<A, B>(
    client: A,
    server: B,
    idle: Duration,
    drain: &Drain,
    counted: Option<&TcpConnection>,
) -> Result<Carried, SpliceError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Active {
        io: client,
        start,
        last: last.clone(),
        // Bytes from the client are what Istio calls received.
        count: counted.map(|c| (c, Way::Received)),
    };
    let mut server = Active {
        io: server,
        start,
        last: last.clone(),
        count: counted.map(|c| (c, Way::Sent)),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut server,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    );
    let quiet = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let idle_for = start.elapsed().saturating_sub(since);
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    };
    let drained = async {
        drain.started().await;
        tokio::time::sleep(drain.grace).await;
    };
    tokio::select! {
        r = copy => {
            let (sent, received) = r?;
            Ok(Carried { sent, received })
        }
        _ = quiet => Err(SpliceError::Idle(idle)),
        _ = drained => Err(SpliceError::Drained),
    }
}

/// Which of a connection's byte counters a stream's reads add to.
#[derive(Clone, Copy)]
enum Way {
    Sent,
    Received,
}

/// A stream that notes when it last read anything (milliseconds since `start`), and counts
/// what it reads.
struct Active<'c, S> {
    io: S,
    start: Instant,
    last: Arc<AtomicU64>,
    count: Option<(&'c TcpConnection, Way)>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            let now = self.start.elapsed().as_millis() as u64;
            self.last.store(now, Ordering::Relaxed);
            match self.count {
                Some((c, Way::Sent)) => c.sent(n),
                Some((c, Way::Received)) => c.received(n),
                None => {}
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the destination side of a tunnel needs.
pub struct Accept<'a> {
    /// The app's address the tunnel ends at.
    pub app: SocketAddr,
    /// The service port the tunnel names (`ports`, `destination.port`); `None`: the one the
    /// rules were compiled for.
    pub port: Option<u16>,
    /// The inbound rules in force; `None`: none.
    pub security: Option<&'a crate::security::Compiled>,
    pub health: &'a crate::inbound::AppHealth,
    pub idle: Duration,
    pub drain: &'a Drain,
    /// Istio's TCP metrics (`reporter="destination"`) for connections to this service.
    pub observe: Option<&'a (
        Arc<crate::observe::Observe>,
        crate::telemetry::DestinationService,
    )>,
}

/// The destination sidecar's side: a `CONNECT` request from a peer proxy (or a plaintext
/// client on a PERMISSIVE port) is authorized as a TCP connection, then answered `200` once
/// the app has accepted a connection, and the two are spliced; 403 when the rules deny it, 503
/// `UF` when the app refuses.
pub async fn accept<B>(cx: Accept<'_>, mut req: Request<B>, peer: &PeerInfo) -> Response<Body> {
    let peer_header = req
        .headers()
        .get(crate::telemetry::PEER_HEADER)
        .map(|v| v.as_bytes().to_vec());
    let (app, counted) = match admit(&cx, peer, peer_header.as_deref()).await {
        Ok(admitted) => admitted,
        Err(rsp) => return rsp,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let (idle, drain, app_addr, client) = (cx.idle, cx.drain.clone(), cx.app, peer.addr);
    tokio::spawn(async move {
        let tunnel = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(%client, error = %e, "tunnel not established");
                return;
            }
        };
        carry(
            tunnel,
            app,
            idle,
            &drain,
            counted.as_ref(),
            client,
            app_addr,
        )
        .await;
    });
    let mut rsp = established();
    if let Some((o, _)) = cx.observe {
        // The metadata exchange, as on every answer: the client side labels its own series.
        rsp.headers_mut()
            .insert(crate::telemetry::PEER, o.local_header.clone());
    }
    rsp
}

/// A plaintext connection the pod's capture rules sent to the inbound listener for a port
/// the app serves as opaque TCP (a client outside the mesh calling the pod's address): checked
/// as a tunnel is, then spliced to the app; closed when refused.
pub async fn accept_captured(cx: Accept<'_>, stream: tokio::net::TcpStream, peer: &PeerInfo) {
    let (app, counted) = match admit(&cx, peer, None).await {
        Ok(admitted) => admitted,
        Err(rsp) => {
            tracing::info!(client = %peer.addr, status = %rsp.status(), "captured connection refused");
            return;
        }
    };
    carry(
        stream,
        app,
        cx.idle,
        cx.drain,
        counted.as_ref(),
        peer.addr,
        cx.app,
    )
    .await;
}

/// Authorizes a connection from `peer` (whose sidecar said who it is in `peer_header`, if it
/// has one) as a TCP connection and connects to the app: the app's stream and the connection's
/// TCP series. `Err`: the answer (403 denied, 503 `UF` when the app refuses).
async fn admit(
    cx: &Accept<'_>,
    peer: &PeerInfo,
    peer_header: Option<&[u8]>,
) -> Result<(tokio::net::TcpStream, Option<TcpConnection>), Response<Body>> {
    if let Some(sec) = cx.security {
        let ctx = RequestContext {
            peer_ip: peer.addr.ip(),
            peer_identity: peer.identity.as_ref(),
            destination_ip: None,
            destination_port: cx.port.unwrap_or(sec.port),
            sni: None,
            // A tunnel is a TCP connection: a rule that needs HTTP attributes cannot match it.
            http: None,
        };
        let d = sec.authz.authorize(&ctx);
        if !d.allowed {
            tracing::info!(decision = %d, client = ?ctx.peer_identity, "tunnel denied");
            return Err(crate::authz::denied_response());
        }
    }
    let app =
        match tokio::time::timeout(APP_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(cx.app))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                cx.health.set(false);
                return Err(flags::respond(
                    Flag::UpstreamConnectFailure,
                    format!("app at {} refused the tunnel's connection", cx.app),
                ));
            }
        };
    let _ = app.set_nodelay(true);
    let counted = cx.observe.map(|(o, service)| {
        let source = o
            .telemetry
            .peer_from_header(peer_header, peer.identity.as_ref().map(|i| i.0.as_str()));
        o.telemetry.tcp_connection(&ConnectionRecord {
            reporter: Reporter::Destination,
            source: &source,
            destination: &o.local,
            service,
            flags: ResponseFlags::NONE,
            mtls: peer.identity.is_some(),
        })
    });
    Ok((app, counted))
}

/// Splices an admitted connection to the app until both sides are done.
async fn carry<C>(
    client_io: C,
    app: tokio::net::TcpStream,
    idle: Duration,
    drain: &Drain,
    counted: Option<&TcpConnection>,
    client: SocketAddr,
    app_addr: SocketAddr,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    match splice(client_io, app, idle, drain, counted).await {
        Ok(c) => {
            tracing::debug!(%client, app = %app_addr, sent = c.sent, received = c.received, "tunnel closed")
        }
        Err(e) => tracing::debug!(%client, app = %app_addr, error = %e, "tunnel ended"),
    }
}

/// The answer that opens a tunnel: `200`, no body.
pub fn established() -> Response<Body> {
    let mut rsp = Response::new(body::empty());
    *rsp.status_mut() = StatusCode::OK;
    rsp
}

#[cfg(test)]
mod tests;
