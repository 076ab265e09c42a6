//! The proxy's state on disk (`--state-dir`): the last snapshot it applied and its credentials,
//! so that a proxy restarted while its control plane is away serves again at once, from what it
//! had, instead of waiting for a control plane and a join token it cannot reuse.
//!
//! The directory is the proxy's own (created with mode 0700, refused when others may enter it,
//! as the CA's directory is); each file is written whole through a temporary file and a rename
//! with mode 0600, so a crash leaves the previous version or the next one, never half of one.
//! Writes happen on a thread of their own ([`Persist::save_snapshot`] and
//! [`Persist::save_credentials`] only hand the bytes over; the latest of each kind wins), so
//! neither the data plane nor the control stream waits for the disk.
//!
//! What is read back is checked as if it had just arrived: the snapshot by the same `TryFrom`
//! as a pushed one (by the caller, which applies it), the credentials by [`Credentials::new`]
//! (the key fits the leaf, the chain verifies against the bundle now, the SPIFFE ID is the
//! proxy's). A file that fails is reported by the caller and ignored.

use crate::tls::Credentials;
use api::pb;
use model::Identity;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

/// The last snapshot applied, in its wire form (`api::pb::Snapshot`, protobuf), with the trust
/// bundle and CA generation that came with it.
pub const SNAPSHOT_FILE: &str = "snapshot.pb";
/// The proxy's key, certificate chain, trust bundle and renewal token (JSON).
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// The state directory's mode: the proxy's user alone may list, read or write it.
pub const DIR_MODE: u32 = 0o700;
/// Every file's mode: one of them holds a private key.
pub const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {why}; it holds the proxy's private key, so it must be its user's alone (run `chmod {mode:o}` on it, or use another --state-dir)", path.display())]
    Unsafe {
        path: PathBuf,
        why: String,
        /// The mode it should have.
        mode: u32,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The credentials as they are kept: everything [`Credentials::new`] needs, the token of the
/// next renewal, and the CA generation that signed the leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCredentials {
    pub identity: String,
    /// Leaf first.
    pub chain_pem: String,
    /// PKCS#8.
    pub key_pem: String,
    /// The roots the leaf was verified against when it was issued.
    pub bundle_pem: String,
    /// The one-time token for the next renewal, when the CA gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_token: Option<String>,
    /// The CA generation that signed the leaf (0: unknown).
    #[serde(default)]
    pub generation: u64,
}

/// Credentials read back and found good.
pub struct Restored {
    pub credentials: Arc<Credentials>,
    pub renewal_token: Option<String>,
    pub generation: u64,
}

impl SavedCredentials {
    /// The credentials, if they are `identity`'s and usable now: the key fits the leaf, the
    /// chain verifies against the bundle (so the leaf is within its validity) and its SPIFFE ID
    /// is `identity`. `Err`: why not.
    pub fn restore(&self, identity: &Identity) -> Result<Restored, String> {
        if self.identity != identity.0 {
            return Err(format!(
                "they are {}'s, and this proxy is {identity}",
                self.identity
            ));
        }
        let key = rcgen::KeyPair::from_pem(&self.key_pem).map_err(|e| format!("the key: {e}"))?;
        let chain = certs(&self.chain_pem).map_err(|e| format!("the chain: {e}"))?;
        let bundle = certs(&self.bundle_pem).map_err(|e| format!("the trust bundle: {e}"))?;
        let credentials =
            Credentials::new(identity, &key, chain, bundle).map_err(|e| e.to_string())?;
        Ok(Restored {
            credentials,
            renewal_token: self.renewal_token.clone().filter(|t| !t.is_empty()),
            generation: self.generation,
        })
    }
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let out: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let out = out.map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(out)
}

/// One write the writer thread has to do; of each kind, only the latest matters.
enum Job {
    Snapshot(Vec<u8>),
    Credentials(SavedCredentials),
    /// Answered once every job sent before it is written.
    Flush(mpsc::Sender<()>),
}

/// A proxy's state directory, and the thread that writes into it.
pub struct Persist {
    dir: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist").field("dir", &self.dir).finish()
    }
}

