//! The data plane and its supervisor: `weft up` stopped (SIGSTOP, or a terminal's Ctrl-Z, or
//! `weft up | less` that nobody reads) while every proxy logs heavily stalls no request (what
//! does not fit is dropped and counted); `weft up` killed outright leaves no process behind.

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use std::time::{Duration, Instant};

/// How long `weft up` stays stopped.
const STOPPED: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_weft_up_stalls_no_request() {
    // Every proxy logs at debug (three lines per request) and writes an access-log line per
    // request: more than a pipe and the log queue hold, once nobody reads them.
    let yaml = mesh_yaml("stopped-supervisor", &[("hello", 1, "")]);
    let mesh = Mesh::up_logging_with(&yaml, "debug", &["--access-log", "json"]);
    let c = client();
    let r = get(&c, mesh.ingress, "hello", "/")
        .await
        .expect("first request");
    assert_eq!(r.status, 200, "{}", r.text);

    kill(mesh.pid(), Signal::SIGSTOP).unwrap();
    // Four clients, each a request at a time with a short pause: a few hundred requests a
    // second, bounded by the time.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, ingress) = (c.clone(), mesh.ingress);
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            let (mut sent, mut failed) = (0, Vec::new());
            while started.elapsed() < STOPPED {
                sent += 1;
                let r =
                    tokio::time::timeout(Duration::from_secs(5), get(&c, ingress, "hello", "/"))
                        .await;
                match r {
                    Ok(Ok(r)) if r.status == 200 => {}
                    Ok(Ok(r)) => failed.push(format!("{} {}", r.status, r.text)),
                    Ok(Err(e)) => failed.push(format!("{e:?}")),
                    Err(_) => failed.push("no answer within 5 s".into()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (sent, failed)
        }));
    }
    let (mut sent, mut failed) = (0, Vec::new());
    for c in clients {
        let (s, f) = c.await.unwrap();
        sent += s;
        failed.extend(f);
    }
    kill(mesh.pid(), Signal::SIGCONT).unwrap();
    assert!(sent > 2_000, "only {sent} requests in {STOPPED:?}");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed while weft up was stopped, first: {:?}",
        failed.len(),
        failed.first()
    );

    // The lines that did not fit were dropped and counted, not waited for.
    // (The sidecar's admin address from the start: right after SIGCONT the proxies may still
    // be reconnecting their control streams, which `status` would show.)
    let sidecar = workload(&mesh.status, "hello-v1-0");
    let admin = sidecar["admin"].as_str().unwrap().parse().unwrap();
    let dropped = metric_sum(&c, admin, "weft_log_lines_dropped").await
        + metric_sum(&c, admin, "weft_access_log_dropped").await;
    assert!(
        dropped > 0.0,
        "no log line was dropped: was anything logged?"
    );
}

/// The processes `pid` started (its children), by pid.
fn children_of(pid: nix::unistd::Pid) -> Vec<i32> {
    let out = std::process::Command::new("ps")
        .args(["--ppid", &pid.to_string(), "-o", "pid="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` still runs (a zombie waiting for its new parent to reap it does not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit(')').next()?.split_whitespace().next()?.to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// `weft up` killed outright (SIGKILL: no chance to stop anything in order) under traffic:
/// every process it started stops by itself within a bounded time (proxies drain and exit,
/// apps exit), so nothing is left holding the mesh's ports, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_children_of_a_killed_weft_up_stop_by_themselves() {
    const ROUNDS: usize = 10;
    const WITHIN: Duration = Duration::from_secs(10);
    for round in 0..ROUNDS {
        let name = format!("killed-{round}");
        let mut mesh = Mesh::up_with(
            &mesh_yaml(&name, &[("hello", 2, "")]),
            &["--drain-timeout", "1s"],
        );
        let children = children_of(mesh.pid());
        // The ingress, two sidecars and two apps.
        assert_eq!(children.len(), 5, "round {round}: {children:?}");
        // Requests in flight when it dies: killed once the first of them was answered.
        let (c, ingress) = (client(), mesh.ingress);
        let (flowing, first) = tokio::sync::oneshot::channel();
        let traffic = tokio::spawn(async move {
            let mut flowing = Some(flowing);
            for _ in 0..2_000 {
                let _ = get(&c, ingress, "hello", "/").await;
                if let Some(f) = flowing.take() {
                    let _ = f.send(());
                }
            }
        });
        first.await.unwrap();
        kill(mesh.pid(), Signal::SIGKILL).unwrap();
        mesh.child.wait().unwrap();
        let killed = Instant::now();
        let mut left: Vec<i32> = children.clone();
        while !left.is_empty() && killed.elapsed() < WITHIN {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left.retain(|p| running(*p));
        }
        assert!(
            left.is_empty(),
            "round {round}: {left:?} of {children:?} still run {WITHIN:?} after weft up was killed"
        );
        traffic.abort();
    }
}
