//! Typed launch descriptions of the processes `weft up` runs — a proxy ([`ProxyLaunch`]), an
//! app ([`AppLaunch`]), any other command (Prometheus) — and how one is spawned.
//!
//! Ports: a proxy binds its listeners itself (port 0 on its first start) and reports the
//! addresses it got on its first stdout line ([`Bound`]). A sidecar's are stored into its
//! [`ProxyLaunch`], so that a restart binds the same ones and its app's `HTTP_PROXY` and its
//! peers' routes stay valid. An app, though, is told its port (`PORT`) before it binds it, so
//! that port is chosen here by [`app_port`]: drawn at random below the kernel's ephemeral range,
//! checked free, and leased ([`PortLease`]) so that no other `weft` process picks it before the
//! app binds it. Only app ports (and a sidecar's local TCP client ports, which its app is told
//! too) are chosen that way; nothing here picks a port for a proxy's own listeners.

use crate::UpError;
use control::ca::Ca;
use model::{Identity, Labels};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, Command};

pub use model::names::JOIN_TOKEN_ENV;

/// How long a proxy may take to report the addresses it bound.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Which proxy `weft proxy --mode` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Sidecar,
    Ingress,
}

impl ProxyMode {
    /// The value of `--mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Sidecar => "sidecar",
            ProxyMode::Ingress => "ingress",
        }
    }
}

/// One `weft proxy` as `weft up` starts it: every flag it gets, typed. [`ProxyLaunch::argv`]
/// is the only place that turns it into a command line.
#[derive(Clone, Debug)]
pub struct ProxyLaunch {
    pub mode: ProxyMode,
    /// The control plane's gRPC address.
    pub control: SocketAddr,
    /// More replicas of the control plane, to fail over to.
    pub control_more: Vec<SocketAddr>,
    pub service: String,
    pub namespace: String,
    pub workload: String,
    pub instance: String,
    pub labels: Labels,
    pub identity: Identity,
    /// The local app (a sidecar's).
    pub app: Option<SocketAddr>,
    /// Where a sidecar takes traffic for its app; port 0: a free one.
    pub inbound: Option<SocketAddr>,
    /// Where the app (sidecar) or the outside (ingress) sends requests; port 0: a free one.
    pub outbound: Option<SocketAddr>,
    /// The admin listener; `None`: the proxy's default (a free port).
    pub admin: Option<SocketAddr>,
    pub drain_timeout: Duration,
    /// The access-log format (`json` or `apache`); `None`: off.
    pub access_log: Option<String>,
    /// What the app speaks on its (first) port; `--app-protocol` when not `http`.
    pub app_protocol: model::Protocol,
    /// Further `weft proxy` flags, passed as they are (tracing: `--otlp-endpoint URL`…).
    pub extra_flags: Vec<String>,
    /// Where the proxy keeps its last snapshot and its credentials (`--state-dir`), one per
    /// launch: its restarts find them there; `None`: nothing kept.
    pub state_dir: Option<PathBuf>,
    /// Where the app's supervisor keeps the app's process id ([`AppLaunch::pid_file`]), so
    /// that the sidecar tells the app from another process on its port (`--app-pid-file`).
    pub app_pid_file: Option<PathBuf>,
}

/// The name of the proxy-only executable, installed beside `weft`.
pub const PROXY_EXE: &str = "weft-proxy";

/// What `weft --version` and `weft-proxy --version` say: the version, and which build of the
/// sources this is (two executables of one build say the same).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (build ",
    env!("WEFT_BUILD"),
    ")"
);

/// The command that runs a proxy, to which its flags are appended: `weft-proxy` when it sits
/// beside the weft executable `exe` and comes from the same build (the data plane alone: a
/// proxy maps a fraction of the code `weft` has), else `exe proxy`. A `weft-proxy` left by an
/// earlier build is not used: `cargo run` rebuilds only `weft`.
pub fn proxy_command(exe: &Path) -> Vec<String> {
    let alone = exe.with_file_name(PROXY_EXE);
    if same_build(&alone) {
        vec![alone.display().to_string()]
    } else {
        vec![exe.display().to_string(), "proxy".to_string()]
    }
}

