//! The outbound handshake: mTLS to a peer proxy over an open TCP connection, accepting only
//! the SPIFFE identity expected for the endpoint.

use crate::tls::{server_name, Credentials, RejectReason};
use model::Identity;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// No answer within the timeout.
    Timeout,
    /// Refused or broken: a [`RejectReason`] label (`handshake` for other failures) and the
    /// error.
    Failed { kind: &'static str, detail: String },
}

/// Runs the client side of the handshake on `stream`, expecting the peer to prove `expected`.
pub async fn connect(
    creds: &Arc<Credentials>,
    expected: &Identity,
    stream: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<crate::io::ReadAhead<TcpStream>>, HandshakeError> {
    let connector = creds.connector(expected);
    tokio::time::timeout(
        timeout,
        connector.connect(server_name(expected), crate::io::ReadAhead::new(stream)),
    )
    .await
    .map_err(|_| HandshakeError::Timeout)?
    .map_err(|e| HandshakeError::Failed {
        kind: RejectReason::of_io(&e).map_or("handshake", |r| r.as_str()),
        detail: e.to_string(),
    })
}
