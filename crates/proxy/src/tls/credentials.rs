//! The proxy's identity material — its private key, its certificate chain and the trust bundle —
//! behind one `ArcSwap`, and the rustls configs that read it at every handshake, so a renewed
//! certificate or a rotated bundle applies to the next handshake with no restart and no lock.

use super::renew;
use super::verify::{check_own_chain, MeshClientVerifier, MeshServerVerifier, Rejections};
use super::{TlsError, ALPN_H2};
use arc_swap::{ArcSwap, Guard};
use model::Identity;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Makes the proxy's key (ECDSA P-256, as Linkerd requires of its issuer chain) and a CSR asking
/// for exactly one SAN, the URI `identity`. The key stays in the proxy; only the CSR is sent.
pub fn csr(identity: &Identity) -> Result<(KeyPair, String), TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(TlsError::Csr)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = identity.0.clone().try_into().map_err(TlsError::Csr)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(TlsError::Csr)?;
    Ok((key, pem))
}

/// One consistent set: what the proxy presents and what it trusts.
pub(crate) struct Current {
    pub(crate) identity: Identity,
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) bundle: Vec<CertificateDer<'static>>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// The proxy's mTLS credentials. Share as `Arc<Credentials>`; [`Credentials::rotate`] swaps in
/// renewed material while handshakes read the current one.
pub struct Credentials {
    trust_domain: String,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Current>,
    rejections: Rejections,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("Credentials")
            .field("identity", &current.identity)
            .field("not_after", &current.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials for `identity` from the key made by [`csr`], the chain the CA answered (leaf
    /// first) and the trust bundle. Refused unless the key is the leaf's, the leaf is a SPIFFE
    /// certificate for exactly `identity`, and the chain verifies against the bundle now. The
    /// trust domain is `identity`'s.
    pub fn new(
        identity: &Identity,
        key: &KeyPair,
        chain: Vec<CertificateDer<'static>>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Arc<Credentials>, TlsError> {
        let trust_domain = super::trust_domain_of(identity)
            .ok_or_else(|| TlsError::NotSpiffe(identity.clone()))?
            .to_string();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = build(&provider, &trust_domain, identity, key, chain, bundle, true)?;
        Ok(Arc::new(Credentials {
            trust_domain,
            provider,
            current: ArcSwap::from_pointee(current),
            rejections: Rejections::default(),
        }))
    }

    /// Installs renewed material (same checks as [`Credentials::new`], for the same identity).
    /// Handshakes already under way finish with what they started with; established connections
    /// are not touched; the next handshake uses the new material.
    pub fn rotate(
        &self,
        key: &KeyPair,
        chain: Vec<CertificateDer<'static>>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Result<(), TlsError> {
        let identity = self.identity();
        let current = build(
            &self.provider,
            &self.trust_domain,
            &identity,
            key,
            chain,
            bundle,
            true,
        )?;
        self.current.store(Arc::new(current));
        Ok(())
    }

    /// Replaces the trust bundle only (a root rotation announced by the control plane): the
    /// next handshakes verify peers against `bundle`; the key and chain stay.
    pub fn set_bundle(&self, bundle: Vec<CertificateDer<'static>>) -> Result<bool, TlsError> {
        let cur = self.current.load_full();
        if cur.bundle == bundle {
            return Ok(false);
        }
        if bundle.is_empty() {
            return Err(TlsError::EmptyBundle);
        }
        let mut roots = RootCertStore::empty();
        for root in &bundle {
            roots.add(root.clone()).map_err(TlsError::BadBundle)?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), self.provider.clone())
                .build()
                .map_err(|e| TlsError::BadBundle(rustls::Error::General(e.to_string())))?;
        self.current.store(Arc::new(Current {
            identity: cur.identity.clone(),
            certified: cur.certified.clone(),
            bundle,
            roots,
            client_verifier,
            not_before: cur.not_before,
            not_after: cur.not_after,
        }));
        Ok(true)
    }

    /// Test-only: credentials holding a chain that would be refused, to present a bad
    /// certificate in a real handshake.
    #[cfg(test)]
    pub(crate) fn new_unchecked(
        trust_domain: &str,
        key: &KeyPair,
        chain: Vec<CertificateDer<'static>>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Arc<Credentials> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = Identity(format!("spiffe://{trust_domain}/unchecked"));
        let current = build(
            &provider,
            trust_domain,
            &identity,
            key,
            chain,
            bundle,
            false,
        )
        .expect("key, chain and bundle parse");
        Arc::new(Credentials {
            trust_domain: trust_domain.to_string(),
            provider,
            current: ArcSwap::from_pointee(current),
            rejections: Rejections::default(),
        })
    }

    pub(crate) fn current(&self) -> Guard<Arc<Current>> {
        self.current.load()
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Our SPIFFE identity.
    pub fn identity(&self) -> Identity {
        self.current.load().identity.clone()
    }

    /// The chain we present, leaf first (for `weft identity`).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().certified.cert.clone()
    }

    /// The roots we trust.
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().bundle.clone()
    }

