//! End-to-end HTTP CONNECT tunnels through real proxies: an app's `CONNECT NAME:PORT` to its
//! sidecar's outbound listener reaches a plain TCP server behind another sidecar over mTLS,
//! by every name the service answers to, with half-close, per-connection balancing, the
//! destination's authorization applied as for a TCP connection, and the idle timeout.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tunnels")
        .join(name)
}

/// `tcpsvc` (two replicas of a plain TCP server, port 9000) and `client` (an HTTP app whose
/// sidecar's outbound listener the tests use), in namespace default.
fn mesh(name: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: tcpsvc\n    port: 9000\n    workloads:\n    - name: tcpsvc-v1\n      labels: {{app: tcpsvc}}\n      replicas: 2\n      command: [python3, {}]\n  - name: client\n    port: 80\n    workloads:\n    - name: client-v1\n      labels: {{app: client}}\n      replicas: 1\n      command: [weft, demo, echo, --service, client]\n",
        testdata("answer.py").display()
    )
}

fn outbound(mesh: &Mesh) -> SocketAddr {
    workload(&mesh.status, "client-v1-0")["outbound"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends `CONNECT target` on a new connection to `proxy`; the status line's code and the
/// connection (positioned after the response head).
async fn connect(proxy: SocketAddr, target: &str) -> (u16, TcpStream) {
    try_connect(proxy, target).await.unwrap()
}

/// [`connect`], or how the connection ended before a response head.
async fn try_connect(proxy: SocketAddr, target: &str) -> Result<(u16, TcpStream), String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The head, one byte at a time: nothing of the tunnel's own bytes may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("no response head within 10 s");
        match n {
            Ok(1) => head.push(b[0]),
            other => {
                return Err(format!(
                    "{other:?} after {:?}",
                    String::from_utf8_lossy(&head)
                ))
            }
        }
    }
    let head = String::from_utf8(head).unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    Ok((code, s))
}

/// Through a tunnel to `target`: sends `payload`, shuts the write side down, and reads the
/// server's answer to the end (which it sends only after it has seen the FIN).
async fn exchange(proxy: SocketAddr, target: &str, payload: &[u8]) -> String {
    String::from_utf8(exchange_bytes(proxy, target, payload).await).unwrap()
}

