//! The control plane's listeners (gRPC, and the HTTP API). In a mesh with a CA they speak TLS 1.3
//! (ALPN h2; the API also http/1.1) with a
//! certificate of the mesh CA for the control plane's own identity
//! ([`model::Identity::control_plane`]), which proxies verify against the mesh's trust anchors,
//! and it reads the client certificate a proxy presents: the RPCs learn who is calling from
//! [`Peer`]. Plaintext connections are still accepted, so that the RPCs refuse them with a gRPC
//! status that says what is wrong rather than a TLS alert.

use crate::ca::Ca;
use model::Identity;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// How long a connection may take to send its first bytes and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS record of type handshake: the first byte of a ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// Who is on the other end of a gRPC connection, as the RPCs see it (in the request's
/// extensions).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The connection is TLS.
    pub tls: bool,
    /// The SPIFFE ID of the client certificate, verified against the mesh's trust bundle.
    pub identity: Option<Identity>,
    /// The address the connection comes from.
    pub remote: Option<std::net::SocketAddr>,
}

/// An accepted connection, plaintext or TLS, with who is on it.
pub struct Conn {
    io: Io,
    peer: Peer,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The listener's TLS configuration, made from the CA on demand: a fresh certificate when
/// another root starts signing, when the trust bundle changes, or past half of the
/// certificate's life.
pub struct ServerTls {
    ca: Arc<Ca>,
    provider: Arc<CryptoProvider>,
    alpn: Vec<Vec<u8>>,
    /// DNS names the certificate carries too, and no client certificate asked (the admission
    /// webhook's, for the Kubernetes API server); empty: the control plane's own listeners.
    dns: Vec<String>,
    built: Mutex<Option<Built>>,
}

struct Built {
    generation: u64,
    bundle: String,
    renew_at: SystemTime,
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// For the gRPC listener (ALPN h2).
    pub fn new(ca: Arc<Ca>) -> ServerTls {
        ServerTls::with_alpn(ca, vec![b"h2".to_vec()])
    }

    /// For the HTTP API (ALPN h2 and http/1.1).
    pub fn for_api(ca: Arc<Ca>) -> ServerTls {
        ServerTls::with_alpn(ca, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
    }

    /// For the admission webhook: a certificate for `dns` too, TLS 1.2 or 1.3, no client
    /// certificate.
    pub fn for_webhook(ca: Arc<Ca>, dns: Vec<String>) -> ServerTls {
        let mut tls = ServerTls::with_alpn(ca, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        tls.dns = dns;
        tls
    }

    fn with_alpn(ca: Arc<Ca>, alpn: Vec<Vec<u8>>) -> ServerTls {
        ServerTls {
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            alpn,
            dns: Vec::new(),
            built: Mutex::new(None),
        }
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Result<Arc<ServerConfig>, String> {
        let generation = self.ca.generation();
        let bundle = self.ca.bundle_pem();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = built.as_ref() {
            if b.generation == generation && b.bundle == bundle && SystemTime::now() < b.renew_at {
                return Ok(b.config.clone());
            }
        }
        let (cert, config) = if self.dns.is_empty() {
            self.control_plane_config()?
        } else {
            self.webhook_config()?
        };
        let mut config = config;
        config.alpn_protocols = self.alpn.clone();
        let life = cert
            .not_after
            .duration_since(cert.not_before)
            .unwrap_or_default();
        let config = Arc::new(config);
        *built = Some(Built {
            generation: cert.generation,
            bundle,
            renew_at: cert.not_before + life / 2,
            config: config.clone(),
        });
        Ok(config)
    }

    /// The control plane's certificate, TLS 1.3, a client certificate optional (a proxy asks
    /// for its first one before it has any; the RPCs decide what an anonymous caller may do).
    fn control_plane_config(&self) -> Result<(Served, ServerConfig), String> {
        let cert = self.ca.control_plane_cert().map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        for root in self.ca.bundle() {
            roots.add(root).map_err(|e| e.to_string())?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| e.to_string())?;
        let (served, chain, key) = split(cert);
        let config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        Ok((served, config))
    }

    /// The webhook's: the DNS names too, TLS 1.2 or 1.3, no client certificate.
    fn webhook_config(&self) -> Result<(Served, ServerConfig), String> {
        let cert = self
            .ca
            .control_plane_cert_for(&self.dns)
            .map_err(|e| e.to_string())?;
        let (served, chain, key) = split(cert);
        let config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        Ok((served, config))
    }
}

/// When a served certificate was made and until when it holds.
struct Served {
    generation: u64,
    not_before: SystemTime,
    not_after: SystemTime,
}

fn split(
    cert: crate::ca::ServingCert,
) -> (
    Served,
    Vec<rustls_pki_types::CertificateDer<'static>>,
    PrivateKeyDer<'static>,
) {
    let served = Served {
        generation: cert.generation,
        not_before: cert.not_before,
        not_after: cert.not_after,
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pkcs8));
    (served, cert.chain, key)
}

/// Accepts on `listener` until `stop`, handing each connection to the gRPC server once it is
/// classified (and, for TLS, its handshake is done). Handshakes run on their own tasks, so a
/// slow or silent client holds up nobody else.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "control plane gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(stream, tls)).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "control plane connection refused"),
                    Err(_) => tracing::debug!("control plane connection: handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn accept(stream: TcpStream, tls: Option<Arc<ServerTls>>) -> io::Result<Conn> {
    let remote = stream.peer_addr().ok();
    let Some(tls) = tls else {
        return Ok(plain(stream, remote));
    };
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 || first[0] != TLS_HANDSHAKE {
        return Ok(plain(stream, remote));
    }
    let config = tls.config().map_err(io::Error::other)?;
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await?;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| spiffe_id(leaf));
    Ok(Conn {
        io: Io::Tls(Box::new(stream)),
        peer: Peer {
            tls: true,
            identity,
            remote,
        },
    })
}

fn plain(stream: TcpStream, remote: Option<std::net::SocketAddr>) -> Conn {
    Conn {
        io: Io::Plain(stream),
        peer: Peer {
            remote,
            ..Peer::default()
        },
    }
}

/// The one `spiffe://` URI SAN of a (verified) certificate.
fn spiffe_id(cert: &[u8]) -> Option<Identity> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) if uri.starts_with("spiffe://") => Some(Identity(uri.to_string())),
        _ => None,
    }
}