    /// The validity of our leaf: (not before, not after).
    pub fn validity(&self) -> (SystemTime, SystemTime) {
        let current = self.current.load();
        (current.not_before, current.not_after)
    }

    /// When to renew the current leaf (about 70% into its lifetime, jittered).
    pub fn renew_at(&self) -> SystemTime {
        let (not_before, not_after) = self.validity();
        renew::renew_at(not_before, not_after)
    }

    /// Handshake rejections so far, by peer role and reason.
    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    /// The inbound (server) config: TLS 1.3 only, ALPN h2, a client certificate of our trust
    /// domain required.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .with_client_cert_verifier(Arc::new(MeshClientVerifier {
                creds: self.clone(),
            }))
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // A resumed session skips certificate verification: with no tickets and no session
        // cache, every connection proves its identity against the current bundle.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Arc::new(config)
    }

    /// The outbound (client) config for an endpoint that must be `expected`: TLS 1.3 only, ALPN
    /// h2, presents our certificate, and accepts only a server whose chain verifies against the
    /// bundle and whose SPIFFE ID is `expected`. Cheap to build (a few `Arc`s); make one per
    /// connection or cache one per identity.
    pub fn client_config(self: &Arc<Self>, expected: &Identity) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(MeshServerVerifier {
                creds: self.clone(),
                expected: expected.clone(),
            }))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Resumption would skip the identity check for a session that verified another
        // expectation; a pooled HTTP/2 connection makes the full handshake rare anyway.
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }

    /// A `tokio-rustls` acceptor over [`Credentials::server_config`].
    pub fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }

    /// A `tokio-rustls` connector over [`Credentials::client_config`]; connect with
    /// [`server_name`]`(expected)`.
    pub fn connector(self: &Arc<Self>, expected: &Identity) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client_config(expected))
    }
}

/// The SNI a client sends toward `identity`: Linkerd's shape,
/// `SA.NS.serviceaccount.identity.TRUST_DOMAIN`, so the server's logs show whom the client
/// meant. Only informational — the verifier compares SPIFFE IDs — so an identity that does not
/// fit a DNS name gets a fixed name.
pub fn server_name(identity: &Identity) -> ServerName<'static> {
    let dns = identity
        .0
        .strip_prefix("spiffe://")
        .and_then(|rest| {
            let (domain, path) = rest.split_once('/')?;
            match path.split('/').collect::<Vec<_>>().as_slice() {
                ["ns", ns, "sa", sa] => Some(format!("{sa}.{ns}.serviceaccount.identity.{domain}")),
                _ => None,
            }
        })
        .and_then(|name| ServerName::try_from(name).ok());
    dns.unwrap_or_else(|| ServerName::try_from("identity.weft.invalid").expect("a valid DNS name"))
}

fn build(
    provider: &Arc<CryptoProvider>,
    trust_domain: &str,
    identity: &Identity,
    key: &KeyPair,
    chain: Vec<CertificateDer<'static>>,
    bundle: Vec<CertificateDer<'static>>,
    check: bool,
) -> Result<Current, TlsError> {
    if chain.is_empty() {
        return Err(TlsError::EmptyChain);
    }
    if bundle.is_empty() {
        return Err(TlsError::EmptyBundle);
    }
    let mut roots = RootCertStore::empty();
    for root in &bundle {
        roots.add(root.clone()).map_err(TlsError::BadBundle)?;
    }
    let roots = Arc::new(roots);
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::BadBundle(rustls::Error::General(e.to_string())))?;

    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = CertifiedKey::from_der(chain, key_der, provider).map_err(TlsError::Key)?;
    let leaf = &certified.cert[0];
    if check {
        check_own_chain(provider, &roots, &certified.cert, trust_domain, identity)?;
    }
    let (not_before, not_after) = validity(leaf)?;
    Ok(Current {
        identity: identity.clone(),
        certified: Arc::new(certified),
        bundle,
        roots,
        client_verifier,
        not_before,
        not_after,
    })
}

fn validity(leaf: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        match u64::try_from(secs) {
            Ok(secs) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    };
    Ok((
        at(parsed.validity().not_before),
        at(parsed.validity().not_after),
    ))
}

/// Hands rustls the current certificate at each handshake, on either side.
#[derive(Debug)]
struct Resolver(Arc<Credentials>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified.clone())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
