//! Peer certificate verification for mesh mTLS: rustls' WebPKI chain checks (trust bundle,
//! validity, key usage) plus the SPIFFE checks (one `spiffe://` URI SAN, our trust domain, and on
//! the client side the identity expected for the endpoint). Every rejection has one
//! [`RejectReason`], counted in [`Rejections`] and logged with what the peer presented.

use super::credentials::Credentials;
use super::TlsError;
use model::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error as RustlsError, RootCertStore, SignatureScheme};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// Why a peer's certificate was refused at the handshake: a closed set, used as a log field and
/// a counter label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    #[error("certificate expired")]
    Expired,
    #[error("certificate not yet valid")]
    NotYetValid,
    #[error("certificate not issued by a CA of the trust bundle")]
    UnknownCa,
    #[error("SPIFFE ID of another trust domain")]
    WrongTrustDomain,
    #[error("no SPIFFE URI SAN (or more than one URI SAN)")]
    NoSpiffeSan,
    #[error("peer identity is not the one expected for this endpoint")]
    IdentityMismatch,
    /// The client sent no certificate to a server that requires one.
    #[error("peer presented no certificate")]
    NoCertificate,
    /// Anything else wrong with the certificate: bad encoding, wrong key usage, a critical
    /// extension we do not know, an unsupported signature algorithm.
    #[error("malformed or unusable certificate")]
    BadCertificate,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        RejectReason::Expired,
        RejectReason::NotYetValid,
        RejectReason::UnknownCa,
        RejectReason::WrongTrustDomain,
        RejectReason::NoSpiffeSan,
        RejectReason::IdentityMismatch,
        RejectReason::NoCertificate,
        RejectReason::BadCertificate,
    ];

    /// The label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not_yet_valid",
            RejectReason::UnknownCa => "unknown_ca",
            RejectReason::WrongTrustDomain => "wrong_trust_domain",
            RejectReason::NoSpiffeSan => "no_spiffe_san",
            RejectReason::IdentityMismatch => "identity_mismatch",
            RejectReason::NoCertificate => "no_certificate",
            RejectReason::BadCertificate => "bad_certificate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The reason behind a handshake error that *this side* raised while verifying the peer;
    /// `None` for every other error (I/O, protocol, or an alert the peer sent because it refused
    /// our certificate).
    pub fn of(err: &RustlsError) -> Option<RejectReason> {
        match err {
            RustlsError::NoCertificatesPresented => Some(RejectReason::NoCertificate),
            RustlsError::InvalidCertificate(cert) => Some(match cert {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    RejectReason::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    RejectReason::NotYetValid
                }
                // A bad signature from an issuer named in the bundle is a certificate that
                // claims a trusted CA it was not signed by.
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    RejectReason::UnknownCa
                }
                CertificateError::Other(OtherError(inner)) => inner
                    .downcast_ref::<RejectReason>()
                    .copied()
                    .unwrap_or(RejectReason::BadCertificate),
                _ => RejectReason::BadCertificate,
            }),
            _ => None,
        }
    }

    /// [`RejectReason::of`] for the `io::Error` a `tokio-rustls` handshake fails with.
    pub fn of_io(err: &io::Error) -> Option<RejectReason> {
        err.get_ref()?
            .downcast_ref::<RustlsError>()
            .and_then(RejectReason::of)
    }

    fn into_error(self) -> RustlsError {
        RustlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

/// Whose certificate was refused: a client's (inbound handshakes) or a server's (outbound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerRole {
    Client,
    Server,
}

impl PeerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Client => "client",
            PeerRole::Server => "server",
        }
    }
}

/// Handshake rejections by peer role and reason; lock-free counters for the metrics exporter.
#[derive(Debug, Default)]
pub struct Rejections {
    counts: [[AtomicU64; RejectReason::ALL.len()]; 2],
}