/// Whether `alone` is a `weft-proxy` of this build (asked once per path).
fn same_build(alone: &Path) -> bool {
    static ASKED: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());
    let mut asked = ASKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, same)) = asked.iter().find(|(p, _)| p == alone) {
        return *same;
    }
    let same = alone.is_file()
        && std::process::Command::new(alone)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).trim()
                        == format!("{PROXY_EXE} {VERSION}")
            });
    asked.push((alone.to_path_buf(), same));
    same
}

impl ProxyLaunch {
    /// The command line that runs this proxy with the weft executable `exe` (see
    /// [`proxy_command`]).
    pub fn argv(&self, exe: &Path) -> Vec<String> {
        let mut argv = proxy_command(exe);
        let mut flag = |name: &str, value: String| {
            argv.push(format!("--{name}"));
            argv.push(value);
        };
        flag("mode", self.mode.as_str().into());
        let controls: Vec<String> = std::iter::once(&self.control)
            .chain(&self.control_more)
            .map(|c| c.to_string())
            .collect();
        flag("control", controls.join(","));
        flag("service", self.service.clone());
        flag("namespace", self.namespace.clone());
        flag("workload", self.workload.clone());
        flag("instance", self.instance.clone());
        for (k, v) in &self.labels {
            flag("label", format!("{k}={v}"));
        }
        flag("identity", self.identity.0.clone());
        let addresses = [
            ("app", self.app),
            ("inbound", self.inbound),
            ("outbound", self.outbound),
            ("admin", self.admin),
        ];
        for (name, addr) in addresses {
            if let Some(addr) = addr {
                flag(name, addr.to_string());
            }
        }
        flag(
            "drain-timeout",
            format!("{}ms", self.drain_timeout.as_millis()),
        );
        if let Some(format) = &self.access_log {
            flag("access-log", format.clone());
        }
        if self.app_protocol != model::Protocol::Http {
            flag("app-protocol", self.app_protocol.to_string());
        }
        if let Some(dir) = &self.state_dir {
            flag("state-dir", dir.display().to_string());
        }
        if let Some(file) = &self.app_pid_file {
            flag("app-pid-file", file.display().to_string());
        }
        argv.extend(self.extra_flags.iter().cloned());
        argv
    }

    /// Stores the addresses a start bound, so that later starts bind the same ones.
    pub fn keep_addresses(&mut self, bound: &Bound) {
        self.inbound = bound.inbound.or(self.inbound);
        self.outbound = bound.outbound.or(self.outbound);
        self.admin = Some(bound.admin);
    }

    /// How the proxy's output lines and messages name it.
    fn what(&self) -> String {
        match self.mode {
            ProxyMode::Ingress => "ingress".into(),
            ProxyMode::Sidecar => format!("{} proxy", self.instance),
        }
    }
}

/// The addresses a proxy reports on its first stdout line (JSON), once it listens.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Bound {
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// One app replica as `weft up` starts it: its command, the port it is told to listen on, and
/// the sidecar it sends requests through.
#[derive(Clone, Debug)]
pub struct AppLaunch {
    /// The workload's command; a first word `weft` is the weft executable.
    pub command: Vec<String>,
    /// `PORT`, where the app listens (from [`app_port`]).
    pub port: u16,
    /// Its named ports, `PORT_<NAME>` each (the first port's name included, with `port`).
    pub named_ports: Vec<(String, u16)>,
    pub service: String,
    pub namespace: String,
    pub workload: String,
    pub instance: String,
    /// Its sidecar's outbound listener, the app's `HTTP_PROXY`. `None`: an app outside the mesh
    /// (`sidecar: false`), which calls services in plaintext; an inherited `HTTP_PROXY` is
    /// removed.
    pub proxy: Option<SocketAddr>,
    /// The workload's own environment, set last.
    pub env: Vec<(String, String)>,
    /// Written with its process id at every start (its sidecar's `--app-pid-file`).
    pub pid_file: Option<PathBuf>,
}

impl AppLaunch {
    /// The command line, with the weft executable `exe` in place of a first word `weft`.
    pub fn argv(&self, exe: &Path) -> Vec<String> {
        let mut argv = self.command.clone();
        if argv.first().is_some_and(|a| a == "weft") {
            argv[0] = exe.display().to_string();
        }
        argv
    }

