//! Real mTLS handshakes over TCP on 127.0.0.1, with certificates made for each case by a small
//! test CA (the proxy never links the control plane's CA).

use super::verify::MeshServerVerifier;
use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TD: &str = "cluster.local";

fn id(ns: &str, sa: &str) -> Identity {
    Identity::spiffe(ns, sa)
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// A root (or intermediate) that signs test leaves.
struct TestCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// The certificates between a leaf and the root (empty for a root signing directly).
    intermediates: Vec<CertificateDer<'static>>,
}

impl TestCa {
    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    fn root(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = Self::ca_params(name);
        let cert = params.self_signed(&key).unwrap().der().clone();
        TestCa {
            cert,
            issuer: Issuer::new(params, key),
            intermediates: Vec::new(),
        }
    }

    /// An intermediate signed by this root; its `cert` is the root's, so `bundle()` stays right.
    fn intermediate(&self, name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = Self::ca_params(name);
        let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        TestCa {
            cert: self.cert.clone(),
            issuer: Issuer::new(params, key),
            intermediates: vec![cert],
        }
    }

    fn bundle(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    /// A leaf for `key` with these SANs and validity (offsets from now), chain included.
    fn leaf(
        &self,
        key: &KeyPair,
        sans: Vec<SanType>,
        valid: (time::Duration, time::Duration),
    ) -> Vec<CertificateDer<'static>> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "test leaf");
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now + valid.0;
        params.not_after = now + valid.1;
        let leaf = params.signed_by(key, &self.issuer).unwrap().der().clone();
        std::iter::once(leaf)
            .chain(self.intermediates.iter().cloned())
            .collect()
    }

    /// What the control plane does with a proxy's CSR: a leaf valid now, for the CSR's SANs.
    fn sign_csr(&self, csr_pem: &str) -> Vec<CertificateDer<'static>> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let now = OffsetDateTime::now_utc();
        let mut params = csr.params.clone();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::hours(1);
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .unwrap()
            .der()
            .clone();
        std::iter::once(leaf)
            .chain(self.intermediates.iter().cloned())
            .collect()
    }

    /// A proxy's credentials, made as a proxy makes them: own key, CSR, signed chain.
    fn creds(&self, identity: &Identity, bundle: Vec<CertificateDer<'static>>) -> Arc<Credentials> {
        let (key, csr_pem) = csr(identity).unwrap();
        Credentials::new(identity, &key, self.sign_csr(&csr_pem), bundle).unwrap()
    }
}

/// Fresh key and CSR-signed chain for `identity`, for a rotation.
fn renewed(ca: &TestCa, identity: &Identity) -> (KeyPair, Vec<CertificateDer<'static>>) {
    let (key, csr_pem) = csr(identity).unwrap();
    let chain = ca.sign_csr(&csr_pem);
    (key, chain)
}

const HOUR: time::Duration = time::Duration::hours(1);
const VALID_NOW: (time::Duration, time::Duration) =
    (time::Duration::hours(-1), time::Duration::hours(1));

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("no hang")
}

/// An mTLS echo server: every handshake's outcome (the client's identity, or the error) goes
/// to `handshakes`.
struct EchoServer {
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<io::Result<Option<Identity>>>,
}

async fn echo_server(config: Arc<ServerConfig>) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, handshakes) = mpsc::unbounded_channel();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let conn = tls.get_ref().1;
                        assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
                        assert_eq!(
                            conn.protocol_version(),
                            Some(rustls::ProtocolVersion::TLSv1_3)
                        );
                        let _ = tx.send(Ok(peer_identity(conn)));
                        let (mut r, mut w) = tokio::io::split(tls);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err));
                    }
                }
            });
        }
    });
    EchoServer { addr, handshakes }
}

impl EchoServer {
    async fn next_handshake(&mut self) -> io::Result<Option<Identity>> {
        within(self.handshakes.recv()).await.expect("a handshake")
    }
}

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    expected: &Identity,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    within(tokio_rustls::TlsConnector::from(config).connect(server_name(expected), tcp)).await
}

async fn ping(
    stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
    msg: &[u8],
) -> io::Result<()> {
    stream.write_all(msg).await?;
    stream.flush().await?;
    let mut back = vec![0u8; msg.len()];
    within(stream.read_exact(&mut back)).await?;
    assert_eq!(back, msg);
    Ok(())
}

