//! The mesh's certificate authority: a root (generated once and kept on disk, or loaded from
//! `--ca-cert/--ca-key`), an optional intermediate issuer signed by it (like Linkerd's identity
//! issuer), and the signing of proxies' CSRs into short-lived SPIFFE leaves.
//!
//! A proxy makes its own key and sends a CSR with a one-time join token it was given at start
//! ([`Ca::join_token`]); [`Ca::sign`] checks the token, the requested identity and the CSR's SAN,
//! and answers with the chain and a fresh one-time token for the next renewal. The trust bundle
//! ([`Ca::bundle`]) can carry several roots at once, so a root can be rotated
//! ([`Ca::rotate_root`]) while leaves of the old root are still in use.
//!
//! Not on the data path: every method takes a short `std::sync::Mutex` and signs in place.

use model::names::TRUST_DOMAIN;
use model::Identity;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// Leaf lifetime when none is configured: Istio's and Linkerd's default workload certificate
/// lifetime.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Leaves start this far in the past so a peer whose clock is a little behind ours still accepts
/// them (capped at the leaf lifetime, so a leaf of a few seconds is not mostly in the past).
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(60);
/// A generated root lives ten years, as the trust anchor in Linkerd's install guide (87600h):
/// roots are rotated on purpose, not by expiry.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// The intermediate issuer lives one year, as Linkerd's issuer (8760h). It is made anew at every
/// start, so in practice it lives as long as the control plane process.
pub const INTERMEDIATE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Random bytes in a join token: 256 bits cannot be guessed.
pub const JOIN_TOKEN_BYTES: usize = 32;
/// Random bytes in a certificate serial number (RFC 5280 allows up to 20 octets).
const SERIAL_BYTES: usize = 16;

/// The root certificate in a CA directory.
pub const ROOT_CERT_FILE: &str = "root.pem";
/// The root key in a CA directory (mode 0600).
pub const ROOT_KEY_FILE: &str = "root.key";
/// Roots trusted besides the active one (the previous root during a rotation, or roots added
/// with [`Ca::trust_root`]).
pub const TRUSTED_ROOTS_FILE: &str = "trusted-roots.pem";

/// How the CA issues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaConfig {
    /// The SPIFFE trust domain of every identity this CA signs.
    pub trust_domain: String,
    /// How long a leaf is valid from the moment it is signed.
    pub leaf_lifetime: Duration,
    /// Sign leaves with an intermediate issuer (signed by the root) instead of the root itself,
    /// as Linkerd does: leaves then chain leaf → intermediate → root.
    pub intermediate: bool,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            trust_domain: TRUST_DOMAIN.to_string(),
            leaf_lifetime: DEFAULT_LEAF_LIFETIME,
            intermediate: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA directory {}: {present} exists but {missing} does not", dir.display())]
    IncompleteDir {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error("{}: {reason}", path.display())]
    BadCaFile { path: PathBuf, reason: String },
    #[error("CA key {} does not belong to certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("bad trusted root: {0}")]
    BadRoot(String),
    #[error("generating a certificate: {0}")]
    Generate(rcgen::Error),
    #[error("unknown, already used or expired join token")]
    UnknownToken,
    #[error("the join token was issued to {token_for}, not {requested}")]
    TokenIdentityMismatch {
        token_for: Identity,
        requested: Identity,
    },
    #[error("{0:?} is not a SPIFFE ID of the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT")]
    InvalidIdentity(String),
    #[error("{identity} is outside this CA's trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        identity: Identity,
        trust_domain: String,
    },
    #[error("bad CSR: {0}")]
    Csr(rcgen::Error),
    #[error("the CSR asks for SANs {found:?}; it must ask for exactly the URI {requested}")]
    CsrSan {
        requested: Identity,
        found: Vec<String>,
    },
    #[error("signing the leaf: {0}")]
    Sign(rcgen::Error),
}

/// A signed leaf, as the proxy gets it back.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf first, then the intermediate (when the CA has one). The root is not included: the
    /// peer holds it in its trust bundle.
    pub chain: Vec<CertificateDer<'static>>,
    pub identity: Identity,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// A fresh one-time token bound to the same identity, for the next renewal.
    pub renewal_token: String,
}

impl Issued {
    /// The chain as concatenated PEM blocks (leaf first).
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| to_pem(c)).collect()
    }
}