/// [`exchange`], whose answer may be any bytes.
async fn exchange_bytes(proxy: SocketAddr, target: &str, payload: &[u8]) -> Vec<u8> {
    let (code, mut s) = connect(proxy, target).await;
    assert_eq!(code, 200, "CONNECT {target}");
    s.write_all(payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_bytes_to_a_service_by_any_of_its_names() {
    let m = Mesh::up(&mesh("tunnels"));
    let out = outbound(&m);
    // 1 MiB one way, then the half-close, then the answer the other way.
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut replicas = BTreeMap::new();
    for target in [
        "tcpsvc:9000",
        "tcpsvc.default:9000",
        "tcpsvc.default.svc.cluster.local:9000",
    ] {
        for _ in 0..8 {
            let answer = exchange(out, target, &payload).await;
            let (instance, rest) = answer.split_once(' ').unwrap();
            let mut want = format!("got {} bytes: ", payload.len()).into_bytes();
            want.extend_from_slice(&payload[..16]);
            assert_eq!(rest.as_bytes(), &want[..], "{target}: {answer:?}");
            *replicas.entry(instance.to_string()).or_insert(0) += 1;
        }
    }
    // Balanced per tunnel: both replicas took some.
    assert_eq!(
        replicas.keys().collect::<Vec<_>>(),
        ["tcpsvc-v1-0", "tcpsvc-v1-1"],
        "{replicas:?}"
    );

    // Names the mesh does not have, or not on the service's port.
    assert_eq!(connect(out, "nosuch:9000").await.0, 404);
    assert_eq!(connect(out, "tcpsvc:9001").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_authorizes_a_tunnel_as_a_tcp_connection() {
    let m = Mesh::up(&mesh("tunnelauthz"));
    let out = outbound(&m);
    let policy = |principal: &str, http_rule: bool| {
        let to = if http_rule {
            "\n    to:\n    - operation:\n        paths: [\"/\"]"
        } else {
            ""
        };
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: tcpsvc\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: tcpsvc\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"{principal}\"]{to}\n"
        )
    };
    // The caller's principal: allowed.
    m.apply_yaml(
        "p.yaml",
        &policy("cluster.local/ns/default/sa/client", false),
    );
    assert!(exchange(out, "tcpsvc:9000", b"hi")
        .await
        .ends_with("got 2 bytes: hi"));
    // Another principal: denied.
    m.apply_yaml(
        "p.yaml",
        &policy("cluster.local/ns/default/sa/other", false),
    );
    assert_eq!(connect(out, "tcpsvc:9000").await.0, 403);
    // The caller's principal, but the rule needs HTTP attributes a tunnel does not have: as
    // Istio does for TCP, the rule cannot match, so nothing allows it.
    m.apply_yaml(
        "p.yaml",
        &policy("cluster.local/ns/default/sa/client", true),
    );
    assert_eq!(connect(out, "tcpsvc:9000").await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_refuses_a_plaintext_tunnel() {
    let m = Mesh::up(&mesh("tunnelstrict"));
    let out = outbound(&m);
    let inbound: SocketAddr = workload(&m.status, "tcpsvc-v1-0")["inbound"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // PERMISSIVE (the default): a plaintext client may open a tunnel at the inbound port.
    assert_eq!(connect(inbound, "tcpsvc:9000").await.0, 200);
    m.apply_yaml(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n",
    );
    let refused = try_connect(inbound, "tcpsvc:9000").await;
    assert!(refused.is_err(), "{:?}", refused.map(|r| r.0));
    // Sidecar to sidecar is mTLS: still open.
    assert!(exchange(out, "tcpsvc:9000", b"hi")
        .await
        .ends_with("got 2 bytes: hi"));
}

/// A DestinationRule's `tcp.maxConnections` bounds the open tunnels to a service, as Envoy's TCP
/// proxy bounds connections: with 2, a third `CONNECT` is answered 503 `UO` while two are open,
/// and one is admitted again once a tunnel closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_max_connections_bounds_the_open_tunnels() {
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: tcpsvc}\nspec:\n  host: tcpsvc\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 2}\n";
    let m = Mesh::up(&format!("{}---\n{rule}", mesh("tunnelcap")));
    let out = outbound(&m);
    let (a, first) = connect(out, "tcpsvc:9000").await;
    let (b, _second) = connect(out, "tcpsvc:9000").await;
    assert_eq!((a, b), (200, 200));
    let (code, _third) = connect(out, "tcpsvc:9000").await;
    assert_eq!(code, 503, "a third tunnel past tcp.maxConnections: 2");
    // One closes: its slot comes back once the proxy has seen the tunnel end.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _s) = connect(out, "tcpsvc:9000").await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503);
        assert!(
            Instant::now() < deadline,
            "no slot came back after a tunnel closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tunnel_is_closed_after_the_idle_timeout() {
    let m = Mesh::up_with(&mesh("tunnelidle"), &["--idle-timeout", "2s"]);
    let out = outbound(&m);
    let (code, mut s) = connect(out, "tcpsvc:9000").await;
    assert_eq!(code, 200);
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("the tunnel was not closed within 30 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without data");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}, before the 2 s idle timeout"
    );
}

/// `wsecho` and `wsother` (WebSocket echo servers, port 80) and `client`.
fn ws_mesh(name: &str) -> String {
    let server = |svc: &str| {
        format!(
            "  - name: {svc}\n    port: 80\n    workloads:\n    - name: {svc}-v1\n      labels: {{app: {svc}}}\n      replicas: 1\n      command: [python3, {}]\n",
            testdata("ws_echo.py").display()
        )
    };
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n{}{}  - name: client\n    port: 80\n    workloads:\n    - name: client-v1\n      labels: {{app: client}}\n      replicas: 1\n      command: [weft, demo, echo, --service, client]\n",
        server("wsecho"),
        server("wsother")
    )
}

/// A WebSocket client speaking RFC 6455 frames on a raw connection (text frames, masked).
struct Ws(TcpStream);

impl Ws {
    /// The opening handshake for `target` (absolute form for an `HTTP_PROXY`, or a path) with
    /// `host`; `Err`: the status that refused it.
    async fn open(proxy: SocketAddr, target: &str, host: &str) -> Result<Ws, u16> {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
                .await
                .expect("no handshake answer within 10 s")
                .unwrap();
            assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if code != 101 {
            return Err(code);
        }
        // The app's own answer to the key (RFC 6455 §1.3's example) came through.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        assert!(head.contains("upgrade: websocket"), "{head}");
        Ok(Ws(s))
    }

    async fn send(&mut self, text: &str) {
        let p = text.as_bytes();
        let mut f = vec![0x81u8];
        if p.len() < 126 {
            f.push(0x80 | p.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&f).await.unwrap();
    }

    async fn recv(&mut self) -> String {
        let read = async {
            let mut h = [0u8; 2];
            self.0.read_exact(&mut h).await.unwrap();
            assert_eq!(h[0], 0x81, "a final text frame");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.0.read_exact(&mut l).await.unwrap();
                    u16::from_be_bytes(l) as usize
                }
                127 => panic!("no test message is that long"),
                n => n as usize,
            };
            let mut p = vec![0u8; len];
            self.0.read_exact(&mut p).await.unwrap();
            String::from_utf8(p).unwrap()
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no message within 10 s")
    }

    /// `n` messages echoed, one at a time.
    async fn echo(&mut self, n: usize, tag: &str) {
        for i in 0..n {
            let m = format!("{tag} message {i} {}", "x".repeat(i % 200));
            self.send(&m).await;
            assert_eq!(self.recv().await, m);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_through_the_ingress_and_between_sidecars_outlive_a_route_change() {
    let m = Mesh::up(&ws_mesh("websockets"));
    let out = outbound(&m);
    // Through the ingress (Host names the service) and sidecar to sidecar (absolute form).
    let mut via_ingress = Ws::open(m.ingress, "/chat", "wsecho").await.unwrap();
    assert_eq!(via_ingress.recv().await, "wsecho-v1-0");
    let mut via_sidecars = Ws::open(out, "http://wsecho/chat", "wsecho").await.unwrap();
    assert_eq!(via_sidecars.recv().await, "wsecho-v1-0");
    via_ingress.echo(1000, "ingress").await;
    via_sidecars.echo(1000, "sidecars").await;

    // New handshakes go to wsother; the connections already upgraded stay where they are.
    m.apply_yaml(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: wsecho, namespace: default}\nspec:\n  hosts: [wsecho]\n  http:\n  - route: [{destination: {host: wsother}}]\n",
    );
    let mut rerouted = Ws::open(out, "http://wsecho/chat", "wsecho").await.unwrap();
    assert_eq!(rerouted.recv().await, "wsother-v1-0");
    via_ingress.echo(100, "ingress after").await;
    via_sidecars.echo(100, "sidecars after").await;
    rerouted.echo(100, "rerouted").await;

    // The handshake is an HTTP request to the server sidecar's authorization.
    m.apply_yaml(
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: default}\nspec:\n  selector: {matchLabels: {app: wsother}}\n  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n",
    );
    assert_eq!(
        Ws::open(out, "http://wsecho/admin", "wsecho").await.err(),
        Some(403)
    );
    assert!(Ws::open(out, "http://wsecho/chat", "wsecho").await.is_ok());

    // Each handshake through the client's sidecar is one request in its source series: the
    // three upgraded (101) and the refused one (403).
    let c = client();
    let admin: SocketAddr = workload(&m.status, "client-v1-0")["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let count = |code: &'static str| {
        let c = c.clone();
        async move {
            let m = get(&c, admin, "admin", "/metrics").await.unwrap().text;
            m.lines()
                .filter(|l| {
                    l.starts_with("istio_requests_total{reporter=\"source\"")
                        && l.contains(&format!("response_code=\"{code}\""))
                })
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    assert_eq!(eventually(3.0, || count("101")).await, 3.0);
    assert_eq!(eventually(1.0, || count("403")).await, 1.0);
}

/// The first flight of a TLS client asking for `server_name`: its ClientHello record.
fn client_hello(server_name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_tcp_and_tls_rules_route_tunnels() {
    // tcpsvc: v1 and v2 (one replica each); secure: another TCP service on port 9443.
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: tcproutes}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: tcpsvc\n    port: 9000\n    protocol: tcp\n    workloads:\n    - {{name: tcpsvc-v1, labels: {{version: v1}}, command: [python3, {answer}]}}\n    - {{name: tcpsvc-v2, labels: {{version: v2}}, command: [python3, {answer}]}}\n  - name: secure\n    port: 9443\n    protocol: tcp\n    workloads:\n    - {{name: secure-v1, command: [python3, {answer}]}}\n  - name: client\n    port: 80\n    workloads:\n    - {{name: client-v1, command: [weft, demo, echo, --service, client]}}\n---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: tcpsvc}}\nspec:\n  host: tcpsvc\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcpsvc}}\nspec:\n  hosts: [tcpsvc]\n  tls:\n  - match: [{{port: 9000, sniHosts: [secure.example.com]}}]\n    route: [{{destination: {{host: secure, port: {{number: 9443}}}}}}]\n  tcp:\n  - route:\n    - {{destination: {{host: tcpsvc, subset: v1}}, weight: 75}}\n    - {{destination: {{host: tcpsvc, subset: v2}}, weight: 25}}\n",
        answer = testdata("answer.py").display()
    );
    let m = Mesh::up(&yaml);
    let out = outbound(&m);

    // Plain bytes: the tcp rule's weights, per tunnel.
    let n = 80;
    let mut replicas: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let answer = exchange(out, "tcpsvc:9000", b"plain bytes").await;
        let (instance, rest) = answer.split_once(' ').unwrap();
        assert_eq!(rest, "got 11 bytes: plain bytes", "{answer:?}");
        *replicas.entry(instance.to_string()).or_insert(0) += 1;
    }
    let v1 = replicas.get("tcpsvc-v1-0").copied().unwrap_or(0);
    let v2 = replicas.get("tcpsvc-v2-0").copied().unwrap_or(0);
    assert_eq!(v1 + v2, n, "{replicas:?}");
    // 75% of 80 is 60, with a standard deviation of 3.9: 45..=75 holds beyond 3.8 of them.
    assert!((45..=75).contains(&v1), "v1 took {v1} of {n}: {replicas:?}");

    // A TLS client naming secure.example.com: the tls rule sends its bytes, ClientHello
    // first and whole, to the other service's port; another name falls through to tcp[].
    let hello = client_hello("secure.example.com");
    let answer = exchange_bytes(out, "tcpsvc:9000", &hello).await;
    let mut want = format!("secure-v1-0 got {} bytes: ", hello.len()).into_bytes();
    want.extend_from_slice(&hello[..16]);
    assert_eq!(answer, want, "{}", String::from_utf8_lossy(&answer));
    let other = client_hello("other.example.com");
    let answer = exchange_bytes(out, "tcpsvc:9000", &other).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("tcpsvc-v"), "{text:?}");
    assert!(
        text.contains(&format!(" got {} bytes: ", other.len())),
        "{text:?}"
    );

    // The client's sidecar reports the connection against the service it went to.
    let admin: SocketAddr = workload(&m.status, "client-v1-0")["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let metrics = get(&client(), admin, "admin", "/metrics")
        .await
        .unwrap()
        .text;
    let opened = |service: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
            .filter(|l| l.contains(&format!("destination_service_name=\"{service}\"")))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!((opened("secure"), opened("tcpsvc")), (1.0, (n + 1) as f64));
}
