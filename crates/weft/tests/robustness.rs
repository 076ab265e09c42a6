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
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/robustness")
        .join(name)
}

/// A mesh with one service, `hello`, whose app is the recorder writing to `log`; `args` go to
/// `weft up` (and on to its proxies).
fn recorder_mesh_with(name: &str, log: &Path, args: &[&str]) -> Mesh {
    let recorder = testdata("recorder.py");
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: hello\n    port: 80\n    workloads:\n    - name: hello-v1\n      replicas: 1\n      command: [python3, {}, {}]\n",
        recorder.display(),
        log.display()
    );
    Mesh::up_with(&yaml, args)
}

fn recorder_mesh(name: &str, log: &Path) -> Mesh {
    recorder_mesh_with(name, log, &[])
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

/// An HTTP/2 frame: its 9-byte header and `payload`.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What one flooding connection saw: the GOAWAY's error code (if one came), how many ACKs
/// of the flooded frame kind came back, and how many frames were sent.
#[derive(Debug)]
struct Flooded {
    goaway: Option<u32>,
    acks: u64,
    sent: u64,
}

/// Floods `addr` over HTTP/2 (prior knowledge) with `frame` (one kind: PING or SETTINGS),
/// reading what comes back, until the proxy closes the connection, 200,000 frames are sent
/// or 10 s pass.
async fn flood(addr: SocketAddr, frame: Vec<u8>) -> Flooded {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let kind = frame[3];
    let writer = tokio::spawn(async move {
        let mut batch = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        batch.extend(h2_frame(0x4, 0, 0, &[]));
        let _ = wr.write_all(&batch).await;
        let per_write = 100;
        let many: Vec<u8> = frame.repeat(per_write);
        let mut sent = 0u64;
        let started = std::time::Instant::now();
        while sent < 200_000 && started.elapsed() < Duration::from_secs(10) {
            if wr.write_all(&many).await.is_err() {
                break;
            }
            sent += per_write as u64;
        }
        sent
    });
    let (mut goaway, mut acks) = (None, 0u64);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n = match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() - at >= 9 {
            let len = (buf[at] as usize) << 16 | (buf[at + 1] as usize) << 8 | buf[at + 2] as usize;
            if buf.len() - at < 9 + len {
                break;
            }
            let (k, flags) = (buf[at + 3], buf[at + 4]);
            if k == kind && flags & 1 == 1 {
                acks += 1;
            }
            if k == 0x7 && len >= 8 {
                let p = &buf[at + 9..at + 17];
                goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
        buf.drain(..at);
    }
    let sent = writer.await.unwrap();
    Flooded { goaway, acks, sent }
}

/// Latencies of `n` GETs through `addr`, one at a time, sorted.
async fn latencies(c: &HttpClient, addr: SocketAddr, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        let r = get(c, addr, "hello", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_end_in_goaway_and_spare_other_clients() {
    let files = tempfile::tempdir().unwrap();
    let mesh = recorder_mesh("h2-floods", &files.path().join("requests.jsonl"));
    let ping = h2_frame(0x6, 0, 0, &[7u8; 8]);
    let settings = h2_frame(0x4, 0, 0, &[]);
    for (name, frame, limit) in [("PING", ping.clone(), 1000), ("SETTINGS", settings, 100)] {
        let f = flood(mesh.ingress, frame).await;
        assert_eq!(
            f.goaway,
            Some(0xb),
            "{name} flood: no GOAWAY(ENHANCE_YOUR_CALM) after {} frames: {f:?}",
            f.sent
        );
        // At most one window's worth was answered (two, if the flood straddled a second).
        assert!(f.acks <= 2 * limit + 1, "{name} flood: {f:?}");
    }
    let status = mesh.status_json(Some("h2-floods"));
    let admin: SocketAddr = status["ingress_admin"].as_str().unwrap().parse().unwrap();
    for kind in ["ping", "settings"] {
        let seen = metric_sum(
            &client(),
            admin,
            &format!("weft_http2_floods_total{{kind=\"{kind}\"}}"),
        )
        .await;
        assert_eq!(seen, 1.0, "{kind}");
    }

    // Another client's latency while floods keep coming, against without them. Enough
    // samples that one scheduling hiccup is not the 99th percentile.
    let c = client();
    let _ = latencies(&c, mesh.ingress, 50).await;
    let quiet = latencies(&c, mesh.ingress, 400).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let (stop, ingress, ping) = (stop.clone(), mesh.ingress, ping.clone());
        tokio::spawn(async move {
            let mut floods = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let f = flood(ingress, ping.clone()).await;
                assert_eq!(f.goaway, Some(0xb), "{f:?}");
                floods += 1;
            }
            floods
        })
    };
    let flooded = latencies(&c, mesh.ingress, 400).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let floods = attacker.await.unwrap();
    assert!(floods > 0);
    eprintln!(
        "p99 {:?} under {floods} floods, {:?} without",
        p99(&flooded),
        p99(&quiet)
    );
    assert!(
        p99(&flooded) <= p99(&quiet) * 2,
        "p99 {:?} under {floods} floods, {:?} without",
        p99(&flooded),
        p99(&quiet)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_first_byte_timeout() {
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("requests.jsonl");
    let mesh = recorder_mesh_with("silent", &log, &["--first-byte-timeout", "2s"]);

    let c = client();
    let opened = std::time::Instant::now();
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(tokio::net::TcpStream::connect(mesh.ingress).await.unwrap());
    }
    // Requests keep working beside them.
    let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let closes: Vec<_> = silent
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
                    .await
                    .map(|r| r.map(|n| n == 0).unwrap_or(true))
                    .unwrap_or(false)
            })
        })
        .collect();
    let mut open = 0;
    for c in closes {
        if !c.await.unwrap() {
            open += 1;
        }
    }
    let took = opened.elapsed();
    assert_eq!(
        open, 0,
        "{open} of 500 silent connections still open after {took:?}"
    );
    // Closed by the 2 s timeout (plus scheduling), not at once.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

