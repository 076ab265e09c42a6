use super::*;
use std::sync::atomic::AtomicUsize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An app that answers each request only once `release` is notified, counting the
/// connections it accepted.
async fn held_app() -> (SocketAddr, Arc<AtomicUsize>, Arc<tokio::sync::Semaphore>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, r) = (accepted.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    r.acquire().await.unwrap().forget();
                    let rsp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(rsp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, release)
}

fn get() -> Request<Body> {
    Request::get("/")
        .header("host", "app")
        .body(body::empty())
        .unwrap()
}

#[tokio::test]
async fn the_pool_caps_connections_queues_a_few_and_refuses_the_rest() {
    let (addr, accepted, release) = held_app().await;
    let pool = AppPool::new(addr);
    let limits = AppLimits {
        max_connections: 2,
        max_pending: 1,
    };
    let mut sent = Vec::new();
    for _ in 0..3 {
        let pool = pool.clone();
        sent.push(tokio::spawn(async move { pool.send(get(), limits).await }));
    }
    // Two on the wire, one waiting: wait until the third is queued.
    while pool.open.waiting.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.open(), 2);
    // A fourth finds the queue full: refused at once.
    match pool.send(get(), limits).await {
        Err(AppError::Overflow(why)) => assert!(why.contains("busy"), "{why}"),
        other => panic!("{:?}", other.map(|r| r.status())),
    }
    // Answers free connections; the queued request takes one and is answered too.
    release.add_permits(3);
    for s in sent {
        assert_eq!(s.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "more connections than the cap"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_gives_up_after_the_queue_timeout() {
    let (addr, _, release) = held_app().await;
    let pool = AppPool::new(addr);
    let limits = AppLimits {
        max_connections: 1,
        max_pending: 4,
    };
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.send(get(), limits).await })
    };
    while pool.open() < 1 {
        tokio::task::yield_now().await;
    }
    match pool.send(get(), limits).await {
        Err(AppError::Overflow(why)) => assert!(why.contains("within"), "{why}"),
        other => panic!("{:?}", other.map(|r| r.status())),
    }
    release.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
}

#[test]
fn a_traffic_policy_sets_the_limits() {
    let pool = model::ConnectionPool {
        max_connections: Some(10),
        max_pending_requests: Some(3),
        ..Default::default()
    };
    assert_eq!(
        AppLimits::from_pool(Some(&pool)),
        AppLimits {
            max_connections: 10,
            max_pending: 3
        }
    );
    assert_eq!(AppLimits::from_pool(None), AppLimits::default());
}

/// An h2c-only app: echoes each request body back as it arrives, then ends with a trailer;
/// counts the connections it accepted.
async fn h2_app() -> (SocketAddr, Arc<AtomicUsize>) {
    use http_body_util::BodyExt;
    counting_app(|s| {
        let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
            assert_eq!(req.version(), http::Version::HTTP_2);
            assert_eq!(req.uri().authority().unwrap().as_str(), "echo:50051");
            assert_eq!(req.headers()["te"], "trailers");
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(4);
            let mut body = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(d) = f.into_data() {
                        let _ = tx.send(Ok(Frame::data(d))).await;
                    }
                }
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                let _ = tx.send(Ok(Frame::trailers(t))).await;
            });
            let body =
                http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok::<_, std::convert::Infallible>(Response::new(body))
        });
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc),
        );
    })
    .await
}

/// An app on loopback that hands each connection it accepts to `serve`, counting them.
async fn counting_app(
    serve: impl Fn(tokio::net::TcpStream) + Send + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            serve(s);
        }
    });
    (addr, accepted)
}

