//! The proxy's own outbound sockets ([`connect`], marked for the capture rules of a pod), and
//! an I/O adapter for the proxy-to-proxy HTTP/2 connections that lets h2 coalesce the frames
//! of many streams into one write.
//!
//! h2 keeps a DATA payload of 256 bytes or more out of its write buffer when the I/O supports
//! vectored writes, and then must flush before it buffers the next frame: every response of a
//! typical API size (a few hundred bytes) cost one TLS record and one `writev` of its own, even
//! when dozens were ready at once. Over an I/O that reports no vectored writes, h2 copies
//! payloads under 1 KiB into its buffer and writes everything ready in one go (measured: the
//! inbound sidecar's writes per request fell from 1.9 to about 1.1 at peak).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The `SO_MARK` every outbound socket of the proxy carries (`--socket-mark`), set once at
/// start: a pod's capture rules let marked connections through instead of sending them back
/// to the proxy.
static SOCKET_MARK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Marks every outbound socket the proxy opens from now on with `mark`.
pub fn set_socket_mark(mark: u32) {
    let _ = SOCKET_MARK.set(mark);
}

/// A connection to `addr` from the proxy itself (to a peer, or passed through), marked when
/// the proxy has a mark.
pub async fn connect(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let Some(mark) = SOCKET_MARK.get() else {
        return tokio::net::TcpStream::connect(addr).await;
    };
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket2::SockRef::from(&socket).set_mark(*mark)?;
    socket.connect(addr).await
}

/// `S`, reporting that it has no vectored writes.
pub struct Unvectored<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for Unvectored<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Unvectored<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Callers that ignore `is_write_vectored` still get correct (one-slice) writes.
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(&mut self.0).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_bytes_both_ways_and_reports_no_vectored_writes() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Unvectored(a);
        assert!(!a.is_write_vectored());
        let bufs = [
            IoSlice::new(b""),
            IoSlice::new(b"hello"),
            IoSlice::new(b"!"),
        ];
        let n = a.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, 5, "one slice at a time");
        a.write_all(b" world").await.unwrap();
        let mut got = [0u8; 11];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        b.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
