//! `h1_request`: the input is everything one client sends on a connection, served by the
//! proxy's own hyper setup ([`proxy::server::builder`]: HTTP/1.1 and HTTP/2 on one port, the
//! proxy's header limits and timeouts) over an in-memory pipe, each request checked as every
//! listener checks it ([`proxy::validate::request`], with the request-body timeouts), then
//! its body read to the end. This covers the HTTP/1 request head, the chunked and
//! content-length body decoders, and (for inputs that start with the HTTP/2 preface) the
//! HTTP/2 frame decoder.
//!
//! Time is paused: a connection waiting on a timer (the header read timeout, say) advances the
//! clock instead of the wall clock, so no input takes long, and one that waits for nothing
//! (a body that never ends) is cut off by [`CONNECTION_BUDGET`].

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest a connection is given, in paused time (past the proxy's 30 s header timeout).
const CONNECTION_BUDGET: Duration = Duration::from_secs(120);

/// Serves `data` as one client connection; what the server sent back.
pub fn serve(data: &[u8]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let mut received = Vec::new();
    rt.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let limits = proxy::limits::Limits::default();
        let builder = proxy::server::builder(&limits);
        let timeouts = proxy::body::BodyTimeouts {
            idle: limits.body_idle_timeout,
            total: limits.request_timeout,
        };
        let service = service_fn(move |req: http::Request<Incoming>| async move {
            let mut req = req.map(|b| proxy::body::RequestBody::new(b, timeouts));
            let underscores = proxy::limits::Underscores::RejectRequest;
            if let Err(refused) = proxy::validate::request(&mut req, underscores).await {
                return Ok::<_, Infallible>(refused);
            }
            // The whole body, as a proxy forwarding it would read it.
            let read = req.into_body().collect().await;
            let answer = match read {
                Ok(body) => format!("{} bytes", body.to_bytes().len()),
                Err(e) => format!("body error: {e}"),
            };
            Ok(http::Response::new(proxy::body::full(Bytes::from(answer))))
        });
        let connection = builder.serve_connection(TokioIo::new(server), service);
        // The client sends everything and keeps its side open, as a client waiting for its
        // answers does (closing it would end the connection at once: the proxy's builder does
        // not serve half-closed connections); it reads whatever comes back meanwhile, so
        // neither side is blocked on a full pipe. The server ends the connection: after an
        // error, or when the client sends no further request within the header timeout.
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let send = async {
            let _ = to_server.write_all(data).await;
        };
        let receive = async {
            let _ = from_server.read_to_end(&mut received).await;
        };
        let _ = tokio::time::timeout(CONNECTION_BUDGET, async {
            tokio::join!(connection, send, receive)
        })
        .await;
    });
    received
}

#[cfg(test)]
mod tests {
    use super::serve;

    fn text(data: &[u8]) -> String {
        String::from_utf8_lossy(&serve(data)).into_owned()
    }

    #[test]
    fn serves_requests_and_refuses_garbage() {
        let chunked = text(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert!(
            chunked.starts_with("HTTP/1.1 200 OK\r\n") && chunked.ends_with("5 bytes"),
            "{chunked}"
        );
        let two = text(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(two.matches("0 bytes").count(), 2, "{two}");
        assert!(text(b"\x00\xff garbage").starts_with("HTTP/1.1 400"));
        // A head that never ends: closed at the header timeout (in paused time), unanswered.
        assert_eq!(text(b"GET / HTTP/1.1\r\nHost: a\r\n"), "");
        // A body that never ends: cut off.
        assert_eq!(
            text(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc"),
            ""
        );
    }
}
