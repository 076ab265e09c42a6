//! A minimal keep-alive HTTP/1.1 client for the lanes: the request is serialized once, written
//! with one `write`, and the response is read and parsed (httparse) in the lane's own task.
//!
//! hyper's client hands every request to a connection task and back through channels; for a
//! load generator that hop lands inside the measured latency (and costs CPU the target should
//! get). wrk and oha both drive their sockets directly; with this client `weft load` measures
//! the same interval they do: from writing the request to reading the last byte of the answer.

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::ExchangeFailed;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;

/// One keep-alive connection.
#[derive(Debug)]
pub(crate) struct H1Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The server said `Connection: close` (or sent a body delimited by closing).
    closed: bool,
    /// Exchanges completed on this connection.
    used: u64,
}

/// How a response body ends.
#[derive(Debug, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl H1Conn {
    pub fn new(stream: TcpStream) -> H1Conn {
        H1Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            closed: false,
            used: 0,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes `request` (a whole serialized request) and reads the whole response; `head`:
    /// the request was HEAD (its answer has no body whatever its headers say).
    pub async fn exchange(
        &mut self,
        request: &Bytes,
        head: bool,
    ) -> Result<StatusCode, ExchangeFailed> {
        if self.closed {
            return Err(ExchangeFailed::NotSent);
        }
        self.buf.clear();
        if self.stream.write_all(request).await.is_err() {
            self.closed = true;
            return Err(self.lost());
        }
        let (status, framing) = loop {
            if let Some(parsed) = self.parse_head(head)? {
                break parsed;
            }
            if self.fill().await? == 0 {
                self.closed = true;
                return Err(self.lost());
            }
        };
        match framing {
            Framing::None => {}
            Framing::Length(n) => self.skip(n).await?,
            Framing::Chunked => self.chunked().await?,
            Framing::UntilClose => {
                self.closed = true;
                while self.fill().await? != 0 {
                    self.buf.clear();
                }
            }
        }
        self.used += 1;
        Ok(status)
    }

    /// An exchange that got no byte back: on a connection that served before, the server most
    /// likely closed it while idle, before the request arrived (sent again once by the caller).
    fn lost(&self) -> ExchangeFailed {
        if self.used > 0 && self.buf.is_empty() {
            ExchangeFailed::NotSent
        } else {
            ExchangeFailed::Io
        }
    }

    async fn fill(&mut self) -> Result<usize, ExchangeFailed> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await.map_err(|_| {
            self.closed = true;
            ExchangeFailed::Io
        })
    }

    /// The status and body framing once the whole head is in the buffer (which then holds only
    /// what follows the head).
    fn parse_head(&mut self, head: bool) -> Result<Option<(StatusCode, Framing)>, ExchangeFailed> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut rsp = httparse::Response::new(&mut headers);
        let len = match rsp.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => return Ok(None),
            _ => {
                self.closed = true;
                return Err(ExchangeFailed::Io);
            }
        };
        let code = rsp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| ExchangeFailed::Io)?;
        let mut framing = Framing::UntilClose;
        for h in rsp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or(ExchangeFailed::Io)?;
                if framing != Framing::Chunked {
                    framing = Framing::Length(n);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if h.value.eq_ignore_ascii_case(b"chunked") || h.value.ends_with(b"chunked") {
                    framing = Framing::Chunked;
                }
            } else if h.name.eq_ignore_ascii_case("connection")
                && h.value.eq_ignore_ascii_case(b"close")
            {
                self.closed = true;
            }
        }
        if head || code < 200 || code == 204 || code == 304 {
            framing = Framing::None;
        }
        self.buf.advance(len);
        Ok(Some((status, framing)))
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), ExchangeFailed> {
        loop {
            let have = (self.buf.len() as u64).min(n);
            self.buf.advance(have as usize);
            n -= have;
            if n == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                self.closed = true;
                return Err(ExchangeFailed::Io);
            }
        }
    }

    /// Consumes a chunked body and its trailers.
    async fn chunked(&mut self) -> Result<(), ExchangeFailed> {
        loop {
            let line = self.line().await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .ok_or(ExchangeFailed::Io)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(());
            }
            self.skip(size + 2).await?;
        }
    }

    /// The next CRLF-terminated line, consumed from the buffer.
    async fn line(&mut self) -> Result<Bytes, ExchangeFailed> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(at).freeze();
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD || self.fill().await? == 0 {
                self.closed = true;
                return Err(ExchangeFailed::Io);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request (read up to the blank line) with the next canned
    /// response, split into small writes to exercise partial reads.
    async fn serve(responses: Vec<&'static [u8]>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            for rsp in responses {
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut b).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&b[..n]);
                }
                req.clear();
                for part in rsp.chunks(7) {
                    s.write_all(part).await.unwrap();
                    s.flush().await.unwrap();
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_length_chunked_and_empty_bodies_on_one_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        ])
        .await;
        let mut c = H1Conn::new(TcpStream::connect(addr).await.unwrap());
        let req = Bytes::from_static(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        for want in [200, 503, 204, 200] {
            let got = c.exchange(&req, false).await.unwrap();
            assert_eq!(got.as_u16(), want);
        }
        assert!(c.is_closed(), "the server said Connection: close");
        assert_eq!(c.exchange(&req, false).await, Err(ExchangeFailed::NotSent));
    }

    #[tokio::test]
    async fn a_connection_closed_before_answering_is_reported() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        let mut c = H1Conn::new(TcpStream::connect(addr).await.unwrap());
        let req = Bytes::from_static(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        // Never answered on a fresh connection: a failure, not a silent resend.
        assert_eq!(c.exchange(&req, false).await, Err(ExchangeFailed::Io));
        assert!(c.is_closed());
    }
}
