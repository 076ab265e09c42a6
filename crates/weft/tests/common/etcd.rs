//! A real etcd cluster for tests (Debian's `etcd-server`, which `scripts/test` installs): N
//! members on loopback ports, each in its own data directory, stopped (by PID) when dropped.
//! And `weft control --store etcd://…` replicas over it.

use super::free_port;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd server binary, or `None` when it is not installed (the test then fails saying so:
/// CI installs it, and a test that needs it must not pass without it).
pub fn etcd_binary() -> PathBuf {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("etcd is not installed: `apt-get install etcd-server` (scripts/test does)");
}

pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until the cluster answers a write.
    pub fn start(n: usize) -> Cluster {
        let bin = etcd_binary();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let token = format!("weft-test-{}", std::process::id());
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let data = dir.path().join(&name);
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new(&bin)
                .args([
                    "--name",
                    &name,
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-token",
                    &token,
                    "--initial-cluster-state",
                    "new",
                    // Faster elections than the defaults, for a loopback cluster.
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                ])
                .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            members.push(Member {
                name,
                client: SocketAddr::from(([127, 0, 0, 1], *client)),
                child: Some(child),
            });
        }
        let cluster = Cluster { members, _dir: dir };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// `etcd://HOST:PORT,…` for every member.
    pub fn url(&self) -> String {
        let eps: Vec<String> = self.members.iter().map(|m| m.client.to_string()).collect();
        format!("etcd://{}", eps.join(","))
    }

    /// Waits until a write through `etcdctl` succeeds (a leader is elected).
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let eps: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://{}", m.client))
            .collect();
        loop {
            let out = Command::new("etcdctl")
                .args(["--endpoints", &eps.join(","), "put", "/weft-test/ping", "1"])
                .env("ETCDCTL_API", "3")
                .output();
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {:?}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The keys under `prefix`, as etcdctl prints them (key, value, key, value…).
    pub fn get_prefix(&self, prefix: &str) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://{}", m.client))
            .collect();
        let out = Command::new("etcdctl")
            .args(["--endpoints", &eps.join(","), "get", "--prefix", prefix])
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A test store key (64 hex digits).
pub const STORE_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// A running `weft control --store etcd://…` replica.
pub struct Replica {
    pub child: Child,
    pub home: tempfile::TempDir,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub name: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Replica {
    /// Starts a replica over `store` with the mesh files `files`, its gRPC listener on
    /// `listen` (its API on any port of 127.0.0.1), and waits for its ready line.
    pub fn start(store: &str, files: &[&Path], listen: &str, extra: &[&str]) -> Replica {
        Replica::start_on(store, files, listen, "127.0.0.1:0", extra)
    }

    /// [`Replica::start`] with its API on `api`.
    pub fn start_on(
        store: &str,
        files: &[&Path],
        listen: &str,
        api: &str,
        extra: &[&str],
    ) -> Replica {
        let home = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "control".into(),
            "--store".into(),
            store.into(),
            "--listen".into(),
            listen.into(),
            "--api".into(),
            api.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(files.iter().map(|f| f.display().to_string()));
        let mut child = Command::new(super::WEFT)
            .args(&args)
            .env("WEFT_HOME", home.path())
            .env("WEFT_STORE_KEY", STORE_KEY)
            .env("WEFT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(super::READY_TIMEOUT)
            .unwrap_or_else(|_| panic!("no ready line: {}", stderr.lock().unwrap()));
        // "… proxies connect to ADDR, API on http[s]://ADDR · store etcd (…), replica NAME"
        let after = |marker: &str| -> String {
            line.split(marker)
                .nth(1)
                .unwrap_or_else(|| panic!("{marker} not in {line}"))
                .split([',', ' '])
                .next()
                .unwrap()
                .to_string()
        };
        let grpc = after("proxies connect to ").parse().unwrap();
        // https when the API is not on loopback and there is a CA.
        let api = after("API on http")
            .trim_start_matches('s')
            .trim_start_matches("://")
            .parse()
            .unwrap();
        let name = after("replica ");
        Replica {
            child,
            home,
            grpc,
            api,
            name,
            stderr,
        }
    }

    /// `weft ARGS` against this replica (its WEFT_HOME).
    pub fn weft(&self, args: &[&str]) -> std::process::Output {
        super::weft_in(self.home.path(), args)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An AuthorizationPolicy denying hello's `/secret`: a security change the replicas' tests apply.
pub const DENY_SECRET: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-secret, namespace: default}
spec:
  selector: {matchLabels: {app: hello}}
  action: DENY
  rules:
  - to: [{operation: {paths: [\"/secret\"]}}]
";

/// A process stopped (SIGKILL) when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`super::join_credentials`] from `replica`'s API, with the admin credential its WEFT_HOME
/// holds (the one mesh it serves).
pub fn credentials(replica: &Replica, identity: &str, dir: &Path) -> (String, String) {
    let token_file = std::fs::read_dir(replica.home.path().join("meshes"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "token"))
        .expect("the replica's admin credential");
    super::join_credentials(&replica.api.to_string(), &token_file, identity, dir)
}

/// The arguments of a `weft proxy` client (an outbound listener on any port, under the
/// `client` service) joining with the token and trust bundle in those files.
pub fn client_args<'a>(instance: &'a str, token: &'a str, bundle: &'a str) -> [&'a str; 12] {
    [
        "--mode",
        "client",
        "--service",
        "client",
        "--instance",
        instance,
        "--outbound",
        "127.0.0.1:0",
        "--join-token-file",
        token,
        "--trust-anchors-file",
        bundle,
    ]
}

/// `weft proxy ARGS` with the control-plane replicas `controls`; returns it and what it bound
/// (the JSON line it prints).
pub fn proxy(home: &Path, controls: &[SocketAddr], args: &[&str]) -> (Proc, serde_json::Value) {
    let controls: Vec<String> = controls.iter().map(|c| c.to_string()).collect();
    let mut child = Command::new(super::WEFT)
        .arg("proxy")
        .args(["--control", &controls.join(",")])
        .args(args)
        .env("WEFT_HOME", home)
        .env("WEFT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bound = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (Proc(child), bound)
}
