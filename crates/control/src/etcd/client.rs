//! A thin etcd v3 client over the generated stubs: ranges, puts, deletes, transactions,
//! watches, leases and the member list, through one member at a time. A call that finds its
//! member gone (unavailable, or no answer in time) moves to the next member that answers and is
//! tried there, so a cluster that lost a member keeps serving the control plane.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Generated from proto/etcd (etcd's v3 API).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
}

use pb::etcdserverpb as rpc;
use rpc::compare::{CompareResult, CompareTarget, TargetUnion};
use rpc::request_op::Request as Op;

/// One key as etcd holds it.
#[derive(Clone, Debug)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl From<pb::mvccpb::KeyValue> for Kv {
    fn from(kv: pb::mvccpb::KeyValue) -> Kv {
        Kv {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

/// A change a watch reports: the key's new state, or its deletion.
#[derive(Clone, Debug)]
pub enum Event {
    Put(Kv),
    Delete(Kv),
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Endpoint>,
    urls: Vec<String>,
    /// The member calls go to now: its index and channel.
    current: Mutex<(usize, Channel)>,
}

/// The range end that makes `key` a prefix: `key` with its last byte incremented.
fn prefix_end(key: &str) -> Vec<u8> {
    let mut end = key.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Worth trying on another member: the member is gone or did not answer.
fn member_failed(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

impl Client {
    /// Connects to the first of `urls` (`http://HOST:PORT`) that answers.
    pub async fn connect(urls: &[String]) -> Result<Client, Status> {
        let endpoints: Vec<Endpoint> = urls
            .iter()
            .map(|u| {
                Endpoint::from_shared(u.clone())
                    .map(|e| {
                        e.connect_timeout(Duration::from_secs(1))
                            .timeout(Duration::from_secs(5))
                            .tcp_nodelay(true)
                            .http2_keep_alive_interval(Duration::from_secs(5))
                            .keep_alive_timeout(Duration::from_secs(3))
                            .keep_alive_while_idle(true)
                    })
                    .map_err(|e| format!("{u}: {e}"))
            })
            .collect::<Result<_, String>>()
            .map_err(Status::invalid_argument)?;
        let mut last = None;
        for (i, e) in endpoints.iter().enumerate() {
            match e.connect().await {
                Ok(ch) => {
                    return Ok(Client {
                        inner: Arc::new(Inner {
                            endpoints,
                            urls: urls.to_vec(),
                            current: Mutex::new((i, ch)),
                        }),
                    })
                }
                Err(err) => last = Some(format!("{}: {err}", urls[i])),
            }
        }
        Err(Status::unavailable(format!(
            "no etcd member answers ({})",
            last.unwrap_or_default()
        )))
    }

    /// The member calls go to now.
    pub fn member(&self) -> String {
        let i = self.lock().0;
        self.inner.urls[i].clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Channel)> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn channel(&self) -> (usize, Channel) {
        self.lock().clone()
    }

    /// Moves from member `failed` to the next one that answers (if calls still go to it).
    async fn fail_over(&self, failed: usize) {
        let n = self.inner.endpoints.len();
        for step in 1..=n {
            let i = (failed + step) % n;
            if let Ok(ch) = self.inner.endpoints[i].connect().await {
                let mut cur = self.lock();
                if cur.0 == failed {
                    *cur = (i, ch);
                    tracing::info!(member = %self.inner.urls[i], "etcd: now using this member");
                }
                return;
            }
        }
    }

    /// Runs `call` on the current member; if the member failed, on the next one that answers,
    /// until every member was tried.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut last = None;
        for _ in 0..=self.inner.endpoints.len() {
            let (i, ch) = self.channel();
            match call(ch).await {
                Ok(t) => return Ok(t),
                Err(s) if member_failed(&s) => {
                    self.fail_over(i).await;
                    last = Some(s);
                }
                Err(s) => return Err(s),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no etcd member answers")))
    }

    /// The key `key` (or every key starting with it), and the store's revision.
    pub async fn get(&self, key: &str, prefix: bool) -> Result<(Vec<Kv>, i64), Status> {
        let req = rpc::RangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: if prefix { prefix_end(key) } else { Vec::new() },
            ..Default::default()
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { rpc::kv_client::KvClient::new(ch).range(req).await }
            })
            .await?
            .into_inner();
        let rev = r.header.map_or(0, |h| h.revision);
        Ok((r.kvs.into_iter().map(Kv::from).collect(), rev))
    }

    /// Puts `value` at `key` (under `lease` unless 0); returns the revision.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<i64, Status> {
        let req = rpc::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { rpc::kv_client::KvClient::new(ch).put(req).await }
            })
            .await?
            .into_inner();
        Ok(r.header.map_or(0, |h| h.revision))
    }

    pub async fn delete(&self, key: &str) -> Result<(), Status> {
        let req = rpc::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        self.call(|ch| {
            let req = req.clone();
            async move { rpc::kv_client::KvClient::new(ch).delete_range(req).await }
        })
        .await?;
        Ok(())
    }

    /// Runs `then` if every comparison holds, else `otherwise`; returns whether they held, the
    /// revision, and the answers of the branch that ran.
    pub async fn txn(
        &self,
        when: Vec<rpc::Compare>,
        then: Vec<rpc::RequestOp>,
        otherwise: Vec<rpc::RequestOp>,
    ) -> Result<(bool, i64, Vec<rpc::ResponseOp>), Status> {
        let req = rpc::TxnRequest {
            compare: when,
            success: then,
            failure: otherwise,
        };
        let r = self
            .call(|ch| {
                let req = req.clone();
                async move { rpc::kv_client::KvClient::new(ch).txn(req).await }
            })
            .await?
            .into_inner();
        Ok((r.succeeded, r.header.map_or(0, |h| h.revision), r.responses))
    }

    /// A new lease of `ttl`; returns its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, Status> {
        let req = rpc::LeaseGrantRequest {
            ttl: ttl.as_secs() as i64,
            id: 0,
        };
        let r = self
            .call(|ch| async move {
                rpc::lease_client::LeaseClient::new(ch)
                    .lease_grant(req)
                    .await
            })
            .await?
            .into_inner();
        if !r.error.is_empty() {
            return Err(Status::internal(r.error));
        }
        Ok(r.id)
    }

    /// Keeps `lease` alive once: its remaining TTL in seconds (0: it expired).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, Status> {
        self.call(|ch| async move {
            let mut c = rpc::lease_client::LeaseClient::new(ch);
            let once = tokio_stream::once(rpc::LeaseKeepAliveRequest { id: lease });
            let mut answers = c.lease_keep_alive(once).await?.into_inner();
            match answers.message().await? {
                Some(a) => Ok(a.ttl),
                None => Err(Status::unavailable("lease keep-alive: no answer")),
            }
        })
        .await
    }

    /// Watches every key starting with `prefix` from revision `start`: a stream of batches of
    /// events, each with the revision it brings the watcher to. Ends (with an error) when the
    /// member goes away; the caller watches again from the next revision. `Err(compacted)`
    /// when `start` was compacted away: read the keys afresh.
    pub async fn watch(
        &self,
        prefix: &str,
        start: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<(i64, Vec<Event>), WatchEnd>>, Status> {
        let create = rpc::WatchRequest {
            request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(
                rpc::WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision: start,
                    ..Default::default()
                },
            )),
        };
        // The request stream stays open for the watch's life (closing it cancels the watch).
        let (keep_tx, keep_rx) = tokio::sync::mpsc::channel::<rpc::WatchRequest>(1);
        let _ = keep_tx.send(create).await;
        let (ch_i, ch) = self.channel();
        let mut c = rpc::watch_client::WatchClient::new(ch);
        let mut stream = match c
            .watch(tokio_stream::wrappers::ReceiverStream::new(keep_rx))
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) => {
                if member_failed(&s) {
                    self.fail_over(ch_i).await;
                }
                return Err(s);
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let _keep = keep_tx;
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let _ = tx.send(Err(WatchEnd::Lost("watch closed".into()))).await;
                        me.fail_over(ch_i).await;
                        return;
                    }
                    Err(s) => {
                        if member_failed(&s) {
                            me.fail_over(ch_i).await;
                        }
                        let _ = tx.send(Err(WatchEnd::Lost(s.to_string()))).await;
                        return;
                    }
                };
                if msg.compact_revision > 0 {
                    let _ = tx.send(Err(WatchEnd::Compacted)).await;
                    return;
                }
                if msg.canceled {
                    let _ = tx
                        .send(Err(WatchEnd::Lost(format!(
                            "watch canceled: {}",
                            msg.cancel_reason
                        ))))
                        .await;
                    return;
                }
                let rev = msg.header.map_or(0, |h| h.revision);
                let events = msg
                    .events
                    .into_iter()
                    .filter_map(|e| {
                        let kv = Kv::from(e.kv?);
                        Some(if e.r#type == pb::mvccpb::event::EventType::Delete as i32 {
                            Event::Delete(kv)
                        } else {
                            Event::Put(kv)
                        })
                    })
                    .collect::<Vec<_>>();
                if events.is_empty() {
                    continue;
                }
                if tx.send(Ok((rev, events))).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// The cluster's members: (name, first client URL).
    pub async fn members(&self) -> Result<Vec<(String, String)>, Status> {
        let r = self
            .call(|ch| async move {
                rpc::cluster_client::ClusterClient::new(ch)
                    .member_list(rpc::MemberListRequest {})
                    .await
            })
            .await?
            .into_inner();
        Ok(r.members
            .into_iter()
            .map(|m| {
                (
                    m.name,
                    m.client_ur_ls.into_iter().next().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Whether the member at `url` answers a status call within a second.
    pub async fn member_answers(url: &str) -> bool {
        let Ok(e) = Endpoint::from_shared(url.to_string()) else {
            return false;
        };
        let e = e
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1));
        match e.connect().await {
            Ok(ch) => rpc::maintenance_client::MaintenanceClient::new(ch)
                .status(rpc::StatusRequest {})
                .await
                .is_ok(),
            Err(_) => false,
        }
    }
}

/// Why a watch stream ended.
#[derive(Debug)]
pub enum WatchEnd {
    /// The member went away or the watch was canceled: watch again from the next revision.
    Lost(String),
    /// The revision asked for was compacted away: read the keys afresh.
    Compacted,
}

/// `key`'s mod revision equals `rev` (0: the key does not exist).
pub fn mod_revision_is(key: &str, rev: i64) -> rpc::Compare {
    rpc::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::ModRevision(rev)),
    }
}

/// `key` does not exist.
pub fn absent(key: &str) -> rpc::Compare {
    rpc::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(0)),
    }
}

pub fn put_op(key: &str, value: Vec<u8>) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(Op::RequestPut(rpc::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        })),
    }
}

/// A put under `lease` (0: none).
pub fn put_leased_op(key: &str, value: Vec<u8>, lease: i64) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(Op::RequestPut(rpc::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub fn delete_op(key: &str) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(Op::RequestDeleteRange(rpc::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

pub fn get_op(key: &str) -> rpc::RequestOp {
    rpc::RequestOp {
        request: Some(Op::RequestRange(rpc::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_after_every_key_they_start() {
        assert_eq!(prefix_end("/weft/a/"), b"/weft/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
