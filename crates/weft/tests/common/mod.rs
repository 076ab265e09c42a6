//! Test support: runs the real `weft` binary (`weft up` as a child process, CLI commands) in an
//! isolated `WEFT_HOME`, and a small HTTP client for driving traffic through the mesh.

#![allow(dead_code)]

pub mod etcd;
pub mod otlp;
pub mod pods;
pub mod scope;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");
/// A debug build on a loaded 2-core CI machine starts a dozen processes slowly.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A mesh file with `services` (name, replicas, extra echo args) on an ephemeral ingress port.
pub fn mesh_yaml(name: &str, services: &[(&str, u32, &str)]) -> String {
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n"
    );
    for (svc, replicas, extra) in services {
        let extra: String = extra.split_whitespace().map(|a| format!(", {a}")).collect();
        y.push_str(&format!(
            "  - name: {svc}\n    port: 80\n    workloads:\n    - name: {svc}-v1\n      labels: {{app: {svc}, version: v1}}\n      replicas: {replicas}\n      command: [weft, demo, echo, --service, {svc}, --version, v1{extra}]\n"
        ));
    }
    y
}

/// The mesh's name, from the `metadata: {name: NAME}` line [`mesh_yaml`] writes.
fn mesh_name(yaml: &str) -> Option<&str> {
    yaml.split("metadata: {name: ")
        .nth(1)
        .and_then(|r| r.split('}').next())
}

/// A running `weft up`.
pub struct Mesh {
    pub child: Child,
    pub home: PathBuf,
    _home: Option<tempfile::TempDir>,
    pub files: tempfile::TempDir,
    pub stderr: Arc<Mutex<String>>,
    /// What `weft up` printed on stdout (its ready line and what follows it).
    pub stdout: Arc<Mutex<String>>,
    /// The first line of `weft up`'s output that said "ready".
    pub ready_line: String,
    pub status: Value,
    pub ingress: SocketAddr,
}

impl Mesh {
    pub fn up(yaml: &str) -> Mesh {
        let home = tempfile::tempdir().unwrap();
        let mut m = Self::up_in(yaml, home.path());
        m._home = Some(home);
        m
    }

    /// Starts a mesh in `home`, which other meshes may share (to test several at once).
    pub fn up_in(yaml: &str, home: &Path) -> Mesh {
        Self::start(yaml, home, &[], false, &[])
    }

    /// `weft up ARGS… mesh.yaml`.
    pub fn up_with(yaml: &str, args: &[&str]) -> Mesh {
        let home = tempfile::tempdir().unwrap();
        let mut m = Self::start(yaml, home.path(), &[], false, args);
        m._home = Some(home);
        m
    }

    /// `weft up --watch DIR` on a directory holding `mesh.yaml` (= `yaml`) and `more` files
    /// (name, content); the directory is `mesh.files`.
    pub fn up_watching(yaml: &str, more: &[(&str, &str)]) -> Mesh {
        let home = tempfile::tempdir().unwrap();
        let mut m = Self::start(yaml, home.path(), more, true, &[]);
        m._home = Some(home);
        m
    }

    /// [`Mesh::up`] as a script runs it: `weft up FILE 2>&1 | grep -m1 -w ready`.
    pub fn up_as_script(yaml: &str) -> Mesh {
        let home = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let file = files.path().join("mesh.yaml");
        std::fs::write(&file, yaml).unwrap();
        let args = [file.display().to_string()];
        // The default log level, as a user gets it.
        let mut m = Self::launch_with(files, home.path(), &args, "", mesh_name(yaml), true);
        m._home = Some(home);
        m
    }

    fn start(yaml: &str, home: &Path, more: &[(&str, &str)], watch: bool, args: &[&str]) -> Mesh {
        Self::start_logging(yaml, home, more, watch, args, "warn")
    }

    fn start_logging(
        yaml: &str,
        home: &Path,
        more: &[(&str, &str)],
        watch: bool,
        args: &[&str],
        log: &str,
    ) -> Mesh {
        let files = tempfile::tempdir().unwrap();
        let file = files.path().join("mesh.yaml");
        std::fs::write(&file, yaml).unwrap();
        for (name, text) in more {
            std::fs::write(files.path().join(name), text).unwrap();
        }
        let mut up_args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if watch {
            up_args.push("--watch".into());
            up_args.push(files.path().display().to_string());
        } else {
            up_args.push(file.display().to_string());
        }
        Self::launch(files, home, &up_args, log, mesh_name(yaml))
    }