impl Persist {
    /// Opens `dir` (created with mode 0700 when missing; refused unless it is this user's and
    /// closed to everyone else) and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Arc<Persist>, PersistError> {
        create_private_dir(dir)?;
        let (tx, rx) = mpsc::channel();
        let writer_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("weft-persist".into())
            .spawn(move || write_jobs(&writer_dir, rx))
            .map_err(|source| PersistError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Arc::new(Persist {
            dir: dir.to_path_buf(),
            jobs: tx,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    pub fn credentials_path(&self) -> PathBuf {
        self.dir.join(CREDENTIALS_FILE)
    }

    /// Keeps `encoded` (the protobuf encoding of an `api::pb::Snapshot` just applied, with its
    /// trust bundle and CA generation) as the snapshot to start from next time. Written in the
    /// background.
    pub fn save_snapshot(&self, encoded: Vec<u8>) {
        self.send(Job::Snapshot(encoded));
    }

    /// Keeps `saved` as the credentials to start with next time. Written in the background.
    pub fn save_credentials(&self, saved: SavedCredentials) {
        self.send(Job::Credentials(saved));
    }

    /// Waits (at most `within`) until everything handed over so far is written; `false`: it
    /// was not in time.
    pub fn flush(&self, within: std::time::Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Flush(tx));
        rx.recv_timeout(within).is_ok()
    }

    fn send(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::error!(dir = %self.dir.display(), "the state directory's writer is gone; not saving");
        }
    }

    /// The snapshot kept last, decoded from protobuf (`Ok(None)`: there is none). Whether it is
    /// a valid snapshot is for the caller to check, as it checks a pushed one.
    pub fn load_snapshot(&self) -> Result<Option<pb::Snapshot>, PersistError> {
        let path = self.snapshot_path();
        let Some(bytes) = read_private(&path)? else {
            return Ok(None);
        };
        pb::Snapshot::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| PersistError::Corrupt {
                path,
                reason: format!("not a snapshot: {e}"),
            })
    }

    /// The credentials kept last, as they were written (`Ok(None)`: there are none).
    pub fn load_credentials(&self) -> Result<Option<SavedCredentials>, PersistError> {
        let path = self.credentials_path();
        let Some(bytes) = read_private(&path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PersistError::Corrupt {
                path,
                reason: format!("not the credentials weft keeps: {e}"),
            })
    }
}

/// The writer thread: the latest job of each kind, until every sender is gone.
fn write_jobs(dir: &Path, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let (mut snapshot, mut credentials, mut flushed) = (None, None, Vec::new());
        let mut take = |job| match job {
            Job::Snapshot(b) => snapshot = Some(b),
            Job::Credentials(c) => credentials = Some(c),
            Job::Flush(done) => flushed.push(done),
        };
        take(first);
        while let Ok(job) = jobs.try_recv() {
            take(job);
        }
        // The credentials first: the renewal token they carry is the only one left.
        if let Some(c) = credentials {
            let path = dir.join(CREDENTIALS_FILE);
            let json = serde_json::to_vec_pretty(&c).unwrap_or_default();
            match write_atomic(&path, &json, FILE_MODE) {
                Ok(()) => tracing::debug!(path = %path.display(), "credentials saved"),
                Err(e) => tracing::error!(error = %e, "credentials not saved"),
            }
        }
        if let Some(bytes) = snapshot {
            let path = dir.join(SNAPSHOT_FILE);
            match write_atomic(&path, &bytes, FILE_MODE) {
                Ok(()) => tracing::debug!(path = %path.display(), "snapshot saved"),
                Err(e) => tracing::error!(error = %e, "snapshot not saved"),
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// `path`'s bytes, if it exists and is this user's alone.
fn read_private(path: &Path) -> Result<Option<Vec<u8>>, PersistError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => {}
    }
    check_private(path, FILE_MODE)?;
    fs::read(path).map(Some).map_err(|source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` with mode 0700 when it does not exist, then checks it as
/// [`check_private`] does.
pub fn create_private_dir(dir: &Path) -> Result<(), PersistError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| PersistError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    check_private(dir, DIR_MODE)
}

/// Refuses `path` (what it points to, for a symbolic link) unless it is this user's and nobody
/// else may read, write or enter it (`mode` is what it should be): a state directory others may
/// write could hand the proxy their snapshot, one they may read gives away its key.
pub fn check_private(path: &Path, mode: u32) -> Result<(), PersistError> {
    let meta = fs::metadata(path).map_err(|source| PersistError::Io {
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
    Err(PersistError::Unsafe {
        path: path.to_path_buf(),
        why,
        mode,
    })
}

/// Writes `contents` to `path` through a temporary file in the same directory and a rename, so
/// that `path` always holds a whole version; `mode` applies from the first byte.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
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
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        // `mode` is filtered by the umask; set it exactly.
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename itself survives a crash of the machine once the directory is synced.
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
