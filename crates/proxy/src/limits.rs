//! The limits and timeouts every listener applies, and their defaults (Envoy's, Linkerd's and
//! nginx's where they agree; see docs/robustness.md):
//!
//! | limit | default | like |
//! |---|---|---|
//! | request head, bytes | 60 KiB → 431 | Envoy `max_request_headers_kb` |
//! | request head, fields | 100 → 431 | Envoy `max_headers_count` |
//! | first byte of a connection | 10 s, then closed | Linkerd's protocol detection timeout |
//! | whole request head | 30 s, then closed | nginx `client_header_timeout` (60 s) |
//! | gap in a request body | 60 s → 408 | nginx `client_body_timeout` |
//! | whole request body (not gRPC) | 300 s → 408 | Envoy's edge `request_timeout` |
//! | idle keep-alive connection | 1 h, then closed | Envoy's HTTP `idle_timeout` |
//! | connections per listener | 10,000 | Envoy's edge `connection_limit` |
//! | connections per proxy | 50,000, at most ¾ of the file descriptors | Envoy's `global_downstream_max_connections` |
//! | request body kept for a retry or a mirror | 64 KiB | Linkerd's limit; Envoy's `per_request_buffer_limit_bytes` |
//! | TCP keepalive | after 60 s idle, every 10 s, 3 probes | dead peers go within ~90 s |
//!
//! HTTP/2 floods (SETTINGS, PING, empty frames, WINDOW_UPDATE, PRIORITY) are bounded by
//! [`crate::guard`].

use std::time::Duration;

/// What a listener does with a request header whose name has an underscore (Envoy's
/// `headers_with_underscores_action`): some upstreams read `x_user` as `x-user`, so an
/// edge rejects them by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underscores {
    Allow,
    /// 400, and the connection closes.
    RejectRequest,
    /// The header is removed before the request goes on.
    DropHeader,
}

impl Underscores {
    pub fn as_str(self) -> &'static str {
        match self {
            Underscores::Allow => "allow",
            Underscores::RejectRequest => "reject-request",
            Underscores::DropHeader => "drop-header",
        }
    }

    pub fn parse(s: &str) -> Option<Underscores> {
        match s {
            "allow" | "ALLOW" => Some(Underscores::Allow),
            "reject-request" | "REJECT_REQUEST" => Some(Underscores::RejectRequest),
            "drop-header" | "DROP_HEADER" => Some(Underscores::DropHeader),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub first_byte_timeout: Duration,
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections_per_listener: usize,
    /// `None`: derived from the file-descriptor limit at start ([`Limits::connections_total`]).
    pub max_connections: Option<usize>,
    /// `None`: reject at the ingress, allow on a sidecar.
    pub underscores: Option<Underscores>,
    /// Bytes of a request body kept (while it streams) so that a retry or a mirror can send it
    /// again; a longer body streams once and is neither retried nor mirrored.
    pub max_buffered_body: u64,
}

pub const DEFAULT_MAX_HEADER_BYTES: usize = 60 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_CONNECTIONS_PER_LISTENER: usize = 10_000;
pub const MAX_CONNECTIONS_CEILING: usize = 50_000;
/// Linkerd's limit. Envoy's listeners default to 1 MiB, but a sidecar keeps one copy per request
/// in flight that may be retried, so the smaller bound keeps its memory flat under load.
pub const DEFAULT_MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// TCP keepalive on every accepted and upstream socket.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_RETRIES: u32 = 3;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections_per_listener: DEFAULT_MAX_CONNECTIONS_PER_LISTENER,
            max_connections: None,
            underscores: None,
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
        }
    }
}

impl Limits {
    /// The proxy's connection cap: the one configured, or ¾ of `nofile` (the file-descriptor
    /// limit, after [`raise_nofile`]) less a reserve for upstream connections and files, at
    /// most [`MAX_CONNECTIONS_CEILING`].
    pub fn connections_total(&self, nofile: u64) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let usable = nofile.saturating_sub(256) * 3 / 4;
            (usable as usize).clamp(16, MAX_CONNECTIONS_CEILING)
        })
    }
}

/// Raises the soft file-descriptor limit to the hard one; the limit in force afterwards.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// TCP keepalive on `socket`, so a peer that vanished (no FIN, no RST) is noticed.
pub fn keepalive(socket: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let _ = socket2::SockRef::from(socket).set_tcp_keepalive(&ka);
}
