//! The registrations of every replica's proxies, in etcd: each replica writes its own proxies'
//! records under `proxies/REPLICA/ID` with its lease (written in the background, newest state
//! per proxy, so the registry's lock never waits on etcd), and follows the other replicas'
//! through a watch. The registry sees one set: its own proxies by their ids, the others' by ids
//! with the top bit set. When a replica dies its lease lapses and its proxies' records vanish
//! from every other replica's snapshots.
//!
//! Each replica numbers its own snapshots, so "this proxy has applied a snapshot that lists that
//! endpoint" is judged against the version since which the proxy's own replica lists it: every
//! replica publishes under `listed/REPLICA` since when it lists each endpoint (by record key,
//! `REPLICA/ID`), and fills each record's `listed_by` from them.

use super::client::{Event, Kv, WatchEnd};
use super::Etcd;
use crate::registry::{ProxyRecord, Registrations, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Ids of other replicas' proxies have this bit set; this replica's never do.
const REMOTE: u64 = 1 << 63;

type Remote = Arc<Mutex<BTreeMap<String, ProxyRecord>>>;
/// A replica's listing as `listed/REPLICA` holds it: the snapshot version it serves now, and
/// since which version it lists each endpoint, by record key (`REPLICA/ID`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Listing {
    version: u64,
    since: BTreeMap<String, u64>,
}

/// Other replicas' listings, by replica.
type Listings = Arc<Mutex<BTreeMap<String, Listing>>>;

/// What the background writer writes.
enum Write {
    /// One of this replica's proxies' records (`None`: delete it).
    Record(u64, Option<Box<ProxyRecord>>),
    /// This replica's listing.
    Listing(Listing),
}

pub struct EtcdRegistrations {
    replica: String,
    own: BTreeMap<u64, ProxyRecord>,
    remote: Remote,
    listings: Listings,
    merged: BTreeMap<u64, ProxyRecord>,
    /// Record key (`REPLICA/ID`) of every id in `merged`.
    keys: BTreeMap<u64, String>,
    /// The listing last sent to the writer.
    published: Listing,
    /// The snapshot version this replica serves now.
    version: u64,
    /// A record's `listed_since` (or the version served) changed since the listing was last
    /// derived.
    relist_due: bool,
    writes: mpsc::UnboundedSender<Write>,
}

/// Follows the other replicas' registrations once the registry exists.
pub struct Follower {
    etcd: Etcd,
    remote: Remote,
    listings: Listings,
    start: i64,
}

fn lock_l(l: &Listings) -> std::sync::MutexGuard<'_, BTreeMap<String, Listing>> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock(r: &Remote) -> std::sync::MutexGuard<'_, BTreeMap<String, ProxyRecord>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Other replicas' listings from the `listed/REPLICA` keys of `kvs`.
fn listings_of(etcd: &Etcd, kvs: Vec<Kv>) -> BTreeMap<String, Listing> {
    let prefix = etcd.key("listed/");
    kvs.into_iter()
        .filter_map(|kv| {
            let replica = kv.key.strip_prefix(&prefix)?.to_string();
            if replica == etcd.replica {
                return None;
            }
            Some((replica, serde_json::from_slice(&kv.value).ok()?))
        })
        .collect()
}

/// The records of `kvs` that are not under `mine` (this replica's own prefix).
fn others(kvs: Vec<Kv>, mine: &str) -> BTreeMap<String, ProxyRecord> {
    kvs.into_iter()
        .filter(|kv| !kv.key.starts_with(mine))
        .filter_map(|kv| Some((kv.key, serde_json::from_slice(&kv.value).ok()?)))
        .collect()
}

/// A stable id for another replica's proxy key.
fn remote_id(key: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h | REMOTE
}

impl EtcdRegistrations {
    /// Reads the other replicas' registrations and starts writing this one's.
    pub async fn open(etcd: Etcd) -> Result<(EtcdRegistrations, Follower), super::EtcdError> {
        let (kvs, rev) = etcd
            .client()
            .get(&etcd.key("proxies/"), true)
            .await
            .map_err(|e| etcd.err(e))?;
        let mine = etcd.key(&format!("proxies/{}/", etcd.replica));
        let remote = others(kvs, &mine);
        let (kvs, rev2) = etcd
            .client()
            .get(&etcd.key("listed/"), true)
            .await
            .map_err(|e| etcd.err(e))?;
        let listings = Arc::new(Mutex::new(listings_of(&etcd, kvs)));
        let start = rev.min(rev2) + 1;
        let remote = Arc::new(Mutex::new(remote));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_through(etcd.clone(), rx));
        let mut me = EtcdRegistrations {
            replica: etcd.replica.clone(),
            own: BTreeMap::new(),
            remote: remote.clone(),
            listings: listings.clone(),
            merged: BTreeMap::new(),
            keys: BTreeMap::new(),
            published: Listing::default(),
            version: 0,
            relist_due: false,
            writes: tx,
        };
        me.reload();
        Ok((
            me,
            Follower {
                etcd,
                remote,
                listings,
                start,
            },
        ))
    }
}

