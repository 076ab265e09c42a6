//! The peer HTTP/2 client against a real `h2` server on a loopback socket: flow-controlled
//! uploads, trailers, early answers, failing bodies, and CONNECT streams.

use super::*;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server on loopback that runs `serve` for each stream of the first connection, and a
/// client connected to it.
async fn pair<F, Fut>(serve: F) -> Sender
where
    F: Fn(http::Request<RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        // The server keeps HTTP/2's default 64 KiB windows, so larger uploads wait for credit.
        let mut conn = h2::server::handshake(s).await.unwrap();
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(serve(req, respond));
        }
    });
    let s = TcpStream::connect(addr).await.unwrap();
    handshake(s, test_settings()).await.unwrap()
}

/// Windows larger than the server's, pings at the usual interval.
fn test_settings() -> Settings {
    Settings {
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        keepalive: KEEPALIVE_INTERVAL,
    }
}

/// A body whose frames come from the returned sender, as a client sends them.
fn streamed() -> (
    tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (tx, crate::body::boxed(StreamBody::new(stream)))
}

fn post(body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "http://svc.test/upload".parse().unwrap();
    req
}

#[tokio::test]
async fn an_upload_larger_than_the_window_arrives_whole_and_trailers_come_back() {
    let mut client = pair(|req, mut respond| async move {
        let mut body = req.into_body();
        let mut got = 0usize;
        while let Some(d) = body.data().await {
            let d = d.unwrap();
            got += d.len();
            body.flow_control().release_capacity(d.len()).unwrap();
        }
        let mut send = respond.send_response(Response::new(()), false).unwrap();
        send.send_data(Bytes::from(got.to_string()), false).unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        send.send_trailers(trailers).unwrap();
    })
    .await;
    let (tx, body) = streamed();
    tokio::spawn(async move {
        for _ in 0..20 {
            let chunk = Bytes::from(vec![7u8; 16 * 1024]);
            tx.send(Ok(Frame::data(chunk))).await.unwrap();
        }
    });
    client.ready().await.unwrap();
    let rsp = client.send_request(post(body)).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), (20 * 16 * 1024).to_string());
}

#[tokio::test]
async fn an_answer_that_comes_before_the_whole_upload_is_returned() {
    let mut client = pair(|_req, mut respond| async move {
        let mut rsp = Response::new(());
        *rsp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        respond.send_response(rsp, true).unwrap();
    })
    .await;
    // A body that never ends: only the answer can end the wait.
    let (tx, body) = streamed();
    tx.send(Ok(Frame::data(Bytes::from_static(b"start"))))
        .await
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(5), client.send_request(post(body)))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(tx);
}

#[tokio::test]
async fn a_failing_upload_resets_the_stream_and_says_it_was_the_body() {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let seen_tx = std::sync::Mutex::new(Some(seen_tx));
    let mut client = pair(move |req, _respond| {
        let seen = seen_tx.lock().unwrap().take();
        async move {
            let mut body = req.into_body();
            let mut end = None;
            while let Some(d) = body.data().await {
                if let Err(e) = d {
                    end = e.reason();
                    break;
                }
            }
            if let Some(tx) = seen {
                let _ = tx.send(end);
            }
        }
    })
    .await;
    let (tx, body) = streamed();
    tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
        .await
        .unwrap();
    tx.send(Err("the client went away".into())).await.unwrap();
    let err = client.send_request(post(body)).await.unwrap_err();
    assert!(matches!(err, Error::Body(_)), "{err}");
    assert!(!err.never_processed());
    let reason = tokio::time::timeout(Duration::from_secs(5), seen_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason, Some(Reason::CANCEL));
}

#[tokio::test]
async fn a_connect_stream_carries_bytes_both_ways_and_an_empty_frame_is_not_its_end() {
    let mut client = pair(|req, mut respond| async move {
        assert_eq!(req.method(), Method::CONNECT);
        let mut rx = req.into_body();
        let mut tx = respond.send_response(Response::new(()), false).unwrap();
        tx.send_data(Bytes::new(), false).unwrap();
        tx.send_data(Bytes::from_static(b"hello"), false).unwrap();
        // Echo what comes, then end our side when the client ends its own.
        while let Some(d) = rx.data().await {
            let d = d.unwrap();
            rx.flow_control().release_capacity(d.len()).unwrap();
            tx.send_data(d, false).unwrap();
        }
        tx.send_data(Bytes::new(), true).unwrap();
    })
    .await;
    let mut req = Request::new(crate::body::empty());
    *req.method_mut() = Method::CONNECT;
    *req.uri_mut() = "svc.test:9000".parse().unwrap();
    let (rsp, stream) = client.connect(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut stream = stream.expect("an accepted stream");
    let mut hello = [0u8; 5];
    stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    stream.write_all(b"ping").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"ping");
}

