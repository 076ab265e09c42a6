//! Redis as a meshed TCP service (`protocol: tcp`, two replicas of Debian's redis-server):
//! a client workload reaches it through its sidecar's local client port (`WEFT_TCP_REDIS_6379`)
//! and through `CONNECT`; redis-benchmark completes without errors, connections spread over
//! both replicas, STRICT mTLS refuses a plaintext connection at the inbound port, an ALLOW
//! policy naming another principal closes the client's connections, and Istio's four TCP
//! metrics count connections and payload bytes exactly on both sides.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `redis` (port 6379, tcp, 2 replicas) and `client`, whose environment is written to `env`.
fn mesh(name: &str, env: &std::path::Path) -> String {
    let client = format!(
        "import os, json, http.server; open({:?}, 'w').write(json.dumps(dict(os.environ))); http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.BaseHTTPRequestHandler).serve_forever()",
        env.display().to_string()
    );
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: redis\n    port: 6379\n    protocol: tcp\n    workloads:\n    - name: redis\n      labels: {{app: redis}}\n      replicas: 2\n      command: [sh, -c, 'exec redis-server --bind 127.0.0.1 --port $PORT --save \"\" --appendonly no']\n  - name: client\n    port: 80\n    workloads:\n    - name: client\n      labels: {{app: client}}\n      replicas: 1\n      command: [python3, -c, {}]\n",
        serde_json::to_string(&client).unwrap()
    )
}

struct Redis {
    mesh: Mesh,
    _dir: tempfile::TempDir,
    /// The client's local client port for redis.
    local: SocketAddr,
}

fn up(name: &str) -> Redis {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("client.env");
    let mesh = Mesh::up(&mesh(name, &env_file));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let env: serde_json::Value = loop {
        if let Ok(t) = std::fs::read_to_string(&env_file) {
            if let Ok(v) = serde_json::from_str(&t) {
                break v;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client wrote no env"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let local = env["WEFT_TCP_REDIS_6379"]
        .as_str()
        .unwrap_or_else(|| {
            let weft: Vec<_> = env
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with("WEFT_"))
                .collect();
            panic!("no WEFT_TCP_REDIS_6379 among {weft:?}")
        })
        .parse()
        .unwrap();
    Redis {
        mesh,
        _dir: dir,
        local,
    }
}

fn addr(mesh: &Mesh, instance: &str, what: &str) -> SocketAddr {
    workload(&mesh.status, instance)[what]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Inline `PING`s on a new connection to `at`, `n` of them, then the client's FIN; the bytes
/// that came back (empty when the connection was closed instead).
async fn pings(at: SocketAddr, n: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut answer = Vec::new();
    for _ in 0..n {
        if s.write_all(b"PING\r\n").await.is_err() {
            return answer;
        }
        let mut b = [0u8; 7];
        match tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b)).await {
            Ok(Ok(_)) => answer.extend_from_slice(&b),
            _ => return answer,
        }
    }
    let _ = s.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    answer
}

/// The port of the redis-server that answers `INFO server` on a new connection to `at`.
async fn server_port(at: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let mut b = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(line) = text.lines().find(|l| l.starts_with("tcp_port:")) {
            if text.contains("tcp_port:") && text.split("tcp_port:").nth(1).unwrap().contains('\n')
            {
                return line["tcp_port:".len()..].trim().parse().unwrap();
            }
        }
    }
}

