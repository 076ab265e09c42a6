//! The control plane's gRPC listener in a mesh with a CA, tried as a local attacker would: it
//! speaks TLS with a certificate of the mesh CA for the control plane's own identity (renewed
//! when another root signs), and it opens a control stream only for a caller presenting the
//! certificate of the identity its Hello states, which must be its service's; nothing else
//! registers. Certificates are asked for over TLS only.

use api::pb::{self, discovery_client::DiscoveryClient, proxy_message::Msg};
use control::ca::{Ca, CaConfig};
use control::registry::Registry;
use control::server::ControlPlane;
use hyper_util::rt::TokioIo;
use model::Identity;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Accepts any server certificate and keeps the chain, for the test to check.
#[derive(Debug, Default)]
struct Recording(Mutex<Vec<CertificateDer<'static>>>);

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.0.lock().unwrap() = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(m, c, d, &algs)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(m, c, d, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

type Leaf = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_config(recording: Arc<Recording>, leaf: Option<Leaf>) -> Arc<ClientConfig> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(recording);
    let mut config = match leaf {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A channel to `addr`, over TLS with `tls` or in plaintext.
async fn channel(addr: SocketAddr, tls: Option<Arc<ClientConfig>>) -> Channel {
    try_channel(addr, tls).await.unwrap()
}

/// [`channel`], or why the connection failed (a refused handshake).
async fn try_channel(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let Some(config) = tls else {
        return endpoint.connect().await;
    };
    let connector = tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("control.test").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint.connect_with_connector(connector).await
}

fn csr(identity: &Identity) -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.0.clone().try_into().unwrap())];
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

/// A leaf of the mesh CA for `identity`, as a proxy holds one.
fn leaf(ca: &Ca, identity: &Identity) -> Leaf {
    let (key, pem) = csr(identity);
    let issued = ca
        .sign(pem.as_bytes(), identity, &ca.join_token(identity))
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (issued.chain, key)
}

fn hello_msg(service: &str, identity: &Identity) -> pb::ProxyMessage {
    pb::ProxyMessage {
        msg: Some(Msg::Hello(pb::Hello {
            service: service.into(),
            namespace: "default".into(),
            workload: format!("{service}-v1"),
            instance: format!("{service}-v1-x"),
            inbound: "127.0.0.1:9".into(),
            admin: "127.0.0.1:9".into(),
            mode: "sidecar".into(),
            identity: identity.0.clone(),
            ..Default::default()
        })),
    }
}

/// Opens a control stream with `hello` and keeps it open (the returned sender) when accepted.
async fn stream(
    channel: Channel,
    hello: pb::ProxyMessage,
) -> Result<tokio::sync::mpsc::Sender<pb::ProxyMessage>, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.unwrap();
    let rsp = DiscoveryClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    // Keep the answer stream alive with the sender: dropping both would deregister.
    tokio::spawn(async move {
        let mut answers = rsp.into_inner();
        while let Ok(Some(_)) = answers.message().await {}
    });
    Ok(tx)
}

fn uri_san(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

fn chains_to(chain: &[CertificateDer<'static>], roots: &[CertificateDer<'static>]) -> bool {
    let anchors: Vec<_> = roots
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).unwrap())
        .collect();
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .is_ok()
}

async fn start(ca: Arc<Ca>) -> (Arc<Registry>, ControlPlane) {
    let registry = Registry::new(model::MeshSpec {
        name: "t".into(),
        ingress: "127.0.0.1:0".parse().unwrap(),
        services: Vec::new(),
        routes: Vec::new(),
        tcp_routes: Vec::new(),
        policies: Vec::new(),
        gateway: Vec::new(),
        security: model::security::SecuritySpec::new(),
        default_retries: None,
        interception: Default::default(),
        outbound_policy: Default::default(),
        outbound_policies: Default::default(),
        egress: Default::default(),
        scope: Default::default(),
    });
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let cp = ControlPlane::start(
        registry.clone(),
        config::Store::default(),
        any,
        any,
        Some(ca),
    )
    .await
    .unwrap();
    (registry, cp)
}

