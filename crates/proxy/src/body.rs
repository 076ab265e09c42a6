//! The one body type every proxied request and response is converted to.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// A request or response body of any origin (an incoming stream, or bytes the proxy made).
pub type Body = BoxBody<Bytes, hyper::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn incoming(b: hyper::body::Incoming) -> Body {
    b.boxed()
}

/// Boxes any body with our data and error types.
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    b.boxed()
}
