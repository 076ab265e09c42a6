//! The inbound handshake: how an inbound listener authenticates a new connection — mTLS with
//! the proxy's credentials, plaintext, or either told apart by their first bytes, as the port's
//! PeerAuthentication mode in the state in force says. Refusals are logged and counted; the
//! accepted connection goes back to the listener to be served.

use crate::edges::{Edge, Edges};
use crate::identity::Slot;
use crate::metrics::Metrics;
use crate::state::StateHandle;
use crate::tls::{sniff, PeerRole, RejectReason, Sniffed};
use model::security::MtlsMode;
use model::Identity;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a client may take to send its first bytes before a PERMISSIVE or STRICT port gives
/// up telling TLS from plaintext (Linkerd's protocol detection waits 10 s).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How an inbound listener authenticates peers.
pub struct InboundTls {
    /// `None`: the mesh has no CA; every connection is plaintext.
    slot: Option<Arc<Slot>>,
    /// Where the port's mode is read, once per connection.
    state: StateHandle,
    edges: Arc<Edges>,
    /// Our identity, for edge records.
    identity: String,
    /// True while the port is STRICT: plaintext connections accepted before close when it
    /// turns true (as Envoy drains connections of a filter chain that went away).
    strict: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

/// An accepted connection, authenticated as the port's mode asks.
pub enum Accepted {
    /// Plaintext. `until_strict` turns true when the port becomes STRICT: the connection
    /// should then close.
    Plain {
        stream: TcpStream,
        until_strict: watch::Receiver<bool>,
    },
    /// mTLS; the client's verified SPIFFE identity.
    Mtls {
        stream: Box<tokio_rustls::server::TlsStream<crate::io::ReadAhead<TcpStream>>>,
        identity: Option<Identity>,
    },
}

impl InboundTls {
    pub fn new(
        slot: Option<Arc<Slot>>,
        state: StateHandle,
        metrics: Arc<Metrics>,
        edges: Arc<Edges>,
        identity: String,
    ) -> Self {
        InboundTls {
            slot,
            state,
            edges,
            identity,
            strict: watch::Sender::new(false),
            metrics,
        }
    }

    /// Called after a snapshot is put in force with the port's `mode`: a port that turned
    /// STRICT closes the plaintext connections it accepted before.
    pub fn mode_changed(&self, mode: MtlsMode) {
        let strict = mode == MtlsMode::Strict && self.slot.is_some();
        self.strict
            .send_if_modified(|s| std::mem::replace(s, strict) != strict);
    }

    /// The port's mode in force.
    pub fn mode(&self) -> MtlsMode {
        self.state.load().security.mode
    }

    /// Records an accepted connection: `mtls` is `Some(client identity)` for mTLS.
    fn edge(&self, peer: SocketAddr, mtls: Option<Option<Identity>>) {
        self.edges.record(Edge {
            direction: "inbound",
            client: mtls.clone().flatten().map(|i| i.0).unwrap_or_default(),
            server: self.identity.clone(),
            peer: peer.ip().to_string(),
            mtls: mtls.is_some(),
        });
    }

    /// Authenticates a new connection from `peer`; `None`: refused (logged and counted), or
    /// `cancelled` (the drain) came first.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        cancelled: impl Future<Output = ()>,
    ) -> Option<Accepted> {
        let mode = self.mode();
        let plain = |stream| {
            self.edge(peer, None);
            Some(Accepted::Plain {
                stream,
                until_strict: self.strict.subscribe(),
            })
        };
        let Some(slot) = self.slot.as_ref().filter(|_| mode != MtlsMode::Disable) else {
            return plain(stream);
        };
        let sniffed = tokio::select! {
            r = tokio::time::timeout(DETECT_TIMEOUT, sniff(&stream)) => r,
            _ = cancelled => return None,
        };
        match sniffed {
            Ok(Ok(Sniffed::Tls)) => {}
            Ok(Ok(Sniffed::Plaintext)) if mode == MtlsMode::Permissive => return plain(stream),
            Ok(Ok(Sniffed::Plaintext)) => {
                self.metrics.tls_failure("inbound", "plaintext");
                tracing::warn!(%peer, "plaintext connection refused: this port requires mTLS (PeerAuthentication STRICT)");
                return None;
            }
            Ok(Ok(Sniffed::Closed)) | Ok(Err(_)) => return None,
            Err(_) => {
                tracing::debug!(%peer, "no bytes from the client within {DETECT_TIMEOUT:?}");
                return None;
            }
        }
        let Some(creds) = slot.get() else {
            self.metrics.tls_failure("inbound", "no_certificate_yet");
            tracing::warn!(%peer, "mTLS connection refused: this proxy has no certificate yet");
            return None;
        };
        let tls = match creds
            .acceptor()
            .accept(crate::io::ReadAhead::new(stream))
            .await
        {
            Ok(t) => t,
            Err(e) => {
                let reason = RejectReason::of_io(&e);
                if reason == Some(RejectReason::NoCertificate) {
                    creds
                        .rejections()
                        .record(PeerRole::Client, RejectReason::NoCertificate, &peer);
                }
                let label = reason.map_or("handshake", RejectReason::as_str);
                self.metrics.tls_failure("inbound", label);
                tracing::debug!(%peer, error = %e, "mTLS handshake failed");
                return None;
            }
        };
        let identity = crate::tls::peer_identity(tls.get_ref().1);
        self.edge(peer, Some(identity.clone()));
        Some(Accepted::Mtls {
            stream: Box::new(tls),
            identity,
        })
    }
}