#[tokio::test]
async fn the_listener_presents_the_control_planes_own_certificate_from_the_root_in_force() {
    for intermediate in [false, true] {
        let ca = Arc::new(
            Ca::generate(CaConfig {
                intermediate,
                ..CaConfig::default()
            })
            .unwrap(),
        );
        let (_, cp) = start(ca.clone()).await;
        let recording = Arc::new(Recording::default());
        let tls = client_config(recording.clone(), None);

        // Any RPC will do to finish a handshake: a certificate request with a bad token.
        let certify = |tls: Arc<ClientConfig>| async move {
            let hello = Identity::spiffe("default", "hello");
            let (_, pem) = csr(&hello);
            DiscoveryClient::new(channel(cp.grpc, Some(tls)).await)
                .certify(pb::CertifyRequest {
                    identity: hello.0,
                    token: "guess".into(),
                    csr_pem: pem,
                })
                .await
                .unwrap_err()
                .code()
        };
        assert_eq!(certify(tls.clone()).await, Code::PermissionDenied);
        let first = recording.0.lock().unwrap().clone();
        assert_eq!(
            uri_san(&first[0]),
            [Identity::control_plane("cluster.local").0]
        );
        assert!(chains_to(&first, &ca.bundle()));

        // Another root signs: the next connection gets a certificate of it.
        let old_root = ca.root();
        ca.rotate_root().unwrap();
        assert_eq!(certify(tls).await, Code::PermissionDenied);
        let second = recording.0.lock().unwrap().clone();
        assert_ne!(first[0], second[0]);
        assert!(chains_to(&second, &[ca.root()]));
        assert!(!chains_to(&second, &[old_root]));
        cp.shutdown.cancel();
    }
}

#[tokio::test]
async fn a_stream_opens_only_with_the_certificate_of_the_identity_it_claims() {
    let ca = Arc::new(Ca::generate(CaConfig::default()).unwrap());
    let (registry, cp) = start(ca.clone()).await;
    let hello = Identity::spiffe("default", "hello");
    let tester = Identity::spiffe("default", "tester");
    let rec = Arc::new(Recording::default());

    // Plaintext: refused, with a status that says the control plane speaks TLS.
    let err = stream(channel(cp.grpc, None).await, hello_msg("hello", &hello))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("TLS only"), "{}", err.message());

    // TLS without a client certificate.
    let anonymous = channel(cp.grpc, Some(client_config(rec.clone(), None))).await;
    let err = stream(anonymous, hello_msg("hello", &hello))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A certificate of the mesh CA, but another identity's.
    let as_tester = channel(
        cp.grpc,
        Some(client_config(rec.clone(), Some(leaf(&ca, &tester)))),
    )
    .await;
    let err = stream(as_tester.clone(), hello_msg("hello", &hello))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Its own identity, but another service's name.
    let err = stream(as_tester, hello_msg("hello", &tester))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A certificate of another CA for the right identity fails the handshake.
    let other = Ca::generate(CaConfig::default()).unwrap();
    let foreign = client_config(rec.clone(), Some(leaf(&other, &hello)));
    let refused = try_channel(cp.grpc, Some(foreign)).await;
    let refused = match refused {
        Err(_) => true,
        Ok(ch) => stream(ch, hello_msg("hello", &hello)).await.is_err(),
    };
    assert!(refused, "a certificate of another CA opened a stream");
    assert!(registry.proxies().is_empty(), "{:?}", registry.proxies());

    // The right certificate: registered.
    let as_hello = channel(
        cp.grpc,
        Some(client_config(rec.clone(), Some(leaf(&ca, &hello)))),
    )
    .await;
    let _open = stream(as_hello, hello_msg("hello", &hello)).await.unwrap();
    let proxies = registry.proxies();
    assert_eq!(proxies.len(), 1);
    assert_eq!(proxies[0].node.identity, hello);
    cp.shutdown.cancel();
}

#[tokio::test]
async fn certificates_are_asked_for_over_tls_only() {
    let ca = Arc::new(Ca::generate(CaConfig::default()).unwrap());
    let (_, cp) = start(ca.clone()).await;
    let hello = Identity::spiffe("default", "hello");
    let token = ca.join_token(&hello);
    let request = || {
        let (_, pem) = csr(&hello);
        pb::CertifyRequest {
            identity: hello.0.clone(),
            token: token.clone(),
            csr_pem: pem,
        }
    };
    let err = DiscoveryClient::new(channel(cp.grpc, None).await)
        .certify(request())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // The token was not spent: over TLS it still works, once.
    let tls = client_config(Arc::new(Recording::default()), None);
    let mut client = DiscoveryClient::new(channel(cp.grpc, Some(tls)).await);
    let issued = client.certify(request()).await.unwrap().into_inner();
    assert!(issued.chain_pem.contains("BEGIN CERTIFICATE"));
    let again = client.certify(request()).await.unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied);
    cp.shutdown.cancel();
}
