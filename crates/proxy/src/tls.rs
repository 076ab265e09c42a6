//! Mesh mTLS: the proxy's SPIFFE identity and the rustls configs that use it.
//!
//! The proxy makes its own key and a CSR ([`csr`]); the chain the CA signs and the trust bundle
//! become [`Credentials`], held in an `ArcSwap` so renewal ([`Credentials::rotate`], scheduled by
//! [`renew_at`]) applies to the next handshake without a lock or a restart. Both directions are
//! TLS 1.3 with ALPN h2 and mutual authentication:
//! - inbound, [`Credentials::server_config`] requires a client certificate of our trust domain;
//! - outbound, [`Credentials::client_config`] accepts only the identity expected for the
//!   endpoint.
//!
//! Each refused certificate has a [`RejectReason`] (counted in [`Rejections`], logged).
//! [`peer_identity`] reads the verified peer's SPIFFE ID after the handshake, and [`sniff`] tells
//! TLS from plaintext on a PERMISSIVE port.
//!
//! Layout: [`credentials`] (key, chain, bundle, configs), [`verify`] (the verifiers and reasons),
//! [`detect`] (TLS or plaintext), [`renew`] (when to renew), and the two handshakes:
//! [`accept`] (an inbound listener's, as the port's mode says) and [`connect`] (to a peer);
//! [`api`] is the TLS of a client of the control plane's HTTP API.

pub mod accept;
pub mod api;
pub mod connect;
pub mod credentials;
pub mod detect;
pub mod renew;
pub mod verify;

pub use accept::{Accepted, InboundTls};
pub use api::api_client_config;
pub use credentials::{csr, server_name, Credentials};
pub use detect::{classify, sniff, Sniffed};
pub use renew::{renew_at, renew_in};
pub use verify::{peer_identity, spiffe_id, trust_domain_of, PeerRole, RejectReason, Rejections};

use model::Identity;

/// The only application protocol spoken between proxies.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("making the key or CSR: {0}")]
    Csr(rcgen::Error),
    #[error("{0} is not a SPIFFE ID")]
    NotSpiffe(Identity),
    #[error("the certificate chain is empty")]
    EmptyChain,
    #[error("the trust bundle is empty")]
    EmptyBundle,
    #[error("bad trust bundle: {0}")]
    BadBundle(rustls::Error),
    #[error("the private key does not fit the certificate: {0}")]
    Key(rustls::Error),
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    #[error("our own certificate would be refused ({reason}): {detail}")]
    Untrusted {
        reason: RejectReason,
        detail: String,
    },
}

#[cfg(test)]
mod tests;
