//! The data plane does not wait on its supervisor: `weft up` stopped (SIGSTOP, or a terminal's
//! Ctrl-Z, or `weft up | less` that nobody reads) while every proxy logs heavily stalls no
//! request; what does not fit is dropped and counted.

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
    let status = mesh.status_json(Some("stopped-supervisor"));
    let sidecar = workload(&status, "hello-v1-0");
    let admin = sidecar["admin"].as_str().unwrap().parse().unwrap();
    let dropped = metric_sum(&c, admin, "weft_log_lines_dropped").await
        + metric_sum(&c, admin, "weft_access_log_dropped").await;
    assert!(
        dropped > 0.0,
        "no log line was dropped: was anything logged?"
    );
}
