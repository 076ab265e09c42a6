//! mTLS material for the benchmark: join tokens from weft's control plane for weft's proxies,
//! and a throwaway CA with SPIFFE leaves for the two Envoys, so both two-hop paths run the same
//! handshake (TLS 1.3, ECDSA P-256, ALPN h2, SAN checked) on the hop between the proxies.

use super::BenchError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A one-time join token for `identity` from the control plane's API at `api` (`POST /join`,
/// with the API's admin credential `admin`).
pub fn join_token(api: &str, admin: &str, identity: &str) -> Result<String, BenchError> {
    let body = format!("{{\"identity\": \"{identity}\"}}");
    call(api, admin, "POST /join", &body)
}

/// The mesh's roots (`GET /ca/bundle`), which the control plane's certificate chains to.
pub fn trust_anchors(api: &str, admin: &str) -> Result<String, BenchError> {
    call(api, admin, "GET /ca/bundle", "")
}

/// One call to the API with the admin credential; the body of a 200 answer.
fn call(api: &str, admin: &str, request: &str, body: &str) -> Result<String, BenchError> {
    let mut s = std::net::TcpStream::connect(api)?;
    write!(
        s,
        "{request} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut rsp = String::new();
    s.read_to_string(&mut rsp)?;
    let (head, body) = rsp
        .split_once("\r\n\r\n")
        .ok_or_else(|| BenchError::Setup(format!("{request}: bad answer {rsp:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(BenchError::Setup(format!(
            "{request}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.trim().to_string())
}

/// Files of the Envoy path's CA and its two leaves.
pub struct EnvoyCerts {
    pub ca: PathBuf,
    /// The app-facing (client-side) Envoy: identity `…/sa/loadgen`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The app's Envoy (server side): identity `…/sa/bench`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/loadgen";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/bench";

fn setup(e: rcgen::Error) -> BenchError {
    BenchError::Setup(format!("making Envoy's certificates: {e}"))
}

impl EnvoyCerts {
    pub fn write(dir: &Path) -> Result<EnvoyCerts, BenchError> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(setup)?;
        let mut ca = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "weft bench CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(setup)?;
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |id: &str| -> Result<(String, String), BenchError> {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(setup)?;
            let mut p = CertificateParams::default();
            p.distinguished_name = DistinguishedName::new();
            p.subject_alt_names = vec![SanType::URI(id.try_into().map_err(setup)?)];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &issuer).map_err(setup)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let files = EnvoyCerts {
            ca: dir.join("envoy-ca.pem"),
            client_cert: dir.join("envoy-client.pem"),
            client_key: dir.join("envoy-client.key"),
            server_cert: dir.join("envoy-server.pem"),
            server_key: dir.join("envoy-server.key"),
        };
        std::fs::write(&files.ca, ca_cert.pem())?;
        let (c, k) = leaf(CLIENT_ID)?;
        std::fs::write(&files.client_cert, c)?;
        std::fs::write(&files.client_key, k)?;
        let (c, k) = leaf(SERVER_ID)?;
        std::fs::write(&files.server_cert, c)?;
        std::fs::write(&files.server_key, k)?;
        Ok(files)
    }
}
