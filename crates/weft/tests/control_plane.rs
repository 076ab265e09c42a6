//! The data plane without its control plane: `weft control` and `weft proxy` run as separate
//! processes; the control plane is killed and restarted while traffic flows.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `weft ARGS` and returns it with its first stdout line (where it says it is ready or
/// where it listens).
fn start(home: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> (Proc, String) {
    let mut child = Command::new(WEFT)
        .args(args)
        .env("WEFT_HOME", home)
        .env("WEFT_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line)
}

/// `weft control FILE --listen LISTEN` with its API on any port.
fn start_control(home: &std::path::Path, file: &str, listen: &str) -> (Proc, String) {
    start(
        home,
        // Plaintext: the proxies this test starts by hand have no join tokens, and a proxy of a
        // mesh with a CA does not serve without one.
        &[
            "control",
            file,
            "--listen",
            listen,
            "--api",
            "127.0.0.1:0",
            "--no-mtls",
        ],
        &[],
    )
}

/// `weft status --wait` for the one mesh of `home`: its status once it is ready.
fn wait_ready(home: &std::path::Path) -> serde_json::Value {
    let out = tokio::task::block_in_place(|| {
        weft_in(
            home,
            &["status", "--wait", "--timeout", "30s", "-o", "json"],
        )
    });
    assert!(
        out.status.success(),
        "the mesh never got ready: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_serving_without_the_control_plane_and_reconnect() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, mesh_yaml("cpdown", &[("hello", 1, "")])).unwrap();
    let file = file.to_str().unwrap().to_string();
    let cp_port = free_port();
    let listen = format!("127.0.0.1:{cp_port}");
    let (control, line) = start_control(home.path(), &file, &listen);
    assert!(line.contains("ready"), "{line}");

    let app_port = free_port();
    let _app = Proc(
        Command::new(WEFT)
            .args([
                "demo",
                "echo",
                "--service",
                "hello",
                "--port",
                &app_port.to_string(),
            ])
            .env("WEFT_INSTANCE", "hello-v1-0")
            .env("WEFT_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let app = format!("127.0.0.1:{app_port}");
    let (_sidecar, _) = start(
        home.path(),
        &[
            "proxy",
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
            &app,
            "--inbound",
            "127.0.0.1:0",
        ],
        &[],
    );
    let (_client, bound) = start(
        home.path(),
        &[
            "proxy",
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
        ],
        &[],
    );
    let bound: serde_json::Value = serde_json::from_str(&bound).unwrap();
    let outbound: std::net::SocketAddr = bound["outbound"].as_str().unwrap().parse().unwrap();
    let admin: std::net::SocketAddr = bound["admin"].as_str().unwrap().parse().unwrap();

    let c = client();
    // Readiness signals, no retries: the client proxy's own /ready (it has registered and has a
    // snapshot), then the mesh's (every replica routable from every registered proxy).
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&c, admin, "admin", "/ready")
        .await
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(
            Instant::now() < deadline,
            "the client proxy never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_ready(home.path());
    let r = get(&c, outbound, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "the first request once ready: {}", r.text);
    assert_eq!(
        metric(&c, admin, "weft_control_plane_connected").await,
        Some(1.0)
    );

    // The control plane dies: known routes keep working, every request.
    drop(control);
    for _ in 0..200 {
        let r = get(&c, outbound, "hello", "/anything").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&c, admin, "weft_control_plane_connected").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the proxy never noticed the control plane was gone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // It comes back on the same address: the proxies reconnect (with backoff) and the new
    // control plane does not wipe their routes while they do.
    let (_control, line) = start_control(home.path(), &file, &listen);
    assert!(line.contains("ready"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&c, admin, "weft_control_plane_connected").await != Some(1.0) {
        let r = get(&c, outbound, "hello", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(Instant::now() < deadline, "the proxy never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // hello-v1-0 re-registered and every proxy routes with the new control plane's snapshot.
    let st = wait_ready(home.path());
    assert_eq!(st["workloads"][0]["ready"], true, "{st}");
    for _ in 0..50 {
        let r = get(&c, outbound, "hello", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
}
