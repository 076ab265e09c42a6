//! Response flags: the closed set of reasons a proxy answers a request itself, named as Envoy
//! names them so that logs and dashboards read the same. Every such response carries the header
//! `x-weft-flag`.

use crate::body::{self, Body};
use http::{HeaderValue, Response, StatusCode};

/// The header a proxy-made response carries, naming its [`Flag`].
pub const FLAG_HEADER: &str = "x-weft-flag";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flag {
    /// No route: the host is not a service of the mesh.
    NoRoute,
    /// No healthy upstream: the service has no ready endpoint.
    NoHealthyUpstream,
    /// Upstream connection failure.
    UpstreamConnectFailure,
    /// Upstream connection terminated mid-request.
    UpstreamConnectionTermination,
    /// Upstream request timeout.
    UpstreamTimeout,
    /// Retry limit exceeded.
    RetryLimitExceeded,
    /// The proxy is draining / overflowing and refused the request.
    Overflow,
    /// Downstream sent a request the proxy cannot forward.
    BadRequest,
    /// The route's fault injection aborted the request.
    FaultInjected,
    /// The route's fault injection delayed the request.
    DelayInjected,
    /// Authorization policy denied the request.
    Rbac,
    /// An end-user JWT was required to be valid and was not (401).
    Unauthorized,
    /// The client was too slow with its request (408).
    StreamIdleTimeout,
    /// The proxy is at its connection or request cap and shed the request.
    Overload,
    /// weft's own (Envoy has none): a retry or a mirrored copy the request was due was not
    /// sent, because its body could not be sent again — it outgrew the buffer limit, or had not
    /// all arrived when the retry was due. Set on the answer the client gets, which is the
    /// upstream's own.
    ReplaySkipped,
}

impl Flag {
    pub const ALL: [Flag; 15] = [
        Flag::NoRoute,
        Flag::NoHealthyUpstream,
        Flag::UpstreamConnectFailure,
        Flag::UpstreamConnectionTermination,
        Flag::UpstreamTimeout,
        Flag::RetryLimitExceeded,
        Flag::Overflow,
        Flag::BadRequest,
        Flag::FaultInjected,
        Flag::DelayInjected,
        Flag::Rbac,
        Flag::Unauthorized,
        Flag::StreamIdleTimeout,
        Flag::Overload,
        Flag::ReplaySkipped,
    ];

    /// The flag a header value names.
    pub fn parse(s: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::NoHealthyUpstream => "UH",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamConnectionTermination => "UC",
            Flag::UpstreamTimeout => "UT",
            Flag::RetryLimitExceeded => "URX",
            Flag::Overflow => "UO",
            Flag::BadRequest => "DPE",
            Flag::FaultInjected => "FI",
            Flag::DelayInjected => "DI",
            Flag::Rbac => "RBAC",
            Flag::Unauthorized => "JWT",
            Flag::StreamIdleTimeout => "SI",
            Flag::Overload => "OM",
            Flag::ReplaySkipped => "RS",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Flag::NoRoute => StatusCode::NOT_FOUND,
            Flag::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Flag::BadRequest => StatusCode::BAD_REQUEST,
            Flag::Rbac => StatusCode::FORBIDDEN,
            Flag::Unauthorized => StatusCode::UNAUTHORIZED,
            Flag::StreamIdleTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The one-line message of a response the proxy made, kept with it (as an extension) for a
/// gRPC client's `grpc-message` ([`crate::grpc::answer`]).
#[derive(Clone, Debug)]
pub struct Message(pub String);

/// A response the proxy makes itself: the flag's status, the flag header and a one-line body.
pub fn respond(flag: Flag, message: impl Into<String>) -> Response<Body> {
    respond_with(flag, flag.status(), message)
}

/// As [`respond`], with a status other than the flag's own (a fault's configured status).
pub fn respond_with(flag: Flag, status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut msg = message.into();
    msg.push('\n');
    let mut rsp = Response::new(body::full(msg.clone()));
    rsp.extensions_mut().insert(Message(msg));
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(FLAG_HEADER, HeaderValue::from_static(flag.as_str()));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// The flag a response carries, if a proxy made it.
pub fn of<B>(rsp: &Response<B>) -> Option<Flag> {
    rsp.headers()
        .get(FLAG_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Flag::parse)
}
