//! Prometheus beside a local mesh (`weft up --prometheus`): finds the `prometheus` binary, writes
//! its configuration into a state directory under `$WEFT_HOME`, and keeps the file-based service
//! discovery targets (every connected proxy's admin `/metrics`, with labels) up to date as proxies
//! come and go.
//!
//! Layout of the state directory, `$WEFT_HOME/prometheus/MESH/`:
//! - `prometheus.yml`: one scrape job, [`JOB`], whose targets Prometheus asks the control
//!   plane's API for every scrape interval (`http_sd_configs`, `GET /prometheus/targets`, with
//!   the mesh's admin credential from `api.token`), and the repository's
//!   `dashboards/alerts.yaml` as rules when the binary sits in a checkout. Not a watched file:
//!   Prometheus's file discovery stops for good when it gets no inotify instance (the user's
//!   `fs.inotify.max_user_instances`, 128 by default, is shared with editors, browsers and
//!   every other Prometheus), and the mesh would then go unscraped;
//! - `api.token`: the admin credential (mode 0600), for Prometheus to present;
//! - `targets.json`: the same targets as a `file_sd_configs` file, for a Prometheus of your
//!   own, rewritten atomically (temporary file + rename, so a reader never sees half a file)
//!   whenever the set of connected proxies changes;
//! - `data/`: the TSDB, which lives as long as the mesh (wiped on start, removed on stop).
//!
//! Which proxies are targets: every connected one with an admin address (the ingress, every
//! sidecar, and the client proxies of `weft exec` while they run), the newest registration of
//! each instance. That includes sidecars whose app is not ready and proxies that are draining,
//! as Prometheus's Kubernetes discovery scrapes pods whatever their readiness: a failing
//! replica's sidecar is the one whose 5xx and `UH` counts you need, and a draining proxy still
//! counts the requests it finishes. A proxy leaves the targets when it disconnects. The
//! `targets` submodule computes them and keeps `targets.json` in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod targets;
pub use targets::{keep_targets, targets, write_atomic, TargetGroup};

/// Where Prometheus listens when `--prometheus` names no address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";
/// How often Prometheus scrapes every proxy unless `--scrape-interval` says otherwise.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// The scrape job of the proxies (`up{job="weft-proxies"}`).
pub const JOB: &str = "weft-proxies";
/// How often the alert rules are evaluated (their `for:` clauses are minutes long).
const EVALUATION_INTERVAL: Duration = Duration::from_secs(15);
/// How much the TSDB keeps, even if the mesh runs for days (`$WEFT_HOME` is often a tmpfs).
const RETENTION: &str = "24h";
/// The rules file, relative to a checkout of weft.
const RULES: &str = "dashboards/alerts.yaml";

/// What `--prometheus` and `--scrape-interval` asked for.
#[derive(Clone, Debug)]
pub struct PrometheusOptions {
    /// Where Prometheus listens; port 0 picks a free one.
    pub listen: SocketAddr,
    pub scrape_interval: Duration,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        PrometheusOptions {
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error(
        "--prometheus: no `prometheus` executable on PATH; install the Debian package \
         `prometheus` (apt-get install --no-install-recommends prometheus) or leave out --prometheus"
    )]
    NotInstalled,
    #[error("--prometheus: cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("--scrape-interval must be at least 1ms")]
    Interval,
    #[error("--prometheus: {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// A Prometheus ready to start: its files are written, its port chosen.
#[derive(Clone, Debug)]
pub struct Setup {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The admin credential Prometheus presents to the API.
    pub token: PathBuf,
    pub targets: PathBuf,
    pub data: PathBuf,
    /// The rules file loaded, if the binary sits in a checkout that has one.
    pub rules: Option<PathBuf>,
    pub listen: SocketAddr,
    pub scrape_interval: Duration,
    /// The lease of the port picked for it (port 0 asked), held while the mesh runs.
    pub(crate) _lease: Option<Arc<crate::launch::PortLease>>,
}

impl Setup {
    /// `http://ADDR`, what `weft up` and `weft status` report.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The command line that runs it.
    pub fn argv(&self) -> Vec<String> {
        vec![
            self.binary.display().to_string(),
            format!("--config.file={}", self.config.display()),
            format!("--storage.tsdb.path={}", self.data.display()),
            format!("--storage.tsdb.retention.time={RETENTION}"),
            format!("--web.listen-address={}", self.listen),
            // `POST /-/reload` picks up an edited rules file without restarting the mesh.
            "--web.enable-lifecycle".into(),
            // Its info and warning lines (one for every SIGTERM) would drown the mesh's own
            // output; errors still show.
            "--log.level=error".into(),
        ]
    }
}

/// Prepares a Prometheus for mesh `mesh`: finds the binary, checks or picks the port, and writes
/// the state directory (see the module docs). `exe` is weft's executable, near which the rules
/// file is looked for.
pub fn prepare(mesh: &str, opts: &PrometheusOptions, exe: &Path) -> Result<Setup, PrometheusError> {
    let binary = find_binary(std::env::var_os("PATH").as_deref())?;
    if opts.scrape_interval < Duration::from_millis(1) {
        return Err(PrometheusError::Interval);
    }
    let (listen, lease) = resolve_listen(opts.listen)?;
    let dir = crate::meshes::home().join("prometheus").join(mesh);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| PrometheusError::Io(p, e)
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(io(&data))?;
    }
    let setup = Setup {
        binary,
        config: dir.join("prometheus.yml"),
        token: dir.join("api.token"),
        targets: dir.join("targets.json"),
        data,
        rules: find_rules(exe),
        dir,
        listen,
        scrape_interval: opts.scrape_interval,
        _lease: lease.map(Arc::new),
    };
    // No targets until the proxies register.
    write_atomic(&setup.targets, b"[]\n").map_err(io(&setup.targets))?;
    Ok(setup)
}

