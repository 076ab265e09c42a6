//! PERMISSIVE inbound: tells a TLS ClientHello from plaintext on an accepted connection by
//! peeking at its first bytes, without consuming them, so either the TLS acceptor or the
//! plaintext server reads the stream from its first byte.

use std::io;
use std::time::Duration;
use tokio::net::TcpStream;

/// A TLS record of type handshake (22) …
const TLS_HANDSHAKE: u8 = 0x16;
/// … whose version's major byte is 3 (SSL 3.0 / TLS 1.x; TLS 1.3 also writes 3.1 there).
const TLS_MAJOR_VERSION: u8 = 0x03;
/// How long to wait before peeking again when only the first byte of a possible ClientHello
/// has arrived (peek returns at once while any unread byte is queued, so it cannot wait for
/// the second one).
const SPLIT_RECORD_RETRY: Duration = Duration::from_millis(1);

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS record: hand the stream to the TLS acceptor.
    Tls,
    /// Anything else (HTTP/1, the HTTP/2 preface, opaque TCP).
    Plaintext,
    /// The peer closed before sending a byte.
    Closed,
}

/// Classifies a connection's first bytes; `None` while they are too few to tell.
pub fn classify(prefix: &[u8]) -> Option<Sniffed> {
    match prefix {
        [] | [TLS_HANDSHAKE] => None,
        [TLS_HANDSHAKE, TLS_MAJOR_VERSION, ..] => Some(Sniffed::Tls),
        _ => Some(Sniffed::Plaintext),
    }
}

/// Peeks at `stream` until its first bytes tell TLS from plaintext; consumes nothing. Waits for
/// the client to speak first, so the caller bounds it with a timeout (a server-first protocol
/// never sends anything).
pub async fn sniff(stream: &TcpStream) -> io::Result<Sniffed> {
    let mut buf = [0u8; 2];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Sniffed::Closed);
        }
        match classify(&buf[..n]) {
            Some(sniffed) => return Ok(sniffed),
            None => tokio::time::sleep(SPLIT_RECORD_RETRY).await,
        }
    }
}

#[cfg(test)]
mod tests;