/// What a one-time token allows: one CSR for `identity`, until `expires`.
struct Token {
    identity: Identity,
    /// Renewal tokens die with the leaf they came with (a proxy whose leaf expired joins again);
    /// join tokens live until used.
    expires: Option<SystemTime>,
}

/// A CA certificate with the key that signs under it.
struct Authority {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

struct State {
    root: Authority,
    /// Signs leaves when the CA is configured with an intermediate.
    intermediate: Option<Authority>,
    /// Roots trusted besides `root`, oldest first.
    trusted: Vec<CertificateDer<'static>>,
    /// The next root (and its intermediate), trusted but not yet signing: step one of a
    /// rotation without downtime (see [`Ca::prepare_root`]).
    next: Option<(Authority, Option<Authority>)>,
}

/// The mesh CA. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Ca {
    config: CaConfig,
    /// Where the root and the extra trusted roots are persisted; `None` for a CA loaded from
    /// user-given files (never overwritten) or made in memory.
    dir: Option<PathBuf>,
    state: Mutex<State>,
    /// Outstanding one-time tokens.
    tokens: Mutex<HashMap<String, Token>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("config", &self.config)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A CA that lives only in memory (tests, throw-away meshes).
    pub fn generate(config: CaConfig) -> Result<Ca, CaError> {
        let root = generate_root(&config.trust_domain)?;
        Ca::assemble(config, None, root, Vec::new())
    }

    /// The CA kept in `dir`: loads `root.pem`/`root.key` (and `trusted-roots.pem`) when they
    /// exist, otherwise generates a root and writes it there (the key with mode 0600).
    pub fn open(dir: &Path, config: CaConfig) -> Result<Ca, CaError> {
        create_private_dir(dir)?;
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        let root = match (cert_path.exists(), key_path.exists()) {
            (true, true) => load_root(&cert_path, &key_path)?,
            (false, false) => {
                let root = generate_root(&config.trust_domain)?;
                write_root(dir, &root)?;
                root
            }
            (true, false) => {
                return Err(CaError::IncompleteDir {
                    dir: dir.to_path_buf(),
                    present: ROOT_CERT_FILE,
                    missing: ROOT_KEY_FILE,
                })
            }
            (false, true) => {
                return Err(CaError::IncompleteDir {
                    dir: dir.to_path_buf(),
                    present: ROOT_KEY_FILE,
                    missing: ROOT_CERT_FILE,
                })
            }
        };
        let trusted_path = dir.join(TRUSTED_ROOTS_FILE);
        let trusted = if trusted_path.exists() {
            let pem = read(&trusted_path)?;
            parse_certs(pem.as_bytes()).map_err(|reason| CaError::BadCaFile {
                path: trusted_path.clone(),
                reason,
            })?
        } else {
            Vec::new()
        };
        Ca::assemble(config, Some(dir.to_path_buf()), root, trusted)
    }

    /// The CA given by `--ca-cert/--ca-key` (PEM). The files are only read, never rewritten; a
    /// root rotation of such a CA lasts until the process exits.
    pub fn from_files(cert: &Path, key: &Path, config: CaConfig) -> Result<Ca, CaError> {
        let root = load_root(cert, key)?;
        Ca::assemble(config, None, root, Vec::new())
    }