impl Rejections {
    /// Counts one rejection and logs it. The verifiers call this; an accept loop calls it for
    /// [`RejectReason::NoCertificate`], which rustls raises before any verifier runs.
    pub fn record(&self, role: PeerRole, reason: RejectReason, detail: &dyn std::fmt::Display) {
        self.counts[role as usize][reason.index()].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            peer = role.as_str(),
            reason = reason.as_str(),
            %detail,
            "mTLS handshake refused: {reason}"
        );
    }

    pub fn count(&self, role: PeerRole, reason: RejectReason) -> u64 {
        self.counts[role as usize][reason.index()].load(Ordering::Relaxed)
    }

    /// Every (role, reason, count), for the metrics exporter.
    pub fn snapshot(&self) -> Vec<(PeerRole, RejectReason, u64)> {
        [PeerRole::Client, PeerRole::Server]
            .into_iter()
            .flat_map(|role| {
                RejectReason::ALL
                    .into_iter()
                    .map(move |reason| (role, reason, self.count(role, reason)))
            })
            .collect()
    }
}

/// The SPIFFE ID a certificate carries: its one URI SAN, which must use the `spiffe` scheme.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<Identity, RejectReason> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|_| RejectReason::BadCertificate)?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|_| RejectReason::BadCertificate)?;
    let mut uris = san.iter().flat_map(|ext| {
        ext.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
    });
    // SPIFFE X.509-SVID §2: exactly one URI SAN.
    match (uris.next(), uris.next()) {
        (Some(uri), None) if uri.starts_with("spiffe://") => Ok(Identity(uri.to_string())),
        _ => Err(RejectReason::NoSpiffeSan),
    }
}

/// The trust domain of a SPIFFE ID (`spiffe://TRUST_DOMAIN/...`).
pub fn trust_domain_of(identity: &Identity) -> Option<&str> {
    let rest = identity.0.strip_prefix("spiffe://")?;
    let domain = rest.split('/').next()?;
    (!domain.is_empty()).then_some(domain)
}

/// The verified SPIFFE identity of the peer of an established connection (client or server
/// side: pass `tls_stream.get_ref().1`).
pub fn peer_identity(conn: &rustls::CommonState) -> Option<Identity> {
    spiffe_id(conn.peer_certificates()?.first()?).ok()
}

/// The SPIFFE checks after the chain is verified: one SPIFFE URI SAN, in `trust_domain`, and
/// equal to `expected` when given.
fn check_spiffe(
    cert: &CertificateDer<'_>,
    trust_domain: &str,
    expected: Option<&Identity>,
) -> Result<Identity, (RejectReason, String)> {
    let identity = spiffe_id(cert).map_err(|r| (r, "no usable SPIFFE URI SAN".to_string()))?;
    if trust_domain_of(&identity) != Some(trust_domain) {
        return Err((
            RejectReason::WrongTrustDomain,
            format!("presented {identity}, trust domain is {trust_domain}"),
        ));
    }
    if let Some(expected) = expected {
        if identity != *expected {
            return Err((
                RejectReason::IdentityMismatch,
                format!("presented {identity}, expected {expected}"),
            ));
        }
    }
    Ok(identity)
}

