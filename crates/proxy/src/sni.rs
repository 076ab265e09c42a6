//! The server name a TLS client sends first (its ClientHello's SNI), read from a connection
//! before it is routed (VirtualService `tls[]` rules match on it), and a stream that gives the
//! bytes read for it back before the rest, so that the destination sees the connection whole.
//! The TLS is not terminated: the ClientHello is only parsed (by rustls).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A ClientHello larger than this is not waited for (real ones are a few hundred bytes; with
/// post-quantum key shares under 2 KiB).
const MAX_HELLO: usize = 16 * 1024;

/// What a connection began with: the bytes read, and the server name if they are a TLS
/// ClientHello that names one.
pub struct Hello {
    pub bytes: Vec<u8>,
    pub server_name: Option<String>,
}

/// Reads the start of `io` (after `first`, bytes already read from it) until it is a whole
/// ClientHello, plainly not TLS, or `wait` has passed without more bytes (a client that waits
/// for the server to speak first: no name).
pub async fn read_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    first: Vec<u8>,
    wait: Duration,
) -> io::Result<Hello> {
    let mut bytes = first;
    if !bytes.is_empty() {
        if let Some(hello) = decided(&bytes) {
            return Ok(Hello {
                bytes,
                server_name: hello,
            });
        }
    }
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(wait, io.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => 0,
        };
        bytes.extend_from_slice(&chunk[..n]);
        let parsed = parse(&bytes);
        if n == 0 || bytes.len() >= MAX_HELLO || !matches!(parsed, Parsed::Incomplete) {
            let server_name = match parsed {
                Parsed::Hello(name) => name,
                _ => None,
            };
            return Ok(Hello { bytes, server_name });
        }
    }
}

/// `Some(server name)` once `bytes` decide (a whole ClientHello, or not TLS).
fn decided(bytes: &[u8]) -> Option<Option<String>> {
    match parse(bytes) {
        Parsed::Hello(name) => Some(name),
        Parsed::NotTls => Some(None),
        Parsed::Incomplete if bytes.len() >= MAX_HELLO => Some(None),
        Parsed::Incomplete => None,
    }
}

enum Parsed {
    /// A ClientHello, with its server name if it sends one.
    Hello(Option<String>),
    /// Not a TLS ClientHello.
    NotTls,
    Incomplete,
}

fn parse(bytes: &[u8]) -> Parsed {
    // A TLS handshake record starts with content type 22.
    match bytes.first() {
        None => return Parsed::Incomplete,
        Some(22) => {}
        Some(_) => return Parsed::NotTls,
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = bytes;
    if acceptor.read_tls(&mut rd).is_err() {
        return Parsed::NotTls;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Parsed::Hello(
            accepted
                .client_hello()
                .server_name()
                .map(|n| n.to_ascii_lowercase()),
        ),
        Ok(None) => Parsed::Incomplete,
        Err(_) => Parsed::NotTls,
    }
}

/// `io`, whose reads first give back `prefix` (bytes already read from it).
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    io: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, io: S) -> Self {
        Prefixed { prefix, at: 0, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let rest = &this.prefix[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    // Vectored writes pass through, so that a server on this (a captured connection's HTTP/1)
    // writes a response's head and body in one `writev` instead of copying them together.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
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
    use tokio::io::{AsyncWriteExt, DuplexStream};

    /// The first flight of a real TLS client naming `name`, captured from a pipe.
    async fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let handshake = tokio::spawn(async move { connector.connect(name, client).await });
        let mut hello = vec![0u8; 64 * 1024];
        let n = server.read(&mut hello).await.unwrap();
        handshake.abort();
        hello.truncate(n);
        hello
    }

    async fn fed(chunks: Vec<Vec<u8>>) -> (Hello, DuplexStream) {
        let (mut tx, mut rx) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            for c in chunks {
                tx.write_all(&c).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Keep the stream open: the reader must stop on what it has.
            std::future::pending::<()>().await;
        });
        let hello = read_hello(&mut rx, Vec::new(), Duration::from_millis(300))
            .await
            .unwrap();
        (hello, rx)
    }

    #[tokio::test]
    async fn the_server_name_of_a_client_hello_is_read_even_in_pieces() {
        let hello = client_hello("Login.Example.com").await;
        let (got, _) = fed(vec![hello.clone()]).await;
        assert_eq!(got.server_name.as_deref(), Some("login.example.com"));
        assert_eq!(got.bytes, hello);
        let pieces = hello.chunks(7).map(<[u8]>::to_vec).collect();
        let (got, _) = fed(pieces).await;
        assert_eq!(got.server_name.as_deref(), Some("login.example.com"));
        assert_eq!(got.bytes, hello);
    }

    #[tokio::test]
    async fn bytes_read_before_count_as_the_start() {
        let hello = client_hello("a.example.com").await;
        let (head, rest) = hello.split_at(10);
        let (mut tx, mut rx) = tokio::io::duplex(64 * 1024);
        tx.write_all(rest).await.unwrap();
        let got = read_hello(&mut rx, head.to_vec(), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(got.server_name.as_deref(), Some("a.example.com"));
        assert_eq!(got.bytes, hello);
        // Already decided: nothing more is read.
        let got = read_hello(&mut rx, b"GET / HTTP/1.1".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!((got.server_name, got.bytes.len()), (None, 14));
    }

    #[tokio::test]
    async fn plain_bytes_and_silent_clients_have_no_name() {
        let (got, _) = fed(vec![b"PING\r\n".to_vec()]).await;
        assert_eq!((got.server_name, got.bytes), (None, b"PING\r\n".to_vec()));
        let (got, _) = fed(vec![]).await;
        assert_eq!((got.server_name, got.bytes.len()), (None, 0));
    }

    #[tokio::test]
    async fn a_prefixed_stream_reads_what_was_read_before_the_rest() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        tx.write_all(b" world").await.unwrap();
        drop(tx);
        let mut s = Prefixed::new(b"hello".to_vec(), rx);
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
