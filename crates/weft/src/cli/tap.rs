//! `weft tap SERVICE [--path P --method M --to S]`: a live stream of the requests a service's
//! replicas handle, one line each (or the proxies' JSON objects), merged from the admin `/tap`
//! stream of every sidecar of the service. `weft top` reads the same streams.
//!
//! Buffers are bounded at every step: a proxy keeps a bounded broadcast buffer and tells a
//! watcher that fell behind how many events it lost (`{"lost":N}`), the HTTP stream is read only
//! as fast as the terminal takes the lines, and this side holds at most [`QUEUE`] events. A
//! slow terminal therefore loses events; it never slows the data path.

use super::live::{self, clock};
use super::{parse_duration, runtime};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events in flight between the proxies' streams and the printer.
pub const QUEUE: usize = 256;
/// A line longer than this is not an event: dropped.
const MAX_LINE: usize = 64 * 1024;
/// The longest stream a proxy serves in one request (its admin's limit).
const MAX_STREAM_SECS: u64 = 600;

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum TapOutput {
    Text,
    Json,
}

/// Which requests to watch (shared by `weft tap` and `weft top`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TapFilter {
    /// Only requests whose path (with its query) starts with this
    #[arg(long)]
    pub path: Option<String>,
    /// Only requests with this method
    #[arg(long)]
    pub method: Option<String>,
    /// Instead of the requests SERVICE receives, those its replicas send to service S
    #[arg(long, value_name = "S")]
    pub to: Option<String>,
}

#[derive(clap::Args)]
pub struct TapArgs {
    /// The service (NAME, NAME.NAMESPACE or the FQDN)
    service: String,
    #[command(flatten)]
    filter: TapFilter,
    /// How long to watch
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    duration: Duration,
    /// Stop after this many requests
    #[arg(long)]
    max: Option<u64>,
    /// Which mesh (when several run)
    #[arg(long)]
    mesh: Option<String>,
    /// `text`: one line per request; `json`: the proxies' JSON objects, one per line
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: TapOutput,
}

pub use model::tap::TapEvent;

/// What the streams deliver.
#[derive(Debug)]
pub enum Item {
    /// An event and the line it came as.
    Event(Box<TapEvent>, String),
    /// A proxy's watcher fell behind and lost this many events.
    Lost { instance: String, n: u64 },
    /// A proxy's stream could not be opened or broke (it is retried until the end).
    Failed { instance: String, error: String },
}

/// The streams to open: the sidecars to read and the admin query.
pub struct Taps {
    sources: Vec<(String, String)>,
    query: String,
    /// With `--to`: the destination's FQDN, checked exactly (the proxy's `to` is a substring).
    dst_fqdn: Option<String>,
    pub service: model::ServiceKey,
    /// The mesh's admin credential, which the proxies' `/tap` asks for.
    credential: Option<std::sync::Arc<str>>,
}

impl Taps {
    /// The sidecars of `service` in the running mesh and the query for `filter`.
    pub async fn resolve(
        mesh: Option<&str>,
        service: &str,
        filter: &TapFilter,
    ) -> anyhow::Result<Taps> {
        let st = live::status(mesh).await?;
        let key = live::service_key(service)?;
        let sources = live::sidecars_of(&st, &key)?
            .into_iter()
            .map(|w| (w.instance.clone(), w.admin.clone()))
            .collect();
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(p) = filter.path.as_deref().filter(|p| !p.is_empty()) {
            q.append_pair("path", p);
        }
        if let Some(m) = filter.method.as_deref().filter(|m| !m.is_empty()) {
            q.append_pair("method", &m.to_ascii_uppercase());
        }
        let dst_fqdn = match &filter.to {
            Some(to) => {
                let dst = live::service_key(to)?;
                if !st
                    .workloads
                    .iter()
                    .any(|w| w.service == dst.name && w.namespace == dst.namespace)
                {
                    anyhow::bail!("no service {dst} in mesh {}", st.mesh);
                }
                q.append_pair("direction", "outbound");
                q.append_pair("to", &dst.fqdn());
                Some(dst.fqdn())
            }
            None => {
                q.append_pair("direction", "inbound");
                None
            }
        };
        Ok(Taps {
            sources,
            query: q.finish(),
            dst_fqdn,
            service: key,
            credential: live::credential(mesh).map(Into::into),
        })
    }

    pub fn proxies(&self) -> usize {
        self.sources.len()
    }