    /// The environment it gets: `PORT` (and `PORT_<NAME>` per named port), the proxy variables (in the mesh), `WEFT_SERVICE`,
    /// `WEFT_NAMESPACE`, `WEFT_WORKLOAD`, `WEFT_INSTANCE`, then the workload's own.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PORT".to_string(), self.port.to_string())];
        env.extend(
            self.named_ports
                .iter()
                .map(|(n, p)| (n.clone(), p.to_string())),
        );
        if let Some(proxy) = self.proxy {
            let url = format!("http://{proxy}");
            let local = "localhost,127.0.0.1,::1".to_string();
            env.extend([
                ("HTTP_PROXY".to_string(), url.clone()),
                ("http_proxy".into(), url),
                ("NO_PROXY".into(), local.clone()),
                ("no_proxy".into(), local),
            ]);
        }
        env.extend([
            ("WEFT_SERVICE".to_string(), self.service.clone()),
            ("WEFT_NAMESPACE".into(), self.namespace.clone()),
            ("WEFT_WORKLOAD".into(), self.workload.clone()),
            ("WEFT_INSTANCE".into(), self.instance.clone()),
        ]);
        env.extend(self.env.iter().cloned());
        env
    }

    /// Inherited environment variables it must not see.
    fn unset(&self) -> &'static [&'static str] {
        match self.proxy {
            Some(_) => &[],
            None => &["HTTP_PROXY", "http_proxy"],
        }
    }
}

/// Where a proxy about to start gets a one-time join token and the mesh's trust anchors: the
/// mesh CA in this process (`weft up`), or the control plane's API (a joined host).
pub trait Credentials: Send + Sync {
    fn join_token(&self, identity: &Identity) -> Result<String, String>;
    fn bundle_pem(&self) -> String;
}

impl Credentials for Ca {
    fn join_token(&self, identity: &Identity) -> Result<String, String> {
        Ok(Ca::join_token(self, identity))
    }

    fn bundle_pem(&self) -> String {
        Ca::bundle_pem(self)
    }
}

/// A process the supervisor starts, and starts again after it exits.
#[derive(Clone)]
pub(crate) enum Launch {
    /// A proxy, run by the weft executable `exe`; with a CA, each start gets a fresh one-time
    /// join token for the proxy's identity.
    Proxy {
        proxy: Box<ProxyLaunch>,
        exe: PathBuf,
        ca: Option<Arc<dyn Credentials>>,
        /// The mesh's admin credential, for the proxy's `/tap` and `/shutdown`.
        admin_token: Arc<str>,
        /// The network namespace (pod) it runs in; `None`: the host's.
        netns: Option<Arc<str>>,
    },
    /// An app; `exe` stands in for a first word `weft`.
    App {
        app: AppLaunch,
        exe: PathBuf,
        /// The network namespace (pod) it runs in; `None`: the host's.
        netns: Option<Arc<str>>,
    },
    /// Any other command, with `weft up`'s environment.
    Command { what: String, argv: Vec<String> },
}

impl Launch {
    /// How its output lines and messages name it.
    pub fn what(&self) -> String {
        match self {
            Launch::Proxy { proxy, .. } => proxy.what(),
            Launch::App { app, .. } => app.instance.clone(),
            Launch::Command { what, .. } => what.clone(),
        }
    }

    /// The network namespace it runs in, if not the host's.
    fn netns(&self) -> Option<&str> {
        match self {
            Launch::Proxy { netns, .. } | Launch::App { netns, .. } => netns.as_deref(),
            Launch::Command { .. } => None,
        }
    }

