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
//!
//! The parts: `roots` (the trust bundle and root rotation), `signing` (CSRs into leaves),
//! `tokens` (one-time join and renewal tokens), `certs` (making roots and intermediates) and
//! `store` (the CA directory on disk, and CA files given by the user).

mod certs;
mod roots;
mod signing;
mod store;
mod tokens;

pub use signing::ServingCert;

use certs::{generate_root, intermediate_for};
use model::names::TRUST_DOMAIN;
use model::Identity;
use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use store::to_pem;
pub(crate) use tokens::random_token;
use tokens::Token;

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
    /// How long a join token may wait to be used (a supervisor mints one per proxy start,
    /// which uses it at once).
    pub join_token_lifetime: Duration,
}

/// The default [`CaConfig::join_token_lifetime`].
pub const DEFAULT_JOIN_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            trust_domain: TRUST_DOMAIN.to_string(),
            leaf_lifetime: DEFAULT_LEAF_LIFETIME,
            intermediate: false,
            join_token_lifetime: DEFAULT_JOIN_TOKEN_LIFETIME,
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
    #[error("{}: {why}; the CA's key must be readable by its owner alone (run `chmod {mode:o}` on it, or use another --ca-dir)", path.display())]
    Unsafe {
        path: PathBuf,
        why: String,
        /// The mode it should have.
        mode: u32,
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
    #[error("the shared token store: {0}")]
    TokenStore(String),
    #[error("the join token was issued to {token_for}, not {requested}")]
    TokenIdentityMismatch {
        token_for: Identity,
        requested: Identity,
    },
    #[error("{0:?} is not a SPIFFE ID of the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT")]
    InvalidIdentity(String),
    #[error("{0} is reserved for the control plane")]
    Reserved(Identity),
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
    /// The CA's generation when it signed ([`Ca::generation`]).
    pub generation: u64,
}

impl Issued {
    /// The chain as concatenated PEM blocks (leaf first).
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| to_pem(c)).collect()
    }
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
    /// Bumped whenever another root starts signing: a leaf signed at an older generation
    /// chains to a root that is on its way out.
    generation: u64,
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
    /// Tokens shared with other control-plane replicas (in their common store), used instead
    /// of `tokens` by the async calls ([`Ca::certify`], [`Ca::mint_join_token`]).
    shared: std::sync::OnceLock<Arc<dyn SharedTokens>>,
}

/// One-time tokens kept where every control-plane replica finds them (etcd), so a token one
/// replica minted is spent at another, once.
#[tonic::async_trait]
pub trait SharedTokens: Send + Sync + 'static {
    /// A new token letting one CSR for `identity` be signed until `expires`.
    async fn mint(&self, identity: &Identity, expires: SystemTime) -> Result<String, CaError>;
    /// Spends `token` if it exists, was minted for `identity` and has not expired; otherwise
    /// refuses and leaves it as it was.
    async fn spend(&self, token: &str, identity: &Identity) -> Result<(), CaError>;
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

    fn assemble(
        config: CaConfig,
        dir: Option<PathBuf>,
        root: Authority,
        trusted: Vec<CertificateDer<'static>>,
    ) -> Result<Ca, CaError> {
        let intermediate = intermediate_for(&config, &root)?;
        Ok(Ca {
            config,
            dir,
            state: Mutex::new(State {
                root,
                intermediate,
                trusted,
                next: None,
                generation: 1,
            }),
            tokens: Mutex::new(HashMap::new()),
            shared: std::sync::OnceLock::new(),
        })
    }

    /// Keeps this CA's tokens in `shared` from now on (set once, before it serves).
    pub fn share_tokens(&self, shared: Arc<dyn SharedTokens>) {
        let _ = self.shared.set(shared);
    }

    fn shared_tokens(&self) -> Option<&Arc<dyn SharedTokens>> {
        self.shared.get()
    }

    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// Which root signs now, as a number that grows with each root that starts signing.
    pub fn generation(&self) -> u64 {
        lock(&self.state).generation
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the state as consistent as before the call (every
    // mutation is a single assignment), so keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
