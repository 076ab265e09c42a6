//! Making CA certificates: self-signed roots and the intermediates they sign, with random
//! serial numbers and validity in whole seconds.

use super::{
    Authority, CaConfig, CaError, CLOCK_SKEW_BACKDATE, INTERMEDIATE_LIFETIME, ROOT_LIFETIME,
};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::time::Duration;
use time::OffsetDateTime;

/// Random bytes in a certificate serial number (RFC 5280 allows up to 20 octets).
const SERIAL_BYTES: usize = 16;

pub(super) fn now_seconds() -> OffsetDateTime {
    // Certificates hold whole seconds; truncating here makes `Issued` match the certificate.
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

pub(super) fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

pub(super) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; SERIAL_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    // A positive INTEGER with no leading zero byte to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
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
pub(super) fn generate_root(trust_domain: &str) -> Result<Authority, CaError> {
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

/// An intermediate signed by `root` when `config` asks for one, else none.
pub(super) fn intermediate_for(
    config: &CaConfig,
    root: &Authority,
) -> Result<Option<Authority>, CaError> {
    Ok(match config.intermediate {
        true => Some(generate_intermediate(&config.trust_domain, root)?),
        false => None,
    })
}
