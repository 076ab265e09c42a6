//! `weft proxy --state-dir`: a proxy keeps its last snapshot and its credentials on disk, so
//! one restarted while the control plane is down serves again from them, over mTLS, without a
//! new join token. `weft control` and `weft proxy` run as separate processes, killed with
//! SIGKILL.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HELLO_ID: &str = "spiffe://cluster.local/ns/default/sa/hello";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

struct Proc {
    child: Child,
    /// Its stderr so far (it is also copied to the test's).
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// SIGKILL, and waits for it to be gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `weft ARGS` in `home` and returns it with its first stdout line (where it says it is
/// ready, or where it listens).
fn start(home: &Path, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(WEFT)
        .args(args)
        .env("WEFT_HOME", home)
        .env("WEFT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let mut l = l.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc { child, log }, line)
}

/// A mesh of `hello` (one replica, whose sidecar the tests start by hand) and `client` (no
/// workload: the identity of the client proxy).
const MESH: &str = "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: kept}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: hello
    port: 80
    workloads:
    - {name: hello-v1, replicas: 1, labels: {app: hello}, command: [weft, demo, echo]}
  - name: client
    port: 80
";

/// A running `weft control` with a CA kept in a directory, so that a restart has the same root.
struct Control {
    proc: Proc,
    api: String,
}

fn start_control(home: &Path, mesh: &Path, listen: &str, ca_dir: &Path) -> Control {
    start_control_with(home, mesh, listen, ca_dir, &[])
}

/// [`start_control`] with more flags.
fn start_control_with(
    home: &Path,
    mesh: &Path,
    listen: &str,
    ca_dir: &Path,
    more: &[&str],
) -> Control {
    let mut args = vec![
        "control",
        mesh.to_str().unwrap(),
        "--listen",
        listen,
        "--api",
        "127.0.0.1:0",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
    ];
    args.extend(more);
    let (proc, line) = start(home, &args);
    assert!(line.contains("ready"), "{line}");
    let api = line
        .split("API on http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no API address in {line:?}"))
        .to_string();
    Control { proc, api }
}

/// [`join_credentials`] with the admin credential `weft control` wrote to `home`.
fn state_credentials(home: &Path, api: &str, identity: &str, dir: &Path) -> (String, String) {
    join_credentials(api, &home.join("meshes/kept.token"), identity, dir)
}

fn echo_app(port: u16) -> Proc {
    let mut child = Command::new(WEFT)
        .args(["demo", "echo", "--service", "hello"])
        .args(["--port", &port.to_string()])
        .env("WEFT_INSTANCE", "hello-v1-0")
        .env("WEFT_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the echo app never listened");
        if let Ok(Some(s)) = child.try_wait() {
            panic!("the echo app exited: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc {
        child,
        log: Default::default(),
    }
}

/// `weft proxy` with `args`; returns it and what it bound.
fn proxy(home: &Path, args: &[String]) -> (Proc, serde_json::Value) {
    let mut argv = vec!["proxy"];
    argv.extend(args.iter().map(String::as_str));
    let (p, line) = start(home, &argv);
    let bound = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (p, bound)
}

fn addr(v: &serde_json::Value, key: &str) -> SocketAddr {
    v[key].as_str().unwrap().parse().unwrap()
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn admin_json(c: &HttpClient, admin: SocketAddr, path: &str) -> serde_json::Value {
    get(c, admin, "admin", path).await.unwrap().body
}

async fn is_ready(c: &HttpClient, admin: SocketAddr) -> bool {
    get(c, admin, "admin", "/ready")
        .await
        .map(|r| r.status)
        .ok()
        == Some(200)
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The snapshot `dir` keeps, decoded as the proxy decodes it (`None`: none yet).
fn kept_snapshot(dir: &Path) -> Option<api::pb::Snapshot> {
    proxy::persist::Persist::open(dir)
        .unwrap()
        .load_snapshot()
        .ok()
        .flatten()
}

/// The leaf's serial of a proxy's `/identity`.
async fn leaf_serial(c: &HttpClient, admin: SocketAddr) -> String {
    let id = admin_json(c, admin, "/identity").await;
    id["chain"][0]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_restarted_while_the_control_plane_is_down_serves_from_its_state_dir() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, MESH).unwrap();
    let ca_dir = dir.path().join("ca");
    // Fixed ports: the restarted control plane and sidecar must be where the others look.
    let listen = format!("127.0.0.1:{}", free_port());
    let inbound = format!("127.0.0.1:{}", free_port());
    let mut control = start_control(home.path(), &mesh, &listen, &ca_dir);

    let app_port = free_port();
    let _app = echo_app(app_port);
    let (hello_token, bundle) = state_credentials(home.path(), &control.api, HELLO_ID, dir.path());
    let (client_token, _) = state_credentials(home.path(), &control.api, CLIENT_ID, dir.path());
    let hello_state = dir.path().join("state/hello");
    let client_state = dir.path().join("state/client");
    let sidecar_args = owned(&[
        "--mode",
        "sidecar",
        "--control",
        &listen,
        "--service",
        "hello",
        "--workload",
        "hello-v1",
        "--instance",
        "hello-v1-0",
        "--label",
        "app=hello",
        "--app",
        &format!("127.0.0.1:{app_port}"),
        "--inbound",
        &inbound,
        "--join-token-file",
        &hello_token,
        "--trust-anchors-file",
        &bundle,
        "--state-dir",
        hello_state.to_str().unwrap(),
    ]);
    let (mut sidecar, bound) = proxy(home.path(), &sidecar_args);
    let hello_admin = addr(&bound, "admin");
    let (_client, bound) = proxy(
        home.path(),
        &owned(&[
            "--mode",
            "client",
            "--control",
            &listen,
            "--service",
            "client",
            "--instance",
            "client-0",
            "--outbound",
            "127.0.0.1:0",
            "--join-token-file",
            &client_token,
            "--trust-anchors-file",
            &bundle,
            "--state-dir",
            client_state.to_str().unwrap(),
        ]),
    );
    let (outbound, client_admin) = (addr(&bound, "outbound"), addr(&bound, "admin"));
    let c = client();

    // The mesh is up over mTLS: the client reaches hello through its sidecar.
    until("the client proxy is ready", Duration::from_secs(60), || {
        is_ready(&c, client_admin)
    })
    .await;
    let st = tokio::task::block_in_place(|| {
        weft_in(
            home.path(),
            &["status", "--wait", "--timeout", "60s", "-o", "json"],
        )
    });
    assert!(st.status.success(), "{st:?}");
    let r = get(&c, outbound, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["instance"], "hello-v1-0", "{}", r.text);
    let edges = admin_json(&c, hello_admin, "/edges").await;
    assert!(
        edges.to_string().contains(CLIENT_ID),
        "hello's sidecar saw the client's identity (mTLS): {edges}"
    );
    for admin in [hello_admin, client_admin] {
        let config = admin_json(&c, admin, "/config").await;
        assert_eq!(config["snapshot_source"], "control", "{config}");
        assert_eq!(
            metric(&c, admin, "weft_snapshot_source{source=\"control\"}").await,
            Some(1.0)
        );
        assert_eq!(
            metric(&c, admin, "weft_snapshot_source{source=\"persisted\"}").await,
            Some(0.0)
        );
    }
    // Both keep their state, privately: the snapshot in force and the credentials.
    until(
        "hello's sidecar has kept the snapshot in force",
        Duration::from_secs(10),
        || async {
            let in_force = admin_json(&c, hello_admin, "/config").await["version"].as_u64();
            kept_snapshot(&hello_state).map(|s| s.version) == in_force
        },
    )
    .await;
    for state in [&hello_state, &client_state] {
        assert_eq!(mode_of(state), 0o700, "{}", state.display());
        for file in ["snapshot.pb", "credentials.json"] {
            let path = state.join(file);
            until(
                &format!("{} is written", path.display()),
                Duration::from_secs(10),
                || async { path.exists() },
            )
            .await;
            assert_eq!(mode_of(&path), 0o600, "{}", path.display());
        }
    }
    let serial = leaf_serial(&c, hello_admin).await;
    assert!(!serial.is_empty());

    // The control plane dies: requests keep flowing.
    control.proc.kill();
    for _ in 0..100 {
        let r = get(&c, outbound, "hello", "/anything").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
    until(
        "the proxies notice the control plane is gone",
        Duration::from_secs(10),
        || async {
            metric(&c, client_admin, "weft_control_plane_connected").await == Some(0.0)
                && metric(&c, hello_admin, "weft_control_plane_connected").await == Some(0.0)
        },
    )
    .await;

    // hello's sidecar dies too, and starts again with the same flags: its join token is
    // spent, its control plane away. It serves from what it kept.
    sidecar.kill();
    let hello_version = kept_snapshot(&hello_state).unwrap().version;
    let (sidecar, bound) = proxy(home.path(), &sidecar_args);
    let hello_admin = addr(&bound, "admin");
    let took = until(
        "the restarted sidecar is ready",
        Duration::from_secs(30),
        || is_ready(&c, hello_admin),
    )
    .await;
    eprintln!("the restarted sidecar was ready {took:?} after it bound");
    let config = admin_json(&c, hello_admin, "/config").await;
    assert_eq!(config["snapshot_source"], "persisted", "{config}");
    assert_eq!(config["version"].as_u64(), Some(hello_version), "{config}");
    assert_eq!(
        metric(
            &c,
            hello_admin,
            "weft_snapshot_source{source=\"persisted\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(&c, hello_admin, "weft_control_plane_connected").await,
        Some(0.0)
    );
    assert_eq!(
        leaf_serial(&c, hello_admin).await,
        serial,
        "the restarted sidecar presents the certificate it kept"
    );
    let log = sidecar.log();
    assert!(
        log.contains("using the certificate kept from the last run"),
        "{log}"
    );
    // Every request after the sidecar is ready again succeeds, over mTLS with the kept
    // certificate, while the control plane stays down.
    let (mut ok, mut failed) = (0, Vec::new());
    for _ in 0..200 {
        match get(&c, outbound, "hello", "/anything").await {
            Ok(r) if r.status == 200 && r.body["instance"] == "hello-v1-0" => ok += 1,
            other => failed.push(format!("{other:?}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {:?}",
        failed.len(),
        failed
    );
    assert_eq!(ok, 200);
    let inbound_ok = metric_sum(
        &c,
        hello_admin,
        "weft_requests_total{direction=\"inbound\",status_class=\"2xx\"}",
    )
    .await;
    assert_eq!(inbound_ok, 200.0, "the restarted sidecar served them all");

    // The control plane comes back on the same address with the same CA: both proxies
    // reconnect with the certificates they hold, and the sidecar runs the pushed snapshot.
    let control = start_control(home.path(), &mesh, &listen, &ca_dir);
    let mut during = 0;
    until("the proxies reconnect", Duration::from_secs(30), || {
        let c = c.clone();
        during += 1;
        async move {
            let r = get(&c, outbound, "hello", "/").await.unwrap();
            assert_eq!(r.status, 200, "while reconnecting: {}", r.text);
            metric(&c, client_admin, "weft_control_plane_connected").await == Some(1.0)
                && metric(&c, hello_admin, "weft_control_plane_connected").await == Some(1.0)
        }
    })
    .await;
    until(
        "the sidecar runs the control plane's snapshot",
        Duration::from_secs(30),
        || async { admin_json(&c, hello_admin, "/config").await["snapshot_source"] == "control" },
    )
    .await;
    let st = tokio::task::block_in_place(|| {
        weft_in(
            home.path(),
            &["status", "--wait", "--timeout", "60s", "-o", "json"],
        )
    });
    assert!(st.status.success(), "{st:?}");
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(workload(&st, "hello-v1-0")["ready"], true, "{st}");
    for _ in 0..50 {
        let r = get(&c, outbound, "hello", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
    eprintln!("{during} requests while the proxies reconnected, all 200");
    drop((sidecar, control));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_dir_is_reported_and_ignored_and_an_open_one_refused() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, MESH).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let control = start_control(home.path(), &mesh, &listen, &dir.path().join("ca"));
    let app_port = free_port();
    let _app = echo_app(app_port);
    let (hello_token, bundle) = state_credentials(home.path(), &control.api, HELLO_ID, dir.path());
    let (client_token, _) = state_credentials(home.path(), &control.api, CLIENT_ID, dir.path());
    let state = dir.path().join("hello-state");
    let args = |state: &Path| {
        owned(&[
            "--mode",
            "sidecar",
            "--control",
            &listen,
            "--service",
            "hello",
            "--workload",
            "hello-v1",
            "--instance",
            "hello-v1-0",
            "--app",
            &format!("127.0.0.1:{app_port}"),
            "--inbound",
            "127.0.0.1:0",
            "--join-token-file",
            &hello_token,
            "--trust-anchors-file",
            &bundle,
            "--state-dir",
            state.to_str().unwrap(),
        ])
    };

    // A state directory others may enter: the proxy does not start, and says why.
    let open: PathBuf = dir.path().join("open-state");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut argv = vec!["proxy".to_string()];
    argv.extend(args(&open));
    let out = weft_in(
        home.path(),
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(open.to_str().unwrap()), "{said}");
    assert!(said.contains("others have access"), "{said}");

    // A kept snapshot and credentials that are garbage: reported, naming the files, and
    // ignored; the proxy joins with its token and serves once the control plane answers.
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    for file in ["snapshot.pb", "credentials.json"] {
        let path = state.join(file);
        std::fs::write(&path, b"\x0a\xff\xff\xff not what weft wrote").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (sidecar, bound) = proxy(home.path(), &args(&state));
    let hello_admin = addr(&bound, "admin");
    let (_client, bound) = proxy(
        home.path(),
        &owned(&[
            "--mode",
            "client",
            "--control",
            &listen,
            "--service",
            "client",
            "--instance",
            "client-0",
            "--outbound",
            "127.0.0.1:0",
            "--join-token-file",
            &client_token,
            "--trust-anchors-file",
            &bundle,
        ]),
    );
    let (outbound, client_admin) = (addr(&bound, "outbound"), addr(&bound, "admin"));
    let c = client();
    for admin in [hello_admin, client_admin] {
        until("the proxies are ready", Duration::from_secs(60), || {
            is_ready(&c, admin)
        })
        .await;
    }
    let st = tokio::task::block_in_place(|| {
        weft_in(
            home.path(),
            &["status", "--wait", "--timeout", "60s", "-o", "json"],
        )
    });
    assert!(st.status.success(), "{st:?}");
    let r = get(&c, outbound, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let config = admin_json(&c, hello_admin, "/config").await;
    assert_eq!(config["snapshot_source"], "control", "{config}");
    let log = sidecar.log();
    for file in ["snapshot.pb", "credentials.json"] {
        let path = state.join(file).display().to_string();
        assert!(
            log.lines()
                .any(|l| l.contains(&path) && l.contains("ignoring")),
            "no log line names {path}:\n{log}"
        );
    }
    // The garbage is replaced by what the proxy runs now.
    until(
        "the snapshot in force is kept",
        Duration::from_secs(10),
        || async {
            let in_force = admin_json(&c, hello_admin, "/config").await["version"].as_u64();
            kept_snapshot(&state).map(|s| s.version) == in_force
        },
    )
    .await;
}

/// `weft up` gives each sidecar a state directory in the mesh's run directory, one per start
/// of the replica: a sidecar the supervisor restarts starts from what it kept, and the run
/// directory goes when the mesh stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_up_restarts_a_sidecar_from_its_state_dir() {
    let mut mesh = Mesh::up_logging_with(&mesh_yaml("kept-up", &[("hello", 1, "")]), "info", &[]);
    let run = mesh.home.join("run/kept-up");
    let state = run.join("proxies/hello-v1-0.default.1");
    assert_eq!(mode_of(&run), 0o700);
    for file in ["snapshot.pb", "credentials.json"] {
        let path = state.join(file);
        until(
            &format!("{} is written", path.display()),
            Duration::from_secs(10),
            || async { path.exists() },
        )
        .await;
        assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    }
    let pid = workload(&mesh.status, "hello-v1-0")["pid"]
        .as_u64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    until(
        "the restarted sidecar's replica is ready",
        Duration::from_secs(60),
        || async {
            let st = tokio::task::block_in_place(|| mesh.status_json(Some("kept-up")));
            let w = workload(&st, "hello-v1-0");
            w["pid"].as_u64().is_some_and(|p| p != pid && p != 0) && w["ready"] == true
        },
    )
    .await;
    let log = mesh.stderr();
    let restarted: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("[hello-v1-0 proxy]"))
        .collect();
    for said in [
        "using the certificate kept from the last run",
        "serving the snapshot kept from the last run",
    ] {
        assert!(
            restarted.iter().any(|l| l.contains(said)),
            "the restarted sidecar did not say {said:?}:\n{log}"
        );
    }
    let r = get(&client(), mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);

    assert!(mesh.terminate(Duration::from_secs(30)).is_some());
    assert!(!run.exists(), "{} outlived the mesh", run.display());
}

/// Renewal tokens live in the control plane's memory: after it restarts, a sidecar that kept its
/// certificate falls back to the join token it is started with, so a restart with a fresh one
/// renews the kept certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_certificate_renews_with_a_fresh_join_token_after_the_control_plane_restarts() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, MESH).unwrap();
    let ca_dir = dir.path().join("ca");
    let listen = format!("127.0.0.1:{}", free_port());
    // Leaves of 30 s (valid from 30 s back): renewed about 12 s after they are issued.
    let ttl = ["--cert-ttl", "30s"];
    let mut control = start_control_with(home.path(), &mesh, &listen, &ca_dir, &ttl);
    let app_port = free_port();
    let _app = echo_app(app_port);
    let (token, bundle) = state_credentials(home.path(), &control.api, HELLO_ID, dir.path());
    let state = dir.path().join("hello-state");
    let args = owned(&[
        "--mode",
        "sidecar",
        "--control",
        &listen,
        "--service",
        "hello",
        "--workload",
        "hello-v1",
        "--instance",
        "hello-v1-0",
        "--app",
        &format!("127.0.0.1:{app_port}"),
        "--inbound",
        "127.0.0.1:0",
        "--join-token-file",
        &token,
        "--trust-anchors-file",
        &bundle,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let (mut sidecar, bound) = proxy(home.path(), &args);
    let c = client();
    let admin = addr(&bound, "admin");
    until("the sidecar is ready", Duration::from_secs(60), || {
        is_ready(&c, admin)
    })
    .await;
    let kept = || {
        proxy::persist::Persist::open(&state)
            .unwrap()
            .load_credentials()
            .ok()
            .flatten()
    };
    until(
        "the credentials are kept",
        Duration::from_secs(10),
        || async { kept().is_some() },
    )
    .await;

    // A new control plane, same address and CA: it knows none of the renewal tokens. The
    // sidecar restarts with a fresh join token and the certificate it kept.
    control.proc.kill();
    let control = start_control_with(home.path(), &mesh, &listen, &ca_dir, &ttl);
    let (fresh, _) = state_credentials(home.path(), &control.api, HELLO_ID, dir.path());
    assert_eq!(fresh, token, "the same file, a fresh token");
    sidecar.kill();
    let before = kept().unwrap();
    let (sidecar, bound) = proxy(home.path(), &args);
    let admin = addr(&bound, "admin");
    until(
        "the restarted sidecar is ready",
        Duration::from_secs(30),
        || is_ready(&c, admin),
    )
    .await;
    let log = sidecar.log();
    assert!(
        log.contains("using the certificate kept from the last run"),
        "{log}"
    );
    // Its renewal: the kept token is refused, the join token is not.
    let took = until(
        "the kept certificate is renewed",
        Duration::from_secs(60),
        || async { metric(&c, admin, "weft_cert_renewals_total").await == Some(1.0) },
    )
    .await;
    eprintln!("renewed {took:?} after the restarted sidecar was ready");
    let log = sidecar.log();
    assert!(
        log.contains("the CA refused the renewal token; trying the join token"),
        "{log}"
    );
    until(
        "the renewed certificate is kept",
        Duration::from_secs(10),
        || async { kept().is_some_and(|k| k.chain_pem != before.chain_pem) },
    )
    .await;
    let after = kept().unwrap();
    assert_ne!(after.renewal_token, before.renewal_token);
    assert_eq!(
        metric(&c, admin, "weft_control_plane_connected").await,
        Some(1.0)
    );
    drop((sidecar, control));
}