    fn assemble(
        config: CaConfig,
        dir: Option<PathBuf>,
        root: Authority,
        trusted: Vec<CertificateDer<'static>>,
    ) -> Result<Ca, CaError> {
        let intermediate = match config.intermediate {
            true => Some(generate_intermediate(&config.trust_domain, &root)?),
            false => None,
        };
        Ok(Ca {
            config,
            dir,
            state: Mutex::new(State {
                root,
                intermediate,
                trusted,
                next: None,
            }),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// Mints a one-time token that lets one CSR for `identity` be signed.
    pub fn join_token(&self, identity: &Identity) -> String {
        let token = random_token();
        let mut tokens = lock(&self.tokens);
        prune_expired(&mut tokens);
        tokens.insert(
            token.clone(),
            Token {
                identity: identity.clone(),
                expires: None,
            },
        );
        token
    }

    /// Signs `csr` (PEM or DER) into a leaf for `identity`, spending `token`.
    ///
    /// Refused when the token is unknown or already spent, was minted for another identity, when
    /// the identity is not a SPIFFE ID of this trust domain, or when the CSR does not ask for
    /// exactly one SAN, the URI `identity`. A refused request leaves the token unspent.
    pub fn sign(&self, csr: &[u8], identity: &Identity, token: &str) -> Result<Issued, CaError> {
        // Held across the whole signing so two requests cannot spend one token.
        let mut tokens = lock(&self.tokens);
        prune_expired(&mut tokens);
        match tokens.get(token) {
            None => return Err(CaError::UnknownToken),
            Some(bound) if bound.identity != *identity => {
                return Err(CaError::TokenIdentityMismatch {
                    token_for: bound.identity.clone(),
                    requested: identity.clone(),
                })
            }
            Some(_) => {}
        }
        self.check_identity(identity)?;
        let csr = parse_csr(csr)?;
        check_csr_san(&csr, identity)?;

        let now = now_seconds();
        let backdate = CLOCK_SKEW_BACKDATE.min(self.config.leaf_lifetime);
        let not_before = now - to_time(backdate);
        let not_after = now + to_time(self.config.leaf_lifetime);
        let uri = identity
            .0
            .clone()
            .try_into()
            .map_err(|_| CaError::InvalidIdentity(identity.0.clone()))?;
        let mut params = CertificateParams::default();
        // SPIFFE X.509-SVIDs carry the identity in the URI SAN only; with an empty subject rcgen
        // marks the SAN extension critical, as RFC 5280 asks.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;

        let state = lock(&self.state);
        let signer = state.intermediate.as_ref().unwrap_or(&state.root);
        let leaf = params
            .signed_by(&csr.public_key, &signer.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![leaf.der().clone()];
        if let Some(intermediate) = &state.intermediate {
            chain.push(intermediate.cert.clone());
        }
        drop(state);

        tokens.remove(token);
        let renewal_token = random_token();
        tokens.insert(
            renewal_token.clone(),
            Token {
                identity: identity.clone(),
                expires: Some(not_after.into()),
            },
        );

        Ok(Issued {
            chain,
            identity: identity.clone(),
            not_before: not_before.into(),
            not_after: not_after.into(),
            renewal_token,
        })
    }

    /// The trust bundle proxies verify peers against: the active root first, then every other
    /// trusted root (the previous root during a rotation).
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        let state = lock(&self.state);
        std::iter::once(state.root.cert.clone())
            .chain(state.trusted.iter().cloned())
            .collect()
    }

    /// [`Ca::bundle`] as concatenated PEM blocks.
    pub fn bundle_pem(&self) -> String {
        self.bundle().iter().map(|c| to_pem(c)).collect()
    }

    /// The active root, which signs (directly or through the intermediate) every new leaf.
    pub fn root(&self) -> CertificateDer<'static> {
        lock(&self.state).root.cert.clone()
    }

    /// Starts a root rotation: a new root (and intermediate) signs every leaf from now on, while
    /// the old root stays in the bundle so leaves it signed keep verifying until they are renewed.
    /// Once every proxy holds a new leaf, [`Ca::retire_roots`] drops the old one. A CA kept in a
    /// directory writes the new root and the trusted list there.
    pub fn rotate_root(&self) -> Result<(), CaError> {
        let root = generate_root(&self.config.trust_domain)?;
        let intermediate = match self.config.intermediate {
            true => Some(generate_intermediate(&self.config.trust_domain, &root)?),
            false => None,
        };
        let mut state = lock(&self.state);
        let mut trusted = state.trusted.clone();
        trusted.push(state.root.cert.clone());
        if let Some(dir) = &self.dir {
            // Trusted list first: a crash between the two writes then trusts one root too many
            // rather than forgetting the old root that live leaves chain to.
            write_trusted(dir, &trusted)?;
            write_root(dir, &root)?;
        }
        state.root = root;
        state.intermediate = intermediate;
        state.trusted = trusted;
        Ok(())
    }

    /// Step one of a root rotation without downtime: makes the next root and adds it to the
    /// bundle while the current root keeps signing. Once every proxy trusts it (the bundle
    /// travels with snapshots and renewals), [`Ca::activate_root`] switches signing to it.
    /// Returns false when a next root is already prepared.
    pub fn prepare_root(&self) -> Result<bool, CaError> {
        let mut state = lock(&self.state);
        if state.next.is_some() {
            return Ok(false);
        }
        let root = generate_root(&self.config.trust_domain)?;
        let intermediate = match self.config.intermediate {
            true => Some(generate_intermediate(&self.config.trust_domain, &root)?),
            false => None,
        };
        let mut trusted = state.trusted.clone();
        trusted.push(root.cert.clone());
        if let Some(dir) = &self.dir {
            write_trusted(dir, &trusted)?;
        }
        state.trusted = trusted;
        state.next = Some((root, intermediate));
        Ok(true)
    }

    /// Step two: the prepared root signs every leaf from now on; the old root stays trusted
    /// until [`Ca::retire_roots`]. Returns false when nothing was prepared.
    pub fn activate_root(&self) -> Result<bool, CaError> {
        let mut state = lock(&self.state);
        let Some((root, intermediate)) = state.next.take() else {
            return Ok(false);
        };
        let mut trusted: Vec<_> = state
            .trusted
            .iter()
            .filter(|c| **c != root.cert)
            .cloned()
            .collect();
        trusted.push(state.root.cert.clone());
        if let Some(dir) = &self.dir {
            write_trusted(dir, &trusted)?;
            write_root(dir, &root)?;
        }
        state.root = root;
        state.intermediate = intermediate;
        state.trusted = trusted;
        Ok(true)
    }

    /// Adds a root to the bundle (PEM or DER) without signing with it, e.g. the next root of an
    /// external PKI before the CA switches to it.
    pub fn trust_root(&self, cert: &[u8]) -> Result<(), CaError> {
        let certs = parse_certs(cert).map_err(CaError::BadRoot)?;
        for cert in &certs {
            let (_, parsed) = x509_parser::parse_x509_certificate(cert)
                .map_err(|e| CaError::BadRoot(e.to_string()))?;
            if !parsed.is_ca() {
                return Err(CaError::BadRoot(format!(
                    "{} is not a CA certificate",
                    parsed.subject()
                )));
            }
        }
        let mut state = lock(&self.state);
        let mut trusted = state.trusted.clone();
        for cert in certs {
            if cert != state.root.cert && !trusted.contains(&cert) {
                trusted.push(cert);
            }
        }
        if let Some(dir) = &self.dir {
            write_trusted(dir, &trusted)?;
        }
        state.trusted = trusted;
        Ok(())
    }

    /// Ends a rotation: the bundle holds only the active root (and a prepared next one) again.
    pub fn retire_roots(&self) -> Result<(), CaError> {
        let mut state = lock(&self.state);
        let keep: Vec<_> = state.next.iter().map(|(r, _)| r.cert.clone()).collect();
        if let Some(dir) = &self.dir {
            write_trusted(dir, &keep)?;
        }
        state.trusted = keep;
        Ok(())
    }

    fn check_identity(&self, identity: &Identity) -> Result<(), CaError> {
        let invalid = || CaError::InvalidIdentity(identity.0.clone());
        let rest = identity.0.strip_prefix("spiffe://").ok_or_else(invalid)?;
        let (trust_domain, path) = rest.split_once('/').ok_or_else(invalid)?;
        let segments: Vec<&str> = path.split('/').collect();
        let valid_segment = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        match segments.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => {}
            _ => return Err(invalid()),
        }
        if trust_domain != self.config.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: identity.clone(),
                trust_domain: self.config.trust_domain.clone(),
            });
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the state as consistent as before the call (every
    // mutation is a single assignment), so keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_seconds() -> OffsetDateTime {
    // Certificates hold whole seconds; truncating here makes `Issued` match the certificate.
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; SERIAL_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    // A positive INTEGER with no leading zero byte to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn random_token() -> String {
    let mut bytes = [0u8; JOIN_TOKEN_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn prune_expired(tokens: &mut HashMap<String, Token>) {
    let now = SystemTime::now();
    tokens.retain(|_, token| match token.expires {
        Some(expires) => expires > now,
        None => true,
    });
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ca_params(common_name: String, trust_domain: &str, lifetime: Duration) -> CertificateParams {
    let now = now_seconds();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - to_time(CLOCK_SKEW_BACKDATE);
    params.not_after = now + to_time(lifetime);
    params.serial_number = Some(random_serial());
    params
}

/// A self-signed root. Each root gets a distinct subject, so the old and new roots of a rotation
/// never share a name and path building never has to try both.
fn generate_root(trust_domain: &str) -> Result<Authority, CaError> {
    let key = KeyPair::generate().map_err(CaError::Generate)?;
    let mut params = ca_params(
        format!("weft root CA {}", random_suffix()),
        trust_domain,
        ROOT_LIFETIME,
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).map_err(CaError::Generate)?;
    Ok(Authority {
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

fn generate_intermediate(trust_domain: &str, root: &Authority) -> Result<Authority, CaError> {
    let key = KeyPair::generate().map_err(CaError::Generate)?;
    let mut params = ca_params(
        format!("weft identity issuer {}", random_suffix()),
        trust_domain,
        INTERMEDIATE_LIFETIME,
    );
    // May sign leaves only, not further CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &root.issuer)
        .map_err(CaError::Generate)?;
    Ok(Authority {
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

fn load_root(cert_path: &Path, key_path: &Path) -> Result<Authority, CaError> {
    let bad = |path: &Path, reason: String| CaError::BadCaFile {
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| bad(cert_path, format!("no PEM certificate: {e}")))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(key_path, e.to_string()))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert).map_err(|e| bad(cert_path, e.to_string()))?;
    if !parsed.is_ca() {
        return Err(bad(cert_path, "not a CA certificate".into()));
    }
    if !parsed.validity().is_valid() {
        return Err(bad(
            cert_path,
            format!(
                "not valid now (valid from {} to {})",
                parsed.validity().not_before,
                parsed.validity().not_after
            ),
        ));
    }
    if *parsed.public_key().subject_public_key.data != *key.der_bytes() {
        return Err(CaError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| bad(cert_path, e.to_string()))?;
    Ok(Authority {
        cert: cert.into_owned(),
        issuer,
    })
}

fn parse_csr(csr: &[u8]) -> Result<CertificateSigningRequestParams, CaError> {
    let der = match CertificateSigningRequestDer::from_pem_slice(csr) {
        Ok(der) => der,
        Err(_) => CertificateSigningRequestDer::from(csr.to_vec()),
    };
    // Also checks the CSR's signature: the requester holds the key it asks a leaf for.
    CertificateSigningRequestParams::from_der(&der).map_err(CaError::Csr)
}

fn check_csr_san(
    csr: &CertificateSigningRequestParams,
    identity: &Identity,
) -> Result<(), CaError> {
    let sans = &csr.params.subject_alt_names;
    match sans.as_slice() {
        [SanType::URI(uri)] if uri.as_str() == identity.0 => Ok(()),
        _ => Err(CaError::CsrSan {
            requested: identity.clone(),
            found: sans.iter().map(describe_san).collect(),
        }),
    }
}

fn describe_san(san: &SanType) -> String {
    match san {
        SanType::URI(uri) => format!("URI:{}", uri.as_str()),
        SanType::DnsName(name) => format!("DNS:{}", name.as_str()),
        SanType::Rfc822Name(mail) => format!("email:{}", mail.as_str()),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        other => format!("{other:?}"),
    }
}

/// Certificates from PEM (one or more blocks) or a single DER certificate.
fn parse_certs(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateDer::pem_slice_iter(input)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    } else if input.trim_ascii().is_empty() {
        Ok(Vec::new())
    } else {
        let der = CertificateDer::from(input.to_vec());
        x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
        Ok(vec![der])
    }
}

fn to_pem(cert: &CertificateDer<'_>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", cert.to_vec()), config)
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    Ok(())
}

/// Writes `contents` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written key or certificate; `mode` applies from the first byte.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    // `mode` is filtered by the umask; set it exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn write_root(dir: &Path, root: &Authority) -> Result<(), CaError> {
    write_atomic(
        &dir.join(ROOT_KEY_FILE),
        root.issuer.key().serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(
        &dir.join(ROOT_CERT_FILE),
        to_pem(&root.cert).as_bytes(),
        0o644,
    )
}

fn write_trusted(dir: &Path, trusted: &[CertificateDer<'static>]) -> Result<(), CaError> {
    let pem: String = trusted.iter().map(|c| to_pem(c)).collect();
    write_atomic(&dir.join(TRUSTED_ROOTS_FILE), pem.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests;