fn peer_leaf(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn mtls_between_two_identities_of_one_ca() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let world = id("shop", "world");
    let server = ca.creds(&hello, ca.bundle());
    let client = ca.creds(&world, ca.bundle());
    assert_eq!(server.identity(), hello);
    assert_eq!(server.trust_domain(), TD);

    let mut echo = echo_server(server.server_config()).await;
    let mut stream = connect(echo.addr, client.client_config(&hello), &hello)
        .await
        .unwrap();
    // Each side sees the other's SPIFFE identity.
    assert_eq!(echo.next_handshake().await.unwrap(), Some(world));
    let conn = stream.get_ref().1;
    assert_eq!(peer_identity(conn), Some(hello));
    assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    ping(&mut stream, b"hello over mTLS").await.unwrap();
    for role in [PeerRole::Client, PeerRole::Server] {
        for reason in RejectReason::ALL {
            assert_eq!(server.rejections().count(role, reason), 0);
            assert_eq!(client.rejections().count(role, reason), 0);
        }
    }
}

#[tokio::test]
async fn an_intermediate_in_the_chain_verifies() {
    let root = TestCa::root("mesh root");
    let issuer = root.intermediate("mesh issuer");
    let hello = id("default", "hello");
    let world = id("default", "world");
    let server = issuer.creds(&hello, root.bundle());
    let client = issuer.creds(&world, root.bundle());
    assert_eq!(server.chain().len(), 2);
    let mut echo = echo_server(server.server_config()).await;
    let mut stream = connect(echo.addr, client.client_config(&hello), &hello)
        .await
        .unwrap();
    assert_eq!(echo.next_handshake().await.unwrap(), Some(world));
    ping(&mut stream, b"through an issuer").await.unwrap();
}

/// A certificate made wrong on purpose, and why it must be refused.
struct BadCase {
    name: &'static str,
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
    reason: RejectReason,
}

fn bad_cases(ca: &TestCa, identity: &Identity) -> Vec<BadCase> {
    let other_ca = TestCa::root("some other mesh");
    let mut cases = Vec::new();
    let mut case = |name, ca: &TestCa, sans: Vec<SanType>, valid, reason| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let chain = ca.leaf(&key, sans, valid);
        cases.push(BadCase {
            name,
            chain,
            key,
            reason,
        });
    };
    let san = || vec![uri(&identity.0)];
    case(
        "expired",
        ca,
        san(),
        (-2 * HOUR, -HOUR),
        RejectReason::Expired,
    );
    case(
        "not yet valid",
        ca,
        san(),
        (HOUR, 2 * HOUR),
        RejectReason::NotYetValid,
    );
    case(
        "another CA",
        &other_ca,
        san(),
        VALID_NOW,
        RejectReason::UnknownCa,
    );
    case(
        "trust domain evil.local",
        ca,
        vec![uri("spiffe://evil.local/ns/default/sa/hello")],
        VALID_NOW,
        RejectReason::WrongTrustDomain,
    );
    case("no SAN", ca, vec![], VALID_NOW, RejectReason::NoSpiffeSan);
    case(
        "a DNS SAN only",
        ca,
        vec![SanType::DnsName("hello.default.svc".try_into().unwrap())],
        VALID_NOW,
        RejectReason::NoSpiffeSan,
    );
    case(
        "a non-SPIFFE URI",
        ca,
        vec![uri("https://hello.default.svc/")],
        VALID_NOW,
        RejectReason::NoSpiffeSan,
    );
    case(
        "two SPIFFE URIs",
        ca,
        vec![
            uri(&identity.0),
            uri("spiffe://cluster.local/ns/default/sa/admin"),
        ],
        VALID_NOW,
        RejectReason::NoSpiffeSan,
    );
    cases
}

#[tokio::test]
async fn the_client_refuses_each_bad_server_certificate_with_its_reason() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let client = ca.creds(&id("default", "client"), ca.bundle());
    for case in bad_cases(&ca, &hello) {
        let before = client.rejections().count(PeerRole::Server, case.reason);
        let server = Credentials::new_unchecked(TD, &case.key, case.chain, ca.bundle());
        let mut echo = echo_server(server.server_config()).await;
        let err = connect(echo.addr, client.client_config(&hello), &hello)
            .await
            .expect_err(case.name);
        assert_eq!(
            RejectReason::of_io(&err),
            Some(case.reason),
            "{}: {err}",
            case.name
        );
        assert_eq!(
            client.rejections().count(PeerRole::Server, case.reason),
            before + 1,
            "{}",
            case.name
        );
        // The server sees our alert, not a verification failure of its own.
        let server_err = echo.next_handshake().await.expect_err(case.name);
        assert_eq!(RejectReason::of_io(&server_err), None, "{}", case.name);
    }
    let total: u64 = client
        .rejections()
        .snapshot()
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(total, 8);
}

