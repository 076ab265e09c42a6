//! Where running meshes record themselves, so that `weft status`, `weft exec` and later commands
//! find a mesh without flags: one JSON file per mesh under `$WEFT_HOME/meshes/` (default
//! `$XDG_RUNTIME_DIR/weft`, else `/tmp/weft-$UID`). And contexts, as kubectl has them: a mesh
//! whose control plane runs elsewhere (its API addresses and the admin credential, a copy kept
//! with mode 0600), under `$WEFT_HOME/contexts/NAME.json`, chosen with `weft --context NAME` or
//! `WEFT_CONTEXT`.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeshRecord {
    pub name: String,
    pub pid: u32,
    pub control: String,
    pub api: String,
    pub ingress: String,
    /// The file (mode 0600) holding the API's admin credential, which the CLI sends as
    /// `Authorization: Bearer`; absent for a control plane whose API needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// The mesh's trust bundle (PEM), when its API speaks TLS to other machines: the CLI then
    /// speaks TLS to it too, verifying the control plane with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Where the web dashboard has a listener of its own (`--dashboard`); it is also under the
    /// API's `/dashboard/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
}

/// Keeps mesh `name`'s trust bundle beside its record (`ca_file`), replacing an older one.
pub fn write_bundle(name: &str, pem: &str) -> Result<PathBuf, FindError> {
    let d = private_dir(dir())?;
    let path = d.join(format!("{name}.ca.pem"));
    let tmp = d.join(format!(".{name}.ca.pem.{}", std::process::id()));
    std::fs::write(&tmp, pem).map_err(|e| FindError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| FindError::Io(path.clone(), e))?;
    Ok(path)
}

/// `d`, created (with its parents) if missing, only this user may enter it.
fn private_dir(d: PathBuf) -> Result<PathBuf, FindError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .map_err(|e| FindError::Io(d.clone(), e))?;
    Ok(d)
}

/// A fresh admin credential for a control plane's API: 32 random bytes, hex.
pub fn new_admin_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The admin credential of `rec`'s API, if it needs one and this user can read it.
pub fn admin_token(rec: &MeshRecord) -> Option<String> {
    let file = rec.token_file.as_ref()?;
    Some(std::fs::read_to_string(file).ok()?.trim().to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("no mesh is running (looked in {0}); start one with `weft up`")]
    None(PathBuf),
    #[error("no mesh named {name:?} is running; running: {running}")]
    NotFound { name: String, running: String },
    #[error("several meshes are running ({0}); choose one with --mesh NAME")]
    Several(String),
    #[error("no context {name:?} in {}; add it with `weft context add`", dir.display())]
    NoContext { name: String, dir: PathBuf },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// Why `$WEFT_HOME` cannot be used: whoever can write it can plant a CA key or a mesh record
/// that this user's meshes and commands would trust.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("WEFT_HOME {}: {why}; {fix}", path.display())]
    Unsafe {
        path: PathBuf,
        why: String,
        fix: String,
    },
    #[error("WEFT_HOME {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `$WEFT_HOME`, made ready for use: created (mode 0700) when missing; refused when it is not
/// a directory owned by this user, or when others may write to it.
pub fn ensure_home() -> Result<PathBuf, HomeError> {
    let path = home();
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|source| HomeError::Io {
                path: path.clone(),
                source,
            })?;
    }
    check_home(&path)?;
    Ok(path)
}

/// Refuses a `$WEFT_HOME` that is not a directory of this user's that only they may write.
pub fn check_home(path: &Path) -> Result<(), HomeError> {
    let meta = std::fs::metadata(path).map_err(|source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let unsafe_because = |why: String, fix: &str| HomeError::Unsafe {
        path: path.to_path_buf(),
        why,
        fix: fix.to_string(),
    };
    let me = nix::unistd::getuid().as_raw();
    if !meta.is_dir() {
        return Err(unsafe_because(
            "not a directory".into(),
            "remove it, or set WEFT_HOME to a directory of your own",
        ));
    }
    if meta.uid() != me {
        return Err(unsafe_because(
            format!("owned by uid {}, not by you (uid {me})", meta.uid()),
            "remove it, or set WEFT_HOME to a directory of your own",
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_because(
            format!("others may write to it (mode {:o})", meta.mode() & 0o7777),
            "run `chmod go-w` on it, or set WEFT_HOME to a directory only you can write",
        ));
    }
    Ok(())
}

/// Where a running mesh keeps what lives as long as it runs (its proxies' state directories):
/// `$WEFT_HOME/run/MESH`, emptied when `weft up` starts and removed when it stops.
pub fn run_dir(mesh: &str) -> PathBuf {
    home().join("run").join(mesh)
}

pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("WEFT_HOME") {
        return PathBuf::from(h);
    }
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(r).join("weft");
    }
    PathBuf::from(format!("/tmp/weft-{}", nix::unistd::getuid()))
}