/// One GET on an open keep-alive connection; the whole response.
async fn get_on(s: &mut tokio::net::TcpStream) -> String {
    s.write_all(b"GET /capped HTTP/1.1\r\nHost: hello\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !complete(&got) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_connections_are_shed_and_established_ones_served() {
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("requests.jsonl");
    let mesh = recorder_mesh_with("capped", &log, &["--max-connections", "40"]);
    // Forty keep-alive connections, each with a request answered: the ingress is full.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(mesh.ingress).await.unwrap();
        let rsp = get_on(&mut s).await;
        assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
        held.push(s);
    }
    // The next connection is answered 503 OM and closed.
    let shed = exchange(
        mesh.ingress,
        b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n",
        usize::MAX,
        true,
    )
    .await;
    assert_eq!(shed.status, Some(503), "{}", shed.head);
    assert!(shed.head.contains("x-weft-flag: OM"), "{}", shed.head);
    assert!(shed.closed);
    // Established connections keep being served, and the admin answers.
    for s in held.iter_mut().take(5) {
        let rsp = get_on(s).await;
        assert!(rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    }
    let status = mesh.status_json(Some("capped"));
    let admin: SocketAddr = status["ingress_admin"].as_str().unwrap().parse().unwrap();
    let ready = get(&client(), admin, "admin", "/ready").await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text);
    let c = client();
    let refused = metric_sum(
        &c,
        admin,
        "weft_listener_connections_refused_total{listener=\"proxy\"}",
    )
    .await;
    assert_eq!(refused, 1.0);
    let open = metric_sum(&c, admin, "weft_listener_connections{listener=\"ingress\"}").await;
    assert_eq!(open, 40.0);
    // A freed slot takes a new connection.
    drop(held.pop());
    let again = eventually(Some(200), || async {
        exchange(
            mesh.ingress,
            b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n",
            usize::MAX,
            false,
        )
        .await
        .status
    })
    .await;
    assert_eq!(again, Some(200));
}

/// The pid of the process listening on `addr` (`ss` from iproute2).
fn listener_pid(addr: SocketAddr) -> i32 {
    let out = std::process::Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("pid=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no listener on {addr}: {text}"))
}

/// CPU time (user + system) `pid` has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, of the whole line).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Sets `pid`'s soft limit on open files (the hard one stays).
fn set_nofile(pid: i32, soft: u64) {
    let ok = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import resource as r; h = r.prlimit({pid}, r.RLIMIT_NOFILE)[1]; r.prlimit({pid}, r.RLIMIT_NOFILE, ({soft}, h))"
            ),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_backs_off_instead_of_spinning() {
    let files = tempfile::tempdir().unwrap();
    let mesh = recorder_mesh("no-fds", &files.path().join("requests.jsonl"));
    let pid = listener_pid(mesh.ingress);
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let before = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: u64 = before
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Room for a few more descriptors only: connections beyond them wait in the kernel's
    // queue while accept fails with EMFILE.
    set_nofile(pid, open_now + 8);
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(mesh.ingress).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n")
            .await
            .unwrap();
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(pid) - t0;
    let hz = 100; // USER_HZ on Linux
    set_nofile(pid, soft);
    // The condition was reached: accept failed.
    assert!(
        mesh.stderr().contains("accept failed; backing off"),
        "{}",
        mesh.stderr()
    );
    eprintln!("{used} ticks in 3 s while out of file descriptors");
    assert!(
        used < 3 * hz / 5,
        "the ingress used {used} ticks ({}% of a core) in 3 s while out of file descriptors",
        used * 100 / (3 * hz)
    );
    // With descriptors back, the waiting connections are accepted and answered.
    drop(conns);
    let r = eventually(200, || async {
        get(&client(), mesh.ingress, "hello", "/")
            .await
            .map(|r| r.status)
            .unwrap_or(0)
    })
    .await;
    assert_eq!(r, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_slower_than_the_request_timeout_gets_408() {
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("requests.jsonl");
    let mesh = recorder_mesh_with("trickle", &log, &["--request-timeout", "2s"]);
    // A byte every 200 ms: never idle long, but the whole body would take 20 s.
    let mut s = tokio::net::TcpStream::connect(mesh.ingress).await.unwrap();
    s.write_all(b"POST /trickle HTTP/1.1\r\nHost: hello\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !complete(&got) {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    writer.abort();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "after {took:?}: {text}");
    assert!(text.contains("x-weft-flag: SI"), "{text}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}