/// Checks the chain we are about to present: it must verify against our own bundle now and name
/// exactly `identity`, or peers would refuse it.
pub(crate) fn check_own_chain(
    provider: &CryptoProvider,
    roots: &RootCertStore,
    chain: &[CertificateDer<'static>],
    trust_domain: &str,
    identity: &Identity,
) -> Result<(), TlsError> {
    let untrusted = |err: RustlsError| TlsError::Untrusted {
        reason: RejectReason::of(&err).unwrap_or(RejectReason::BadCertificate),
        detail: err.to_string(),
    };
    let leaf = ParsedCertificate::try_from(&chain[0]).map_err(untrusted)?;
    verify_server_cert_signed_by_trust_anchor(
        &leaf,
        roots,
        &chain[1..],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(untrusted)?;
    check_spiffe(&chain[0], trust_domain, Some(identity))
        .map(|_| ())
        .map_err(|(reason, detail)| TlsError::Untrusted { reason, detail })
}

/// Runs `check`, and on failure counts and logs the reason and returns the error for rustls to
/// alert with: rustls' own error for chain failures (so the alert is the precise one, e.g.
/// `certificate_expired`), ours for the SPIFFE checks.
fn checked<T>(
    creds: &Credentials,
    role: PeerRole,
    chain: impl FnOnce() -> Result<(), RustlsError>,
    spiffe: impl FnOnce() -> Result<Identity, (RejectReason, String)>,
    ok: T,
) -> Result<T, RustlsError> {
    if let Err(err) = chain() {
        let reason = RejectReason::of(&err).unwrap_or(RejectReason::BadCertificate);
        creds.rejections().record(role, reason, &err);
        return Err(err);
    }
    match spiffe() {
        Ok(_) => Ok(ok),
        Err((reason, detail)) => {
            creds.rejections().record(role, reason, &detail);
            Err(reason.into_error())
        }
    }
}

/// Verifies the server's certificate on outbound connections, expecting one identity.
#[derive(Debug)]
pub(crate) struct MeshServerVerifier {
    pub(crate) creds: Arc<Credentials>,
    pub(crate) expected: Identity,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // Mesh peers are named by SPIFFE ID, not DNS: the SNI is informational.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let current = self.creds.current();
        checked(
            &self.creds,
            PeerRole::Server,
            || {
                let cert = ParsedCertificate::try_from(end_entity)?;
                verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &current.roots,
                    intermediates,
                    now,
                    self.creds.provider().signature_verification_algorithms.all,
                )
            },
            || check_spiffe(end_entity, self.creds.trust_domain(), Some(&self.expected)),
            ServerCertVerified::assertion(),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.creds.provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.creds.provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.creds
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies client certificates on inbound connections: any identity of our trust domain (what
/// each identity may do is authorization's business).
#[derive(Debug)]
pub(crate) struct MeshClientVerifier {
    pub(crate) creds: Arc<Credentials>,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle lives behind an `ArcSwap`, so there is nothing to borrow from; our clients
        // send their one certificate whatever the hints say.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        let current = self.creds.current();
        checked(
            &self.creds,
            PeerRole::Client,
            || {
                current
                    .client_verifier
                    .verify_client_cert(end_entity, intermediates, now)
                    .map(|_| ())
            },
            || check_spiffe(end_entity, self.creds.trust_domain(), None),
            ClientCertVerified::assertion(),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.creds.provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.creds.provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.creds
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies the server's certificate against fixed trust anchors, expecting one identity: how a
/// proxy that has no certificate of its own yet checks its control plane, and how the CLI and a
/// host check the control plane's API ([`api_client_config`]).
#[derive(Debug)]
pub(crate) struct AnchoredServerVerifier {
    /// rustls' own verifier over the same anchors: its handshake-signature checks are ours.
    signatures: Arc<rustls::client::WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// The identity expected; `None`: the control plane's of whatever trust domain the anchors
    /// sign for (they sign that reserved identity for control planes only).
    expected: Option<(String, Identity)>,
}

impl AnchoredServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        expected: Option<Identity>,
    ) -> Result<AnchoredServerVerifier, TlsError> {
        let expected = match expected {
            Some(id) => Some((
                trust_domain_of(&id)
                    .ok_or_else(|| TlsError::NotSpiffe(id.clone()))?
                    .to_string(),
                id,
            )),
            None => None,
        };
        let signatures = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::BadBundle(RustlsError::General(e.to_string())))?;
        Ok(AnchoredServerVerifier {
            signatures,
            roots,
            provider,
            expected,
        })
    }
}

impl ServerCertVerifier for AnchoredServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // Named by SPIFFE ID, not DNS, like mesh peers.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .inspect_err(|e| {
            tracing::warn!(error = %e, "the control plane's certificate does not chain to this proxy's trust anchors");
        })?;
        let checked = match &self.expected {
            Some((trust_domain, expected)) => {
                check_spiffe(end_entity, trust_domain, Some(expected)).map(|_| ())
            }
            None => spiffe_id(end_entity)
                .map_err(|r| (r, "no usable SPIFFE URI SAN".to_string()))
                .and_then(|id| {
                    let ours =
                        trust_domain_of(&id).is_some_and(|td| id == Identity::control_plane(td));
                    if ours {
                        Ok(())
                    } else {
                        Err((
                            RejectReason::IdentityMismatch,
                            format!("presented {id}, expected a control plane's identity"),
                        ))
                    }
                }),
        };
        checked
            .map(|_| ServerCertVerified::assertion())
            .map_err(|(reason, detail)| {
                tracing::warn!(%detail, "the control plane's certificate: {reason}");
                reason.into_error()
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}
