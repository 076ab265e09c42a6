//! The simulated proxies: each opens its own connection and discovery stream to a replica, says
//! hello as a sidecar of its service, reports itself ready, and acks every snapshot it
//! receives, noting when it arrived, its size and which change it carries. Snapshots are read
//! only as far as that takes (the version, and the weights of `common`'s first route), so the
//! simulation costs the shared machine little.

use api::pb;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// The service every simulated proxy sees and every change touches.
pub const COMMON: (&str, &str) = ("common", "shared");

/// `ControlMessage` with its snapshot left as bytes (the same on the wire).
#[derive(Clone, PartialEq, prost::Message)]
struct LiteControl {
    #[prost(bytes = "bytes", tag = "1")]
    snapshot: Bytes,
}

/// The fields of `Snapshot` the simulation reads; the services stay bytes until one is looked at.
#[derive(Clone, PartialEq, prost::Message)]
struct LiteSnapshot {
    #[prost(uint64, tag = "1")]
    version: u64,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    services: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LiteServiceKey {
    #[prost(bytes = "bytes", tag = "1")]
    name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    namespace: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LiteService {
    #[prost(message, repeated, tag = "6")]
    routes: Vec<LiteRoute>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LiteRoute {
    #[prost(message, repeated, tag = "3")]
    destinations: Vec<LiteDestination>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LiteDestination {
    #[prost(string, tag = "3")]
    subset: String,
    #[prost(uint32, tag = "5")]
    weight: u32,
}

/// Which change a snapshot carries: the weight of `common`'s subset v2 in its first route (0:
/// none yet, the mesh as it started), and how many services it holds. `None`: not a snapshot.
fn read(snapshot: &Bytes) -> Option<(u64, usize, usize)> {
    use prost::Message;
    let s = LiteSnapshot::decode(snapshot.clone()).ok()?;
    let mut mark = 0;
    for svc in &s.services {
        let key = LiteServiceKey::decode(svc.clone()).ok()?;
        if key.name == COMMON.0.as_bytes() && key.namespace == COMMON.1.as_bytes() {
            let full = LiteService::decode(svc.clone()).ok()?;
            mark = full
                .routes
                .first()
                .into_iter()
                .flat_map(|r| &r.destinations)
                .find(|d| d.subset == "v2")
                .map_or(0, |d| d.weight as usize);
            break;
        }
    }
    Some((s.version, mark, s.services.len()))
}

/// What one simulated proxy saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// When it first received a snapshot carrying change `k` (0: the initial mesh).
    pub marks: Vec<Option<Instant>>,
    pub messages: u64,
    pub bytes: u64,
    /// The size and service count of the last snapshot received.
    pub last_bytes: usize,
    pub last_services: usize,
    /// Why its stream ended early, if it did.
    pub failed: Option<String>,
}

/// What the simulated proxies share with whoever watches them.
pub struct Fleet {
    pub seen: Vec<Mutex<Seen>>,
    /// How many proxies have received change `k`.
    pub reached: Vec<AtomicUsize>,
    /// Woken whenever a proxy reaches a change, or a stream ends.
    pub progress: Notify,
    /// The last time any snapshot arrived.
    pub last_arrival: Mutex<Instant>,
    pub failed: AtomicUsize,
}

impl Fleet {
    pub fn new(proxies: usize, changes: usize) -> Arc<Fleet> {
        Arc::new(Fleet {
            seen: (0..proxies)
                .map(|_| {
                    Mutex::new(Seen {
                        marks: vec![None; changes + 1],
                        ..Seen::default()
                    })
                })
                .collect(),
            reached: (0..=changes).map(|_| AtomicUsize::new(0)).collect(),
            progress: Notify::new(),
            last_arrival: Mutex::new(Instant::now()),
            failed: AtomicUsize::new(0),
        })
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Seen> {
        self.seen[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn seen(&self, i: usize) -> Seen {
        self.lock(i).clone()
    }

    pub fn last_arrival(&self) -> Instant {
        *self.last_arrival.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arrived(&self, i: usize, at: Instant, size: usize, read: Option<(u64, usize, usize)>) {
        *self.last_arrival.lock().unwrap_or_else(|p| p.into_inner()) = at;
        let mut s = self.lock(i);
        s.messages += 1;
        s.bytes += size as u64;
        s.last_bytes = size;
        if let Some((_, mark, services)) = read {
            s.last_services = services;
            if let Some(slot) = s.marks.get_mut(mark) {
                if slot.is_none() {
                    *slot = Some(at);
                    drop(s);
                    self.reached[mark].fetch_add(1, Ordering::SeqCst);
                    self.progress.notify_waiters();
                }
            }
        }
    }

    fn fail(&self, i: usize, why: String) {
        self.lock(i).failed = Some(why);
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_waiters();
    }
}

/// Who simulated proxy `i` is.
pub struct Identity {
    pub service: String,
    pub namespace: String,
    /// `common`'s proxies are split between versions v1 and v2 (its subsets).
    pub version: &'static str,
}

/// Runs simulated proxy `i` against the replica at `grpc` until `stop`; `connected` is told
/// once its stream is open (or failed to open).
pub async fn run(
    i: usize,
    who: Identity,
    grpc: std::net::SocketAddr,
    fleet: Arc<Fleet>,
    stop: CancellationToken,
    connected: tokio::sync::oneshot::Sender<()>,
) {
    if let Err(e) = stream(i, who, grpc, &fleet, &stop, connected).await {
        if !stop.is_cancelled() {
            fleet.fail(i, e);
        }
    }
}

async fn stream(
    i: usize,
    who: Identity,
    grpc: std::net::SocketAddr,
    fleet: &Fleet,
    stop: &CancellationToken,
    connected: tokio::sync::oneshot::Sender<()>,
) -> Result<(), String> {
    use pb::proxy_message::Msg;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting to {grpc}: {e}"))?;
    let mut grpc_client = tonic::client::Grpc::new(channel);
    grpc_client.ready().await.map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<pb::ProxyMessage>(8);
    let send = |m: Msg| pb::ProxyMessage { msg: Some(m) };
    let instance = format!("{}-{i}", who.service);
    let hello = pb::Hello {
        service: who.service.clone(),
        namespace: who.namespace.clone(),
        workload: format!("{}-{}", who.service, who.version),
        instance,
        labels: [
            ("app".to_string(), who.service.clone()),
            ("version".to_string(), who.version.to_string()),
        ]
        .into(),
        // Where peers would send it traffic; nothing listens (no traffic flows).
        inbound: format!("127.0.0.1:{}", 20000 + i % 40000),
        mode: "sidecar".into(),
        identity: model::Identity::spiffe(&who.namespace, &who.service).0,
        pid: std::process::id(),
        ..Default::default()
    };
    let _ = tx.send(send(Msg::Hello(hello))).await;
    let _ = tx
        .send(send(Msg::Health(pb::Health {
            ready: true,
            reason: String::new(),
            leaf_generation: 0,
        })))
        .await;
    let codec = tonic::codec::ProstCodec::<pb::ProxyMessage, LiteControl>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/weft.v1.Discovery/Stream");
    let rsp = grpc_client
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            path,
            codec,
        )
        .await
        .map_err(|e| format!("opening the stream: {}", e.message()))?;
    let _ = connected.send(());
    let mut inbound = rsp.into_inner();
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = inbound.message() => m,
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return Err("the control plane ended the stream".into()),
            Err(e) => return Err(format!("stream: {}", e.message())),
        };
        let at = Instant::now();
        let read = read(&msg.snapshot);
        fleet.arrived(i, at, msg.snapshot.len(), read);
        let Some((version, _, _)) = read else {
            return Err("a snapshot that does not decode".into());
        };
        let ack = pb::Ack {
            version,
            error: String::new(),
        };
        if tx.send(send(Msg::Ack(ack))).await.is_err() {
            return Err("the stream closed".into());
        }
    }
}

#[cfg(test)]
mod tests;
