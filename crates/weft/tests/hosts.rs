//! Hosts beyond the control plane's machine, simulated as network namespaces on a bridge the
//! test creates (10.239.N.0/24, N from the test's process id): two control-plane replicas over a
//! 3-member etcd cluster, three hosts joined with one-time bootstrap tokens, replicas placed by
//! the Mesh file, traffic across hosts over mTLS through an ingress on another host, and a host
//! cut off from the network. Needs root (namespaces, links); says why it skips without it.

mod common;

use common::etcd::{Cluster, Replica, DENY_SECRET};
use common::pods::{can_run_pods, sh};
use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hosts' network: a bridge, and a namespace per host with a veth on it; all removed on
/// drop.
struct Net {
    bridge: String,
    subnet: String,
    hosts: Vec<String>,
}

impl Net {
    /// `n` hosts; `tag` keeps the networks of tests running side by side apart.
    fn create(n: usize, tag: u32) -> Net {
        let id = (std::process::id() * 2 + tag) % 250;
        let net = Net {
            bridge: format!("wfh{id}"),
            subnet: format!("10.239.{id}"),
            hosts: (1..=n).map(|i| format!("wtest-{id}-h{i}")).collect(),
        };
        net.remove();
        sh(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}.1/24", net.subnet),
            "dev",
            &net.bridge,
        ]);
        sh(&["ip", "link", "set", &net.bridge, "up"]);
        for (i, ns) in net.hosts.iter().enumerate() {
            let veth = format!("wfh{id}v{i}");
            sh(&["ip", "netns", "add", ns]);
            sh(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            sh(&["ip", "link", "set", &veth, "master", &net.bridge]);
            sh(&["ip", "link", "set", &veth, "up"]);
            let addr = format!("{}/24", net.address(i));
            sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let gw = format!("{}.1", net.subnet);
            sh(&["ip", "-n", ns, "route", "add", "default", "via", &gw]);
        }
        net
    }

    /// Host `i`'s address (0-based).
    fn address(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 11 + i)
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }

    fn remove(&self) {
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A `weft host join` running in a host's namespace.
struct Host {
    child: Child,
    home: tempfile::TempDir,
    line: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        // SIGTERM: it drains its sidecars and stops its apps (children die with it anyway).
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if wait_timeout(&mut self.child, Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `weft host join ARGS` in namespace `ns`; returns once it says it joined (or exits).
fn join(ns: &str, args: &[&str]) -> Result<Host, String> {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, WEFT, "host", "join"])
        .args(args)
        .env("WEFT_HOME", home.path())
        .env("WEFT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[{line}]");
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if !line.contains("joined mesh") {
        let _ = wait_timeout(&mut child, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{line}{}", errors.lock().unwrap()));
    }
    Ok(Host { child, home, line })
}

/// `weft host token NAME ARGS` against `replica`.
fn host_token(replica: &Replica, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["host", "token", name];
    args.extend_from_slice(extra);
    let out = replica.weft(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `replica`'s status row of `instance`, if listed.
fn row(replica: &Replica, instance: &str) -> Option<serde_json::Value> {
    let out = replica.weft(&["status", "-o", "json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    st["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["instance"] == instance)
        .cloned()
}

/// `weft ca operator` issues a client certificate that the API takes over TLS in place of the
/// admin credential: a context holding only it (no token) runs `weft status`; the same call
/// over TLS with neither is refused.
fn operator_certificates_stand_for_the_admin_credential(a: &Replica) {
    let files = tempfile::tempdir().unwrap();
    let out = a.weft(&[
        "ca",
        "operator",
        "--name",
        "alice",
        "--out",
        files.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = |name: &str| files.path().join(name).display().to_string();
    let mode = std::fs::metadata(f("alice.key")).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let home = tempfile::tempdir().unwrap();
    let api = a.api.to_string();
    let out = weft_in(
        home.path(),
        &[
            "context",
            "add",
            "ops",
            "--api",
            &api,
            "--ca-file",
            &f("ca.pem"),
            "--cert-file",
            &f("alice.crt"),
            "--key-file",
            &f("alice.key"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = weft_in(home.path(), &["--context", "ops", "status", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st["workloads"].as_array().is_some_and(|w| !w.is_empty()),
        "{st}"
    );
    // Over TLS with neither the certificate nor the credential: 401; with the certificate: 200.
    let code = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"]);
        if with_cert {
            c.args(["--cert", &f("alice.crt"), "--key", &f("alice.key")]);
        }
        let out = c.arg(format!("https://{api}/status")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code(false), "401");
    assert_eq!(code(true), "200");
}

/// The mesh file both tests use: hello's two replicas on h2 and h3; `extra` goes under `spec`.
fn mesh_file(dir: &std::path::Path, name: &str, extra: &str) -> std::path::PathBuf {
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
{extra}  services:
  - name: hello
    port: 80
    workloads:
    - {{name: hello-v1, replicas: 2, hosts: [h2, h3], command: [weft, demo, echo, --service, hello]}}
"
        ),
    )
    .unwrap();
    mesh
}

/// Two control-plane replicas over `etcd`, listening on the hosts' bridge.
fn replicas(net: &Net, etcd: &Cluster, mesh: &std::path::Path) -> (Replica, Replica) {
    let gw = net.gateway();
    let on_gw = |p: u16| format!("{gw}:{p}");
    let start = || {
        Replica::start_on(
            &etcd.url(),
            &[mesh],
            &on_gw(free_port()),
            &on_gw(free_port()),
            &[],
        )
    };
    (start(), start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_join_with_one_time_tokens_carry_traffic_across_hosts_and_lose_a_cut_host() {
    if !can_run_pods() {
        return;
    }
    let net = Net::create(3, 0);
    let etcd = Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh_file(dir.path(), "hosts", "");
    let (mut a, b) = replicas(&net, &etcd, &mesh);
    let apis = format!("{},{}", a.api, b.api);

    // One-time bootstrap tokens, minted through either replica. Each carries the pin of the
    // mesh's root (SECRET.SHA256), which a host checks the API against before it sends it.
    let t1 = host_token(&a, "h1", &["--ingress"]);
    let t2 = host_token(&b, "h2", &[]);
    let t3 = host_token(&a, "h3", &[]);
    let (secret2, pin2) = t2.split_once('.').expect("the token carries a pin");
    assert_eq!(pin2.len(), 64, "{t2}");

    // Other machines speak TLS to the API: plain HTTP from a host's namespace is refused, the
    // public trust bundle excepted.
    let plain = |path: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.hosts[1],
                "curl",
                "-s",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code}"])
            .arg(format!("http://{}{path}", a.api))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(plain("/status"), "426");
    assert_eq!(plain("/ca/bundle"), "200");
    // A token whose pin names another root is not sent: the join fails and the token stays
    // good for the real join below.
    let wrong_pin = format!("{secret2}.{}", "0".repeat(64));
    let why = join(
        &net.hosts[1],
        &[
            "--control",
            &apis,
            "--token",
            &wrong_pin,
            "--name",
            "h2",
            "--address",
            &net.address(1),
        ],
    )
    .err()
    .expect("a join with a wrong pin went ahead");
    assert!(why.contains("holds no root"), "{why}");
    // Without a pin there is nothing to verify the API with: refused before anything is sent.
    let why = join(
        &net.hosts[1],
        &[
            "--control",
            &apis,
            "--token",
            secret2,
            "--name",
            "h2",
            "--address",
            &net.address(1),
        ],
    )
    .err()
    .expect("a join without a pin went ahead over plaintext");
    assert!(why.contains("no trust bundle"), "{why}");
    let ingress: SocketAddr = format!("{}:8080", net.address(0)).parse().unwrap();
    let _h1 = join(
        &net.hosts[0],
        &[
            "--control",
            &apis,
            "--token",
            &t1,
            "--name",
            "h1",
            "--address",
            &net.address(0),
            "--ingress",
            &ingress.to_string(),
        ],
    )
    .unwrap();
    let h2 = join(
        &net.hosts[1],
        &[
            "--control",
            &apis,
            "--token",
            &t2,
            "--name",
            "h2",
            "--address",
            &net.address(1),
        ],
    )
    .unwrap();
    assert!(h2.line.contains("hello-v1-0"), "{}", h2.line);
    let h3 = join(
        &net.hosts[2],
        &[
            "--control",
            &apis,
            "--token",
            &t3,
            "--name",
            "h3",
            "--address",
            &net.address(2),
        ],
    )
    .unwrap();
    assert!(h3.line.contains("hello-v1-1"), "{}", h3.line);

    // A bootstrap token is spent once; an expired one, or one for another host, never joins.
    let again = join(
        &net.hosts[0],
        &[
            "--control",
            &apis,
            "--token",
            &t1,
            "--name",
            "h1",
            "--address",
            &net.address(0),
        ],
    );
    let why = again.err().expect("a spent token joined again");
    assert!(
        why.contains("unknown, already used or expired bootstrap token"),
        "{why}"
    );
    let expired = host_token(&a, "h1", &["--ttl", "0s"]);
    let why = join(
        &net.hosts[0],
        &[
            "--control",
            &apis,
            "--token",
            &expired,
            "--name",
            "h1",
            "--address",
            &net.address(0),
        ],
    )
    .err()
    .expect("an expired token joined");
    assert!(why.contains("bootstrap token"), "{why}");
    let other = host_token(&a, "h9", &[]);
    assert!(join(
        &net.hosts[0],
        &[
            "--control",
            &apis,
            "--token",
            &other,
            "--name",
            "h1",
            "--address",
            &net.address(0)
        ]
    )
    .is_err());

    // A host gets join tokens only for identities placed on it: h1 runs the ingress, not hello.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(_h1.home.path().join("hosts/h1.json")).unwrap())
            .unwrap();
    let credential = saved["joined"]["credential"].as_str().unwrap();
    // (Over TLS, as from another machine; -k: curl cannot check a SPIFFE-only certificate,
    // and what is tested here is who may have which token.)
    let ask = |identity: &str| {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {credential}"))
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(format!("{{\"identity\": \"{identity}\"}}"))
            .arg(format!("https://{}/hosts/h1/join-token", a.api))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(ask("spiffe://cluster.local/ns/default/sa/hello"), "403");
    assert_eq!(
        ask("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"),
        "200"
    );

    // Both replicas of hello, on h2 and h3, are ready; the ingress on h1 reaches both over
    // mTLS, across the hosts' network.
    let c = client();
    // Either replica says the mesh is ready: every replica routable from every proxy, each
    // proxy up to date with its own replica's snapshot.
    for r in [&a, &b] {
        let out = tokio::task::block_in_place(|| {
            r.weft(&["status", "--wait", "--timeout", "60s", "-o", "json"])
        });
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    operator_certificates_stand_for_the_admin_credential(&a);
    for (inst, host) in [("hello-v1-0", 1), ("hello-v1-1", 2)] {
        let inbound = row(&a, inst).unwrap()["inbound"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            inbound.starts_with(&format!("{}:", net.address(host))),
            "{inst} takes traffic at {inbound}"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the ingress reached only {seen:?}"
        );
        if let Ok(r) = get(&c, ingress, "hello", "/").await {
            if r.status == 200 {
                seen.insert(r.body["instance"].as_str().unwrap_or_default().to_string());
            }
        }
    }

    // A security change applied through B and a routing change through A reach every proxy on
    // every host (hello's sidecars on h2 and h3, the ingress on h1), `weft apply` says so, and
    // both take effect across the hosts.
    let deny = dir.path().join("deny.yaml");
    std::fs::write(&deny, DENY_SECRET).unwrap();
    let teapot = dir.path().join("teapot.yaml");
    std::fs::write(
        &teapot,
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: default}
spec:
  hosts: [hello]
  http:
  - match: [{uri: {prefix: /teapot}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: hello}}]
  - route: [{destination: {host: hello}}]
",
    )
    .unwrap();
    for (replica, file) in [(&b, &deny), (&a, &teapot)] {
        let out =
            tokio::task::block_in_place(|| replica.weft(&["apply", "-f", file.to_str().unwrap()]));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && said.contains("applied by all 3 proxies"),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        get(&c, ingress, "hello", "/secret").await.unwrap().status,
        403
    );
    assert_eq!(
        get(&c, ingress, "hello", "/teapot").await.unwrap().status,
        418
    );
    assert_eq!(get(&c, ingress, "hello", "/").await.unwrap().status, 200);
    for (replica, file) in [(&a, &deny), (&b, &teapot)] {
        let out =
            tokio::task::block_in_place(|| replica.weft(&["delete", "-f", file.to_str().unwrap()]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        get(&c, ingress, "hello", "/secret").await.unwrap().status,
        200
    );

    // Hosts follow the placement: a third replica, placed on h2 (replica 2 → hosts[2 % 2]),
    // starts there once the Mesh document changes; scaled back, it stops.
    let scaled = std::fs::read_to_string(&mesh)
        .unwrap()
        .replace("replicas: 2", "replicas: 3");
    let scaled_file = dir.path().join("scaled.yaml");
    std::fs::write(&scaled_file, &scaled).unwrap();
    let out = b.weft(&["apply", "-f", scaled_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("hello-v1-2 runs on h2", Duration::from_secs(30), || async {
        row(&a, "hello-v1-2").is_some_and(|w| {
            w["ready"] == true
                && w["inbound"]
                    .as_str()
                    .is_some_and(|i| i.starts_with(&format!("{}:", net.address(1))))
        })
    })
    .await;
    let out = b.weft(&["apply", "-f", mesh.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("hello-v1-2 is gone", Duration::from_secs(30), || async {
        row(&a, "hello-v1-2").is_none()
            && !String::from_utf8_lossy(&a.weft(&["status"]).stdout).contains("hello-v1-2")
    })
    .await;

    // SIGKILL one control-plane replica under steady load across the hosts: every proxy that
    // used it moves to the other; no request fails.
    let load = SteadyLoad::start(&c, ingress, "hello", 20_000, |_| {});
    load.more(100).await;
    let killed = a.name.clone();
    a.kill();
    until(
        "every proxy moved to the other replica",
        Duration::from_secs(30),
        || async {
            let out = b.weft(&["status", "-o", "json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|s| {
                s["workloads"].as_array().is_some_and(|w| {
                    w.iter()
                        .all(|w| w["ready"] == true && w["control_replica"] != killed.as_str())
                })
            })
        },
    )
    .await;
    load.more(100).await;
    let (n, failed) = load.stop().await;
    assert!(n >= 200, "only {n} requests");
    assert!(
        failed.is_empty(),
        "{} of {n} requests failed while a replica died: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    // From here on, B is the control plane.

    // GETs get a retry policy with a per-try timeout, as a user running across hosts would
    // set: an attempt that finds its host gone is tried again on another.
    let retries = dir.path().join("retries.yaml");
    std::fs::write(
        &retries,
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: default}
spec:
  hosts: [hello]
  http:
  - route: [{destination: {host: hello}}]
    retries: {attempts: 3, perTryTimeout: 300ms, retryOn: \"connect-failure,reset,5xx\"}
",
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| b.weft(&["apply", "-f", retries.to_str().unwrap()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Cut h3 off the network: its sidecar's stream goes silent, the control plane drops it,
    // and hello-v1-1 leaves the ingress's routes. Meanwhile the requests the ingress sends
    // there time out after 300 ms and are retried on h2: none fails.
    let cut = Instant::now();
    sh(&["ip", "-n", &net.hosts[2], "link", "set", "eth0", "down"]);
    let (mut sent, mut failed, mut slow) = (0, Vec::new(), 0);
    let mut removed = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while removed.is_none() {
        assert!(Instant::now() < deadline, "hello-v1-1 was never removed");
        let asked = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), get(&c, ingress, "hello", "/")).await;
        sent += 1;
        match r {
            Ok(Ok(r)) if r.status == 200 => {
                assert_eq!(r.body["instance"], "hello-v1-0");
                if asked.elapsed() >= Duration::from_millis(300) {
                    slow += 1;
                }
            }
            other => failed.push(format!("{other:?}")),
        }
        if row(&b, "hello-v1-1").is_some_and(|w| w["ready"] != true) {
            removed = Some(cut.elapsed());
        }
    }
    let removed = removed.unwrap();
    eprintln!("h3 cut off: hello-v1-1 removed after {removed:?}; {sent} requests meanwhile, {slow} retried (≥ 300 ms), {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed while h3 was cut off: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        slow > 0,
        "no request went to the cut-off host: the test saw nothing"
    );
    // An attempt that timed out counts as that slow, and the endpoint sits out a growing
    // backoff (0.25 s, doubling, at most 10 s): about 8 probes in the 30 s before removal, not
    // one request in two.
    assert!(
        slow <= 12,
        "{slow} of {sent} requests went to the silent host first"
    );
    // Every proxy has the snapshot without it once no proxy is behind its replica's snapshot;
    // from then on no request fails.
    until(
        "no proxy is behind its replica",
        Duration::from_secs(30),
        || async {
            let out = b.weft(&["status", "-o", "json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|s| {
                s["pending"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|p| !p.to_string().contains("has not applied")))
            })
        },
    )
    .await;
    for i in 0..200 {
        let r = get(&c, ingress, "hello", "/").await.unwrap();
        assert_eq!(
            r.status, 200,
            "request {i} after hello-v1-1 was removed: {}",
            r.text
        );
        assert_eq!(r.body["instance"], "hello-v1-0");
    }
}

/// The whole control plane stopped (both replicas SIGKILLed) for 60 s under steady load across
/// hosts: no request fails on the routes the proxies know, and a sidecar restarted meanwhile
/// (by its host, after it drained on SIGTERM) serves from the snapshot and certificate it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_control_plane_down_for_a_minute_loses_no_request() {
    if !can_run_pods() {
        return;
    }
    let net = Net::create(3, 1);
    let etcd = Cluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh_file(dir.path(), "outage", "  defaultRetries: istio\n");
    let (mut a, mut b) = replicas(&net, &etcd, &mesh);
    let apis = format!("{},{}", a.api, b.api);
    let ingress: SocketAddr = format!("{}:8080", net.address(0)).parse().unwrap();
    let mut hosts = Vec::new();
    for (i, name) in ["h1", "h2", "h3"].iter().enumerate() {
        let extra: &[&str] = if i == 0 { &["--ingress"] } else { &[] };
        let token = host_token(&a, name, extra);
        let address = net.address(i);
        let mut args = vec![
            "--control",
            &apis,
            "--token",
            &token,
            "--name",
            name,
            "--address",
            &address,
        ];
        let ingress = ingress.to_string();
        if i == 0 {
            args.extend(["--ingress", &ingress]);
        }
        hosts.push(join(&net.hosts[i], &args).unwrap());
    }
    let out = tokio::task::block_in_place(|| {
        a.weft(&["status", "--wait", "--timeout", "60s", "-o", "json"])
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hello0 = st["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["instance"] == "hello-v1-0")
        .unwrap()
        .clone();
    let sidecar_pid = hello0["pid"].as_u64().unwrap() as i32;
    let sidecar_admin = hello0["admin"].as_str().unwrap().to_string();

    let c = client();
    let from_hello0 = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let from0 = from_hello0.clone();
    // Bounded: at most 30,000 requests; stopped after the minute.
    let load = SteadyLoad::start(&c, ingress, "hello", 30_000, move |r| {
        if r.body["instance"] == "hello-v1-0" {
            from0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    load.more(100).await;
    // Down: both replicas at once.
    let down = Instant::now();
    a.kill();
    b.kill();
    load.more(100).await;
    // hello-v1-0's sidecar is restarted (SIGTERM: it drains its in-flight requests and exits;
    // its host starts it again), with no replica to ask for a token: it serves from what it
    // kept. (A SIGKILL would lose the requests it was carrying, in any mesh.)
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let h2 = &net.hosts[1];
    let config = until(
        "the restarted sidecar serves from its kept snapshot",
        Duration::from_secs(30),
        || async {
            let out = common::pods::in_pod(
                h2,
                &["curl", "-s", &format!("http://{sidecar_admin}/config")],
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|c| c["snapshot_source"] == "persisted")
        },
    )
    .await;
    eprintln!("the restarted sidecar served from its kept snapshot {config:?} later");
    let before = from_hello0.load(std::sync::atomic::Ordering::Relaxed);
    until(
        "hello-v1-0 answers again through the ingress",
        Duration::from_secs(30),
        || async { from_hello0.load(std::sync::atomic::Ordering::Relaxed) > before },
    )
    .await;
    // The rest of the minute without a control plane.
    until(
        "a minute without a control plane",
        Duration::from_secs(70),
        || async { down.elapsed() >= Duration::from_secs(60) },
    )
    .await;
    let (n, failed) = load.stop().await;
    eprintln!(
        "{n} requests over {:?} without a control plane, {} failed",
        down.elapsed(),
        failed.len()
    );
    assert!(n >= 1000, "only {n} requests");
    assert!(
        failed.is_empty(),
        "{} of {n} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    drop(hosts);
}
