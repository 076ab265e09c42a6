//! A control plane of several replicas over a real etcd cluster (3 members on loopback): the
//! resources, the proxies' registrations and the CA root live in etcd, any replica serves any
//! proxy, and losing a replica or an etcd member loses no request and no change.

mod common;

use common::etcd::{client_args, credentials, proxy, Cluster, Proc, Replica, DENY_SECRET};
use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MESH: &str = "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: fleet}
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

/// Runs `weft proxy ARGS` until it logs that the CA refused its join token (then stops it);
/// returns its log.
fn refused(home: &Path, controls: &[SocketAddr], args: &[&str]) -> String {
    let controls: Vec<String> = controls.iter().map(|c| c.to_string()).collect();
    let child = Command::new(WEFT)
        .arg("proxy")
        .args(["--control", &controls.join(",")])
        .args(args)
        .env("WEFT_HOME", home)
        .env("WEFT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("refused our join token") {
            break;
        }
    }
    drop(child);
    log
}

fn addr(v: &serde_json::Value, key: &str) -> SocketAddr {
    v[key].as_str().unwrap().parse().unwrap()
}

/// `replica`'s `weft status` row of `instance`, if it lists it.
fn row_in(replica: &Replica, instance: &str) -> Option<serde_json::Value> {
    let out = replica.weft(&["status", "-o", "json"]);
    let st = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?;
    st["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["instance"] == instance)
        .cloned()
}

/// Whether `replica` lists `instance` ready.
fn ready_in(replica: &Replica, instance: &str) -> bool {
    row_in(replica, instance).is_some_and(|w| w["ready"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_over_etcd_serve_any_proxy_and_survive_losing_a_replica_or_a_member() {
    let mut etcd = Cluster::start(3);
    let store = etcd.url();
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, MESH).unwrap();
    let deny = dir.path().join("deny.yaml");
    std::fs::write(&deny, DENY_SECRET).unwrap();
    // Fixed ports, so a replica restarted later is where the proxies look for it.
    let (pa, pb) = (free_port(), free_port());
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let (api_a, api_b) = (listen(free_port()), listen(free_port()));
    let mut a = Replica::start_on(&store, &[&mesh], &listen(pa), &api_a, &[]);
    let b = Replica::start_on(&store, &[&mesh], &listen(pb), &api_b, &[]);
    let controls = [a.grpc, b.grpc];

    // The CA root is in etcd, sealed: no key in the clear.
    let ca_keys = etcd.get_prefix("/weft/meshes/fleet/ca/");
    assert!(ca_keys.contains("/weft/meshes/fleet/ca/root"), "{ca_keys}");
    assert!(
        !ca_keys.contains("PRIVATE KEY"),
        "the CA key is in etcd in the clear"
    );

    // hello's sidecar joins through A; a client proxy joins through B.
    let app_port = free_port();
    let _app = Proc(
        Command::new(WEFT)
            .args(["demo", "echo", "--service", "hello"])
            .args(["--port", &app_port.to_string()])
            .env("WEFT_INSTANCE", "hello-v1-0")
            .env("WEFT_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let home = tempfile::tempdir().unwrap();
    let (token, bundle) = credentials(&a, "spiffe://cluster.local/ns/default/sa/hello", dir.path());
    let app = format!("127.0.0.1:{app_port}");
    let (_hello, hello) = proxy(
        home.path(),
        &controls,
        &[
            "--mode",
            "sidecar",
            "--service",
            "hello",
            "--workload",
            "hello-v1",
            "--instance",
            "hello-v1-0",
            "--label",
            "app=hello",
            "--app",
            &app,
            "--inbound",
            "127.0.0.1:0",
            "--join-token-file",
            &token,
            "--trust-anchors-file",
            &bundle,
        ],
    );
    let (token, bundle) = credentials(
        &b,
        "spiffe://cluster.local/ns/default/sa/client",
        dir.path(),
    );
    // Its token was minted by B; it asks A first: tokens live in etcd, spent wherever used.
    let (_client, client_bound) = proxy(
        home.path(),
        &[a.grpc, b.grpc],
        &client_args("client-0", &token, &bundle),
    );
    let outbound = addr(&client_bound, "outbound");
    let (hello_admin, client_admin) = (addr(&hello, "admin"), addr(&client_bound, "admin"));
    let c = client();

    // B lists hello's replica, whose proxy registered with A: the registration went through
    // etcd. The client (on B) reaches it over mTLS with certificates of the one shared root.
    until(
        "B lists hello-v1-0 ready",
        Duration::from_secs(30),
        || async { ready_in(&b, "hello-v1-0") },
    )
    .await;
    until(
        "the client proxy is ready",
        Duration::from_secs(30),
        || async {
            get(&c, client_admin, "admin", "/ready")
                .await
                .map(|r| r.status)
                .ok()
                == Some(200)
        },
    )
    .await;
    let r = get(&c, outbound, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["instance"], "hello-v1-0", "{}", r.text);
    // A join token is spent once, whichever replica sees it again.
    let reused = refused(
        home.path(),
        &[b.grpc],
        &client_args("client-1", &token, &bundle),
    );
    assert!(
        reused.contains("unknown, already used or expired join token"),
        "{reused}"
    );

    // Either replica's status shows the replicas, the store's health, and which replica each
    // proxy uses.
    let shown = String::from_utf8_lossy(&b.weft(&["status"]).stdout).into_owned();
    assert!(shown.contains("store: etcd 3/3 members healthy"), "{shown}");
    assert!(
        shown.contains(&format!("control replica {}", a.name)),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("control replica {}", b.name)),
        "{shown}"
    );
    assert!(shown.contains("CONTROL REPLICA"), "{shown}");

    // An operator elsewhere (another WEFT_HOME) saves a context with both replicas' APIs and
    // the admin credential, and talks to the mesh through it.
    let operator = tempfile::tempdir().unwrap();
    let token_file = a.home.path().join("meshes/fleet.token");
    let apis = format!("{},{}", a.api, b.api);
    let out = weft_in(
        operator.path(),
        &[
            "context",
            "add",
            "prod",
            "--api",
            &apis,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = weft_in(operator.path(), &["--context", "prod", "get"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        text.contains("default/fleet"),
        "{text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // A change applied through B reaches the sidecar connected to A, and weft apply waits for
    // every proxy of the mesh, on either replica.
    let out = b.weft(&["apply", "-f", deny.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("applied by all 2 proxies"), "{said}");
    let r = get(&c, outbound, "hello", "/secret").await.unwrap();
    assert_eq!(
        r.status, 403,
        "the DENY applied through B, enforced by hello's sidecar: {}",
        r.text
    );
    let listed = String::from_utf8_lossy(&a.weft(&["get"]).stdout).into_owned();
    assert!(
        listed.contains("default/no-secret"),
        "A lists what B applied: {listed}"
    );

    // SIGKILL replica A under steady load: no request fails, and hello's sidecar moves to B.
    let load = SteadyLoad::start(&c, outbound, "hello", 20_000, |_| {});
    until(
        "hello's sidecar is connected",
        Duration::from_secs(10),
        || async { metric(&c, hello_admin, "weft_control_plane_connected").await == Some(1.0) },
    )
    .await;
    load.more(200).await;
    assert_eq!(
        row_in(&b, "hello-v1-0").unwrap()["control_replica"],
        a.name.as_str(),
        "B says which replica hello's proxy uses"
    );
    a.kill();
    let moved = until(
        "hello's sidecar reconnects to B",
        Duration::from_secs(30),
        || async {
            row_in(&b, "hello-v1-0")
                .is_some_and(|w| w["ready"] == true && w["control_replica"] == b.name.as_str())
        },
    )
    .await;
    eprintln!("hello's sidecar moved from A to B in {moved:?}");
    load.more(200).await;

    // SIGKILL an etcd member: changes still propagate (delete the DENY through B).
    etcd.kill(0);
    let shown = String::from_utf8_lossy(&b.weft(&["status"]).stdout).into_owned();
    assert!(
        shown.contains("store: etcd 2/3 members healthy (down: m0)"),
        "{shown}"
    );
    let out = b.weft(&["delete", "-f", deny.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until(
        "/secret is allowed again",
        Duration::from_secs(15),
        || async {
            get(&c, outbound, "hello", "/secret")
                .await
                .map(|r| r.status)
                .ok()
                == Some(200)
        },
    )
    .await;
    load.more(200).await;

    let (n, failed) = load.stop().await;
    assert!(n >= 600, "only {n} requests under load");
    assert!(
        failed.is_empty(),
        "{} of {n} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // Everything stopped and restarted: the resources and the root are still there (the
    // proxies' certificates, signed by the old process, are still trusted by the new one).
    std::fs::write(&deny, DENY_SECRET).unwrap();
    assert!(b
        .weft(&["apply", "-f", deny.to_str().unwrap()])
        .status
        .success());
    drop(b);
    let b = Replica::start_on(&store, &[], &listen(pb), &api_b, &[]);
    let listed = String::from_utf8_lossy(&b.weft(&["get"]).stdout).into_owned();
    assert!(
        listed.contains("default/no-secret") && listed.contains("default/fleet"),
        "{listed}"
    );
    until(
        "both proxies are back on the restarted replica",
        Duration::from_secs(30),
        || async {
            ready_in(&b, "hello-v1-0")
                && metric(&c, client_admin, "weft_control_plane_connected").await == Some(1.0)
        },
    )
    .await;
    let r = get(&c, outbound, "hello", "/secret").await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text);
    // A died long ago: the operator's context reaches the replica that answers.
    let listed = weft_in(operator.path(), &["--context", "prod", "get"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        text.contains("default/no-secret"),
        "{text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