    /// Runs `weft up ARGS` in `home` (logging at `log`; empty: weft's default), waits for its
    /// ready line, and reads its status.
    fn launch(
        files: tempfile::TempDir,
        home: &Path,
        args: &[String],
        log: &str,
        name: Option<&str>,
    ) -> Mesh {
        Self::launch_with(files, home, args, log, name, false)
    }

    /// [`Mesh::launch`]; `combined`: as a script that reads `weft up 2>&1` would, with the log
    /// on the same stream as the output (and in [`Mesh::stderr`]), waiting for the first line
    /// with the word "ready" (in [`Mesh::ready_line`]).
    fn launch_with(
        files: tempfile::TempDir,
        home: &Path,
        args: &[String],
        log: &str,
        name: Option<&str>,
        combined: bool,
    ) -> Mesh {
        let mut cmd = if combined {
            let mut sh = Command::new("sh");
            sh.args(["-c", "exec \"$@\" 2>&1", "sh", WEFT]);
            sh
        } else {
            Command::new(WEFT)
        };
        if log.is_empty() {
            cmd.env_remove("WEFT_LOG");
        } else {
            cmd.env("WEFT_LOG", log);
        }
        let mut child = cmd
            .arg("up")
            .args(args)
            .env("WEFT_HOME", home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weft up");
        let stderr = collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let log_lines = stderr.clone();
        let stdout = Arc::new(Mutex::new(String::new()));
        let printed = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                {
                    let mut p = printed.lock().unwrap();
                    p.push_str(&line);
                    p.push('\n');
                }
                if combined {
                    let mut b = log_lines.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                }
                // What `grep -w ready` finds ("already" and "readiness" are other words).
                let says_ready = if combined {
                    line.split(|c: char| !c.is_alphanumeric())
                        .any(|w| w == "ready")
                } else {
                    // `weft: mesh NAME is ready: ingress http://…`, and nothing else.
                    line.starts_with("weft: mesh ") && line.contains(" is ready: ingress http://")
                };
                if says_ready {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(ready_line) = rx.recv_timeout(READY_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "weft up {} did not become ready:\n{}",
                args.join(" "),
                stderr.lock().unwrap()
            );
        };
        let mut mesh = Mesh {
            child,
            home: home.to_path_buf(),
            _home: None,
            files,
            stderr,
            stdout,
            ready_line,
            status: Value::Null,
            ingress: "127.0.0.1:0".parse().unwrap(),
        };
        mesh.status = mesh.status_json(name);
        mesh.ingress = mesh.status["ingress"].as_str().unwrap().parse().unwrap();
        mesh
    }

    pub fn weft(&self, args: &[&str]) -> std::process::Output {
        weft_in(&self.home, args)
    }

    pub fn status_json(&self, mesh: Option<&str>) -> Value {
        let mut args = vec!["status", "-o", "json"];
        if let Some(m) = mesh {
            args.extend(["--mesh", m]);
        }
        let out = self.weft(&args);
        assert!(
            out.status.success(),
            "weft status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    /// Where `weft up` keeps this mesh's CA by default (one root per mesh).
    pub fn ca_dir(&self) -> PathBuf {
        let name = self.status["mesh"].as_str().expect("status names the mesh");
        self.home.join("ca").join(name)
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Sends SIGTERM and waits for `weft up` to exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        wait_timeout(&mut self.child, within)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none()
            && self.terminate(Duration::from_secs(30)).is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn weft_in(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(WEFT)
        .args(args)
        .env("WEFT_HOME", home)
        .output()
        .expect("run weft")
}

pub fn wait_timeout(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut b = b.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
    buf
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET over HTTP/2 with prior knowledge (h2c), as gRPC clients speak: connects to `addr` and
/// asks for `http://AUTHORITY/path` (`:authority` is what names the service in HTTP/2).
pub async fn get_h2(addr: SocketAddr, authority: &str, path: &str) -> (http::Version, u16, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    let (version, status) = (rsp.version(), rsp.status().as_u16());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (
        version,
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub flag: Option<String>,
    pub body: Value,
    pub text: String,
}

#[derive(Debug, Clone)]
pub enum Failure {
    /// The connection was refused: the request was never accepted.
    Connect(String),
    Other(String),
}

/// GET `path` from `addr` with `Host: host`.
pub async fn get(
    c: &HttpClient,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<Reply, Failure> {
    get_with(c, addr, host, path, &[]).await
}

/// POSTs JSON `body` to `path` at `addr` with `headers`: the status and the JSON answer (or,
/// when it is not JSON — a proxy's own answer — `{text, flag, www-authenticate}`).
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    use http_body_util::Full;
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let c = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let rsp = c
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let said = |h: &str| {
        rsp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (flag, challenge) = (said("x-weft-flag"), said("www-authenticate"));
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::json!({"text": String::from_utf8_lossy(&bytes), "flag": flag, "www-authenticate": challenge})
    });
    (status, body)
}

/// The new version's weight at each move of a rollout, from `weft canary status NAME -o json`
/// (its history, the start left out).
pub fn rollout_weights(status: &Value) -> Vec<u64> {
    status["state"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["phase"] != "initializing")
        .map(|e| e["weight"].as_u64().unwrap_or(0))
        .collect()
}

/// [`get`] with more headers.
pub async fn get_with(
    c: &HttpClient,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, Failure> {
    let mut req = http::Request::get(format!("http://{addr}{path}")).header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Empty::new()).unwrap();
    let rsp = c.request(req).await.map_err(|e| {
        if e.is_connect() {
            Failure::Connect(format!("{e:?}"))
        } else {
            Failure::Other(format!("{e:?}"))
        }
    })?;
    let status = rsp.status().as_u16();
    let flag = rsp
        .headers()
        .get("x-weft-flag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Other(format!("body: {e}")))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        flag,
        body,
        text,
    })
}

/// The sum of every sample of the metric family `name` whose line starts with `prefix`
/// (e.g. `weft_requests_total{direction="inbound"`) on a proxy's admin `/metrics`.
pub async fn metric_sum(c: &HttpClient, admin: SocketAddr, prefix: &str) -> f64 {
    let r = get(c, admin, "admin", "/metrics")
        .await
        .expect("admin /metrics");
    r.text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Requests a replica's sidecar handed to its app (its inbound count), by instance name.
pub async fn inbound_requests(c: &HttpClient, mesh: &Mesh, instance: &str) -> f64 {
    let status = mesh.status_json(None);
    let admin = status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["instance"] == instance)
        .unwrap_or_else(|| panic!("no instance {instance} in {status}"))["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    metric_sum(c, admin, "weft_requests_total{direction=\"inbound\"").await
}

/// Where the browser tests save their screenshots: `target/screenshots`.
pub fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots")
}

/// Runs the browser script `testdata/browser/SCRIPT` with `args` against `mesh` and returns
/// the JSON it prints of what the pages showed (failing with its stderr and the mesh's).
pub async fn browser(mesh: &Mesh, script: &str, args: &[&str]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/browser")
        .join(script);
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mesh.stderr()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each of `names` in [`screenshots_dir`] is a PNG with something on it.
pub fn assert_screenshots(names: &[&str]) {
    for name in names {
        let png = std::fs::read(screenshots_dir().join(name)).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "{name}: {} bytes",
            png.len()
        );
    }
}

/// The folder of `examples/NAME` in the repository.
pub fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

impl Mesh {
    /// The `WEFT_HOME` the mesh runs in, if the test made it.
    pub fn home(&self) -> Option<&Path> {
        self._home.as_ref().map(|h| h.path())
    }

    /// `weft up DIR` on a copy of an example folder (its top-level YAML files, which is what
    /// `weft up DIR` reads), with the ingress moved to a free port. The
    /// copy is `mesh.files`.
    pub fn up_dir(dir: &Path) -> Mesh {
        Self::up_dir_with(dir, &[])
    }

    /// [`Mesh::up_dir`] with `weft up ARGS…`.
    /// `weft up ARGS…` with no files: the built-in shop.
    pub fn up_built_in(args: &[&str]) -> Mesh {
        let home = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut m = Self::launch(files, home.path(), &argv, "warn", None);
        m._home = Some(home);
        m
    }

    pub fn up_dir_with(dir: &Path, args: &[&str]) -> Mesh {
        let files = tempfile::tempdir().unwrap();
        let mut moved = false;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let ext = path.extension().and_then(|e| e.to_str());
            if !path.is_file() || !matches!(ext, Some("yaml" | "yml" | "json")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Whatever address the example's Mesh asks for, this copy listens on a free port.
            let text: String = text
                .lines()
                .map(|l| match l.split_once("ingress:") {
                    Some((indent, _)) if indent.trim().is_empty() => {
                        moved = true;
                        format!("{indent}ingress: 127.0.0.1:0\n")
                    }
                    _ => format!("{l}\n"),
                })
                .collect();
            std::fs::write(files.path().join(path.file_name().unwrap()), text).unwrap();
        }
        assert!(moved, "{}: no `ingress:` in its Mesh", dir.display());
        let home = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        argv.push(files.path().display().to_string());
        // The only mesh running in this home.
        let mut m = Self::launch(files, home.path(), &argv, "warn", None);
        m._home = Some(home);
        m
    }
}

impl Mesh {
    /// [`Mesh::up`] with every process of the mesh logging at `level` (`WEFT_LOG`), so that
    /// what the proxies log at info (an audited authorization decision…) reaches
    /// [`Mesh::stderr`].
    pub fn up_logging(yaml: &str, level: &str) -> Mesh {
        Self::up_logging_with(yaml, level, &[])
    }

    /// [`Mesh::up_logging`] with `weft up ARGS…`.
    pub fn up_logging_with(yaml: &str, level: &str, args: &[&str]) -> Mesh {
        let home = tempfile::tempdir().unwrap();
        let mut m = Self::start_logging(yaml, home.path(), &[], false, args, level);
        m._home = Some(home);
        m
    }
}

/// Credentials for `identity`, its certificate signed by `ca` (with a one-time join token, as a
/// proxy gets it), trusting `bundle`.
pub fn signed_credentials(
    ca: &control::ca::Ca,
    identity: &model::Identity,
    bundle: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Arc<proxy::tls::Credentials> {
    let token = ca.join_token(identity);
    let (key, csr) = proxy::tls::csr(identity).unwrap();
    let issued = ca.sign(csr.as_bytes(), identity, &token).unwrap();
    proxy::tls::Credentials::new(identity, &key, issued.chain, bundle).unwrap()
}

/// A client with the mesh identity `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`, signed by the running
/// mesh's CA, as another workload's sidecar would hold it.
pub fn identity_client(
    mesh: &Mesh,
    trust_domain: &str,
    ns: &str,
    sa: &str,
) -> Arc<proxy::tls::Credentials> {
    let config = control::ca::CaConfig {
        trust_domain: trust_domain.to_string(),
        ..control::ca::CaConfig::default()
    };
    let ca = control::ca::Ca::open(&mesh.ca_dir(), config).unwrap();
    let id = model::Identity(format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"));
    signed_credentials(&ca, &id, ca.bundle())
}

/// [`identity_client`] in the default trust domain.
pub fn workload_client(mesh: &Mesh, ns: &str, sa: &str) -> Arc<proxy::tls::Credentials> {
    identity_client(mesh, model::names::TRUST_DOMAIN, ns, sa)
}

impl Mesh {
    /// `weft ARGS` against the mesh to the end; its stdout, after checking that it succeeded.
    /// On a multi-threaded test runtime the wait leaves the other workers free.
    pub fn weft_ok(&self, args: &[&str]) -> String {
        let run = || self.weft(args);
        let out = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        };
        assert!(
            out.status.success(),
            "weft {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `yaml` to `name` in the mesh's files and `weft apply`s it (answered once every
    /// proxy runs it); panics with weft's answer when it fails.
    pub fn apply_yaml(&self, name: &str, yaml: &str) {
        let file = self.files.path().join(name);
        std::fs::write(&file, yaml).unwrap();
        self.weft_ok(&["apply", "-f", file.to_str().unwrap()]);
    }

    /// `weft delete -f` of a file [`Mesh::apply_yaml`] wrote.
    pub fn delete_file(&self, name: &str) {
        let file = self.files.path().join(name);
        self.weft_ok(&["delete", "-f", file.to_str().unwrap()]);
    }
}

/// A port free now on 127.0.0.1 (for what must be told its port before it binds).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of the first sample of metric `name` (a line starting with it) on a proxy's admin
/// `/metrics`.
pub async fn metric(c: &HttpClient, admin: SocketAddr, name: &str) -> Option<f64> {
    let r = get(c, admin, "admin", "/metrics").await.ok()?;
    r.text
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// A one-time join token for `identity` and the mesh's trust bundle, from the control plane's
/// API at `api` (with the admin credential in `token_file`), written to files in `dir`:
/// (token file, bundle file), for `weft proxy --join-token-file … --trust-anchors-file …`.
pub fn join_credentials(
    api: &str,
    token_file: &Path,
    identity: &str,
    dir: &Path,
) -> (String, String) {
    let token = std::fs::read_to_string(token_file).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "--fail-with-body", "-H", &auth])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let join = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!("{{\"identity\": \"{identity}\"}}"),
        &format!("http://{api}/join"),
    ]);
    let bundle = curl(&[&format!("http://{api}/ca/bundle")]);
    let name = identity.rsplit('/').next().unwrap();
    let (t, b) = (dir.join(format!("{name}.token")), dir.join("bundle.pem"));
    std::fs::write(&t, join).unwrap();
    std::fs::write(&b, bundle).unwrap();
    (t.display().to_string(), b.display().to_string())
}

/// Steady load: one GET every 5 ms to `addr` with Host `host`, counting what was sent and what
/// failed, until stopped (bounded: at most `max` requests).
pub struct SteadyLoad {
    sent: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl SteadyLoad {
    /// Starts it; `on_ok` sees every 200 answer.
    pub fn start(
        c: &HttpClient,
        addr: SocketAddr,
        host: &'static str,
        max: u64,
        on_ok: impl Fn(&Reply) + Send + 'static,
    ) -> SteadyLoad {
        use std::sync::atomic::Ordering::Relaxed;
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s, st) = (c.clone(), sent.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..max {
                if st.load(Relaxed) {
                    break;
                }
                match get(&c, addr, host, "/").await {
                    Ok(r) if r.status == 200 => on_ok(&r),
                    other => failed.push(format!("{other:?}")),
                }
                s.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        });
        SteadyLoad { sent, stop, task }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `k` more requests have been sent (load on each side of an event).
    pub async fn more(&self, k: u64) {
        let goal = self.sent() + k;
        until("the load keeps going", Duration::from_secs(30), || async {
            self.sent() >= goal
        })
        .await;
    }

    /// Stops it: (requests sent, the failures).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = self.sent.clone();
        let failed = self.task.await.unwrap();
        (sent.load(std::sync::atomic::Ordering::Relaxed), failed)
    }
}

/// Waits until `f` holds (and fails the test, naming `what`, if it does not), checking every 20 ms, for at most `within`; returns how long it took.
pub async fn until<F, Fut>(what: &str, within: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Polls `f` until it returns `want`, for at most 5 s; returns the last answer. Only for what a
/// process reports after the fact (log lines through a pipe, a counter bumped after the peer
/// saw the outcome): requests after `weft up`'s ready line or `weft apply`'s answer are asserted
/// on the first try, since both signals mean every proxy runs the change.
pub async fn eventually<F, Fut, T>(want: T, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: PartialEq + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = f().await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `req` over HTTP/2 on `stream`, as a peer proxy sends it (one connection per call); the error
/// says which step failed.
pub async fn h2_send<S>(
    stream: S,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    send.send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))
}

/// [`h2_send`] over mTLS to `addr` as `creds`, expecting the server to be `server`.
pub async fn mtls_send(
    creds: &Arc<proxy::tls::Credentials>,
    addr: SocketAddr,
    server: &model::Identity,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = creds
        .connector(server)
        .connect(proxy::tls::server_name(server), tcp)
        .await
        .map_err(|e| e.to_string())?;
    h2_send(tls, req).await
}

/// The replica `instance` in a `weft status -o json` document.
pub fn workload<'a>(status: &'a Value, instance: &str) -> &'a Value {
    status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["instance"] == instance)
        .unwrap_or_else(|| panic!("no {instance} in {status}"))
}

/// GET `path` on every proxy's admin listener (the ingress's, then each replica's sidecar's):
/// who answered ("ingress" or the instance) and its JSON body, each checked to be a 200.
pub async fn from_every_proxy(c: &HttpClient, status: &Value, path: &str) -> Vec<(String, Value)> {
    let mut admins = vec![("ingress".to_string(), status["ingress_admin"].clone())];
    for w in status["workloads"].as_array().unwrap() {
        admins.push((w["instance"].as_str().unwrap().into(), w["admin"].clone()));
    }
    let mut out = Vec::new();
    for (who, admin) in admins {
        let addr: SocketAddr = admin.as_str().unwrap().parse().unwrap();
        let r = get(c, addr, "admin", path).await.unwrap();
        assert_eq!(r.status, 200, "{who} {path}: {}", r.text);
        out.push((who, r.body));
    }
    out
}