impl EtcdRegistrations {
    /// Whether another replica lists a registration of the proxy `record` is (it moved here).
    fn moved(&self, record: &ProxyRecord) -> bool {
        let n = &record.node;
        lock(&self.remote).values().any(|r| {
            let m = &r.node;
            m.pid == n.pid
                && m.instance == n.instance
                && m.service == n.service
                && m.namespace == n.namespace
                && m.mode == n.mode
        })
    }

    /// Fills `listed_by` of every record from this replica's view and the others' listings,
    /// and publishes this replica's listing if it changed.
    fn relist(&mut self) {
        let listings = lock_l(&self.listings).clone();
        let mut mine = Listing {
            version: self.version,
            since: BTreeMap::new(),
        };
        for (id, rec) in self.merged.iter_mut() {
            let Some(key) = self.keys.get(id) else {
                continue;
            };
            rec.listed_by.clear();
            if let Some(since) = rec.listed_since {
                rec.listed_by.insert(self.replica.clone(), since);
                mine.since.insert(key.clone(), since);
            }
            for (replica, listed) in &listings {
                if let Some(since) = listed.since.get(key) {
                    rec.listed_by.insert(replica.clone(), *since);
                }
            }
            rec.current = if rec.replica == self.replica {
                Some(self.version)
            } else {
                listings.get(&rec.replica).map(|l| l.version)
            };
        }
        if mine != self.published {
            self.published = mine.clone();
            let _ = self.writes.send(Write::Listing(mine));
        }
    }
}

impl Registrations for EtcdRegistrations {
    fn all(&self) -> &BTreeMap<u64, ProxyRecord> {
        &self.merged
    }

    fn put(&mut self, id: u64, mut record: ProxyRecord) {
        if id & REMOTE == 0 {
            record.replica = self.replica.clone();
            record.registered_ms = match self.own.get(&id) {
                Some(old) => old.registered_ms,
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64,
            };
            self.keys.insert(id, format!("{}/{id}", self.replica));
            let first_report = record.reported && self.own.get(&id).is_none_or(|old| !old.reported);
            let new = self.own.insert(id, record.clone()).is_none();
            let _ = self
                .writes
                .send(Write::Record(id, Some(Box::new(record.clone()))));
            if (new || first_report) && self.moved(&record) {
                // It moved here from another replica: rebuild the view without its older
                // registration once this one has said how it is.
                self.reload();
                return;
            }
        }
        // Another replica's proxy: only this replica's view of it changes (`listed_since`);
        // its own replica writes its record.
        let relist = self
            .merged
            .get(&id)
            .is_none_or(|old| old.listed_since != record.listed_since);
        self.merged.insert(id, record);
        // The listings change only with `listed_since` (an ack or a health report leaves
        // them, and the record's `listed_by`, as they were); derived once a batch is done.
        self.relist_due |= relist;
    }

    fn settle(&mut self) {
        if std::mem::take(&mut self.relist_due) {
            self.relist();
        }
    }

    fn delete(&mut self, id: u64) {
        if self.own.remove(&id).is_some() {
            let _ = self.writes.send(Write::Record(id, None));
        }
        let listed = self
            .merged
            .remove(&id)
            .is_some_and(|r| r.listed_since.is_some());
        self.keys.remove(&id);
        self.relist_due |= listed;
    }

    fn at_version(&mut self, version: u64) {
        if version != self.version {
            self.version = version;
            self.relist_due = true;
        }
    }

    fn reload(&mut self) {
        let remote = lock(&self.remote).clone();
        let mut merged = self.own.clone();
        let mut keys: BTreeMap<u64, String> = self
            .own
            .keys()
            .map(|id| (*id, format!("{}/{id}", self.replica)))
            .collect();
        let proxies_prefix = "/proxies/";
        for (key, mut rec) in remote {
            let id = remote_id(&key);
            // Keep what this replica marked: when it listed that proxy's replica.
            rec.listed_since = self.merged.get(&id).and_then(|old| old.listed_since);
            let short = key
                .rsplit_once(proxies_prefix)
                .map_or(key.clone(), |(_, k)| k.to_string());
            keys.insert(id, short);
            merged.insert(id, rec);
        }
        // A proxy that moved here from a replica that died is listed by both until the dead
        // one's lease lapses: only its newest registration counts, once it has reported its
        // health (until then the older one keeps its address listed).
        let newest: BTreeMap<(String, String, String, String, u32), u64> = merged
            .values()
            .filter(|r| r.reported)
            .fold(BTreeMap::new(), |mut m, r| {
                let n = &r.node;
                let k = (
                    n.mode.clone(),
                    n.service.clone(),
                    n.namespace.clone(),
                    n.instance.clone(),
                    n.pid,
                );
                let e = m.entry(k).or_insert(0);
                *e = (*e).max(r.registered_ms);
                m
            });
        merged.retain(|id, r| {
            let n = &r.node;
            let k = (
                n.mode.clone(),
                n.service.clone(),
                n.namespace.clone(),
                n.instance.clone(),
                n.pid,
            );
            let keep = id & REMOTE == 0 || newest.get(&k).is_none_or(|t| *t <= r.registered_ms);
            if !keep {
                keys.remove(id);
            }
            keep
        });
        self.merged = merged;
        self.keys = keys;
        self.relist();
    }
}

