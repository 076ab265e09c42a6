//! The proxy's own outbound sockets ([`connect`], marked for the capture rules of a pod), and
//! I/O adapters for the proxy-to-proxy connections: [`Unvectored`] lets h2 coalesce the frames
//! of many streams into one write; [`Corked`] turns the writes h2 makes between two flushes into
//! one write of the TLS stream; [`ReadAhead`] lets TLS read the socket in large reads.
//!
//! Why `Unvectored`: h2 keeps a DATA payload of 256 bytes or more out of its write buffer when
//! the I/O supports vectored writes, and then must flush before it buffers the next frame:
//! every response of a typical API size (a few hundred bytes) cost one TLS record and one
//! `writev` of its own, even when dozens were ready at once. Over an I/O that reports no vectored writes, h2 copies
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

/// Where a connection accepted on `listener` (its bound address) was going when a pod's capture
/// rules sent it there: its own local address when the rules handed it over unchanged
/// (`tproxy`, `weft up`'s pods), else its `SO_ORIGINAL_DST` when they rewrote its destination
/// (`nat` `REDIRECT`, Kubernetes pods). `None` for a connection made to the listener itself.
pub fn original_dst(
    stream: &tokio::net::TcpStream,
    listener: std::net::SocketAddr,
) -> Option<std::net::SocketAddr> {
    let own = |a: std::net::SocketAddr| {
        if listener.ip().is_unspecified() {
            a.port() == listener.port()
        } else {
            a == listener
        }
    };
    let local = stream.local_addr().ok()?;
    if !own(local) {
        return Some(local);
    }
    let dst = socket2::SockRef::from(stream)
        .original_dst_v4()
        .ok()?
        .as_socket()?;
    (!own(dst)).then_some(dst)
}