#[tokio::test]
async fn the_client_refuses_a_server_with_another_identity() {
    let ca = TestCa::root("mesh root");
    let expected = id("default", "a");
    let actual = id("default", "b");
    let server = ca.creds(&actual, ca.bundle());
    let client = ca.creds(&id("default", "client"), ca.bundle());
    let echo = echo_server(server.server_config()).await;
    let err = connect(echo.addr, client.client_config(&expected), &expected)
        .await
        .unwrap_err();
    assert_eq!(
        RejectReason::of_io(&err),
        Some(RejectReason::IdentityMismatch),
        "{err}"
    );
    assert_eq!(
        client
            .rejections()
            .count(PeerRole::Server, RejectReason::IdentityMismatch),
        1
    );
    // The same server is fine for a client that expects it.
    let mut stream = connect(echo.addr, client.client_config(&actual), &actual)
        .await
        .unwrap();
    ping(&mut stream, b"right one").await.unwrap();
}

#[tokio::test]
async fn the_server_refuses_each_bad_client_certificate_with_its_reason() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let server = ca.creds(&hello, ca.bundle());
    let mut echo = echo_server(server.server_config()).await;
    let client_identity = id("default", "client");
    for case in bad_cases(&ca, &client_identity) {
        let before = server.rejections().count(PeerRole::Client, case.reason);
        let client = Credentials::new_unchecked(TD, &case.key, case.chain, ca.bundle());
        // In TLS 1.3 the client may finish its side before the server reads its certificate;
        // the refusal then shows on the first read.
        if let Ok(mut stream) = connect(echo.addr, client.client_config(&hello), &hello).await {
            assert!(ping(&mut stream, b"x").await.is_err(), "{}", case.name);
        }
        let err = echo.next_handshake().await.expect_err(case.name);
        assert_eq!(
            RejectReason::of_io(&err),
            Some(case.reason),
            "{}: {err}",
            case.name
        );
        assert_eq!(
            server.rejections().count(PeerRole::Client, case.reason),
            before + 1,
            "{}",
            case.name
        );
    }
}

#[tokio::test]
async fn the_server_requires_a_client_certificate() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let server = ca.creds(&hello, ca.bundle());
    let mut echo = echo_server(server.server_config()).await;
    let client = ca.creds(&id("default", "client"), ca.bundle());
    let mut config = ClientConfig::builder_with_provider(client.provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier {
            creds: client.clone(),
            expected: hello.clone(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    if let Ok(mut stream) = connect(echo.addr, Arc::new(config), &hello).await {
        assert!(ping(&mut stream, b"x").await.is_err());
    }
    let err = echo.next_handshake().await.unwrap_err();
    assert_eq!(
        RejectReason::of_io(&err),
        Some(RejectReason::NoCertificate),
        "{err}"
    );
}

#[tokio::test]
async fn a_tls12_only_client_is_refused() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let server = ca.creds(&hello, ca.bundle());
    let mut echo = echo_server(server.server_config()).await;
    // rustls here is built without TLS 1.2, so offer it through a raw ClientHello instead:
    // a TLS 1.2 record whose handshake advertises only TLS 1.2.
    let mut tcp = TcpStream::connect(echo.addr).await.unwrap();
    let hello_tls12: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x2f, // record: handshake, TLS 1.0 record version, length 47
        0x01, 0x00, 0x00, 0x2b, // ClientHello, length 43
        0x03, 0x03, // client_version TLS 1.2
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,    // random
        0x00, // session id
        0x00, 0x02, 0xc0, 0x2b, // one suite: ECDHE-ECDSA-AES128-GCM-SHA256
        0x01, 0x00, // null compression
        0x00, 0x00, // no extensions
    ];
    tcp.write_all(hello_tls12).await.unwrap();
    let err = echo.next_handshake().await.unwrap_err();
    let tls_err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(tls_err, Some(rustls::Error::PeerIncompatible(_))),
        "{err:?}"
    );
    assert_eq!(RejectReason::of_io(&err), None, "{err}");
}

