use super::*;
use rcgen::{CertificateParams, DistinguishedName, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::UnixTime;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

fn id(ns: &str, sa: &str) -> Identity {
    Identity::spiffe(ns, sa)
}

/// A key and a CSR asking for `sans` (URIs), as a proxy makes them.
fn csr(sans: &[&str]) -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI((*s).try_into().unwrap()))
        .collect();
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

fn issue(ca: &Ca, identity: &Identity) -> Issued {
    let token = ca.join_token(identity);
    let (_, pem) = csr(&[&identity.0]);
    ca.sign(pem.as_bytes(), identity, &token).unwrap()
}

fn verify_at(
    chain: &[CertificateDer<'static>],
    bundle: &[CertificateDer<'static>],
    usage: webpki::KeyUsage,
    time: UnixTime,
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = bundle
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).unwrap())
        .collect();
    let leaf = webpki::EndEntityCert::try_from(&chain[0])?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        time,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

fn verify(
    chain: &[CertificateDer<'static>],
    bundle: &[CertificateDer<'static>],
) -> Result<(), webpki::Error> {
    verify_at(
        chain,
        bundle,
        webpki::KeyUsage::server_auth(),
        UnixTime::now(),
    )?;
    verify_at(
        chain,
        bundle,
        webpki::KeyUsage::client_auth(),
        UnixTime::now(),
    )
}

fn parse<'a>(der: &'a CertificateDer<'a>) -> X509Certificate<'a> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(uri) => uri.to_string(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn open_generates_a_root_keeps_its_key_private_and_reloads_it() {
    let dir = private_dir();
    let path = dir.path().join("ca");
    let ca = Ca::open(&path, CaConfig::default()).unwrap();
    let key_mode = fs::metadata(path.join(ROOT_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(path.join(ROOT_CERT_FILE).exists());
    let root = parse(&ca.root()).is_ca();
    assert!(root);

    let leaf = issue(&ca, &id("default", "hello"));
    let reopened = Ca::open(&path, CaConfig::default()).unwrap();
    assert_eq!(reopened.bundle(), ca.bundle());
    // The reloaded root signs leaves that chain to the same root, and older leaves still verify.
    let again = issue(&reopened, &id("default", "hello"));
    verify(&again.chain, &ca.bundle()).unwrap();
    verify(&leaf.chain, &reopened.bundle()).unwrap();
}

#[test]
fn a_ca_dir_with_only_half_a_root_is_refused() {
    let dir = private_dir();
    Ca::open(dir.path(), CaConfig::default()).unwrap();
    fs::remove_file(dir.path().join(ROOT_KEY_FILE)).unwrap();
    let err = Ca::open(dir.path(), CaConfig::default()).unwrap_err();
    assert!(
        matches!(err, CaError::IncompleteDir { missing, .. } if missing == ROOT_KEY_FILE),
        "{err}"
    );
}

#[test]
fn from_files_loads_a_given_root() {
    let dir = private_dir();
    let made = Ca::open(dir.path(), CaConfig::default()).unwrap();
    let ca = Ca::from_files(
        &dir.path().join(ROOT_CERT_FILE),
        &dir.path().join(ROOT_KEY_FILE),
        CaConfig::default(),
    )
    .unwrap();
    assert_eq!(ca.bundle(), made.bundle());
    let leaf = issue(&ca, &id("default", "hello"));
    verify(&leaf.chain, &made.bundle()).unwrap();
    // Rotating a CA given by files never rewrites them.
    let before = fs::read(dir.path().join(ROOT_CERT_FILE)).unwrap();
    ca.rotate_root().unwrap();
    assert_eq!(fs::read(dir.path().join(ROOT_CERT_FILE)).unwrap(), before);
}

#[test]
fn from_files_refuses_a_key_of_another_cert_and_a_non_ca_cert() {
    let a = private_dir();
    let b = private_dir();
    Ca::open(a.path(), CaConfig::default()).unwrap();
    Ca::open(b.path(), CaConfig::default()).unwrap();
    let err = Ca::from_files(
        &a.path().join(ROOT_CERT_FILE),
        &b.path().join(ROOT_KEY_FILE),
        CaConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");

    // A leaf is not a CA.
    let ca = Ca::open(a.path(), CaConfig::default()).unwrap();
    let identity = id("default", "hello");
    let token = ca.join_token(&identity);
    let (key, pem) = csr(&[&identity.0]);
    let leaf = ca.sign(pem.as_bytes(), &identity, &token).unwrap();
    let leaf_path = a.path().join("leaf.pem");
    let key_path = a.path().join("leaf.key");
    fs::write(&leaf_path, leaf.chain_pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    let err = Ca::from_files(&leaf_path, &key_path, CaConfig::default()).unwrap_err();
    assert!(matches!(err, CaError::BadCaFile { .. }), "{err}");
}

#[test]
fn sign_issues_a_24h_spiffe_leaf_for_both_tls_sides() {
    let ca = Ca::generate(CaConfig::default()).unwrap();
    let identity = id("shop", "cart");
    let before = SystemTime::now();
    let issued = issue(&ca, &identity);
    assert_eq!(issued.chain.len(), 1);
    assert_eq!(issued.identity, identity);
    verify(&issued.chain, &ca.bundle()).unwrap();

    let leaf = parse(&issued.chain[0]);
    assert_eq!(
        uri_sans(&leaf),
        vec!["spiffe://cluster.local/ns/shop/sa/cart"]
    );
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign() && !ku.key_encipherment());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    // With no subject, the SAN extension is critical (RFC 5280 §4.2.1.6).
    assert!(leaf.subject_alternative_name().unwrap().unwrap().critical);

    // Backdated by a minute, valid for 24 h, and `Issued` says the same as the certificate.
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    assert_eq!(nb, secs(issued.not_before));
    assert_eq!(na, secs(issued.not_after));
    let now = secs(before);
    assert!(
        (now - 61..=now - 59).contains(&nb),
        "not_before {nb}, now {now}"
    );
    let day = 24 * 3600;
    assert!(
        (now + day - 1..=now + day + 1).contains(&na),
        "not_after {na}"
    );
}

#[test]
fn a_leaf_can_live_a_few_seconds_for_rotation_tests() {
    let config = CaConfig {
        leaf_lifetime: Duration::from_secs(5),
        ..CaConfig::default()
    };
    let ca = Ca::generate(config).unwrap();
    let issued = issue(&ca, &id("default", "hello"));
    let leaf = parse(&issued.chain[0]);
    // The backdating is capped at the lifetime: 5 s in the past, 5 s ahead.
    assert_eq!(
        leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp(),
        10
    );
    let later = UnixTime::since_unix_epoch(Duration::from_secs(secs(issued.not_after) as u64 + 1));
    let err = verify_at(
        &issued.chain,
        &ca.bundle(),
        webpki::KeyUsage::server_auth(),
        later,
    )
    .unwrap_err();
    assert!(matches!(err, webpki::Error::CertExpired { .. }), "{err:?}");
}

#[test]
fn an_intermediate_chains_leaf_to_intermediate_to_root() {
    let config = CaConfig {
        intermediate: true,
        ..CaConfig::default()
    };
    let ca = Ca::generate(config).unwrap();
    let issued = issue(&ca, &id("default", "hello"));
    assert_eq!(issued.chain.len(), 2);
    assert_eq!(ca.bundle().len(), 1);
    let leaf = parse(&issued.chain[0]);
    let intermediate = parse(&issued.chain[1]);
    let root = ca.root();
    let root = parse(&root);
    assert!(intermediate.is_ca());
    assert_eq!(leaf.issuer(), intermediate.subject());
    assert_eq!(intermediate.issuer(), root.subject());
    verify(&issued.chain, &ca.bundle()).unwrap();
    // Without the intermediate the leaf does not chain to the root.
    let err = verify(&issued.chain[..1], &ca.bundle()).unwrap_err();
    assert!(matches!(err, webpki::Error::UnknownIssuer), "{err:?}");
}

#[test]
fn a_join_token_is_spent_once_and_bound_to_its_identity() {
    let ca = Ca::generate(CaConfig::default()).unwrap();
    let hello = id("default", "hello");
    let other = id("default", "other");
    let (_, hello_csr) = csr(&[&hello.0]);
    let (_, other_csr) = csr(&[&other.0]);

    let err = ca
        .sign(hello_csr.as_bytes(), &hello, "not-a-token")
        .unwrap_err();
    assert!(matches!(err, CaError::UnknownToken), "{err}");

    let token = ca.join_token(&hello);
    let err = ca.sign(other_csr.as_bytes(), &other, &token).unwrap_err();
    assert!(
        matches!(&err, CaError::TokenIdentityMismatch { token_for, requested }
            if *token_for == hello && *requested == other),
        "{err}"
    );
    // A refused request leaves the token unspent for its rightful owner…
    let issued = ca.sign(hello_csr.as_bytes(), &hello, &token).unwrap();
    // …which spends it.
    let err = ca.sign(hello_csr.as_bytes(), &hello, &token).unwrap_err();
    assert!(matches!(err, CaError::UnknownToken), "{err}");

    // The renewal token works once, for the same identity.
    let (_, renewed_csr) = csr(&[&hello.0]);
    let renewed = ca
        .sign(renewed_csr.as_bytes(), &hello, &issued.renewal_token)
        .unwrap();
    assert_ne!(renewed.renewal_token, issued.renewal_token);
    let err = ca
        .sign(renewed_csr.as_bytes(), &hello, &issued.renewal_token)
        .unwrap_err();
    assert!(matches!(err, CaError::UnknownToken), "{err}");
}

#[test]
fn a_renewal_token_dies_with_its_leaf() {
    // A leaf with no lifetime has expired as soon as it is issued, and so has its renewal token.
    let ca = Ca::generate(CaConfig {
        leaf_lifetime: Duration::ZERO,
        ..CaConfig::default()
    })
    .unwrap();
    let hello = id("default", "hello");
    let issued = issue(&ca, &hello);
    let (_, pem) = csr(&[&hello.0]);
    let err = ca
        .sign(pem.as_bytes(), &hello, &issued.renewal_token)
        .unwrap_err();
    assert!(matches!(err, CaError::UnknownToken), "{err}");
    assert_eq!(lock(&ca.tokens).len(), 0);
}

#[test]
fn the_csr_must_ask_for_exactly_the_identity() {
    let ca = Ca::generate(CaConfig::default()).unwrap();
    let hello = id("default", "hello");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "another identity",
            vec!["spiffe://cluster.local/ns/default/sa/admin"],
        ),
        ("no SAN", vec![]),
        (
            "two SANs",
            vec![&hello.0, "spiffe://cluster.local/ns/default/sa/admin"],
        ),
    ];
    for (case, sans) in cases {
        let token = ca.join_token(&hello);
        let (_, pem) = csr(&sans);
        let err = ca.sign(pem.as_bytes(), &hello, &token).unwrap_err();
        assert!(matches!(err, CaError::CsrSan { .. }), "{case}: {err}");
    }

    // A DNS SAN spelling the identity is not the URI SAN.
    let token = ca.join_token(&hello);
    let key = KeyPair::generate().unwrap();
    let pem = CertificateParams::new(vec!["hello.default.svc".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let err = ca.sign(pem.as_bytes(), &hello, &token).unwrap_err();
    assert!(
        matches!(&err, CaError::CsrSan { found, .. } if found == &["DNS:hello.default.svc"]),
        "{err}"
    );
}

#[test]
fn a_csr_in_der_is_accepted_and_a_tampered_one_is_not() {
    let ca = Ca::generate(CaConfig::default()).unwrap();
    let hello = id("default", "hello");
    let (_, pem) = csr(&[&hello.0]);
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();

    let token = ca.join_token(&hello);
    let issued = ca.sign(&der, &hello, &token).unwrap();
    verify(&issued.chain, &ca.bundle()).unwrap();

    // Flip a bit of the signature (the last bytes): the requester no longer proves it holds the key.
    let mut tampered = der.to_vec();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    let token = ca.join_token(&hello);
    let err = ca.sign(&tampered, &hello, &token).unwrap_err();
    assert!(matches!(err, CaError::Csr(_)), "{err}");
}

#[test]
fn only_spiffe_ids_of_the_trust_domain_are_signed() {
    let ca = Ca::generate(CaConfig::default()).unwrap();
    let evil = Identity("spiffe://evil.local/ns/default/sa/hello".into());
    let token = ca.join_token(&evil);
    let (_, pem) = csr(&[&evil.0]);
    let err = ca.sign(pem.as_bytes(), &evil, &token).unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err}");

    for bad in [
        "hello",
        "spiffe://cluster.local",
        "spiffe://cluster.local/ns/default",
        "spiffe://cluster.local/ns/default/sa/",
        "spiffe://cluster.local/ns/default/sa/hello/extra",
        "spiffe://cluster.local/sa/hello/ns/default",
        "spiffe://cluster.local/ns/de fault/sa/hello",
        "https://cluster.local/ns/default/sa/hello",
        "spiffe://cluster.local/ns/default/sa/web/../api",
        "spiffe://cluster.local/ns/../sa/api",
        "spiffe://cluster.local/ns/default/sa/.",
    ] {
        let identity = Identity(bad.into());
        let token = ca.join_token(&identity);
        let err = ca.sign(b"unused", &identity, &token).unwrap_err();
        assert!(matches!(err, CaError::InvalidIdentity(_)), "{bad}: {err}");
    }

    // The control plane's own identity (and its namespace) is nobody else's.
    for reserved in [
        Identity::control_plane("cluster.local"),
        id("weft-system", "hello"),
    ] {
        let token = ca.join_token(&reserved);
        let (_, pem) = csr(&[&reserved.0]);
        let err = ca.sign(pem.as_bytes(), &reserved, &token).unwrap_err();
        assert!(matches!(err, CaError::Reserved(_)), "{reserved}: {err}");
    }
    let own = ca.control_plane_cert().unwrap();
    assert_eq!(
        uri_sans(&parse(&own.chain[0])),
        vec![Identity::control_plane("cluster.local").0]
    );
    verify(&own.chain, &ca.bundle()).unwrap();

    // Another trust domain, configured.
    let ca = Ca::generate(CaConfig {
        trust_domain: "prod.example".into(),
        ..CaConfig::default()
    })
    .unwrap();
    let identity = Identity("spiffe://prod.example/ns/default/sa/hello".into());
    let issued = issue(&ca, &identity);
    assert_eq!(uri_sans(&parse(&issued.chain[0])), vec![identity.0.clone()]);
}

#[test]
fn after_a_root_rotation_the_bundle_accepts_leaves_of_both_roots() {
    for intermediate in [false, true] {
        let dir = private_dir();
        let config = CaConfig {
            intermediate,
            ..CaConfig::default()
        };
        let ca = Ca::open(dir.path(), config.clone()).unwrap();
        let old_root = ca.root();
        let old = issue(&ca, &id("default", "hello"));

        ca.rotate_root().unwrap();
        let new_root = ca.root();
        assert_ne!(old_root, new_root);
        let new = issue(&ca, &id("default", "world"));
        let bundle = ca.bundle();
        assert_eq!(bundle, vec![new_root.clone(), old_root.clone()]);
        verify(&old.chain, &bundle).unwrap();
        verify(&new.chain, &bundle).unwrap();
        // Each leaf chains to its own root only.
        assert!(verify(&new.chain, std::slice::from_ref(&old_root)).is_err());
        assert!(verify(&old.chain, std::slice::from_ref(&new_root)).is_err());

        // The two-root bundle survives a restart.
        let reopened = Ca::open(dir.path(), config.clone()).unwrap();
        assert_eq!(reopened.bundle(), bundle);

        // Once every proxy renewed, the old root goes.
        ca.retire_roots().unwrap();
        assert_eq!(ca.bundle(), vec![new_root.clone()]);
        assert!(verify(&old.chain, &ca.bundle()).is_err());
        verify(&new.chain, &ca.bundle()).unwrap();
        let reopened = Ca::open(dir.path(), config).unwrap();
        assert_eq!(reopened.bundle(), vec![new_root]);
    }
}

#[test]
fn an_extra_trusted_root_joins_the_bundle() {
    let ca = Ca::generate(CaConfig::default()).unwrap();
    let next = Ca::generate(CaConfig::default()).unwrap();
    let next_leaf = issue(&next, &id("default", "hello"));
    assert!(verify(&next_leaf.chain, &ca.bundle()).is_err());

    let pem = next.bundle_pem();
    ca.trust_root(pem.as_bytes()).unwrap();
    // Adding it twice changes nothing.
    ca.trust_root(&next.root()).unwrap();
    assert_eq!(ca.bundle(), vec![ca.root(), next.root()]);
    verify(&next_leaf.chain, &ca.bundle()).unwrap();

    let err = ca.trust_root(next_leaf.chain_pem().as_bytes()).unwrap_err();
    assert!(matches!(err, CaError::BadRoot(_)), "{err}");
}

#[test]
fn a_prepared_root_is_trusted_before_it_signs() {
    let dir = private_dir();
    let ca = Ca::open(dir.path(), CaConfig::default()).unwrap();
    let old = ca.root();
    let me = id("default", "hello");
    assert!(ca.prepare_root().unwrap());
    assert!(!ca.prepare_root().unwrap(), "one next root at a time");
    assert_eq!(ca.bundle().len(), 2, "the next root is trusted at once");
    let leaf = issue(&ca, &me);
    assert_eq!(
        parse(&leaf.chain[0]).issuer(),
        parse(&old).subject(),
        "the old root still signs"
    );
    assert!(ca.activate_root().unwrap());
    assert!(!ca.activate_root().unwrap());
    let new = ca.root();
    assert_ne!(new, old);
    let leaf = issue(&ca, &me);
    assert_eq!(parse(&leaf.chain[0]).issuer(), parse(&new).subject());
    assert_eq!(
        ca.bundle().len(),
        2,
        "the old root stays trusted until retired"
    );
    // Kept on disk: a restarted control plane trusts both and signs with the new one.
    let reopened = Ca::open(dir.path(), CaConfig::default()).unwrap();
    assert_eq!(reopened.root(), new);
    assert_eq!(reopened.bundle().len(), 2);
    ca.retire_roots().unwrap();
    assert_eq!(ca.bundle(), vec![new]);
}

/// A scratch directory only this user may use, as a CA directory must be.
fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn a_join_token_dies_after_its_lifetime() {
    let ca = Ca::generate(CaConfig {
        join_token_lifetime: Duration::ZERO,
        ..CaConfig::default()
    })
    .unwrap();
    let hello = id("default", "hello");
    let token = ca.join_token(&hello);
    let (_, pem) = csr(&[&hello.0]);
    let err = ca.sign(pem.as_bytes(), &hello, &token).unwrap_err();
    assert!(matches!(err, CaError::UnknownToken), "{err}");
}

#[test]
fn operator_certificates_name_a_reserved_identity_for_their_lifetime() {
    let ca = Ca::generate(CaConfig::default()).unwrap();
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    let cert = ca.operator_cert("alice", week).unwrap();
    verify(&cert.chain, &ca.bundle()).unwrap();
    let leaf = parse(&cert.chain[0]);
    let uri = "spiffe://cluster.local/ns/weft-system/sa/operator-alice";
    assert_eq!(uri_sans(&leaf), vec![uri]);
    assert_eq!(
        Identity(uri.into()).operator_name("cluster.local"),
        Some("alice")
    );
    let life = leaf.validity().not_after.timestamp() - secs(SystemTime::now());
    assert!((week.as_secs() as i64 - 5..=week.as_secs() as i64 + 5).contains(&life));
    // The PEM forms parse back to the same key and chain.
    assert!(cert.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(cert.chain_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    // A name that is not one account segment, or a proxy asking for the identity: refused.
    for bad in ["", "a/b", "a b", "..", &"x".repeat(64)] {
        assert!(ca.operator_cert(bad, week).is_err(), "{bad:?}");
    }
    let operator = Identity::operator("cluster.local", "alice");
    assert!(matches!(
        ca.check_identity(&operator),
        Err(CaError::Reserved(_))
    ));
    // Another trust domain's operator is not this one's.
    assert_eq!(operator.operator_name("example.org"), None);
    assert_eq!(
        id("default", "operator-alice").operator_name("cluster.local"),
        None
    );
}