/// An app whose port speaks gRPC gets HTTP/2: every call a stream of one connection, the
/// request body streaming to the app while the answer streams back, the trailers passed on.
#[tokio::test]
async fn an_http2_app_gets_streams_of_one_connection_with_their_trailers() {
    use http_body_util::BodyExt;
    let (addr, accepted) = h2_app().await;
    let pool = AppPool::for_protocol(addr, model::Protocol::Grpc);
    assert!(pool.is_http2());
    let mut calls = Vec::new();
    for i in 0..3 {
        let pool = pool.clone();
        calls.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, body::BoxError>>(1);
            let req = Request::post("http://echo:50051/weft.test.Echo/Bidi")
                .version(http::Version::HTTP_2)
                .header("te", "trailers")
                .body(body::boxed(http_body_util::StreamBody::new(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                )))
                .unwrap();
            let rsp = pool.send(req, AppLimits::default()).await.unwrap();
            let mut rsp = rsp.into_body();
            // Each message comes back before the next is sent: nothing waits for the end.
            for m in 0..3 {
                let msg = Bytes::from(format!("{i}-{m}"));
                tx.send(Ok(Frame::data(msg.clone()))).await.unwrap();
                let f = rsp.frame().await.unwrap().unwrap();
                assert_eq!(f.into_data().unwrap(), msg);
            }
            drop(tx);
            let t = rsp.frame().await.unwrap().unwrap().into_trailers().unwrap();
            assert_eq!(t["grpc-status"], "0");
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
    assert_eq!(pool.open(), 1);
    // An HTTP app keeps HTTP/1.1.
    assert!(!AppPool::for_protocol(addr, model::Protocol::Http).is_http2());
}

/// The app's HTTP/2 connection closing (the app restarted, or closed an idle connection) costs
/// no request: the next one dials again.
#[tokio::test]
async fn a_closed_http2_connection_is_replaced_by_the_next_request() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"ok"),
                )))
            });
            let conn =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc);
            // Each connection lives 200 ms, then the app drops it.
            tokio::spawn(tokio::time::timeout(Duration::from_millis(200), conn));
        }
    });
    let pool = AppPool::for_protocol(addr, model::Protocol::Http2);
    let req = || {
        Request::get("http://app/")
            .version(http::Version::HTTP_2)
            .body(body::empty())
            .unwrap()
    };
    assert_eq!(
        pool.send(req(), AppLimits::default())
            .await
            .unwrap()
            .status(),
        200
    );
    // Wait for the pool to see the connection gone.
    while pool.open() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        pool.send(req(), AppLimits::default())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// An HTTP/1.1 app (hyper's server) counting its connections: `/big` answers 64 KiB,
/// `/upload` the length of the body it read, `/close` closes the connection after answering
/// (without saying so), anything else a short answer.
async fn h1_app() -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    counting_app(|s| {
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        let close_tx = std::sync::Mutex::new(Some(close_tx));
        let svc = service_fn(move |req: Request<Incoming>| {
            let close = match req.uri().path() {
                "/close" => close_tx.lock().unwrap().take(),
                _ => None,
            };
            async move {
                let body = match req.uri().path() {
                    "/big" => Bytes::from(vec![b'x'; 64 * 1024]),
                    "/upload" => {
                        let b = http_body_util::BodyExt::collect(req.into_body())
                            .await?
                            .to_bytes();
                        Bytes::from(b.len().to_string())
                    }
                    _ => Bytes::from_static(b"ok"),
                };
                if let Some(c) = close {
                    let _ = c.send(());
                }
                Ok::<_, hyper::Error>(Response::new(http_body_util::Full::new(body)))
            }
        });
        tokio::spawn(async move {
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Answered: let the answer go out, then drop the socket.
                Ok(()) = close_rx => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    })
    .await
}

fn to(path: &str, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert(http::header::HOST, "app".parse().unwrap());
    req
}

async fn text(rsp: Response<Body>) -> String {
    let b = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(b.to_vec()).unwrap()
}

#[tokio::test]
async fn one_connection_carries_short_streamed_and_uploaded_exchanges_in_turn() {
    let (addr, accepted) = h1_app().await;
    let pool = AppPool::new(addr);
    let limits = AppLimits::default();
    for _ in 0..3 {
        let rsp = pool.send(to("/", body::empty()), limits).await.unwrap();
        assert_eq!(text(rsp).await, "ok");
        // Larger than what is read whole: it streams, and the connection comes back after.
        let rsp = pool.send(to("/big", body::empty()), limits).await.unwrap();
        assert_eq!(text(rsp).await.len(), 64 * 1024);
        // An upload larger than the socket buffers: written while the answer is awaited.
        let upload = body::full(vec![b'u'; 1 << 20]);
        let rsp = pool.send(to("/upload", upload), limits).await.unwrap();
        assert_eq!(text(rsp).await, (1 << 20).to_string());
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection"
    );
    assert_eq!(pool.idle(), 1);
}

#[tokio::test]
async fn a_connection_the_app_closed_while_idle_is_not_used_again() {
    let (addr, accepted) = h1_app().await;
    let pool = AppPool::new(addr);
    let limits = AppLimits::default();
    let rsp = pool
        .send(to("/close", body::empty()), limits)
        .await
        .unwrap();
    assert_eq!(text(rsp).await, "ok");
    for _ in 0..3 {
        let rsp = pool.send(to("/", body::empty()), limits).await.unwrap();
        assert_eq!(text(rsp).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn a_pooled_connection_is_small_to_move() {
    // It moves in and out of the idle queue and the request's future with every request.
    assert!(
        std::mem::size_of::<Conn>() <= 64,
        "{}",
        std::mem::size_of::<Conn>()
    );
}
