//! The TCP echo service behind `weft demo tcp-echo`: every byte a client sends comes back on
//! the same connection, so a `protocol: tcp` port has something to carry and `weft bench` has
//! an app for its TCP paths.
//!
//! Half-close is honoured: once the client shuts down its write side, what it sent is echoed to
//! the end and then the server closes its side, so `write everything, shut down, read to EOF`
//! gets every byte back.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Bytes read (and written back) per call. Large enough that a 16 KiB write from a client is
/// echoed with one read and one write; small enough to cost nothing per connection.
const ECHO_BUFFER: usize = 64 * 1024;

/// Accepts until `shutdown` is cancelled, echoing each connection on its own task; then stops
/// accepting and returns (connections still open are closed with the runtime).
pub async fn serve_tcp_echo(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "tcp echo listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually transient (e.g. out of file descriptors): back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            match echo(stream).await {
                Ok(n) => debug!(%peer, bytes = n, "connection closed"),
                Err(e) => debug!(%peer, error = %e, "connection ended with an error"),
            }
        });
    }
    info!("tcp echo stopped accepting");
    Ok(())
}

/// Echoes one connection until the client's FIN, then closes the write side; the bytes echoed.
async fn echo(mut stream: TcpStream) -> std::io::Result<u64> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; ECHO_BUFFER];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            // The client is done sending and everything it sent has been written back.
            stream.shutdown().await?;
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}
