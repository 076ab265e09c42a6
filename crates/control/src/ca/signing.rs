//! Signing a proxy's CSR into a short-lived SPIFFE leaf: the token, the identity and the CSR's
//! SAN are checked first.

use super::certs::{now_seconds, random_serial, to_time};
use super::tokens::{prune_expired, random_token, Token};
use super::{lock, Ca, CaError, Issued, CLOCK_SKEW_BACKDATE};
use model::Identity;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::CertificateSigningRequestDer;
use std::time::SystemTime;

impl Ca {
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
        let mut issued = self.issue(csr, identity)?;
        tokens.remove(token);
        let renewal_token = random_token();
        tokens.insert(
            renewal_token.clone(),
            Token {
                identity: identity.clone(),
                expires: Some(issued.not_after),
            },
        );
        issued.renewal_token = renewal_token;
        Ok(issued)
    }

    /// [`Ca::sign`] through the CA's shared tokens when it has them (several control-plane
    /// replicas honour each other's tokens), else its own.
    pub async fn certify(
        &self,
        csr: &[u8],
        identity: &Identity,
        token: &str,
    ) -> Result<Issued, CaError> {
        let Some(shared) = self.shared_tokens() else {
            return self.sign(csr, identity, token);
        };
        // Checked before the token is spent: a bad request leaves it usable.
        self.check_identity(identity)?;
        let parsed = parse_csr(csr)?;
        check_csr_san(&parsed, identity)?;
        shared.spend(token, identity).await?;
        let mut issued = self.issue(csr, identity)?;
        issued.renewal_token = shared.mint(identity, issued.not_after).await?;
        Ok(issued)
    }

    /// A one-time join token for `identity`: through the shared tokens when the CA has them.
    pub async fn mint_join_token(&self, identity: &Identity) -> Result<String, CaError> {
        match self.shared_tokens() {
            Some(shared) => {
                let expires = SystemTime::now() + self.config.join_token_lifetime;
                shared.mint(identity, expires).await
            }
            None => Ok(self.join_token(identity)),
        }
    }

    /// A leaf for `identity` from `csr`, checked; no token involved (the caller spent one).
    fn issue(&self, csr: &[u8], identity: &Identity) -> Result<Issued, CaError> {
        self.check_identity(identity)?;
        let csr = parse_csr(csr)?;
        check_csr_san(&csr, identity)?;
        let leaf = self.leaf(&csr.public_key, identity)?;
        Ok(Issued {
            chain: leaf.chain,
            identity: identity.clone(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            renewal_token: String::new(),
            generation: leaf.generation,
        })
    }

    /// A key and a leaf for the control plane's own gRPC listener, for
    /// [`Identity::control_plane`] of this trust domain, from the signer in force (no token:
    /// the control plane holds the CA).
    pub fn control_plane_cert(&self) -> Result<ServingCert, CaError> {
        let identity = Identity::control_plane(&self.config.trust_domain);
        self.serving_cert(&identity, &[], self.config.leaf_lifetime)
    }

    /// The control plane's certificate with DNS names too (the admission webhook's: the
    /// Kubernetes API server checks the name of the Service it calls).
    pub fn control_plane_cert_for(&self, dns: &[String]) -> Result<ServingCert, CaError> {
        let identity = Identity::control_plane(&self.config.trust_domain);
        self.serving_cert(&identity, dns, self.config.leaf_lifetime)
    }

    /// A fresh key and a leaf over it for `identity`, valid for `lifetime`.
    fn serving_cert(
        &self,
        identity: &Identity,
        dns: &[String],
        lifetime: std::time::Duration,
    ) -> Result<ServingCert, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let leaf = self.leaf_for(&key, identity, dns, lifetime)?;
        Ok(ServingCert {
            key_pkcs8: key.serialize_der(),
            chain: leaf.chain,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            generation: leaf.generation,
        })
    }

    /// A key and a client certificate for operator `name` ([`Identity::operator`]), valid for
    /// `lifetime`: it authenticates the operator to the control plane's API over TLS. The
    /// caller has authenticated the operator as an admin.
    pub fn operator_cert(
        &self,
        name: &str,
        lifetime: std::time::Duration,
    ) -> Result<ServingCert, CaError> {
        let identity = Identity::operator(&self.config.trust_domain, name);
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            && identity.operator_name(&self.config.trust_domain) == Some(name);
        if !valid {
            return Err(CaError::InvalidIdentity(identity.0));
        }
        self.serving_cert(&identity, &[], lifetime)
    }

    /// Signs a SPIFFE leaf for `identity` over `public_key` with the signer in force.
    fn leaf(&self, public_key: &impl PublicKeyData, identity: &Identity) -> Result<Leaf, CaError> {
        self.leaf_for(public_key, identity, &[], self.config.leaf_lifetime)
    }

    /// [`Ca::leaf`] valid for `lifetime`.
    fn leaf_for(
        &self,
        public_key: &impl PublicKeyData,
        identity: &Identity,
        dns: &[String],
        lifetime: std::time::Duration,
    ) -> Result<Leaf, CaError> {
        let now = now_seconds();
        let backdate = CLOCK_SKEW_BACKDATE.min(lifetime);
        let not_before = now - to_time(backdate);
        let not_after = now + to_time(lifetime);
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
        for name in dns {
            let name = name
                .clone()
                .try_into()
                .map_err(|_| CaError::InvalidIdentity(format!("DNS name {name}")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
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
            .signed_by(public_key, &signer.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![leaf.der().clone()];
        if let Some(intermediate) = &state.intermediate {
            chain.push(intermediate.cert.clone());
        }
        Ok(Leaf {
            chain,
            not_before: not_before.into(),
            not_after: not_after.into(),
            generation: state.generation,
        })
    }

    /// Refuses an identity this CA does not sign: not a SPIFFE ID of the form
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT` in canonical form (no `.` or `..`
    /// segments, no other characters than letters, digits, `-`, `.`, `_`), or of another trust
    /// domain.
    pub fn check_identity(&self, identity: &Identity) -> Result<(), CaError> {
        let invalid = || CaError::InvalidIdentity(identity.0.clone());
        let rest = identity.0.strip_prefix("spiffe://").ok_or_else(invalid)?;
        let (trust_domain, path) = rest.split_once('/').ok_or_else(invalid)?;
        let segments: Vec<&str> = path.split('/').collect();
        let valid_segment = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        match segments.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => {
                if *ns == model::names::CONTROL_NAMESPACE {
                    return Err(CaError::Reserved(identity.clone()));
                }
            }
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

/// A signed leaf, before it is handed to anyone.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
    generation: u64,
}

/// The control plane's own certificate and key ([`Ca::control_plane_cert`]), or an operator's
/// ([`Ca::operator_cert`]).
pub struct ServingCert {
    /// Leaf first, then the intermediate (when the CA has one).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The CA's generation when it signed ([`Ca::generation`]).
    pub generation: u64,
}

impl ServingCert {
    /// The chain as concatenated PEM blocks (leaf first).
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| super::store::to_pem(c)).collect()
    }

    /// The private key as a PKCS#8 PEM block.
    pub fn key_pem(&self) -> String {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", self.key_pkcs8.clone()),
            config,
        )
    }
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
