//! Every listener a request can enter the mesh by — the ingress, a sidecar's outbound and its
//! inbound — against malformed and hostile HTTP/1 (the probes of
//! `testdata/robustness/h1-probes.json`, at least as strict as the stricter of nginx and
//! HAProxy on each): refused probes get their status, the connection closes, and nothing
//! reaches the app; valid ones go through. The app records every request head it gets.

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/robustness")
        .join(name)
}

/// A mesh with one service, `hello`, whose app is the recorder writing to `log`.
fn recorder_mesh(name: &str, log: &Path) -> Mesh {
    let recorder = testdata("recorder.py");
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: hello\n    port: 80\n    workloads:\n    - name: hello-v1\n      replicas: 1\n      command: [python3, {}, {}]\n",
        recorder.display(),
        log.display()
    );
    Mesh::up(&yaml)
}

/// What a raw exchange got: the status of the first response (if any) and whether the
/// proxy closed the connection afterwards.
#[derive(Debug)]
struct Exchange {
    status: Option<u16>,
    closed: bool,
    head: String,
}

/// Whether `got` holds a whole response (its head and its Content-Length of body).
fn complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok());
    length.is_some_and(|n| body.len() >= n)
}

/// Writes `request` to `addr` in pieces of `piece` bytes (a head split across reads), then
/// reads the response; with `until_close`, on until the proxy closes (or 5 s pass).
async fn exchange(addr: SocketAddr, request: &[u8], piece: usize, until_close: bool) -> Exchange {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for chunk in request.chunks(piece) {
        // The proxy may answer and close before it has read everything: that is its right.
        if s.write_all(chunk).await.is_err() {
            break;
        }
        if piece < request.len() {
            s.flush().await.ok();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if !until_close && complete(&got) {
                    break false;
                }
            }
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    Exchange {
        status,
        closed,
        head,
    }
}

/// The probe's request with its placeholders filled in.
fn request(probe: &Value, host: &str, path: &str) -> Vec<u8> {
    let many: String = (0..200).map(|i| format!("X-Many-{i}: v\r\n")).collect();
    probe["request"]
        .as_str()
        .unwrap()
        .replace("{host}", host)
        .replace("{path}", path)
        .replace("{big}", &"a".repeat(64 * 1024))
        .replace("{many}", &many)
        .into_bytes()
}

fn statuses(v: &Value) -> Vec<u16> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap() as u16)
        .collect()
}

/// The paths the app has seen so far.
fn seen(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn every_listener_refuses_malformed_http1_before_anything_reaches_the_app() {
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("requests.jsonl");
    let mesh = recorder_mesh("h1-probes", &log);
    let sidecar = workload(&mesh.status, "hello-v1-0");
    let addr = |k: &str| -> SocketAddr { sidecar[k].as_str().unwrap().parse().unwrap() };
    let listeners = [
        ("ingress", mesh.ingress, true),
        ("outbound", addr("outbound"), false),
        ("inbound", addr("inbound"), false),
    ];
    let probes: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata("h1-probes.json")).unwrap())
            .unwrap();

    let mut wrong = Vec::new();
    let mut expected_paths = Vec::new();
    for (listener, at, edge) in listeners {
        for (i, probe) in probes.iter().enumerate() {
            let name = probe["name"].as_str().unwrap();
            let path = format!("/probe-{listener}-{i}");
            let want = match (edge, probe.get("edge_status")) {
                (true, Some(s)) => statuses(s),
                _ => statuses(&probe["status"]),
            };
            let reaches = match (edge, probe.get("edge_reaches")) {
                (true, Some(r)) => r.as_bool().unwrap(),
                _ => probe["reaches"].as_bool().unwrap(),
            };
            let refused = !want.contains(&200);
            let close = refused || probe["close"].as_bool().unwrap_or(false);
            let got = exchange(at, &request(probe, "hello", &path), usize::MAX, close).await;
            if !got.status.is_some_and(|s| want.contains(&s)) || (close && !got.closed) {
                wrong.push(format!(
                    "{listener} / {name}: want {want:?}{}, got {:?} (closed: {})\n{}",
                    if close { " and close" } else { "" },
                    got.status,
                    got.closed,
                    got.head
                ));
            }
            expected_paths.push((listener, name.to_string(), path, reaches));
        }
    }
    // A request that got its answer was handled: what reached the app is in its log by now.
    let seen = seen(&log);
    for (listener, name, path, reaches) in expected_paths {
        let arrived = seen.contains(&path);
        if arrived != reaches {
            wrong.push(format!(
                "{listener} / {name}: {}",
                if reaches {
                    "never reached the app"
                } else {
                    "reached the app"
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_head_split_across_many_reads_is_still_limited() {
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("requests.jsonl");
    let mesh = recorder_mesh("h1-split", &log);
    let sidecar = workload(&mesh.status, "hello-v1-0");
    let addr = |k: &str| -> SocketAddr { sidecar[k].as_str().unwrap().parse().unwrap() };
    for (listener, at) in [
        ("ingress", mesh.ingress),
        ("outbound", addr("outbound")),
        ("inbound", addr("inbound")),
    ] {
        // 70 KiB of headers in 1 KiB writes, each header small.
        let mut req = format!("GET /split-{listener} HTTP/1.1\r\nHost: hello\r\n");
        for i in 0..70 {
            req.push_str(&format!("X-Part-{i}: {}\r\n", "b".repeat(1000)));
        }
        req.push_str("\r\n");
        let got = exchange(at, req.as_bytes(), 1024, true).await;
        assert_eq!(got.status, Some(431), "{listener}: {}", got.head);
    }
    assert!(seen(&log).is_empty(), "{:?}", seen(&log));
}