    fn command(&self) -> Result<Command, UpError> {
        let (argv, env, unset): (_, _, &[&str]) = match self {
            Launch::Proxy { proxy, exe, .. } => (proxy.argv(exe), Vec::new(), &[]),
            Launch::App { app, exe, .. } => (app.argv(exe), app.env(), app.unset()),
            Launch::Command { argv, .. } => (argv.clone(), Vec::new(), &[]),
        };
        let argv = match self.netns() {
            // `ip netns exec` execs the command itself: the process id is the command's own,
            // and signals and PDEATHSIG reach it.
            Some(ns) => ["ip", "netns", "exec", ns]
                .into_iter()
                .map(String::from)
                .chain(argv)
                .collect(),
            None => argv,
        };
        let mut cmd = Command::new(&argv[0]);
        for k in unset {
            cmd.env_remove(k);
        }
        cmd.args(&argv[1..]).envs(env);
        if let Launch::Proxy { admin_token, .. } = self {
            cmd.env(model::names::ADMIN_TOKEN_ENV, &**admin_token);
        }
        if let Launch::Proxy {
            proxy,
            ca: Some(ca),
            ..
        } = self
        {
            // In the environment, not argv: other users cannot read it from `ps`.
            let token = ca.join_token(&proxy.identity).map_err(|why| {
                UpError::ProxyStart(proxy.what(), format!("no join token: {why}"))
            })?;
            cmd.env(JOIN_TOKEN_ENV, token);
            // The roots its control plane's certificate chains to (public, but the proxy
            // must get them from its supervisor, not from the control plane it verifies).
            cmd.env(model::names::TRUST_ANCHORS_ENV, ca.bundle_pem());
        }
        Ok(cmd)
    }

    /// Starts it: stdin closed, stdout piped (the caller reads it), stderr forwarded to ours
    /// line by line, in its own process group, and sent SIGTERM if `weft up` dies.
    pub fn spawn(&self) -> Result<Child, UpError> {
        let mut cmd = self.command()?;
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and makes one
        // async-signal-safe system call (prctl). It is needed because the children sit in their
        // own process group: if `weft up` itself is killed (SIGKILL, OOM), nothing else would
        // stop them, and they would keep the mesh's ports. With PDEATHSIG they get SIGTERM
        // and drain. (The signal follows the spawning thread; `weft up` spawns from its
        // runtime's worker threads, which live as long as it does.)
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|source| UpError::Spawn {
            what: self.what(),
            program,
            source,
        })?;
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward(err, self.what()));
        }
        if let (Launch::App { app, .. }, Some(pid)) = (self, child.id()) {
            if let Some(file) = &app.pid_file {
                if let Err(e) = write_pid(file, pid) {
                    crate::output::line(format!(
                        "weft: {}: cannot write {}: {e}",
                        self.what(),
                        file.display()
                    ));
                }
            }
        }
        Ok(child)
    }

    /// Starts a proxy and reads the addresses it bound (its first stdout line); the rest of its
    /// stdout is forwarded.
    pub async fn start_proxy(&self) -> Result<(Child, Bound), UpError> {
        let what = self.what();
        let failed = |why: String| UpError::ProxyStart(what.clone(), why);
        let mut child = self.spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| failed("no stdout".into()))?;
        let mut lines = BufReader::new(out).lines();
        let line = match tokio::time::timeout(PROXY_START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => {
                let status = child.wait().await;
                return Err(failed(format!(
                    "it exited ({})",
                    crate::supervise::describe(status)
                )));
            }
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(_) => return Err(failed("timed out".into())),
        };
        let bound: Bound =
            serde_json::from_str(&line).map_err(|e| failed(format!("{e}: {line:?}")))?;
        tokio::spawn(forward_lines(lines, what));
        Ok((child, bound))
    }
}

/// Copies a child's output to our stderr, each line prefixed with the child's name.
pub(crate) async fn forward(out: impl AsyncRead + Unpin, what: String) {
    forward_lines(BufReader::new(out).lines(), what).await
}

async fn forward_lines<R: AsyncRead + Unpin>(mut lines: Lines<BufReader<R>>, what: String) {
    while let Ok(Some(line)) = lines.next_line().await {
        crate::output::line(format!("[{what}] {line}"));
    }
}

/// Writes `pid` to `file` whole (a reader never sees half of it), creating its directory
/// (readable by this user alone).
fn write_pid(file: &Path, pid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    crate::prometheus::write_atomic(file, pid.to_string().as_bytes())
}

/// The lowest port [`app_port`] hands out: above the well-known and most registered services.
const APP_PORT_MIN: u16 = 10_000;

