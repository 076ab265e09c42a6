//! One call to a control plane's HTTP API, over plaintext or over TLS with a client config made
//! for that API (the control plane verified against the mesh's trust anchors; see
//! `proxy::tls::api_client_config`, which the binary hands in as a [`TlsFor`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Makes the TLS client config for an API whose control plane chains to a PEM trust bundle.
pub type TlsFor = Arc<dyn Fn(&str) -> Result<Arc<rustls::ClientConfig>, String> + Send + Sync>;

/// How long one call may take, connection and handshake included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `req` (its URI's path and query are used) to the API at `addr`, over TLS when `tls`
/// is given; the status and the whole body.
pub async fn call_once(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    mut req: http::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    *req.uri_mut() = path.parse().map_err(|e| format!("{path}: {e}"))?;
    if let Ok(host) = http::HeaderValue::from_str(&addr.to_string()) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => send(TokioIo::new(tcp), req).await,
            Some(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(TokioIo::new(stream), req).await
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer in {} s", CALL_TIMEOUT.as_secs()))?
}

async fn send<IO>(io: TokioIo<IO>, req: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status().as_u16();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