#[tokio::test]
async fn rotation_presents_the_new_certificate_and_keeps_established_connections() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let world = id("default", "world");
    let server = ca.creds(&hello, ca.bundle());
    let client = ca.creds(&world, ca.bundle());
    let mut echo = echo_server(server.server_config()).await;
    let old_leaf = server.chain()[0].clone();

    let mut first = connect(echo.addr, client.client_config(&hello), &hello)
        .await
        .unwrap();
    echo.next_handshake().await.unwrap();
    ping(&mut first, b"before rotation").await.unwrap();
    assert_eq!(peer_leaf(&first), old_leaf);

    // Renew the server (new key, new leaf) and the client.
    let (key, chain) = renewed(&ca, &hello);
    server.rotate(&key, chain, ca.bundle()).unwrap();
    let new_leaf = server.chain()[0].clone();
    assert_ne!(new_leaf, old_leaf);
    let old_client_leaf = client.chain()[0].clone();
    let (key, chain) = renewed(&ca, &world);
    client.rotate(&key, chain, ca.bundle()).unwrap();
    assert_ne!(client.chain()[0], old_client_leaf);

    // The next handshake, on the same configs, presents the new certificates…
    let config = client.client_config(&hello);
    let mut second = connect(echo.addr, config, &hello).await.unwrap();
    assert_eq!(echo.next_handshake().await.unwrap(), Some(world.clone()));
    assert_eq!(peer_leaf(&second), new_leaf);
    ping(&mut second, b"after rotation").await.unwrap();
    // …while the connection made before keeps working.
    ping(&mut first, b"still here").await.unwrap();
    assert_eq!(peer_leaf(&first), old_leaf);
}

#[tokio::test]
async fn a_two_root_bundle_accepts_leaves_of_both_roots() {
    let old_root = TestCa::root("root 1");
    let new_root = TestCa::root("root 2");
    let both = vec![new_root.cert.clone(), old_root.cert.clone()];
    let hello = id("default", "hello");
    let world = id("default", "world");
    // The server still holds a leaf of the old root, the client already one of the new.
    let server = old_root.creds(&hello, both.clone());
    let client = new_root.creds(&world, both.clone());
    let mut echo = echo_server(server.server_config()).await;
    let mut stream = connect(echo.addr, client.client_config(&hello), &hello)
        .await
        .unwrap();
    assert_eq!(echo.next_handshake().await.unwrap(), Some(world.clone()));
    ping(&mut stream, b"across roots").await.unwrap();

    // Once the server trusts only the new root, the old root's leaves are refused…
    let (key, chain) = renewed(&new_root, &hello);
    server.rotate(&key, chain, new_root.bundle()).unwrap();
    let stale = old_root.creds(&id("default", "stale"), both);
    if let Ok(mut s) = connect(echo.addr, stale.client_config(&hello), &hello).await {
        assert!(ping(&mut s, b"x").await.is_err());
    }
    let err = echo.next_handshake().await.unwrap_err();
    assert_eq!(
        RejectReason::of_io(&err),
        Some(RejectReason::UnknownCa),
        "{err}"
    );
    // …and the new root's are still accepted.
    let mut stream = connect(echo.addr, client.client_config(&hello), &hello)
        .await
        .unwrap();
    assert_eq!(echo.next_handshake().await.unwrap(), Some(world));
    ping(&mut stream, b"new root only").await.unwrap();
}