/// A port for an app to listen on, leased to this process until the lease is dropped.
///
/// The app binds it some time after it was chosen, so it must not be one the kernel hands out
/// by itself meanwhile (to another listener on port 0, or as the local port of an outgoing
/// connection, which took an app's port when meshes started together): it is drawn below the
/// ephemeral range (`net.ipv4.ip_local_port_range`), at random, and checked free. A free port
/// is not enough when several meshes start together: another `weft` process may draw the same
/// one before this app binds it (its app then fails with "address in use", and the other
/// app answers in its place). So each pick also takes a lease, an abstract Unix socket named
/// after the port ([`lease_name`]): no other `weft` process picks a port whose lease is held,
/// and the kernel releases it when the holder exits, however it exits. Where the ephemeral
/// range leaves no room below it, the kernel picks the port.
pub(crate) fn app_port() -> std::io::Result<PortLease> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > APP_PORT_MIN + 1_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..64 {
            let port = rng.gen_range(APP_PORT_MIN..ephemeral_low);
            let Some(lease) = PortLease::take(port) else {
                continue;
            };
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(lease);
            }
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(PortLease::take(port).unwrap_or(PortLease { port, _held: None }))
}

/// An app port picked by [`app_port`], kept from other `weft` processes' picks while this
/// value lives (by the replica it was picked for).
#[derive(Debug)]
pub(crate) struct PortLease {
    pub port: u16,
    /// The bound abstract socket; `None` where none could be bound (not Linux).
    _held: Option<std::os::unix::net::UnixDatagram>,
}

impl PortLease {
    /// The lease of `port`, unless another process (or this one) holds it.
    fn take(port: u16) -> Option<PortLease> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let Ok(name) = SocketAddr::from_abstract_name(lease_name(port)) else {
            return Some(PortLease { port, _held: None });
        };
        match UnixDatagram::bind_addr(&name) {
            Ok(held) => Some(PortLease {
                port,
                _held: Some(held),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
            // Abstract sockets unavailable: the free-port check alone, as before.
            Err(_) => Some(PortLease { port, _held: None }),
        }
    }
}

/// The abstract socket name that leases app port `port` (in the network namespace `weft` runs
/// in, which its proxy-env apps share).
fn lease_name(port: u16) -> String {
    format!("weft/app-port/127.0.0.1:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar() -> ProxyLaunch {
        ProxyLaunch {
            mode: ProxyMode::Sidecar,
            control: "127.0.0.1:15010".parse().unwrap(),
            control_more: Vec::new(),
            service: "backend".into(),
            namespace: "shop".into(),
            workload: "backend-v1".into(),
            instance: "backend-v1-0".into(),
            labels: [("version".to_string(), "v1".to_string())].into(),
            identity: Identity::spiffe("shop", "backend"),
            app: Some("127.0.0.1:12000".parse().unwrap()),
            inbound: Some("127.0.0.1:0".parse().unwrap()),
            outbound: Some("127.0.0.1:0".parse().unwrap()),
            admin: None,
            drain_timeout: Duration::from_secs(10),
            access_log: None,
            app_protocol: model::Protocol::Http,
            extra_flags: vec!["--otlp-endpoint".into(), "http://127.0.0.1:4317".into()],
            state_dir: None,
            app_pid_file: None,
        }
    }

    fn value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
        let i = argv.iter().position(|a| a == flag)?;
        argv.get(i + 1).map(String::as_str)
    }

    #[test]
    fn a_restart_binds_the_addresses_the_first_start_reported() {
        let mut p = sidecar();
        let exe = Path::new("/bin/weft");
        let first = p.argv(exe);
        assert_eq!(&first[..2], ["/bin/weft", "proxy"]);
        assert_eq!(value(&first, "--inbound"), Some("127.0.0.1:0"));
        assert_eq!(value(&first, "--admin"), None);
        assert_eq!(value(&first, "--drain-timeout"), Some("10000ms"));
        assert_eq!(first.last().unwrap(), "http://127.0.0.1:4317");

        let bound: Bound = serde_json::from_str(
            r#"{"inbound":"127.0.0.1:41000","outbound":"127.0.0.1:41001","admin":"127.0.0.1:41002"}"#,
        )
        .unwrap();
        p.keep_addresses(&bound);
        let again = p.argv(exe);
        assert_eq!(value(&again, "--inbound"), Some("127.0.0.1:41000"));
        assert_eq!(value(&again, "--outbound"), Some("127.0.0.1:41001"));
        assert_eq!(value(&again, "--admin"), Some("127.0.0.1:41002"));
        assert_eq!(again.iter().filter(|a| *a == "--inbound").count(), 1);
    }