/// Writes this replica's proxies' records (the newest state of each) and its listing under its
/// lease, retrying while etcd does not answer.
async fn write_through(etcd: Etcd, mut rx: mpsc::UnboundedReceiver<Write>) {
    // id → record (None: delete); u64::MAX → the listing.
    let mut records: BTreeMap<u64, Option<Box<ProxyRecord>>> = BTreeMap::new();
    let mut listing: Option<Listing> = None;
    let take = |w: Write,
                records: &mut BTreeMap<u64, Option<Box<ProxyRecord>>>,
                listing: &mut Option<Listing>| match w {
        Write::Record(id, rec) => {
            records.insert(id, rec);
        }
        Write::Listing(l) => *listing = Some(l),
    };
    let client = etcd.client().clone();
    loop {
        if records.is_empty() && listing.is_none() {
            match rx.recv().await {
                Some(w) => take(w, &mut records, &mut listing),
                None => return,
            }
        }
        while let Ok(w) = rx.try_recv() {
            take(w, &mut records, &mut listing);
        }
        let mut failed = false;
        for (id, rec) in std::mem::take(&mut records) {
            let key = etcd.key(&format!("proxies/{}/{id}", etcd.replica));
            let done = match &rec {
                Some(r) => client
                    .put(
                        &key,
                        serde_json::to_vec(r).expect("a record serializes"),
                        etcd.lease,
                    )
                    .await
                    .map(|_| ()),
                None => client.delete(&key).await,
            };
            if let Err(e) = done {
                tracing::warn!(error = %e.message(), "writing a registration to etcd; retrying");
                failed = true;
                records.insert(id, rec);
            }
        }
        if let Some(l) = listing.take() {
            let key = etcd.key(&format!("listed/{}", etcd.replica));
            let value = serde_json::to_vec(&l).expect("a listing serializes");
            if let Err(e) = client.put(&key, value, etcd.lease).await {
                tracing::warn!(error = %e.message(), "writing this replica's listing to etcd; retrying");
                failed = true;
                listing = Some(l);
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // A newer state of the same proxy that arrived meanwhile wins.
            while let Ok(w) = rx.try_recv() {
                take(w, &mut records, &mut listing);
            }
        }
    }
}

impl Follower {
    /// Follows the other replicas' registrations and listings into `registry` until the
    /// process exits.
    pub fn follow(self, registry: Arc<Registry>) {
        tokio::spawn(async move {
            let Follower {
                etcd,
                remote,
                listings,
                mut start,
            } = self;
            let mine = etcd.key(&format!("proxies/{}/", etcd.replica));
            let proxies = etcd.key("proxies/");
            let listed = etcd.key("listed/");
            let own_listing = etcd.key(&format!("listed/{}", etcd.replica));
            // One watch over the mesh's keys; only proxies/ and listed/ matter here.
            let all = etcd.key("");
            loop {
                let mut events = match etcd.client().watch(&all, start).await {
                    Ok(rx) => rx,
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "watching the registrations in etcd");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let mut afresh = false;
                while let Some(batch) = events.recv().await {
                    let (rev, events) = match batch {
                        Ok(b) => b,
                        Err(WatchEnd::Compacted) => {
                            afresh = true;
                            break;
                        }
                        Err(WatchEnd::Lost(why)) => {
                            tracing::debug!(%why, "registrations watch lost; watching again");
                            break;
                        }
                    };
                    start = start.max(rev + 1);
                    let mut changed = false;
                    for e in events {
                        let (kv, put) = match e {
                            Event::Put(kv) => (kv, true),
                            Event::Delete(kv) => (kv, false),
                        };
                        if kv.key.starts_with(&proxies) && !kv.key.starts_with(&mine) {
                            let mut remote = lock(&remote);
                            if put {
                                if let Ok(rec) = serde_json::from_slice(&kv.value) {
                                    remote.insert(kv.key, rec);
                                    changed = true;
                                }
                            } else {
                                changed |= remote.remove(&kv.key).is_some();
                            }
                        } else if let Some(replica) = kv.key.strip_prefix(&listed) {
                            if kv.key == own_listing {
                                continue;
                            }
                            let mut l = lock_l(&listings);
                            if put {
                                if let Ok(map) = serde_json::from_slice(&kv.value) {
                                    l.insert(replica.to_string(), map);
                                    changed = true;
                                }
                            } else {
                                changed |= l.remove(replica).is_some();
                            }
                        }
                    }
                    if changed {
                        registry.refresh();
                    }
                }
                if afresh {
                    // Fell behind a compaction: start over from what is there now.
                    let got = async {
                        let (p, r1) = etcd.client().get(&proxies, true).await?;
                        let (l, r2) = etcd.client().get(&listed, true).await?;
                        Ok::<_, tonic::Status>((p, l, r1.max(r2)))
                    };
                    if let Ok((p, l, rev)) = got.await {
                        *lock(&remote) = others(p, &mine);
                        *lock_l(&listings) = listings_of(&etcd, l);
                        start = rev + 1;
                        registry.refresh();
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}