#[test]
fn credentials_refuse_material_peers_would_refuse() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let (key, csr_pem) = csr(&hello).unwrap();
    let chain = ca.sign_csr(&csr_pem);

    let other_key = KeyPair::generate().unwrap();
    let err = Credentials::new(&hello, &other_key, chain.clone(), ca.bundle()).unwrap_err();
    assert!(matches!(err, TlsError::Key(_)), "{err}");

    let other_ca = TestCa::root("other");
    let err = Credentials::new(&hello, &key, chain.clone(), other_ca.bundle()).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Untrusted {
                reason: RejectReason::UnknownCa,
                ..
            }
        ),
        "{err}"
    );

    let err =
        Credentials::new(&id("default", "other"), &key, chain.clone(), ca.bundle()).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Untrusted {
                reason: RejectReason::IdentityMismatch,
                ..
            }
        ),
        "{err}"
    );

    let expired = ca.leaf(&key, vec![uri(&hello.0)], (-2 * HOUR, -HOUR));
    let err = Credentials::new(&hello, &key, expired, ca.bundle()).unwrap_err();
    assert!(
        matches!(
            err,
            TlsError::Untrusted {
                reason: RejectReason::Expired,
                ..
            }
        ),
        "{err}"
    );

    let err = Credentials::new(&hello, &key, vec![], ca.bundle()).unwrap_err();
    assert!(matches!(err, TlsError::EmptyChain), "{err}");
    let err = Credentials::new(&hello, &key, chain.clone(), vec![]).unwrap_err();
    assert!(matches!(err, TlsError::EmptyBundle), "{err}");
    let err =
        Credentials::new(&Identity("hello".into()), &key, chain.clone(), ca.bundle()).unwrap_err();
    assert!(matches!(err, TlsError::NotSpiffe(_)), "{err}");

    // A refused rotation leaves the current material in place.
    let creds = Credentials::new(&hello, &key, chain.clone(), ca.bundle()).unwrap();
    let (other_key, other_csr) = csr(&id("default", "other")).unwrap();
    let err = creds
        .rotate(&other_key, ca.sign_csr(&other_csr), ca.bundle())
        .unwrap_err();
    assert!(matches!(err, TlsError::Untrusted { .. }), "{err}");
    assert_eq!(creds.chain(), chain);
    assert_eq!(creds.identity(), hello);
}

#[test]
fn the_csr_asks_for_exactly_the_identity_with_a_p256_key() {
    let hello = id("default", "hello");
    let (key, pem) = csr(&hello).unwrap();
    let parsed = CertificateSigningRequestParams::from_pem(&pem).unwrap();
    assert_eq!(parsed.params.subject_alt_names, vec![uri(&hello.0)]);
    assert_eq!(parsed.public_key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    // Two CSRs never share a key.
    let (other, _) = csr(&hello).unwrap();
    assert_ne!(other.public_key_raw(), key.public_key_raw());
}

#[test]
fn validity_and_renewal_time_come_from_the_leaf() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let creds = ca.creds(&hello, ca.bundle());
    let (not_before, not_after) = creds.validity();
    let lifetime = not_after.duration_since(not_before).unwrap();
    assert_eq!(lifetime, Duration::from_secs(61 * 60));
    let at = creds.renew_at().duration_since(not_before).unwrap();
    assert!(
        at >= lifetime.mul_f64(0.65) && at <= lifetime.mul_f64(0.75),
        "{at:?}"
    );
}

#[test]
fn server_names_follow_linkerds_identity_shape() {
    assert_eq!(
        server_name(&id("shop", "cart")).to_str(),
        "cart.shop.serviceaccount.identity.cluster.local"
    );
    assert_eq!(
        server_name(&Identity("not a spiffe id".into())).to_str(),
        "identity.weft.invalid"
    );
}

#[tokio::test]
async fn permissive_sniffing_hands_over_every_byte() {
    let ca = TestCa::root("mesh root");
    let hello = id("default", "hello");
    let server = ca.creds(&hello, ca.bundle());
    let client = ca.creds(&id("default", "client"), ca.bundle());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = server.acceptor();
    let accept = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut tcp, _) = listener.accept().await.unwrap();
            match within(sniff(&tcp)).await.unwrap() {
                Sniffed::Tls => {
                    // The acceptor reads the ClientHello from its first byte.
                    let tls = acceptor.accept(tcp).await.unwrap();
                    seen.push(format!("tls {}", peer_identity(tls.get_ref().1).unwrap()));
                }
                Sniffed::Plaintext => {
                    let mut text = String::new();
                    tcp.read_to_string(&mut text).await.unwrap();
                    seen.push(format!("plaintext {text}"));
                }
                Sniffed::Closed => seen.push("closed".into()),
            }
        }
        seen
    });

    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    drop(plain);
    let tls = connect(addr, client.client_config(&hello), &hello).await;
    let seen = within(accept).await.unwrap();
    assert!(tls.is_ok());
    assert_eq!(
        seen,
        vec![
            "plaintext GET / HTTP/1.1\r\n\r\n".to_string(),
            "tls spiffe://cluster.local/ns/default/sa/client".to_string(),
        ]
    );
}
