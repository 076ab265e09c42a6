//! Connections to peer proxies: one multiplexed HTTP/2 connection per endpoint, opened on first
//! use and reopened when it closes. Whatever the app speaks, proxy-to-proxy traffic rides these
//! (as Linkerd does), so the two-hop path costs one pooled connection, not one per request.
//! A backend whose `connectionPool` limits connections has its own instead ([`PeerConn`], one
//! request at a time each, pooled by `policy::pool`). The mTLS handshake itself is
//! `tls::connect`; the HTTP/2 client on it, [`client`].

pub mod client;

use arc_swap::ArcSwapOption;
pub use client::Sender;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for a peer proxy to accept a connection. Peers are on loopback or a LAN; a
/// peer that takes longer is treated as down and another endpoint is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0}: {1}")]
    Tcp(SocketAddr, std::io::Error),
    #[error("connect to {0}: timed out after {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("HTTP/2 handshake with {0}: {1}")]
    Handshake(SocketAddr, h2::Error),
    #[error("mTLS handshake with {addr} (expecting {expected}): {kind}: {detail}")]
    Tls {
        addr: SocketAddr,
        expected: model::Identity,
        /// A `tls::RejectReason` label, or `handshake` for other failures.
        kind: &'static str,
        detail: String,
    },
    #[error("no certificate yet: this proxy cannot open mTLS connections")]
    NoCertificate,
}

/// How to reach a peer: plaintext, or mTLS expecting the peer's identity.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Mtls {
        creds: Arc<crate::tls::Credentials>,
        expected: model::Identity,
    },
}

/// The pooled connection to one endpoint.
#[derive(Default)]
pub struct H2Pool {
    current: ArcSwapOption<Sender>,
    /// Serialises connection setup so that a burst of requests opens one connection, not many.
    connecting: tokio::sync::Mutex<()>,
}

impl H2Pool {
    /// A sender on an open connection, connecting first when there is none.
    pub async fn sender(
        &self,
        addr: SocketAddr,
        connect_timeout: Option<Duration>,
        transport: impl FnOnce() -> Result<Transport, ConnectError>,
    ) -> Result<Sender, ConnectError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _guard = self.connecting.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        // Boxed: the TCP, TLS and HTTP/2 handshakes take kilobytes of future state, which
        // would otherwise sit in every request's future although few requests connect.
        let send = Box::pin(connect(
            addr,
            connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            transport()?,
        ))
        .await?;
        self.current.store(Some(Arc::new(send.clone())));
        Ok(send)
    }

    fn live(&self) -> Option<Sender> {
        let cur = self.current.load();
        match cur.as_deref() {
            Some(s) if !s.is_closed() => Some(s.clone()),
            _ => None,
        }
    }

    /// Forgets the current connection (after it failed), so the next request opens a new one.
    pub fn reset(&self) {
        self.current.store(None);
    }
}

/// A connection of a backend's own pool (`policy::pool`) to one endpoint's proxy.
pub struct PeerConn {
    pub addr: SocketAddr,
    pub send: Sender,
}

impl crate::policy::pool::Pooled for PeerConn {
    fn is_open(&self) -> bool {
        !self.send.is_closed()
    }
}

impl PeerConn {
    /// Opens a new connection to `addr` (TCP, then mTLS per `transport`, then HTTP/2).
    pub async fn open(
        addr: SocketAddr,
        connect_timeout: Option<Duration>,
        transport: Transport,
    ) -> Result<PeerConn, ConnectError> {
        let timeout = connect_timeout.unwrap_or(CONNECT_TIMEOUT);
        let send = Box::pin(connect(addr, timeout, transport)).await?;
        Ok(PeerConn { addr, send })
    }
}

async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    transport: Transport,
) -> Result<Sender, ConnectError> {
    let stream = tokio::time::timeout(timeout, crate::io::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(addr, timeout))?
        .map_err(|e| ConnectError::Tcp(addr, e))?;
    let _ = stream.set_nodelay(true);
    crate::limits::keepalive(&stream);
    match transport {
        Transport::Plain => h2_handshake(addr, stream).await,
        Transport::Mtls { creds, expected } => {
            use crate::tls::connect::{connect, HandshakeError};
            let tls = connect(&creds, &expected, stream, timeout)
                .await
                .map_err(|e| match e {
                    HandshakeError::Timeout => ConnectError::Timeout(addr, timeout),
                    HandshakeError::Failed { kind, detail } => ConnectError::Tls {
                        addr,
                        expected: expected.clone(),
                        kind,
                        detail,
                    },
                })?;
            h2_handshake(addr, tls).await
        }
    }
}

async fn h2_handshake<S>(addr: SocketAddr, io: S) -> Result<Sender, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let settings = client::Settings {
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        keepalive: client::KEEPALIVE_INTERVAL,
    };
    let io = crate::io::Unvectored(crate::io::Corked::new(io));
    client::handshake(io, settings)
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))
}