impl Setup {
    /// Writes `prometheus.yml` and `api.token`: Prometheus asks the API at `api` for its
    /// targets, presenting `token`.
    pub fn write_config(&self, api: SocketAddr, token: &str) -> Result<(), PrometheusError> {
        crate::meshes::write_private(&self.token, token)
            .map_err(|e| PrometheusError::Io(self.token.clone(), e))?;
        let yaml = config_yaml(
            self.scrape_interval,
            api,
            &self.token,
            self.rules.as_deref(),
        );
        write_atomic(&self.config, yaml.as_bytes())
            .map_err(|e| PrometheusError::Io(self.config.clone(), e))
    }
}

/// The `prometheus` executable on `path` (a `PATH` value).
pub fn find_binary(path: Option<&std::ffi::OsStr>) -> Result<PathBuf, PrometheusError> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path.unwrap_or_default())
        .map(|d| d.join("prometheus"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or(PrometheusError::NotInstalled)
}

/// A concrete address to hand Prometheus: port 0 on 127.0.0.1 becomes a port picked as an
/// app's is ([`crate::launch::app_port`]: below the ephemeral range, so no connection's local
/// port takes it before Prometheus binds it, and leased from other `weft` processes); port 0
/// elsewhere, any free port; a given port must be free now (a clear error before anything
/// starts, rather than a crash-looping Prometheus).
fn resolve_listen(
    listen: SocketAddr,
) -> Result<(SocketAddr, Option<crate::launch::PortLease>), PrometheusError> {
    let err = |e| PrometheusError::Listen(listen, e);
    if listen.port() == 0 && listen.ip() == std::net::Ipv4Addr::LOCALHOST {
        let lease = crate::launch::app_port().map_err(err)?;
        return Ok((SocketAddr::new(listen.ip(), lease.port), Some(lease)));
    }
    let l = std::net::TcpListener::bind(listen).map_err(err)?;
    Ok((l.local_addr().map_err(err)?, None))
}

/// `dashboards/alerts.yaml` of the checkout the binary was built in (`target/debug/weft` →
/// the checkout two levels up), if there is one.
pub fn find_rules(exe: &Path) -> Option<PathBuf> {
    let exe = exe.canonicalize().unwrap_or_else(|_| exe.to_path_buf());
    exe.parent()?
        .ancestors()
        .take(4)
        .map(|d| d.join(RULES))
        .find(|p| p.is_file())
}

/// Prometheus's duration syntax for `d` (milliseconds are exact for any interval weft accepts).
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A path or string as a YAML scalar: JSON's double-quoted strings are valid YAML.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `prometheus.yml`: one job scraping every `interval` the targets the API at `api` lists
/// (asked as often, presenting the credential in `token`).
pub fn config_yaml(
    interval: Duration,
    api: SocketAddr,
    token: &Path,
    rules: Option<&Path>,
) -> String {
    // The timeout may not exceed the interval; Prometheus's default is 10s.
    let timeout = interval.min(Duration::from_secs(10));
    let mut y = format!(
        "# Written by `weft up --prometheus`; rewritten on every start.\n\
         global:\n  scrape_interval: {}\n  scrape_timeout: {}\n  evaluation_interval: {}\n",
        duration(interval),
        duration(timeout),
        duration(EVALUATION_INTERVAL),
    );
    if let Some(r) = rules {
        y.push_str(&format!(
            "rule_files:\n  - {}\n",
            quoted(&r.display().to_string())
        ));
    }
    // The type is said although `Bearer` is its default: Prometheus 2.42 sends the bare
    // credential on service discovery requests otherwise.
    y.push_str(&format!(
        "scrape_configs:\n  - job_name: {}\n    metrics_path: /metrics\n    http_sd_configs:\n      - url: {}\n        refresh_interval: {}\n        authorization:\n          type: Bearer\n          credentials_file: {}\n",
        quoted(JOB),
        quoted(&format!("http://{api}/prometheus/targets")),
        duration(interval),
        quoted(&token.display().to_string()),
    ));
    y
}

/// Whether Prometheus at `addr` answers `GET /-/ready` with 200 (within a second).
pub async fn ready(addr: SocketAddr) -> bool {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /-/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 64];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 256 {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        Some(line.split_whitespace().nth(1) == Some("200"))
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_job_the_interval_and_the_rules() {
        let api: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        let token = Path::new("/h/prometheus/m/api.token");
        let y = config_yaml(
            Duration::from_secs(1),
            api,
            token,
            Some(Path::new("/repo/dashboards/alerts.yaml")),
        );
        assert!(
            y.contains("  scrape_interval: 1s\n  scrape_timeout: 1s\n"),
            "{y}"
        );
        assert!(y.contains("evaluation_interval: 15s"), "{y}");
        assert!(
            y.contains("rule_files:\n  - \"/repo/dashboards/alerts.yaml\"\n"),
            "{y}"
        );
        assert!(y.contains("job_name: \"weft-proxies\""), "{y}");
        // Asked of the API every interval, with the credential: no file to watch.
        assert!(
            y.contains(
                "http_sd_configs:\n      - url: \"http://127.0.0.1:40123/prometheus/targets\"\n        \
                 refresh_interval: 1s\n        authorization:\n          type: Bearer\n          \
                 credentials_file: \"/h/prometheus/m/api.token\"\n"
            ),
            "{y}"
        );
        assert!(!y.contains("file_sd_configs"), "{y}");

        let y = config_yaml(Duration::from_millis(1500), api, token, None);
        assert!(
            y.contains("scrape_interval: 1500ms\n  scrape_timeout: 1500ms"),
            "{y}"
        );
        assert!(!y.contains("rule_files"), "{y}");
        let y = config_yaml(Duration::from_secs(30), api, token, None);
        assert!(
            y.contains("scrape_interval: 30s\n  scrape_timeout: 10s"),
            "{y}"
        );
    }

    /// Port 0 on loopback is picked as an app's port is (below the ephemeral range, leased);
    /// a taken port is refused before anything starts.
    #[test]
    fn port_zero_is_leased_and_a_taken_port_refused() {
        let (addr, lease) = resolve_listen("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(lease.as_ref().map(|l| l.port), Some(addr.port()));
        assert!(
            std::net::TcpListener::bind(addr).is_ok(),
            "{addr} is not free"
        );
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = resolve_listen(taken.local_addr().unwrap()).unwrap_err();
        assert!(matches!(err, PrometheusError::Listen(..)), "{err}");
    }

    #[test]
    fn promtool_accepts_the_config_and_the_rules() {
        // Never skipped: scripts/test installs promtool (Debian package `prometheus`).
        let promtool = which("promtool").expect(
            "promtool is not on PATH: install the Debian package `prometheus` \
             (apt-get install --no-install-recommends prometheus)",
        );
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("api.token");
        crate::meshes::write_private(&token, "secret").unwrap();
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards/alerts.yaml");
        let config = dir.path().join("prometheus.yml");
        let yaml = config_yaml(
            Duration::from_secs(1),
            "127.0.0.1:40123".parse().unwrap(),
            &token,
            rules.is_file().then_some(rules.as_path()),
        );
        std::fs::write(&config, yaml).unwrap();
        let out = std::process::Command::new(promtool)
            .args(["check", "config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn which(name: &str) -> Option<PathBuf> {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    #[test]
    fn a_missing_binary_names_the_debian_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_binary(Some(dir.path().as_os_str())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("Debian package `prometheus`"), "{msg}");

        // Found on PATH only when executable.
        let bin = dir.path().join("prometheus");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        assert!(find_binary(Some(dir.path().as_os_str())).is_err());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_binary(Some(&path)).unwrap(), bin);
    }

    #[test]
    fn rules_are_found_in_the_checkout_of_the_binary() {
        let repo = tempfile::tempdir().unwrap();
        let exe = repo.path().join("target/debug/weft");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        std::fs::write(&exe, "").unwrap();
        assert_eq!(find_rules(&exe), None);
        std::fs::create_dir_all(repo.path().join("dashboards")).unwrap();
        std::fs::write(repo.path().join(RULES), "groups: []\n").unwrap();
        assert_eq!(
            find_rules(&exe).unwrap(),
            repo.path().canonicalize().unwrap().join(RULES)
        );
    }

    #[tokio::test]
    async fn readiness_is_a_200_on_ready() {
        use tokio::net::TcpListener;
        let serve = |status: &'static str| async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                }
            });
            addr
        };
        assert!(ready(serve("200 OK").await).await);
        assert!(!ready(serve("503 Service Unavailable").await).await);
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!ready(closed).await);
    }
}