/// Prepares a listener of a sidecar in a pod: `transparent` (`IP_TRANSPARENT`) to accept the
/// connections `tproxy` rules hand it for addresses that are not its own, and its sockets marked
/// with the proxy's socket mark (the accepted ones inherit it), so that the pod's rules let its
/// replies through. Best effort: where the rules are `nat` ones (Kubernetes pods, whose proxy
/// may lack CAP_NET_ADMIN) neither is needed.
pub fn prepare_listener(listener: &std::net::TcpListener, transparent: bool) {
    let sock = socket2::SockRef::from(listener);
    if transparent {
        if let Err(e) = sock.set_ip_transparent_v4(true) {
            tracing::debug!(error = %e, "listener not transparent");
        }
    }
    if let Some(mark) = SOCKET_MARK.get() {
        if let Err(e) = sock.set_mark(*mark) {
            tracing::debug!(error = %e, "listener not marked");
        }
    }
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

/// Bytes [`Corked`] holds before it writes on without waiting for a flush: four TLS records.
pub const CORK_LIMIT: usize = 64 * 1024;

/// `S` written only when flushed (or when [`CORK_LIMIT`] bytes are waiting).
///
/// Over an I/O without vectored writes h2 writes a DATA frame of 1 KiB or more in two calls —
/// its head with the payload's first KiB, then the rest of the payload — and only then
/// flushes. The TLS stream seals and sends what each call gives it at once, so every frame of
/// a tunnel or of a large body left as two records in two `writev`s, waking the peer twice.
/// Held here until h2 flushes, the frames h2 wrote in between go to TLS in one call: full-size
/// records, one `writev`. Writes of at least `CORK_LIMIT` with nothing held skip the copy.
pub struct Corked<S> {
    io: S,
    buf: Vec<u8>,
    /// `buf[..written]` has gone to `io` already.
    written: usize,
}

impl<S> Corked<S> {
    pub fn new(io: S) -> Corked<S> {
        Corked {
            io,
            buf: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    /// Writes everything held to `io`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.buf.len() >= CORK_LIMIT {
            std::task::ready!(me.poll_drain(cx))?;
        }
        if me.buf.is_empty() && buf.len() >= CORK_LIMIT {
            return Pin::new(&mut me.io).poll_write(cx, buf);
        }
        let n = buf.len().min(CORK_LIMIT - me.buf.len());
        me.buf.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Bytes [`ReadAhead`] reads from its socket at once: four TLS records of 16 KiB.
pub const READ_AHEAD: usize = 64 * 1024;

/// `S` read through a buffer of [`READ_AHEAD`] bytes, allocated on the first read.
///
/// rustls reads its socket 4 KiB at a time, so every 16 KiB record (an HTTP/2 DATA frame of a
/// tunnel or of a large body) cost four `recvfrom` calls. Under the TLS stream, one read of the
/// socket now serves the reads of several records; a read that asks for at least a whole
/// buffer goes to the socket directly. Writes pass through untouched, vectored or not.
pub struct ReadAhead<S> {
    io: S,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(io: S) -> ReadAhead<S> {
        ReadAhead {
            io,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.start == me.end {
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut me.io).poll_read(cx, out);
            }
            if me.buf.is_empty() {
                me.buf = vec![0; READ_AHEAD];
            }
            let mut into = ReadBuf::new(&mut me.buf);
            std::task::ready!(Pin::new(&mut me.io).poll_read(cx, &mut into))?;
            let n = into.filled().len();
            if n == 0 {
                // End of stream: nothing to add.
                return Poll::Ready(Ok(()));
            }
            (me.start, me.end) = (0, n);
        }
        let n = (me.end - me.start).min(out.remaining());
        out.put_slice(&me.buf[me.start..me.start + n]);
        me.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader over `data` that hands out at most `max` bytes per read and counts its reads.
    struct Counted {
        data: Vec<u8>,
        at: usize,
        max: usize,
        reads: usize,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let n = (self.data.len() - self.at)
                .min(out.remaining())
                .min(self.max);
            let at = self.at;
            out.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    /// A writer that records each write it takes.
    #[derive(Default)]
    struct Recorded {
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The two writes h2 makes of one DATA frame (head and first KiB, then the rest) reach the
    /// TLS stream as one write, at the flush; nothing is written before it; a write larger
    /// than the limit with nothing held passes straight through.
    #[tokio::test]
    async fn writes_between_flushes_go_out_as_one() {
        let mut w = Corked::new(Recorded::default());
        let head: Vec<u8> = (0..1033).map(|i| i as u8).collect();
        let rest = vec![9u8; 16384 - 1024];
        w.write_all(&head).await.unwrap();
        w.write_all(&rest).await.unwrap();
        assert!(w.io.writes.is_empty(), "nothing written before the flush");
        w.flush().await.unwrap();
        assert_eq!(w.io.writes.len(), 1);
        assert_eq!(w.io.writes[0], [head, rest].concat());
        assert_eq!(w.io.flushes, 1);

        let big = vec![1u8; CORK_LIMIT + 10];
        w.write_all(&big).await.unwrap();
        assert_eq!(w.io.writes.len(), 2);
        assert_eq!(w.io.writes[1].len(), big.len());

        // Past the limit, what is held goes out before more is taken.
        let mut w = Corked::new(Recorded::default());
        for _ in 0..5 {
            w.write_all(&[3u8; 16 * 1024]).await.unwrap();
        }
        assert_eq!(w.io.writes.len(), 1, "64 KiB held, then written");
        w.shutdown().await.unwrap();
        let total: usize = w.io.writes.iter().map(Vec::len).sum();
        assert_eq!(total, 80 * 1024);
    }

    /// rustls's 4 KiB reads of 48 KiB that the socket has ready at once: one read of the
    /// socket serves all twelve; the bytes arrive intact, then the end of stream.
    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read() {
        let data: Vec<u8> = (0..48 * 1024).map(|i| (i % 251) as u8).collect();
        let mut r = ReadAhead::new(Counted {
            data: data.clone(),
            at: 0,
            max: usize::MAX,
            reads: 0,
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == data);
        // One read for the data, one that finds the end.
        assert_eq!(r.get_ref().reads, 2);
    }

    /// A read asking for a whole buffer or more skips the copy; a socket that hands out
    /// little at a time still delivers every byte in order.
    #[tokio::test]
    async fn large_reads_go_straight_through_and_short_socket_reads_add_up() {
        let data: Vec<u8> = (0..200 * 1024).map(|i| (i % 253) as u8).collect();
        let mut r = ReadAhead::new(Counted {
            data: data.clone(),
            at: 0,
            max: usize::MAX,
            reads: 0,
        });
        let mut big = vec![0u8; 128 * 1024];
        let n = r.read(&mut big).await.unwrap();
        assert_eq!(n, 128 * 1024);
        assert!(r.buf.is_empty(), "no buffer allocated for a direct read");

        let mut r = ReadAhead::new(Counted {
            data: data.clone(),
            at: 0,
            max: 1000,
            reads: 0,
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
    }

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
