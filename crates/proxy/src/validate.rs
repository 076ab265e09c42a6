//! One validation policy for client requests, applied by every listener before a request is
//! handled, on top of what hyper refuses by itself (malformed request lines and header fields,
//! obs-fold, NUL or CR in values, invalid or conflicting Content-Length, unknown transfer
//! codings, heads over the size or field-count limit: 400 or 431, connection closed; a request
//! with both `Content-Length` and `Transfer-Encoding` is read by the transfer coding alone, its
//! `Content-Length` dropped, and the connection closed after it, as RFC 9112 §6.3 allows).
//! Here:
//! - HTTP/1.1 without `Host`, or with more than one: 400;
//! - a chunked body whose first chunk is malformed: 400 before anything is forwarded (its
//!   first chunk is read ahead);
//! - header names with an underscore, as the listener's [`Underscores`] says.
//!
//! Every refusal closes the connection (`Connection: close`): after a malformed request the
//! framing of the next one cannot be trusted.

use crate::body::{Body, RequestBody};
use crate::flags::{self, Flag};
use crate::limits::Underscores;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};

/// Checks `req` (reading a chunked body's first chunk ahead); `Err`: the answer to send.
pub async fn request(
    req: &mut Request<RequestBody>,
    underscores: Underscores,
) -> Result<(), Response<Body>> {
    let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    let headers = req.headers();
    if http1 {
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if req.version() == Version::HTTP_11 => {
                return Err(refuse("an HTTP/1.1 request needs a Host header"))
            }
            (Some(_), Some(_)) => return Err(refuse("more than one Host header")),
            _ => {}
        }
    }
    match underscores {
        Underscores::Allow => {}
        Underscores::RejectRequest => {
            if let Some(name) = req.headers().keys().find(|n| n.as_str().contains('_')) {
                return Err(refuse(&format!(
                    "header name {:?} has an underscore",
                    name.as_str()
                )));
            }
        }
        Underscores::DropHeader => {
            let drop: Vec<_> = req
                .headers()
                .keys()
                .filter(|n| n.as_str().contains('_'))
                .cloned()
                .collect();
            for name in drop {
                req.headers_mut().remove(name);
            }
        }
    }
    if http1 && req.headers().contains_key(header::TRANSFER_ENCODING) {
        if let Err(e) = req.body_mut().read_ahead().await {
            if crate::body::timed_out(&*e) {
                return Err(closing(flags::respond(
                    Flag::StreamIdleTimeout,
                    format!("request body: {e}"),
                )));
            }
            return Err(refuse(&format!("malformed request body: {e}")));
        }
    }
    Ok(())
}

fn refuse(why: &str) -> Response<Body> {
    closing(flags::respond(Flag::BadRequest, why))
}

/// `rsp` with `Connection: close`: the connection ends after it.
pub fn closing(mut rsp: Response<Body>) -> Response<Body> {
    rsp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    rsp
}
