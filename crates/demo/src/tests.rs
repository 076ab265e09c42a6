//! End-to-end tests: real servers on 127.0.0.1:0, driven by a real hyper client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::parse::parse_proxy;
use crate::{parse_duration, serve_echo, EchoOptions};

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(opts: EchoOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_echo(listener, opts, shutdown.clone()));
    Server {
        addr,
        shutdown,
        task,
    }
}

fn named(service: &str) -> EchoOptions {
    EchoOptions {
        service: service.into(),
        instance: format!("{service}-1"),
        ..EchoOptions::default()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    version: Version,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let resp = client.request(req).await.expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body,
    }
}

async fn get(addr: SocketAddr, path_and_query: &str) -> Reply {
    send(&client(), get_req(addr, path_and_query)).await
}

fn get_req(addr: SocketAddr, path_and_query: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path_and_query}"))
        .body(Full::default())
        .expect("request")
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn echoes_request_fields_and_headers() {
    let server = start(named("alpha")).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/anything/x?a=1", server.addr))
        .header("X-Custom", "Yes")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("request");
    let reply = send(&client(), req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["x-echo-instance"], "alpha-1");
    let json = reply.json();
    assert_eq!(json["service"], "alpha");
    assert_eq!(json["version"], "v1");
    assert_eq!(json["instance"], "alpha-1");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/anything/x");
    assert_eq!(json["query"]["a"], "1");
    assert_eq!(json["headers"]["x-custom"], "Yes");
    assert_eq!(json["headers"]["x-multi"], "a, b");
    assert_eq!(json["headers"]["host"], server.addr.to_string());
    assert_eq!(json["body_bytes"], 5);
    assert!(json.get("downstream").is_none() && json.get("error").is_none());
}

#[tokio::test]
async fn decodes_query_parameters() {
    let server = start(named("alpha")).await;
    let json = get(
        server.addr,
        "/?name=hello%20world&plus=a+b&check=%E2%9C%93&r=1&r=2",
    )
    .await
    .json();
    assert_eq!(json["path"], "/");
    assert_eq!(json["query"]["name"], "hello world");
    assert_eq!(json["query"]["plus"], "a b");
    assert_eq!(json["query"]["check"], "✓");
    assert_eq!(json["query"]["r"], "1, 2");
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    let server = start(named("alpha")).await;
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let reply = send(&h2, get_req(server.addr, "/anything")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.json()["path"], "/anything");
}