#[tokio::test]
async fn a_refused_connect_has_no_stream_and_keeps_its_answer() {
    let mut client = pair(|_req, mut respond| async move {
        let mut rsp = Response::new(());
        *rsp.status_mut() = StatusCode::FORBIDDEN;
        let mut tx = respond.send_response(rsp, false).unwrap();
        tx.send_data(Bytes::from_static(b"denied"), true).unwrap();
    })
    .await;
    let mut req = Request::new(crate::body::empty());
    *req.method_mut() = Method::CONNECT;
    *req.uri_mut() = "svc.test:9000".parse().unwrap();
    let (rsp, stream) = client.connect(req).await.unwrap();
    assert!(stream.is_none());
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "denied");
}

#[tokio::test]
async fn a_closed_connection_says_so_and_a_request_on_it_was_never_sent() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut conn = h2::server::handshake(s).await.unwrap();
        conn.graceful_shutdown();
        while conn.accept().await.is_some() {}
    });
    let s = TcpStream::connect(addr).await.unwrap();
    let settings = test_settings();
    let mut client = handshake(s, settings).await.unwrap();
    server.await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client saw the connection end");
    let mut req = Request::new(crate::body::empty());
    *req.uri_mut() = "http://svc.test/".parse().unwrap();
    let err = client.send_request(req).await.unwrap_err();
    assert!(err.never_processed(), "{err}");
}

/// A peer that drains (its GOAWAY says it processed no stream) after the request's HEADERS
/// reached it: the request was never processed, and may go to another endpoint.
#[tokio::test]
async fn a_stream_left_out_of_a_graceful_goaway_was_never_processed() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (saw_headers, headers_seen) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // The server's preface: SETTINGS, and the ACK of the client's.
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        let mut preface = [0u8; 24];
        s.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        // Frames until the request's HEADERS (type 1).
        loop {
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            if head[3] == 1 {
                break;
            }
        }
        // GOAWAY, last stream id 0, NO_ERROR: stream 1 was not processed.
        s.write_all(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        let _ = saw_headers.send(());
        // Read until the client closes.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let s = TcpStream::connect(addr).await.unwrap();
    let settings = test_settings();
    let mut client = handshake(s, settings).await.unwrap();
    let mut req = Request::new(crate::body::empty());
    *req.uri_mut() = "http://svc.test/".parse().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), client.send_request(req))
        .await
        .expect("the request ended")
        .unwrap_err();
    headers_seen
        .await
        .expect("the request's HEADERS reached the peer");
    assert!(matches!(err, Error::H2(_)), "{err:?}");
    assert!(err.never_processed(), "{err}");
    drop(client);
    let _ = server.await;
}

/// A socket that counts the bytes read from it.
struct Counting(TcpStream, Arc<AtomicUsize>);

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.0).poll_read(cx, buf))?;
        self.1
            .fetch_add(buf.filled().len() - before, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_connection_is_pinged_while_a_stream_is_open_and_left_quiet_when_idle() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let (got_request, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let r = received.clone();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut conn = h2::server::handshake(Counting(s, r)).await.unwrap();
        // Streams are held open, unanswered, while the connection keeps being served.
        while let Some(Ok(stream)) = conn.accept().await {
            let _ = got_request.send(stream);
        }
    });
    let s = TcpStream::connect(addr).await.unwrap();
    let interval = Duration::from_millis(50);
    let settings = Settings {
        keepalive: interval,
        ..test_settings()
    };
    let mut client = handshake(s, settings).await.unwrap();
    // Settled: the handshake's frames (and their acknowledgements) are in.
    let mut req = Request::new(crate::body::empty());
    *req.uri_mut() = "http://svc.test/".parse().unwrap();
    let mut first = client.clone();
    let answer = tokio::spawn(async move { first.send_request(req).await });
    let (_, respond) = requests.recv().await.unwrap();
    let mut respond = respond;
    respond.send_response(Response::new(()), true).unwrap();
    answer.await.unwrap().unwrap();

    // Idle: ten intervals pass with no byte from the client.
    let quiet = received.load(Ordering::SeqCst);
    tokio::time::sleep(interval * 10).await;
    assert_eq!(
        received.load(Ordering::SeqCst),
        quiet,
        "an idle connection was pinged"
    );

    // A stream waits for its answer: the connection is pinged.
    let mut req = Request::new(crate::body::empty());
    *req.uri_mut() = "http://svc.test/slow".parse().unwrap();
    let waiting = tokio::spawn(async move { client.send_request(req).await });
    let _held = requests.recv().await.unwrap();
    let asked = received.load(Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), async {
        // A PING frame is 17 bytes.
        while received.load(Ordering::SeqCst) < asked + 17 {
            tokio::time::sleep(interval).await;
        }
    })
    .await
    .expect("no ping while a stream was open");
    waiting.abort();
}