fn dir() -> PathBuf {
    home().join("meshes")
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Meshes whose recording process is still alive (stale records are removed).
pub fn running() -> Vec<MeshRecord> {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut out: Vec<MeshRecord> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let rec: MeshRecord = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            if alive(rec.pid) {
                Some(rec)
            } else {
                let _ = std::fs::remove_file(&path);
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A mesh whose control plane runs elsewhere, as `weft context add` saved it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Context {
    pub name: String,
    /// The control plane's API, one address per replica.
    pub api: Vec<String>,
    /// The admin credential's file (a copy, mode 0600); empty when an operator certificate
    /// stands for it.
    #[serde(default)]
    pub token_file: String,
    /// The mesh's trust bundle (a copy): the API is then spoken to over TLS, the control plane
    /// verified with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// An operator's client certificate and key (copies, the key mode 0600), presented over TLS
    /// in place of the admin credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// What `weft context add` is given: the files are copied into the context's directory.
#[derive(Clone, Debug, Default)]
pub struct ContextFiles {
    /// The admin credential.
    pub token: Option<String>,
    /// The trust bundle, PEM.
    pub ca: Option<String>,
    /// An operator's certificate chain and private key, PEM.
    pub cert: Option<(String, String)>,
}

fn contexts_dir() -> PathBuf {
    home().join("contexts")
}

/// Saves context `name`: the API addresses `api` and private copies of what `files` holds.
pub fn add_context(name: &str, api: &[String], files: &ContextFiles) -> Result<PathBuf, FindError> {
    ensure_home()?;
    let d = private_dir(contexts_dir())?;
    let keep = |suffix: &str, text: &str| -> Result<String, FindError> {
        let path = d.join(format!("{name}.{suffix}"));
        write_private(&path, text).map_err(|e| FindError::Io(path.clone(), e))?;
        Ok(path.display().to_string())
    };
    let mut ctx = Context {
        name: name.to_string(),
        api: api.to_vec(),
        ..Context::default()
    };
    if let Some(token) = &files.token {
        ctx.token_file = keep("token", token.trim())?;
    }
    if let Some(ca) = &files.ca {
        ctx.ca_file = Some(keep("ca.pem", ca)?);
    }
    if let Some((cert, key)) = &files.cert {
        ctx.cert_file = Some(keep("crt", cert)?);
        ctx.key_file = Some(keep("key", key)?);
    }
    let path = d.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&ctx).unwrap_or_default())
        .map_err(|e| FindError::Io(path.clone(), e))?;
    Ok(path)
}

/// Every saved context.
pub fn contexts() -> Vec<Context> {
    let Ok(entries) = std::fs::read_dir(contexts_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<Context> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

static CHOSEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Chooses context `name` for this process's lookups (`weft --context NAME`, or
/// `WEFT_CONTEXT`, which the CLI reads into the same flag).
pub fn choose_context(name: &str) {
    let _ = CHOSEN.set(name.to_string());
}

/// The context chosen, as a mesh record: its first API address that accepts a connection
/// (one per replica).
fn chosen_context() -> Option<Result<MeshRecord, FindError>> {
    let name = CHOSEN.get().filter(|n| !n.is_empty())?.clone();
    let Some(ctx) = contexts().into_iter().find(|c| c.name == name) else {
        return Some(Err(FindError::NoContext {
            name,
            dir: contexts_dir(),
        }));
    };
    let up = ctx
        .api
        .iter()
        .find(|a| {
            a.parse::<std::net::SocketAddr>().is_ok_and(|a| {
                std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).is_ok()
            })
        })
        .or(ctx.api.first())
        .cloned()
        .unwrap_or_default();
    Some(Ok(MeshRecord {
        name: ctx.name,
        pid: 0,
        control: String::new(),
        api: up,
        ingress: String::new(),
        token_file: (!ctx.token_file.is_empty()).then_some(ctx.token_file),
        ca_file: ctx.ca_file,
        dashboard: None,
    }))
}

/// The mesh a command talks to: the context chosen (`--context`), the one named, or the only
/// one running. Records in a `$WEFT_HOME` others may write are not believed.
pub fn find(name: Option<&str>) -> Result<MeshRecord, FindError> {
    let h = home();
    if h.exists() {
        check_home(&h)?;
    }
    if let Some(ctx) = chosen_context() {
        return ctx;
    }
    let all = running();
    let names = || {
        all.iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => all
            .iter()
            .find(|m| m.name == n)
            .cloned()
            .ok_or_else(|| FindError::NotFound {
                name: n.to_string(),
                running: if all.is_empty() {
                    "none".into()
                } else {
                    names()
                },
            }),
        None => match all.len() {
            0 => Err(FindError::None(dir())),
            1 => Ok(all[0].clone()),
            _ => Err(FindError::Several(names())),
        },
    }
}

/// Records a running mesh, with its API's admin credential `token` (written beside it, readable
/// by this user alone); the returned guard removes both when dropped.
pub fn record(rec: &MeshRecord, token: Option<&str>) -> Result<RecordGuard, FindError> {
    ensure_home()?;
    let d = private_dir(dir())?;
    let mut rec = rec.clone();
    let mut token_path = None;
    if let Some(token) = token {
        let path = d.join(format!("{}.token", rec.name));
        write_private(&path, token).map_err(|e| FindError::Io(path.clone(), e))?;
        rec.token_file = Some(path.display().to_string());
        token_path = Some(path);
    }
    let rec = &rec;
    let path = d.join(format!("{}.json", rec.name));
    let tmp = d.join(format!(".{}.json.{}", rec.name, rec.pid));
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec).unwrap_or_default())
        .map_err(|e| FindError::Io(tmp.clone(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| FindError::Io(path.clone(), e))?;
    Ok(RecordGuard {
        path,
        token: token_path,
    })
}

/// Writes `text` to a new file only this user may read (any older one is replaced).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

pub struct RecordGuard {
    path: PathBuf,
    token: Option<PathBuf>,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(t) = &self.token {
            let _ = std::fs::remove_file(t);
        }
    }
}