    /// Opens every stream until `until`; items arrive on the returned channel, which closes
    /// when every stream has ended. Dropping the `JoinSet` stops them all.
    pub fn spawn(&self, until: Instant) -> (mpsc::Receiver<Item>, tokio::task::JoinSet<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut set = tokio::task::JoinSet::new();
        for (instance, admin) in &self.sources {
            let (tx, instance, admin) = (tx.clone(), instance.clone(), admin.clone());
            let (query, dst) = (self.query.clone(), self.dst_fqdn.clone());
            let credential = self.credential.clone();
            set.spawn(async move {
                let to = Tapped {
                    instance: &instance,
                    admin: &admin,
                    credential: credential.as_deref(),
                };
                follow(to, &query, dst.as_deref(), until, &tx).await;
            });
        }
        (rx, set)
    }
}

/// One proxy to tap: its instance, its admin address, and the credential its `/tap` asks for.
#[derive(Clone, Copy)]
struct Tapped<'a> {
    instance: &'a str,
    admin: &'a str,
    credential: Option<&'a str>,
}

/// Follows one proxy's `/tap` until `until`, reopening it when it ends early or breaks.
async fn follow(
    to: Tapped<'_>,
    query: &str,
    dst: Option<&str>,
    until: Instant,
    tx: &mpsc::Sender<Item>,
) {
    let (instance, admin) = (to.instance, to.admin);
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut reported = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || tx.is_closed() {
            return;
        }
        let secs = left.as_secs_f64().ceil().clamp(1.0, MAX_STREAM_SECS as f64) as u64;
        let url = format!("http://{admin}/tap?{query}&seconds={secs}");
        let opened = Instant::now();
        let res = tokio::time::timeout_at(until, stream(&client, &url, to, dst, tx)).await;
        match res {
            Err(_) => return,
            Ok(Ok(())) => {
                reported = false;
                // A proxy that ends streams at once (shutting down) is not asked in a loop.
                if opened.elapsed() < Duration::from_millis(500) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Ok(Err(e)) => {
                if !reported {
                    reported = true;
                    let item = Item::Failed {
                        instance: instance.to_string(),
                        error: format!("{e:#}"),
                    };
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One `/tap` request: its lines as items until the proxy ends the stream.
async fn stream(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
    to: Tapped<'_>,
    dst: Option<&str>,
    tx: &mpsc::Sender<Item>,
) -> anyhow::Result<()> {
    let instance = to.instance;
    let mut req = hyper::Request::get(url);
    if let Some(t) = to.credential {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::new())?;
    let rsp = tokio::time::timeout(live::ADMIN_TIMEOUT, client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer within {:?}", live::ADMIN_TIMEOUT))?
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    if rsp.status() != 200 {
        let code = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        anyhow::bail!(
            "GET {url}: {code} {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let mut body = rsp.into_body();
    let mut lines = Lines::default();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        for line in lines.push(&data) {
            let Some(item) = decode(&line, instance, dst) else {
                continue;
            };
            if tx.send(item).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Splits a byte stream into lines, dropping lines over [`MAX_LINE`].
#[derive(Default)]
pub struct Lines {
    buf: BytesMut,
    overlong: bool,
}

impl Lines {
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if !self.overlong {
                self.buf.extend_from_slice(&rest[..i]);
                if self.buf.len() <= MAX_LINE {
                    out.push(String::from_utf8_lossy(&self.buf).into_owned());
                }
            }
            self.buf.clear();
            self.overlong = false;
            rest = &rest[i + 1..];
        }
        if !self.overlong {
            self.buf.extend_from_slice(rest);
            if self.buf.len() > MAX_LINE {
                self.buf.clear();
                self.overlong = true;
            }
        }
        out
    }
}

/// A `/tap` line as an item: an event (kept when it goes to `dst`, if given), a loss report,
/// or nothing (a blank or unreadable line).
pub fn decode(line: &str, instance: &str, dst: Option<&str>) -> Option<Item> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(n) = v.get("lost").and_then(|n| n.as_u64()) {
        return Some(Item::Lost {
            instance: instance.to_string(),
            n,
        });
    }
    let e: TapEvent = serde_json::from_value(v).ok()?;
    if dst.is_some_and(|d| e.dst_service != d) {
        return None;
    }
    Some(Item::Event(Box::new(e), line.to_string()))
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `ts method authority path → status latency flags src_identity → dst_identity mtls`; a gRPC
/// call's status is `200/grpc-status=14`.
pub fn text_line(e: &TapEvent) -> String {
    let status = match e.grpc_status {
        Some(g) => format!("{}/grpc-status={g}", e.status),
        None => e.status.to_string(),
    };
    format!(
        "{}Z {} {} {} → {} {:.1}ms {} {} → {} {}",
        clock(e.ts_ms),
        or_dash(&e.method),
        or_dash(&e.authority),
        or_dash(&e.path),
        status,
        e.latency_ms,
        or_dash(&e.flags),
        if e.src_identity.is_empty() {
            "unknown"
        } else {
            &e.src_identity
        },
        if e.dst_identity.is_empty() {
            "unknown"
        } else {
            &e.dst_identity
        },
        if e.mtls { "mtls" } else { "plaintext" }
    )
}

pub fn run(a: TapArgs) -> anyhow::Result<i32> {
    if a.max == Some(0) {
        anyhow::bail!("--max must be at least 1");
    }
    runtime()?.block_on(async {
        let taps = Taps::resolve(a.mesh.as_deref(), &a.service, &a.filter).await?;
        let until = Instant::now() + a.duration;
        let (mut rx, set) = taps.spawn(until);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(super::on_signal(stop.clone()));
        let stdout = std::io::stdout();
        let mut seen = 0u64;
        loop {
            let item = tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.cancelled() => break,
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => break,
                },
            };
            match item {
                Item::Event(e, line) => {
                    let text = match a.output {
                        TapOutput::Json => line,
                        TapOutput::Text => text_line(&e),
                    };
                    let mut out = stdout.lock();
                    // A closed stdout (`weft tap … | head`) ends the tap.
                    if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                        break;
                    }
                    seen += 1;
                    if a.max.is_some_and(|m| seen >= m) {
                        break;
                    }
                }
                Item::Lost { instance, n } => {
                    eprintln!("weft tap: {instance}: {n} events lost (the reader fell behind)");
                }
                Item::Failed { instance, error } => {
                    eprintln!("weft tap: {instance}: {error} (retrying)");
                }
            }
        }
        drop(set);
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"ts_ms":1795651929588,"direction":"inbound","method":"GET","authority":"hello","path":"/x?status=500","status":500,"latency_ms":4.008534999999999,"flags":"-","src_workload":"istio-ingressgateway","src_identity":"spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway","dst_workload":"hello-v1","dst_identity":"spiffe://cluster.local/ns/default/sa/hello","dst_service":"hello.default.svc.cluster.local","mtls":true,"request_id":"8231"}"#;

    #[test]
    fn decodes_events_losses_and_skips_the_rest() {
        let Some(Item::Event(e, line)) = decode(EVENT, "hello-v1-0", None) else {
            panic!("not an event");
        };
        assert_eq!(
            (e.status, e.path.as_str(), e.mtls),
            (500, "/x?status=500", true)
        );
        assert_eq!(line, EVENT);
        assert_eq!(
            text_line(&e),
            "00:12:09.588Z GET hello /x?status=500 → 500 4.0ms - \
             spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway → \
             spiffe://cluster.local/ns/default/sa/hello mtls"
        );
        assert!(matches!(
            decode(r#"{"lost":7}"#, "p", None),
            Some(Item::Lost { n: 7, .. })
        ));
        assert!(decode("", "p", None).is_none());
        assert!(decode("not json", "p", None).is_none());
        // `--to`: only events to exactly that service.
        assert!(decode(EVENT, "p", Some("hello.default.svc.cluster.local")).is_some());
        assert!(decode(EVENT, "p", Some("ello.default.svc.cluster.local")).is_none());
        // Unknown fields and missing ones are fine.
        assert!(matches!(
            decode(r#"{"path":"/a","new_field":1}"#, "p", None),
            Some(Item::Event(..))
        ));
    }

    #[test]
    fn lines_split_across_chunks_and_overlong_ones_drop() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"a\":").is_empty());
        assert_eq!(l.push(b"1}\n{\"b\":2}\n{"), vec!["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(l.push(b"}\n"), vec!["{}"]);
        let big = vec![b'x'; MAX_LINE + 10];
        assert!(l.push(&big).is_empty());
        assert!(l.push(&big).is_empty());
        assert_eq!(l.push(b"tail\nok\n"), vec!["ok"]);
        assert!(l.buf.capacity() < 4 * MAX_LINE);
    }
}
