//! Transparent interception, outbound: the listener a pod's capture rules send its app's TCP
//! connections to (`--capture-outbound`). Each connection's original destination
//! ([`crate::io::original_dst`]) says where the app meant to go:
//!
//! - a service's virtual IP on one of its ports: a `tcp` port is tunnelled as a byte stream
//!   (`outbound::tunnel`, with the service's connection rules); on an HTTP port the first bytes
//!   decide — an HTTP/1 request line or the HTTP/2 preface is served as HTTP by the outbound
//!   handler (routed by Host, or by the virtual IP's service when the Host names none), anything
//!   else (a TLS ClientHello, a binary protocol) is tunnelled, and so is a client that sends
//!   nothing for [`DETECT_TIMEOUT`];
//! - any other address: passed through to it unchanged (Istio's `ALLOW_ANY`), or refused under
//!   `REGISTRY_ONLY`.
//!
//! The proxy's own connections carry its socket mark (`io::connect`), which the capture rules
//! let through.

use crate::outbound::tunnel::{carry, Target};
use crate::outbound::Outbound;
use crate::server::{self, Drain, PeerInfo};
use crate::sni::Prefixed;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

/// How long a client on an HTTP port gets to send its first bytes before its connection is
/// taken for opaque TCP (Istio's protocol detection timeout is 5 s, Linkerd's 10 s).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a passed-through connection may take to connect.
const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest HTTP method name followed by a space: as many bytes as detection needs.
const METHODS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
    // The HTTP/2 connection preface: `PRI * HTTP/2.0`.
    b"PRI ",
];

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1 request line or the HTTP/2 preface.
    Http,
    /// Anything else.
    Opaque,
}

/// `None`: `bytes` could still begin either.
pub fn detect(bytes: &[u8]) -> Option<Detected> {
    if bytes.is_empty() {
        return None;
    }
    let mut undecided = false;
    for m in METHODS {
        if bytes.starts_with(m) {
            return Some(Detected::Http);
        }
        if m.starts_with(bytes) {
            undecided = true;
        }
    }
    (!undecided).then_some(Detected::Opaque)
}

/// Accepts captured connections on `listener` until the drain starts.
pub async fn serve(
    listener: TcpListener,
    fwd: Arc<Outbound>,
    drain: Drain,
    tracker: TaskTracker,
    config: Arc<server::Listener>,
) {
    let own = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.started() => break,
            r = listener.accept() => r,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Some(permits) = config.admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (fwd, drain, config) = (fwd.clone(), drain.clone(), config.clone());
        tracker.spawn(async move {
            let _permits = permits;
            handle(stream, peer, own, fwd, drain, config).await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    own: Option<SocketAddr>,
    fwd: Arc<Outbound>,
    drain: Drain,
    config: Arc<server::Listener>,
) {
    let Some(dst) = own.and_then(|own| crate::io::original_dst(&stream, own)) else {
        // A connection to the capture port itself, not one the rules sent: it would loop.
        tracing::debug!(%peer, "connection straight to the capture port; closed");
        return;
    };
    let mut state = fwd.state.load_full();
    let mut found = state.routes.by_vip(dst.ip()).cloned();
    if found.is_none() && state.routes.snapshot.on_demand {
        // A service this proxy has not been told about yet: asked for by its address.
        let has = |s: &crate::state::ProxyState| s.routes.by_vip(dst.ip()).is_some();
        if fwd
            .on_demand
            .wait(&dst.ip().to_string(), &fwd.state, has)
            .await
        {
            state = fwd.state.load_full();
            found = state.routes.by_vip(dst.ip()).cloned();
        }
    }
    let Some(service) = found else {
        match state.routes.outbound_policy {
            model::OutboundPolicy::AllowAny => passthrough(stream, dst, &fwd).await,
            model::OutboundPolicy::RegistryOnly => {
                tracing::info!(%peer, %dst, "refused: not a service of the mesh (REGISTRY_ONLY)");
            }
        }
        return;
    };
    let port = dst.port();
    let protocol = state
        .routes
        .snapshot
        .service(&service.key)
        .and_then(|s| s.protocol_of(port));
    let Some(protocol) = protocol else {
        tracing::info!(%peer, service = %service.key, port, "refused: not a port of the service");
        return;
    };
    drop(state);
    if !protocol.is_http() {
        let target = Target::to(service, port);
        carry(&fwd, &target, stream, Vec::new()).await;
        return;
    }
    let mut first = Vec::with_capacity(64);
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + DETECT_TIMEOUT;
    let detected = loop {
        if let Some(d) = detect(&first) {
            break d;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => first.extend_from_slice(&chunk[..n]),
            // A client that waits for the server to speak first.
            Err(_) => break Detected::Opaque,
        }
    };
    match detected {
        Detected::Http => {
            let mut info = PeerInfo::new(peer, None);
            info.captured = Some(format!("{}:{port}", service.key).into());
            let builder = Arc::new(server::builder(&config.limits));
            let io = Prefixed::new(first, stream);
            server::serve_connection(io, info, builder, fwd, drain, None, &config).await;
        }
        Detected::Opaque => {
            let target = Target::to(service, port);
            carry(&fwd, &target, stream, first).await;
        }
    }
}

/// Sends a captured connection on to where it was going, from a marked socket.
async fn passthrough(client: TcpStream, dst: SocketAddr, fwd: &Outbound) {
    let connected =
        tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, crate::io::connect(dst)).await;
    let server = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%dst, error = %e, "passthrough: cannot connect");
            return;
        }
        Err(_) => {
            tracing::debug!(%dst, "passthrough: connect timed out");
            return;
        }
    };
    let _ = server.set_nodelay(true);
    match crate::tunnel::splice(client, server, fwd.tunnel_idle, &fwd.drain, None).await {
        Ok(c) => tracing::debug!(%dst, sent = c.sent, received = c.received, "passthrough closed"),
        Err(e) => tracing::debug!(%dst, error = %e, "passthrough ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_and_the_h2_preface_are_http_and_the_rest_is_opaque() {
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"CONNECT db:5432 HTTP/1.1",
        ] {
            assert_eq!(detect(http), Some(Detected::Http), "{http:?}");
        }
        // A TLS ClientHello, a Redis command, a lowercase method, a method without its space.
        for opaque in [
            &[0x16u8, 0x03, 0x01][..],
            b"*1\r\n$4\r\nPING\r\n",
            b"get / HTTP/1.1",
            b"GETX",
            b"POSTAL",
        ] {
            assert_eq!(detect(opaque), Some(Detected::Opaque), "{opaque:?}");
        }
        // Not enough to tell yet.
        for short in [&b""[..], b"G", b"GE", b"OPTION", b"P", b"PR"] {
            assert_eq!(detect(short), None, "{short:?}");
        }
    }
}