fn redis_tool(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs redis-tools)"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_local_client_ports_and_connect() {
    let r = up("redis");
    let port = r.local.port().to_string();
    // redis-benchmark through the local client port: every request answered.
    let out = tokio::task::block_in_place(|| {
        redis_tool(
            "redis-benchmark",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-n",
                "2000",
                "-c",
                "10",
                "-t",
                "set,get",
                "-q",
            ],
        )
    });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.to_ascii_lowercase().contains("error"), "{text}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    let cli = tokio::task::block_in_place(|| {
        redis_tool("redis-cli", &["-h", "127.0.0.1", "-p", &port, "PING"])
    });
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "PONG");

    // Connections spread over both replicas.
    let apps: BTreeSet<u16> = ["redis-0", "redis-1"]
        .iter()
        .map(|i| addr(&r.mesh, i, "app").port())
        .collect();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(server_port(r.local).await);
    }
    assert_eq!(seen, apps);

    // Through CONNECT on the client's outbound listener too.
    let outbound = addr(&r.mesh, "client-0", "outbound");
    let mut s = TcpStream::connect(outbound).await.unwrap();
    s.write_all(b"CONNECT redis:6379 HTTP/1.1\r\nHost: redis:6379\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"PING\r\n").await.unwrap();
    let mut b = [0u8; 7];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_tcp_metrics_count_connections_and_bytes_exactly() {
    let r = up("redistcp");
    let c = client();
    let admins = [
        addr(&r.mesh, "client-0", "admin"),
        addr(&r.mesh, "redis-0", "admin"),
        addr(&r.mesh, "redis-1", "admin"),
    ];
    let read = |reporter: &'static str| {
        let c = c.clone();
        async move {
            let mut v = [0f64; 4];
            let admins: Vec<SocketAddr> = match reporter {
                "source" => admins[..1].to_vec(),
                _ => admins[1..].to_vec(),
            };
            for a in admins {
                for (i, m) in [
                    "istio_tcp_connections_opened_total",
                    "istio_tcp_connections_closed_total",
                    "istio_tcp_received_bytes_total",
                    "istio_tcp_sent_bytes_total",
                ]
                .iter()
                .enumerate()
                {
                    v[i] += metric_sum(&c, a, &format!("{m}{{reporter=\"{reporter}\"")).await;
                }
            }
            v
        }
    };
    let (src0, dst0) = (read("source").await, read("destination").await);
    // 5 connections, 3 PINGs each: 18 bytes up, 21 (+PONG\r\n ×3) down per connection.
    for _ in 0..5 {
        assert_eq!(pings(r.local, 3).await, b"+PONG\r\n".repeat(3));
    }
    let want = |base: [f64; 4]| {
        [
            base[0] + 5.0,
            base[1] + 5.0,
            base[2] + 90.0,
            base[3] + 105.0,
        ]
    };
    assert_eq!(eventually(want(src0), || read("source")).await, want(src0));
    assert_eq!(
        eventually(want(dst0), || read("destination")).await,
        want(dst0)
    );
    // Labelled as Istio labels TCP: the service, both workloads, mTLS on the server side.
    let m = get(&c, admins[1], "admin", "/metrics").await.unwrap().text;
    let line = m
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{reporter=\"destination\""))
        .unwrap_or_else(|| panic!("{m}"));
    for label in [
        "source_workload=\"client\"",
        "destination_workload=\"redis\"",
        "destination_service_name=\"redis\"",
        "connection_security_policy=\"mutual_tls\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/client\"",
    ] {
        assert!(line.contains(label), "{label} in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_and_authorization_guard_the_redis_port() {
    let r = up("redisauthz");
    assert_eq!(pings(r.local, 1).await, b"+PONG\r\n");
    let inbound = addr(&r.mesh, "redis-0", "inbound");
    r.mesh.apply_yaml(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    // A plaintext client at the inbound port gets nothing of redis.
    let plain = pings(inbound, 1).await;
    assert!(
        !plain.starts_with(b"+PONG"),
        "{:?}",
        String::from_utf8_lossy(&plain)
    );
    let cli = tokio::task::block_in_place(|| {
        redis_tool(
            "redis-cli",
            &["-h", "127.0.0.1", "-p", &inbound.port().to_string(), "PING"],
        )
    });
    assert_ne!(String::from_utf8_lossy(&cli.stdout).trim(), "PONG");
    // Through the mesh: mTLS, still served.
    assert_eq!(pings(r.local, 1).await, b"+PONG\r\n");

    // ALLOW naming another principal: the client's connections are closed.
    r.mesh.apply_yaml(
        "allow.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: redis, namespace: default}\nspec:\n  selector: {matchLabels: {app: redis}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/other]}\n",
    );
    assert_eq!(pings(r.local, 1).await, b"");
    // Naming the client's: served again.
    r.mesh.apply_yaml(
        "allow.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: redis, namespace: default}\nspec:\n  selector: {matchLabels: {app: redis}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/client]}\n",
    );
    assert_eq!(pings(r.local, 1).await, b"+PONG\r\n");
}

/// Sends `hi` on a new connection to `at`, then the FIN; the answer (empty if closed).
async fn hi(at: SocketAddr) -> String {
    let mut s = TcpStream::connect(at).await.unwrap();
    let _ = s.write_all(b"hi").await;
    let _ = s.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tcp_port_of_a_multi_port_service_reaches_its_own_app_port() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("client.env");
    let client = format!(
        "import os, json, http.server; open({:?}, 'w').write(json.dumps(dict(os.environ))); http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.BaseHTTPRequestHandler).serve_forever()",
        env_file.display().to_string()
    );
    let answer =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tunnels/answer.py");
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: multiport}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: multi\n    ports:\n    - {{port: 9000, name: tcp-a, protocol: tcp}}\n    - {{port: 9001, name: tcp-b, protocol: tcp}}\n    workloads:\n    - name: multi\n      labels: {{app: multi}}\n      replicas: 1\n      command: [python3, {}]\n  - name: client\n    port: 80\n    workloads:\n    - name: client\n      labels: {{app: client}}\n      replicas: 1\n      command: [python3, -c, {}]\n",
        answer.display(),
        serde_json::to_string(&client).unwrap()
    );
    let m = Mesh::up(&yaml);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let env: serde_json::Value = loop {
        if let Some(v) = std::fs::read_to_string(&env_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client wrote no env"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let local = |name: &str| -> SocketAddr {
        env[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    };
    // One local client port per TCP port, each reaching the app's port for it.
    assert_eq!(
        hi(local("WEFT_TCP_MULTI_9000")).await,
        "multi-0 got 2 bytes: hi"
    );
    assert_eq!(
        hi(local("WEFT_TCP_MULTI_9001")).await,
        "multi-0:PORT_TCP_B got 2 bytes: hi"
    );
    // CONNECT to the second port too; a port the service does not have is 404.
    let outbound = addr(&m, "client-0", "outbound");
    let connect = |target: &'static str| async move {
        let mut s = TcpStream::connect(outbound).await.unwrap();
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let code: u16 = String::from_utf8_lossy(&head)
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        (code, s)
    };
    let (code, mut s) = connect("multi:9001").await;
    assert_eq!(code, 200);
    s.write_all(b"hi").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "multi-0:PORT_TCP_B got 2 bytes: hi");
    assert_eq!(connect("multi:9002").await.0, 404);

    // Authorization sees the port the tunnel names.
    m.apply_yaml(
        "ports.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: multi, namespace: default}\nspec:\n  selector: {matchLabels: {app: multi}}\n  action: ALLOW\n  rules:\n  - to:\n    - operation: {ports: [\"9001\"]}\n",
    );
    assert_eq!(hi(local("WEFT_TCP_MULTI_9000")).await, "");
    assert_eq!(
        hi(local("WEFT_TCP_MULTI_9001")).await,
        "multi-0:PORT_TCP_B got 2 bytes: hi"
    );
}
