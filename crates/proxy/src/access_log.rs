//! Access logs: one line per request on the proxy's stdout, as JSON with the fields of Envoy's
//! default format or in Apache Common Log Format. Off by default (as in Linkerd: they cost tail
//! latency and CPU); on mesh-wide (`weft up --access-log json|apache`) or per workload (the
//! service annotation `weft.dev/access-log` or Linkerd's `config.linkerd.io/access-log`).
//!
//! The request path only captures what the line needs (cheap clones of the request's URI and
//! header values) and `try_send`s it into a bounded queue; a writer thread formats and writes.
//! When the queue is full the line is dropped and counted (`weft_access_log_dropped_total`):
//! a slow stdout never slows a request.

#[cfg(test)]
mod tests;

use crate::settings::AccessLogFormat;
use crate::telemetry::{DestinationService, Peer, ResponseFlags, UNKNOWN};
use http::{HeaderValue, Method, Request, Uri, Version};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// Lines queued for the writer before new ones are dropped: about a second of a busy proxy.
pub const QUEUE: usize = 8192;

/// The access log of one proxy.
pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: Counter,
    format: AccessLogFormat,
}

/// The request side of a line, captured before the request is consumed.
pub struct Captured {
    pub start: SystemTime,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub forwarded_for: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub downstream: SocketAddr,
    pub bytes_received: u64,
}

impl Captured {
    pub fn of<B>(req: &Request<B>, downstream: SocketAddr, bytes_received: u64) -> Box<Captured> {
        let h = req.headers();
        Box::new(Captured {
            start: SystemTime::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: h.get(http::header::HOST).cloned(),
            user_agent: h.get(http::header::USER_AGENT).cloned(),
            forwarded_for: h.get("x-forwarded-for").cloned(),
            request_id: h.get("x-request-id").cloned(),
            downstream,
            bytes_received,
        })
    }
}

/// One line: the captured request and how it ended.
pub struct Entry {
    pub request: Box<Captured>,
    pub direction: &'static str,
    pub response_code: u16,
    pub response_flags: ResponseFlags,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_host: Option<SocketAddr>,
    pub service: DestinationService,
    pub source: Peer,
    pub destination: Peer,
    pub trace_id: Option<opentelemetry::trace::TraceId>,
}

impl AccessLog {
    /// Writes to the process's stdout.
    pub fn stdout(format: AccessLogFormat, dropped: Counter) -> std::io::Result<AccessLog> {
        Self::to(format, dropped, std::io::stdout())
    }

    /// Writes to `out` from a thread of its own.
    pub fn to(
        format: AccessLogFormat,
        dropped: Counter,
        out: impl Write + Send + 'static,
    ) -> std::io::Result<AccessLog> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn(move || write_lines(format, rx, out))?;
        Ok(AccessLog {
            tx,
            dropped,
            format,
        })
    }

    /// The line format (the admin `/config` reports it).
    pub fn format(&self) -> AccessLogFormat {
        self.format
    }

    /// Queues a line; never waits.
    pub fn send(&self, e: Entry) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// The writer: a batch of whatever is queued, one `write` per batch.
fn write_lines(format: AccessLogFormat, rx: Receiver<Entry>, mut out: impl Write) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(e) = next {
            format_line(format, &e, &mut buf);
            next = if buf.len() < 60 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
            // Nobody reads our stdout any more; keep draining so senders never block.
        }
        buf.clear();
    }
}

/// Envoy's default access-log fields (`%START_TIME%`, `%REQ(:METHOD)%`…), named as in Istio's
/// JSON encoding, plus the identities the mTLS handshake proved.
#[derive(Serialize)]
struct JsonLine<'a> {
    start_time: String,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    response_code: u16,
    response_flags: String,
    bytes_received: u64,
    bytes_sent: u64,
    /// Milliseconds, from the request's arrival to its response's last byte.
    duration: u64,
    upstream_host: Option<String>,
    upstream_cluster: &'a str,
    x_forwarded_for: Option<&'a str>,
    user_agent: Option<&'a str>,
    x_request_id: Option<&'a str>,
    authority: Option<&'a str>,
    downstream_remote_address: String,
    downstream_identity: Option<String>,
    upstream_identity: Option<String>,
    direction: &'static str,
    trace_id: Option<String>,
}

fn header(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// A peer's verified SPIFFE ID, if the handshake proved one.
fn identity(p: &Peer) -> Option<String> {
    let principal = &p.metadata().principal;
    (!principal.is_empty() && principal != UNKNOWN).then(|| format!("spiffe://{principal}"))
}

/// Appends `e` as one line (with its newline) to `buf`.
pub fn format_line(format: AccessLogFormat, e: &Entry, buf: &mut Vec<u8>) {
    let r = &e.request;
    let path = r.uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = r.uri.authority().map(|a| a.as_str()).or(header(&r.host));
    match format {
        AccessLogFormat::Json => {
            let line = JsonLine {
                start_time: rfc3339_millis(r.start),
                method: r.method.as_str(),
                path,
                protocol: protocol(r.version),
                response_code: e.response_code,
                response_flags: e.response_flags.to_string(),
                bytes_received: r.bytes_received,
                bytes_sent: e.bytes_sent,
                duration: e.duration.as_millis() as u64,
                upstream_host: e.upstream_host.map(|a| a.to_string()),
                upstream_cluster: e.service.fqdn(),
                x_forwarded_for: header(&r.forwarded_for),
                user_agent: header(&r.user_agent),
                x_request_id: header(&r.request_id),
                authority,
                downstream_remote_address: r.downstream.to_string(),
                downstream_identity: identity(&e.source),
                upstream_identity: identity(&e.destination),
                direction: e.direction,
                trace_id: e.trace_id.map(|t| t.to_string()),
            };
            if serde_json::to_writer(&mut *buf, &line).is_ok() {
                buf.push(b'\n');
            }
        }
        AccessLogFormat::Apache => {
            // host ident authuser [date] "request line" status bytes; the authenticated user is
            // the client's verified identity.
            let user = identity(&e.source);
            let bytes = if e.bytes_sent == 0 {
                "-".to_string()
            } else {
                e.bytes_sent.to_string()
            };
            let _ = writeln!(
                buf,
                "{} - {} [{}] \"{} {} {}\" {} {}",
                r.downstream.ip(),
                user.as_deref().unwrap_or("-"),
                clf_time(r.start),
                r.method,
                path,
                protocol(r.version),
                e.response_code,
                bytes
            );
        }
    }
}

fn utc(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// `2024-05-01T12:00:00.123Z`, Envoy's `%START_TIME%`.
fn rfc3339_millis(t: SystemTime) -> String {
    let d = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.millisecond()
    )
}

/// `01/May/2024:12:00:00 +0000`, the Common Log Format's time.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d = utc(t);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        d.day(),
        MONTHS[u8::from(d.month()) as usize - 1],
        d.year(),
        d.hour(),
        d.minute(),
        d.second()
    )
}
