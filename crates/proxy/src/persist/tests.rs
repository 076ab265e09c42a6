//! Unit tests: atomic writes, the permission checks, and what is read back.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::time::Duration;
use time::OffsetDateTime;

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn an_atomic_write_replaces_the_file_whole_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.pb");
    write_atomic(&path, b"first", FILE_MODE).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"first");
    assert_eq!(mode_of(&path), 0o600);
    // A temporary file left by a writer that died is no obstacle.
    fs::write(dir.path().join("snapshot.pb.tmp"), b"half a sna").unwrap();
    write_atomic(&path, b"second", FILE_MODE).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second");
    assert_eq!(mode_of(&path), 0o600);
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["snapshot.pb"], "no temporary file is left behind");
}

#[test]
fn a_reader_sees_one_whole_version_or_the_other_never_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.pb");
    // Large enough that a plain rewrite would be seen half done.
    let (a, b) = (vec![b'a'; 1 << 20], vec![b'b'; 1 << 20]);
    write_atomic(&path, &a, FILE_MODE).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop, a, b) = (path.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = fs::read(&path).unwrap();
                assert!(got == a || got == b, "a torn read of {} bytes", got.len());
                reads += 1;
            }
            reads
        })
    };
    for i in 0..40 {
        write_atomic(&path, if i % 2 == 0 { &b } else { &a }, FILE_MODE).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn a_failed_write_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.pb");
    write_atomic(&path, b"good", FILE_MODE).unwrap();
    // The temporary file's name is taken by a directory: the write cannot happen.
    fs::create_dir(dir.path().join("snapshot.pb.tmp")).unwrap();
    let err = write_atomic(&path, b"newer", FILE_MODE).unwrap_err();
    assert!(matches!(err, PersistError::Io { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"good");
}

#[test]
fn the_state_directory_is_created_0700_and_refused_when_others_may_enter_it() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("a/b/state");
    create_private_dir(&dir).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    // Opening it again is fine.
    create_private_dir(&dir).unwrap();

    for mode in [0o750, 0o705, 0o770, 0o755, 0o777] {
        chmod(&dir, mode);
        let err = create_private_dir(&dir).unwrap_err();
        let said = err.to_string();
        assert!(
            matches!(err, PersistError::Unsafe { .. }),
            "{mode:o}: {said}"
        );
        assert!(said.contains(&dir.display().to_string()), "{said}");
        assert!(said.contains("chmod 700"), "{said}");
        assert!(Persist::open(&dir).is_err(), "{mode:o}");
    }
    chmod(&dir, 0o700);
    Persist::open(&dir).unwrap();

    // A symbolic link is judged by where it leads.
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    create_private_dir(&link).unwrap();
    chmod(&dir, 0o755);
    let said = create_private_dir(&link).unwrap_err().to_string();
    assert!(said.contains("others have access"), "{said}");
}

#[test]
fn files_others_may_read_are_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p = Persist::open(&state).unwrap();
    write_atomic(
        &p.snapshot_path(),
        &pb::Snapshot::default().encode_to_vec(),
        0o644,
    )
    .unwrap();
    let err = p.load_snapshot().unwrap_err();
    assert!(matches!(err, PersistError::Unsafe { .. }), "{err}");
    assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
    chmod(&p.snapshot_path(), 0o600);
    assert!(p.load_snapshot().unwrap().is_some());

    fs::write(p.credentials_path(), b"{}").unwrap();
    chmod(&p.credentials_path(), 0o640);
    let err = p.load_credentials().unwrap_err();
    assert!(matches!(err, PersistError::Unsafe { .. }), "{err}");
}

#[test]
fn nothing_kept_reads_as_none_and_garbage_as_corrupt_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = Persist::open(&dir.path().join("state")).unwrap();
    assert!(p.load_snapshot().unwrap().is_none());
    assert!(p.load_credentials().unwrap().is_none());

    write_atomic(&p.snapshot_path(), b"\xff\xff\xff not protobuf", FILE_MODE).unwrap();
    let err = p.load_snapshot().unwrap_err();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&p.snapshot_path().display().to_string()),
        "{err}"
    );
    write_atomic(&p.credentials_path(), b"{\"identity\": 3", FILE_MODE).unwrap();
    let err = p.load_credentials().unwrap_err();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
}

#[test]
fn a_saved_snapshot_reads_back_as_it_was_with_its_trust_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let p = Persist::open(&dir.path().join("state")).unwrap();
    let wire = |version| pb::Snapshot {
        version,
        trust_bundle_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        ca_generation: 3,
        outbound_policy: "REGISTRY_ONLY".into(),
        ..Default::default()
    };
    // Many in a row: the writer may skip to the latest, and ends on it.
    for v in 1..=50 {
        p.save_snapshot(wire(v).encode_to_vec());
    }
    assert!(p.flush(Duration::from_secs(10)));
    assert_eq!(p.load_snapshot().unwrap().unwrap(), wire(50));
    assert_eq!(mode_of(&p.snapshot_path()), 0o600);
}

/// A root and a leaf for `identity` valid from `from` to `to` (offsets from now), as saved
/// credentials.
fn saved(identity: &str, from: time::Duration, to: time::Duration) -> SavedCredentials {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let (key, _) = crate::tls::csr(&Identity(identity.into())).unwrap();
    let now = OffsetDateTime::now_utc();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.subject_alt_names = vec![SanType::URI(identity.try_into().unwrap())];
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.not_before = now + from;
    leaf.not_after = now + to;
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    SavedCredentials {
        identity: identity.into(),
        chain_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
        bundle_pem: root_cert.pem(),
        renewal_token: Some("next-one".into()),
        generation: 2,
    }
}

const HELLO: &str = "spiffe://cluster.local/ns/default/sa/hello";

#[test]
fn saved_credentials_come_back_only_when_valid_and_ours() {
    let dir = tempfile::tempdir().unwrap();
    let p = Persist::open(&dir.path().join("state")).unwrap();
    let good = saved(HELLO, -time::Duration::minutes(1), time::Duration::hours(1));
    p.save_credentials(good.clone());
    assert!(p.flush(Duration::from_secs(10)));
    assert_eq!(mode_of(&p.credentials_path()), 0o600);
    let back = p.load_credentials().unwrap().unwrap();
    assert_eq!(back, good);
    let restored = back.restore(&Identity(HELLO.into())).unwrap();
    assert_eq!(restored.credentials.identity().0, HELLO);
    assert_eq!(restored.renewal_token.as_deref(), Some("next-one"));
    assert_eq!(restored.generation, 2);

    // Another proxy's.
    let other = Identity("spiffe://cluster.local/ns/default/sa/client".into());
    let why = good.restore(&other).err().unwrap();
    assert!(why.contains("hello"), "{why}");
    // Expired.
    let expired = saved(HELLO, -time::Duration::hours(2), -time::Duration::hours(1));
    let why = expired.restore(&Identity(HELLO.into())).err().unwrap();
    assert!(why.contains("expired"), "{why}");
    // A key that is not the leaf's.
    let mut swapped = good.clone();
    swapped.key_pem = KeyPair::generate().unwrap().serialize_pem();
    assert!(swapped.restore(&Identity(HELLO.into())).is_err());
    // A leaf whose SAN is not the identity it claims.
    let mut lying = saved(
        "spiffe://cluster.local/ns/default/sa/client",
        -time::Duration::minutes(1),
        time::Duration::hours(1),
    );
    lying.identity = HELLO.into();
    assert!(lying.restore(&Identity(HELLO.into())).is_err());
}
