//! The CA on disk: the directory `Ca::open` keeps the root and the extra trusted roots in
//! (written atomically, the key with mode 0600; at every start the directory must be this
//! user's with mode 0700 and the key theirs with mode 0600), and the CA files given by the
//! user, which are only read.

use super::certs::generate_root;
use super::{Authority, Ca, CaConfig, CaError, ROOT_CERT_FILE, ROOT_KEY_FILE, TRUSTED_ROOTS_FILE};
use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

impl Ca {
    /// The CA kept in `dir`: loads `root.pem`/`root.key` (and `trusted-roots.pem`) when they
    /// exist, otherwise generates a root and writes it there (the key with mode 0600).
    pub fn open(dir: &Path, config: CaConfig) -> Result<Ca, CaError> {
        create_private_dir(dir)?;
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        let root = match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                check_private(&key_path, 0o600)?;
                load_root(&cert_path, &key_path)?
            }
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
}

impl Ca {
    /// The CA whose root is `cert_pem` with `key_pem`, kept by the caller (sealed in a store
    /// shared by control-plane replicas): never written to disk. `source` names where they
    /// came from, for errors.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        source: &Path,
        config: CaConfig,
    ) -> Result<Ca, CaError> {
        let root = root_from_pem(cert_pem, key_pem, source, source)?;
        Ca::assemble(config, None, root, Vec::new())
    }

    /// A new root for `trust_domain`, as PEM (certificate, key), for a caller that keeps it
    /// itself ([`Ca::from_pem`] loads it).
    pub fn new_root_pem(trust_domain: &str) -> Result<(String, String), CaError> {
        let root = generate_root(trust_domain)?;
        Ok((to_pem(&root.cert), root.issuer.key().serialize_pem()))
    }
}

fn load_root(cert_path: &Path, key_path: &Path) -> Result<Authority, CaError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    root_from_pem(&cert_pem, &key_pem, cert_path, key_path)
}

fn root_from_pem(
    cert_pem: &str,
    key_pem: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Authority, CaError> {
    let bad = |path: &Path, reason: String| CaError::BadCaFile {
        path: path.to_path_buf(),
        reason,
    };
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| bad(cert_path, format!("no PEM certificate: {e}")))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| bad(key_path, e.to_string()))?;
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

/// Certificates from PEM (one or more blocks) or a single DER certificate.
pub(super) fn parse_certs(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
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

pub(super) fn to_pem(cert: &CertificateDer<'_>) -> String {
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
    check_private(dir, 0o700)
}

/// Refuses `path` unless this user owns it and nobody else may read or write it (`mode` is
/// what it should be): a CA key others can read signs their certificates, one others can write
/// signs ours. Checked at every start.
fn check_private(path: &Path, mode: u32) -> Result<(), CaError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let me = nix::unistd::getuid().as_raw();
    let why = if meta.uid() != me {
        format!("owned by uid {}, not by you (uid {me})", meta.uid())
    } else if meta.mode() & 0o077 != 0 {
        format!("others have access to it (mode {:o})", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(CaError::Unsafe {
        path: path.to_path_buf(),
        why,
        mode,
    })
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

pub(super) fn write_root(dir: &Path, root: &Authority) -> Result<(), CaError> {
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

pub(super) fn write_trusted(
    dir: &Path,
    trusted: &[CertificateDer<'static>],
) -> Result<(), CaError> {
    let pem: String = trusted.iter().map(|c| to_pem(c)).collect();
    write_atomic(&dir.join(TRUSTED_ROOTS_FILE), pem.as_bytes(), 0o644)
}