    /// A stand-in `weft-proxy` in `dir` that answers `--version` with `version`.
    fn fake_proxy(dir: &Path, version: &str) {
        use std::os::unix::fs::PermissionsExt;
        let alone = dir.join(PROXY_EXE);
        std::fs::write(&alone, format!("#!/bin/sh\necho '{PROXY_EXE} {version}'\n")).unwrap();
        std::fs::set_permissions(&alone, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn proxies_run_from_a_weft_proxy_of_the_same_build_beside_weft() {
        let p = sidecar();
        let (none, stale, same) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let weft = |d: &tempfile::TempDir| d.path().join("weft");
        fake_proxy(stale.path(), "0.1.0 (build 1-2)");
        fake_proxy(same.path(), VERSION);
        for d in [&none, &stale] {
            let argv = p.argv(&weft(d));
            assert_eq!(argv[..2], [weft(d).display().to_string(), "proxy".into()]);
        }
        let argv = p.argv(&weft(&same));
        assert_eq!(argv[0], same.path().join(PROXY_EXE).display().to_string());
        assert_eq!(argv[1..3], ["--mode", "sidecar"]);
    }

    #[test]
    fn an_app_outside_the_mesh_gets_no_proxy() {
        let mut app = AppLaunch {
            command: vec!["weft".into(), "demo".into(), "echo".into()],
            port: 12000,
            named_ports: vec![("PORT_HTTP_API".into(), 12000), ("PORT_GRPC".into(), 12001)],
            service: "backend".into(),
            namespace: "shop".into(),
            workload: "backend-v1".into(),
            instance: "backend-v1-0".into(),
            proxy: Some("127.0.0.1:41001".parse().unwrap()),
            env: vec![("GREETING".into(), "hi".into())],
            pid_file: None,
        };
        assert_eq!(app.argv(Path::new("/bin/weft"))[0], "/bin/weft");
        let env = app.env();
        assert_eq!(env[0], ("PORT".into(), "12000".into()));
        assert_eq!(env[1], ("PORT_HTTP_API".into(), "12000".into()));
        assert_eq!(env[2], ("PORT_GRPC".into(), "12001".into()));
        assert!(env.contains(&("HTTP_PROXY".into(), "http://127.0.0.1:41001".into())));
        assert_eq!(env.last().unwrap(), &("GREETING".into(), "hi".into()));
        assert!(app.unset().is_empty());

        app.proxy = None;
        assert!(!app
            .env()
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("http_proxy")));
        assert_eq!(app.unset(), ["HTTP_PROXY", "http_proxy"]);
    }

    #[test]
    fn app_ports_lie_below_the_ephemeral_range() {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768);
        if low > APP_PORT_MIN + 1_000 {
            let port = app_port().unwrap().port;
            assert!((APP_PORT_MIN..low).contains(&port), "{port}");
        }
    }

    /// Meshes that start together draw their apps' ports at the same time: a port one picked
    /// is never picked by another before its app binds it, and is free again once the pick
    /// is dropped.
    #[test]
    fn a_picked_port_is_leased_until_dropped() {
        let picked = app_port().unwrap();
        assert!(picked._held.is_some(), "no lease was taken");
        assert!(PortLease::take(picked.port).is_none());
        let others: Vec<_> = (0..200).map(|_| app_port().unwrap()).collect();
        assert!(others.iter().all(|o| o.port != picked.port));
        let mut ports: Vec<u16> = others.iter().map(|o| o.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), others.len(), "a port was picked twice");
        let port = picked.port;
        drop(picked);
        // A child that another test forks at this moment holds a copy of the socket until it
        // execs (the socket is close-on-exec): the name is free again once that copy is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while PortLease::take(port).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease of {port} outlived its drop"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
