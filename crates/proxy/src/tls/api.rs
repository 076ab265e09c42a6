//! The TLS a client of the control plane's HTTP API speaks (the CLI, a joining host): TLS 1.3,
//! the server verified against the mesh's trust anchors as a control plane, and optionally an
//! operator's client certificate.

use super::verify::AnchoredServerVerifier;
use super::TlsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// A client config for the API of a control plane whose certificate chains to `anchors_pem`,
/// presenting `client` (a certificate chain and its private key, PEM) when given.
pub fn api_client_config(
    anchors_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(anchors_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        roots.add(cert).map_err(TlsError::BadBundle)?;
    }
    if roots.is_empty() {
        return Err(TlsError::EmptyBundle);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = AnchoredServerVerifier::new(Arc::new(roots), provider.clone(), None)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
            if chain.is_empty() {
                return Err(TlsError::EmptyChain);
            }
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| TlsError::BadCertificate(format!("the private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Key)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