#[tokio::test]
async fn status_from_path_and_query() {
    let server = start(named("alpha")).await;
    let teapot = get(server.addr, "/status/418").await;
    assert_eq!(teapot.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(teapot.json()["path"], "/status/418");
    assert_eq!(
        get(server.addr, "/anything?status=503").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(server.addr, "/status/418?status=201").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bytes_answers_that_many_bytes() {
    let server = start(named("alpha")).await;
    for n in [0usize, 1, 16 * 1024, 256 * 1024] {
        let reply = get(server.addr, &format!("/bytes/{n}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), n);
        assert_eq!(reply.headers["content-type"], "application/octet-stream");
    }
    assert_eq!(
        get(server.addr, "/bytes/10?status=201").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn rejects_bad_knobs() {
    let server = start(named("alpha")).await;
    for path in [
        "/status/abc",
        "/status/99",
        "/status/600",
        "/?status=x",
        "/?delay=soon",
        "/delay/-1",
        "/bytes/lots",
        "/bytes/16777217",
    ] {
        let reply = get(server.addr, path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(reply.json()["error"].is_string(), "{path}");
    }
}

#[tokio::test]
async fn query_delay_waits_first() {
    let server = start(named("alpha")).await;
    let started = Instant::now();
    let reply = get(server.addr, "/anything?delay=200ms").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn option_delay_applies_to_every_response() {
    let server = start(EchoOptions {
        delay: Duration::from_millis(150),
        ..named("alpha")
    })
    .await;
    let started = Instant::now();
    assert_eq!(get(server.addr, "/delay/100").await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn health_endpoints() {
    let server = start(named("alpha")).await;
    let health = get(server.addr, "/healthz").await;
    assert_eq!((health.status, health.text()), (StatusCode::OK, "ok\n"));
    let ready = get(server.addr, "/readyz").await;
    assert_eq!((ready.status, ready.text()), (StatusCode::OK, "ready\n"));
}

#[tokio::test]
async fn fail_rate_one_always_fails_but_probes_pass() {
    let server = start(EchoOptions {
        fail_rate: 1.0,
        fail_status: 503,
        ..named("alpha")
    })
    .await;
    for _ in 0..5 {
        let reply = get(server.addr, "/anything").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.json()["error"], "injected failure");
    }
    assert_eq!(get(server.addr, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(server.addr, "/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_flips_readiness_and_drains_in_flight_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(named("alpha")).await;
    let addr = server.addr;
    // A downstream the server calls from inside one request: it says when that request is being
    // handled, and answers only when told to.
    let downstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let down = downstream.local_addr().expect("local addr");
    let (reached_tx, reached) = tokio::sync::oneshot::channel();
    let (answer, answer_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = downstream.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "the request head never came");
            head.extend_from_slice(&buf[..n]);
        }
        let _ = reached_tx.send(());
        let _ = answer_rx.await;
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            )
            .await;
    });
    // Both requests on one HTTP/2 connection, /readyz first: once the server is inside the
    // second (it called the downstream), it has the first in hand too.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let ask = |h2: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>, path: &str| {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .expect("request");
        let sent = h2.send_request(req);
        async move {
            let rsp = sent.await.expect("response");
            let status = rsp.status();
            let body = rsp.into_body().collect().await.expect("body").to_bytes();
            (status, body)
        }
    };
    // /readyz looks at the state after its delay, well after the shutdown below.
    let ready = tokio::spawn(ask(&mut h2, "/readyz?delay=1s"));
    let slow = tokio::spawn(ask(
        &mut h2,
        &format!("/fetch?url={}", encode(&format!("http://{down}/"))),
    ));
    reached.await.expect("the server called the downstream");
    server.shutdown.cancel();
    // The server stops accepting (its listener closes) but waits for the request in hand.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !server.task.is_finished(),
        "serve_echo returned with a request still in flight"
    );
    let _ = answer.send(());

    let (status, body) = ready.await.expect("readyz task");
    assert_eq!(
        (status, String::from_utf8_lossy(&body).into_owned()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string()
        )
    );
    let (status, body) = slow.await.expect("fetch task");
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        (v["path"].as_str(), v["downstream"]["status"].as_u64()),
        (Some("/fetch"), Some(200))
    );

    let result = tokio::time::timeout(Duration::from_secs(5), server.task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "serve_echo returns once drained"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn fetch_through_proxy_routes_by_host_and_propagates_headers() {
    // The "proxy" is the target itself: it receives origin-form requests and echoes the Host.
    let target = start(named("target")).await;
    let caller = start(EchoOptions {
        proxy: Some(target.addr),
        ..named("caller")
    })
    .await;
    let url = encode("http://other.svc:8080/hello?x=y");
    let req = Request::get(format!("http://{}/fetch?url={url}", caller.addr))
        .header("x-request-id", "req-42")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-b3-sampled", "1")
        .header("x-private", "do not forward")
        .body(Full::default())
        .expect("request");
    let reply = send(&client(), req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-echo-instance"], "caller-1");
    let json = reply.json();
    assert_eq!(json["service"], "caller");
    assert_eq!(json["query"]["url"], "http://other.svc:8080/hello?x=y");
    let downstream = &json["downstream"];
    assert_eq!(downstream["status"], 200);
    let seen = &downstream["body"];
    assert_eq!(seen["service"], "target");
    assert_eq!(seen["path"], "/hello");
    assert_eq!(seen["query"]["x"], "y");
    assert_eq!(seen["headers"]["host"], "other.svc:8080");
    assert_eq!(seen["headers"]["x-request-id"], "req-42");
    assert_eq!(
        seen["headers"]["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(seen["headers"]["x-b3-sampled"], "1");
    assert!(seen["headers"].get("x-private").is_none());
}

#[tokio::test]
async fn fetch_direct_reports_downstream_status_and_text_bodies() {
    let target = start(named("target")).await;
    let caller = start(named("caller")).await;
    let url = encode(&format!("http://{}/status/404", target.addr));
    let reply = get(caller.addr, &format!("/fetch?url={url}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["downstream"]["status"], 404);
    assert_eq!(reply.json()["downstream"]["body"]["path"], "/status/404");

    let url = encode(&format!("http://{}/healthz", target.addr));
    let json = get(caller.addr, &format!("/fetch?url={url}")).await.json();
    assert_eq!(json["downstream"]["body"], "ok\n");
}

#[tokio::test]
async fn fetch_failures() {
    let caller = start(named("caller")).await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("local addr")
    };
    let url = encode(&format!("http://{closed}/"));
    let reply = get(caller.addr, &format!("/fetch?url={url}")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let json = reply.json();
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json}"
    );
    assert!(json.get("downstream").is_none());
    assert_eq!(json["service"], "caller");

    assert_eq!(
        get(caller.addr, "/fetch").await.status,
        StatusCode::BAD_REQUEST
    );
    let https = encode("https://example.com/");
    assert_eq!(
        get(caller.addr, &format!("/fetch?url={https}"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn parses_durations() {
    let ms = Duration::from_millis;
    assert_eq!(parse_duration("1s"), Some(ms(1_000)));
    assert_eq!(parse_duration("250ms"), Some(ms(250)));
    assert_eq!(parse_duration("1.5s"), Some(ms(1_500)));
    assert_eq!(parse_duration("2m"), Some(ms(120_000)));
    assert_eq!(parse_duration("1h"), Some(ms(3_600_000)));
    assert_eq!(parse_duration("300"), Some(ms(300)));
    assert_eq!(parse_duration(" 0 "), Some(Duration::ZERO));
    assert_eq!(parse_duration("0.5ms"), Some(Duration::from_micros(500)));
    for bad in [
        "",
        "s",
        "ms",
        ".",
        "-1s",
        "1.2.3s",
        "1e3",
        "inf",
        "nan",
        "1d",
        "abc",
        "99999999999999999999s",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn parses_proxy_addresses() {
    let addr: SocketAddr = "127.0.0.1:4140".parse().expect("addr");
    assert_eq!(parse_proxy("http://127.0.0.1:4140"), Some(addr));
    assert_eq!(parse_proxy("http://127.0.0.1:4140/"), Some(addr));
    assert_eq!(parse_proxy("127.0.0.1:4140"), Some(addr));
    assert_eq!(parse_proxy("localhost:4140").map(|a| a.port()), Some(4140));
    assert_eq!(parse_proxy("not a proxy"), None);
}

#[tokio::test]
async fn fail_times_fails_the_first_attempts_of_one_request_id() {
    let s = start(named("retry")).await;
    let c = client();
    let attempt = |id: &'static str| {
        let req = Request::get(format!("http://{}/x?fail_times=2&status=503", s.addr))
            .header("x-request-id", id)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(&c, req)
    };
    assert_eq!(attempt("a").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempt("a").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        attempt("b").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "ids count apart"
    );
    assert_eq!(attempt("a").await.status, StatusCode::OK);
    assert_eq!(attempt("a").await.status, StatusCode::OK);
    s.shutdown.cancel();
}

/// `weft demo tcp-echo`: what a client writes comes back byte for byte, also while the client
/// is still writing more than the socket buffers hold; after the client's half-close the rest is
/// echoed and then the server closes, so reading to EOF ends with every byte.
#[tokio::test]
async fn tcp_echo_returns_every_byte_and_closes_after_the_clients_half_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::serve_tcp_echo(listener, shutdown.clone()));

    // A short exchange: the connection stays open until the client says it is done.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ping");
    let more = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await;
    assert!(more.is_err(), "the server closed or sent more: {more:?}");

    // 8 MiB written in one go, read concurrently, then the half-close: all of it comes back.
    let sent: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (mut r, mut w) = s.into_split();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        })
    };
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got))
        .await
        .expect("the server closes after the half-close")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the echo differs from what was sent");

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
