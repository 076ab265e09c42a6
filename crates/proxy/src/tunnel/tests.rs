use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn drain() -> Drain {
    Drain::new(Duration::from_secs(1))
}

#[tokio::test]
async fn a_half_close_passes_through_and_the_answer_still_arrives() {
    let (mut app_client, client_side) = tokio::io::duplex(1024);
    let (server_side, mut app_server) = tokio::io::duplex(1024);
    let d = drain();
    let tunnel = tokio::spawn(async move {
        splice(client_side, server_side, Duration::from_secs(5), &d, None).await
    });
    app_client.write_all(b"question").await.unwrap();
    app_client.shutdown().await.unwrap();
    // The server sees the question, then end of stream, and answers after it.
    let mut got = Vec::new();
    app_server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"question");
    app_server
        .write_all(b"the answer, after the FIN")
        .await
        .unwrap();
    app_server.shutdown().await.unwrap();
    let mut answer = Vec::new();
    app_client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"the answer, after the FIN");
    let carried = tunnel.await.unwrap().unwrap();
    assert_eq!(
        carried,
        Carried {
            sent: 8,
            received: 25
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_quiet_for_the_idle_timeout_is_closed() {
    let (mut app_client, client_side) = tokio::io::duplex(1024);
    let (server_side, _app_server) = tokio::io::duplex(1024);
    let d = drain();
    let tunnel = tokio::spawn(async move {
        splice(client_side, server_side, Duration::from_secs(10), &d, None).await
    });
    // Traffic at 6 s keeps it open past 10 s …
    tokio::time::sleep(Duration::from_secs(6)).await;
    app_client.write_all(b"x").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!tunnel.is_finished());
    // … and 10 s of nothing after it closes it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = tunnel.await.unwrap();
    assert!(matches!(r, Err(SpliceError::Idle(_))), "{r:?}");
}

/// A writer that records the size of every write it takes.
struct Writes {
    sizes: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl AsyncRead for Writes {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Never sends anything back; the other direction stays open.
        Poll::Pending
    }
}

impl AsyncWrite for Writes {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sizes.lock().unwrap().push(buf.len());
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A 16 KiB chunk that arrives at once (an app's write, an HTTP/2 DATA frame) leaves in one
/// write on the other side, not cut in two by the splice's buffer.
#[tokio::test]
async fn a_16_kib_chunk_is_passed_on_in_one_write() {
    let (mut app_client, client_side) = tokio::io::duplex(1 << 20);
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = Writes {
        sizes: sizes.clone(),
    };
    let d = drain();
    let chunk = vec![7u8; 16 * 1024];
    app_client.write_all(&chunk).await.unwrap();
    app_client.write_all(&chunk).await.unwrap();
    let tunnel =
        tokio::spawn(
            async move { splice(client_side, server, Duration::from_secs(5), &d, None).await },
        );
    let deadline = Instant::now() + Duration::from_secs(5);
    while sizes.lock().unwrap().iter().sum::<usize>() < 32 * 1024 {
        assert!(Instant::now() < deadline, "{:?}", sizes.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tunnel.abort();
    let sizes = sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| n >= 16 * 1024), "{sizes:?}");
}

#[test]
fn local_client_ports_parse_from_name_port_at_address() {
    use crate::settings::TcpPort;
    let p: TcpPort = "redis.default:6379@127.0.0.1:7000".parse().unwrap();
    assert_eq!(p.target, "redis.default:6379");
    assert_eq!(p.listen, "127.0.0.1:7000".parse().unwrap());
    for bad in [
        "redis.default:6379",
        "redis@127.0.0.1:7000",
        ":6379@127.0.0.1:7000",
        "redis:port@127.0.0.1:7000",
        "redis:6379@localhost",
    ] {
        assert!(bad.parse::<TcpPort>().is_err(), "{bad}");
    }
}
