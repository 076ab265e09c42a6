//! How the proxy reaches its control plane. In a mesh without a CA: plaintext gRPC. In a mesh
//! with one: TLS 1.3, and the control plane must present a certificate of the mesh CA for its
//! own identity ([`Identity::control_plane`]), checked against the trust anchors the proxy was
//! started with until it has credentials of its own, and against its credentials' trust bundle
//! (which follows root rotations) afterwards; from then on the proxy presents its certificate,
//! which is how its control stream proves who it is.

use crate::identity::Slot;
use crate::tls::{self, TlsError};
use hyper_util::rt::TokioIo;
use model::Identity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tonic::transport::{Channel, Endpoint};

/// The control plane's addresses (one per replica) and how to talk to it. Calls go to one
/// replica at a time; [`ControlLink::fail_over`] moves to the next.
pub struct ControlLink {
    addrs: Vec<SocketAddr>,
    current: AtomicUsize,
    tls: Option<LinkTls>,
}

struct LinkTls {
    /// Before the proxy has a certificate: the anchors it was started with, no client
    /// certificate.
    anchored: Arc<ClientConfig>,
    expected: Identity,
    slot: Arc<Slot>,
}

impl ControlLink {
    /// Plaintext: the mesh runs no CA.
    pub fn plaintext(addr: SocketAddr) -> ControlLink {
        ControlLink {
            addrs: vec![addr],
            current: AtomicUsize::new(0),
            tls: None,
        }
    }

    /// The same link, with `others` (more replicas of the same control plane) to fail over to.
    pub fn with_replicas(mut self, others: &[SocketAddr]) -> ControlLink {
        for a in others {
            if !self.addrs.contains(a) {
                self.addrs.push(*a);
            }
        }
        self
    }

    /// The replica calls go to now.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Moves to the next replica (the current one was lost); returns it. With one replica,
    /// that one again.
    pub fn fail_over(&self) -> SocketAddr {
        self.current.fetch_add(1, Ordering::Relaxed);
        self.addr()
    }

    /// How many replicas the link knows.
    pub fn replicas(&self) -> usize {
        self.addrs.len()
    }

    /// TLS to the control plane of `own`'s trust domain, verified against `anchors_pem` (the
    /// mesh's roots) and then the trust bundle of the credentials `slot` gets.
    pub fn tls(
        addr: SocketAddr,
        anchors_pem: &str,
        own: &Identity,
        slot: Arc<Slot>,
    ) -> Result<ControlLink, TlsError> {
        let trust_domain =
            tls::trust_domain_of(own).ok_or_else(|| TlsError::NotSpiffe(own.clone()))?;
        let expected = Identity::control_plane(trust_domain);
        let anchors: Result<Vec<_>, _> =
            CertificateDer::pem_slice_iter(anchors_pem.as_bytes()).collect();
        let anchors = anchors.map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        if anchors.is_empty() {
            return Err(TlsError::EmptyBundle);
        }
        let mut roots = RootCertStore::empty();
        for a in anchors {
            roots.add(a).map_err(TlsError::BadBundle)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = tls::verify::AnchoredServerVerifier::new(
            Arc::new(roots),
            provider.clone(),
            Some(expected.clone()),
        )?;
        let mut anchored = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        anchored.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
        Ok(ControlLink {
            addrs: vec![addr],
            current: AtomicUsize::new(0),
            tls: Some(LinkTls {
                anchored: Arc::new(anchored),
                expected,
                slot,
            }),
        })
    }

    /// Whether the link is TLS (the mesh runs a CA).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// An endpoint for the control plane, to set timeouts on before [`ControlLink::connect`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr()))
            .expect("a socket address makes a valid URI")
    }

    /// Opens a channel over `endpoint` (from [`ControlLink::endpoint`]).
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        let Some(link) = &self.tls else {
            return endpoint.connect().await;
        };
        let config = match link.slot.get() {
            Some(creds) => creds.client_config(&link.expected),
            None => link.anchored.clone(),
        };
        let name = tls::server_name(&link.expected);
        let addr = self.addr();
        let connector = tower::service_fn(move |_: http::Uri| {
            let config = config.clone();
            let name = name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        endpoint.connect_with_connector(connector).await
    }
}
