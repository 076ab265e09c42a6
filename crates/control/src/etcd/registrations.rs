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
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Ids of other replicas' proxies have this bit set; this replica's never do.
const REMOTE: u64 = 1 << 63;

/// Other replicas' records as the watch delivers them, by key, and the keys that changed since
/// the registry last took them in.
#[derive(Default)]
struct Theirs {
    records: BTreeMap<String, ProxyRecord>,
    changed: BTreeSet<String>,
}

type Remote = Arc<Mutex<Theirs>>;
/// A replica's listing as `listed/REPLICA` holds it: the snapshot version it serves now, and
/// since which version it lists each endpoint, by record key (`REPLICA/ID`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Listing {
    version: u64,
    since: BTreeMap<String, u64>,
}

/// Other replicas' listings, by replica.
type Listings = Arc<Mutex<BTreeMap<String, Listing>>>;

/// Who a proxy is, whichever replica it registered with: its registrations at several
/// replicas (it moved) are one proxy.
type Ident = (String, String, String, String, u32);

fn ident(r: &ProxyRecord) -> Ident {
    let n = &r.node;
    (
        n.mode.clone(),
        n.service.clone(),
        n.namespace.clone(),
        n.instance.clone(),
        n.pid,
    )
}

/// What waits to be written: the newest state of each of this replica's records that changed
/// (`None`: delete it) and its listing. A change replaces the one before it, so however far
/// etcd lags behind (a fleet acking a snapshot), this holds one entry per proxy at most.
#[derive(Default)]
struct Pending {
    records: BTreeMap<u64, Option<ProxyRecord>>,
    listing: Option<Listing>,
    /// The registrations are gone: the writer stops.
    closed: bool,
}

/// The writer's inbox.
#[derive(Default)]
struct Writes {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
}

impl Writes {
    fn change(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.wake.notify_one();
    }
}

/// Writes per etcd transaction (etcd refuses more than 128 by default).
const OPS_PER_TXN: usize = 100;

pub struct EtcdRegistrations {
    replica: String,
    own: BTreeMap<u64, ProxyRecord>,
    remote: Remote,
    /// Other replicas' records as last taken in, by id, whether shown or not.
    theirs: BTreeMap<u64, ProxyRecord>,
    /// The ids (own and others') of each proxy.
    groups: HashMap<Ident, BTreeSet<u64>>,
    /// Another replica's listing changed since the records' `listed_by` were derived.
    listings_changed: Arc<AtomicBool>,
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
    writes: Arc<Writes>,
}

/// Follows the other replicas' registrations once the registry exists.
pub struct Follower {
    etcd: Etcd,
    remote: Remote,
    listings: Listings,
    listings_changed: Arc<AtomicBool>,
    start: i64,
}

fn lock_l(l: &Listings) -> std::sync::MutexGuard<'_, BTreeMap<String, Listing>> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock(r: &Remote) -> std::sync::MutexGuard<'_, Theirs> {
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
        let records = others(kvs, &mine);
        let (kvs, rev2) = etcd
            .client()
            .get(&etcd.key("listed/"), true)
            .await
            .map_err(|e| etcd.err(e))?;
        let listings = Arc::new(Mutex::new(listings_of(&etcd, kvs)));
        let start = rev.min(rev2) + 1;
        let remote = Arc::new(Mutex::new(Theirs {
            changed: records.keys().cloned().collect(),
            records,
        }));
        let writes = Arc::new(Writes::default());
        tokio::spawn(write_through(etcd.clone(), writes.clone()));
        let listings_changed = Arc::new(AtomicBool::new(true));
        let mut me = EtcdRegistrations {
            replica: etcd.replica.clone(),
            own: BTreeMap::new(),
            remote: remote.clone(),
            theirs: BTreeMap::new(),
            groups: HashMap::new(),
            listings_changed: listings_changed.clone(),
            listings: listings.clone(),
            merged: BTreeMap::new(),
            keys: BTreeMap::new(),
            published: Listing::default(),
            version: 0,
            relist_due: false,
            writes,
        };
        me.reload();
        Ok((
            me,
            Follower {
                etcd,
                remote,
                listings,
                listings_changed,
                start,
            },
        ))
    }
}

impl EtcdRegistrations {
    /// Shows the registrations of proxy `who` that count: this replica's always, another
    /// replica's only if no registration of it that has reported its health is newer (a proxy
    /// that moved here from a replica that died is listed by both until the dead one's lease
    /// lapses; until the new registration reports, the old one keeps its address listed).
    fn regroup(&mut self, who: &Ident) {
        let Some(ids) = self.groups.get(who) else {
            return;
        };
        let record = |id: &u64| self.own.get(id).or_else(|| self.theirs.get(id));
        let newest = ids
            .iter()
            .filter_map(record)
            .filter(|r| r.reported)
            .map(|r| r.registered_ms)
            .max();
        let mut show = Vec::new();
        let mut hide = Vec::new();
        for id in ids {
            if id & REMOTE == 0 {
                continue;
            }
            match self.theirs.get(id) {
                Some(r) if newest.is_none_or(|t| t <= r.registered_ms) => show.push(*id),
                _ => hide.push(*id),
            }
        }
        for id in hide {
            if self.merged.remove(&id).is_some() {
                self.relist_due = true;
            }
        }
        for id in show {
            let mut r = self.theirs[&id].clone();
            match self.merged.get(&id) {
                // Keep what this replica marked (when it listed that proxy's replica) and what
                // the listings say.
                Some(old) => {
                    r.listed_since = old.listed_since;
                    r.listed_by = old.listed_by.clone();
                }
                None => self.relist_due = true,
            }
            self.merged.insert(id, r);
        }
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
            self.writes.change(|p| p.listing = Some(mine));
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
            self.writes
                .change(|p| drop(p.records.insert(id, Some(record.clone()))));
            if new || first_report {
                // It may have moved here from another replica: its older registration there
                // stops counting once this one has said how it is.
                let who = ident(&record);
                self.groups.entry(who.clone()).or_default().insert(id);
                self.merged.insert(id, record);
                self.relist_due = true;
                self.regroup(&who);
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
        if let Some(old) = self.own.remove(&id) {
            self.writes.change(|p| drop(p.records.insert(id, None)));
            let who = ident(&old);
            if let Some(g) = self.groups.get_mut(&who) {
                g.remove(&id);
                if g.is_empty() {
                    self.groups.remove(&who);
                }
            }
            // Another replica's registration of it may count again.
            self.regroup(&who);
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

    /// Takes in what changed in the other replicas' records since the last call.
    fn reload(&mut self) {
        let changes: Vec<(String, Option<ProxyRecord>)> = {
            let mut theirs = lock(&self.remote);
            let keys = std::mem::take(&mut theirs.changed);
            keys.into_iter()
                .map(|k| {
                    let rec = theirs.records.get(&k).cloned();
                    (k, rec)
                })
                .collect()
        };
        let mut touched: BTreeSet<Ident> = BTreeSet::new();
        let proxies_prefix = "/proxies/";
        for (key, rec) in changes {
            let id = remote_id(&key);
            if let Some(old) = self.theirs.remove(&id) {
                let who = ident(&old);
                if let Some(g) = self.groups.get_mut(&who) {
                    g.remove(&id);
                    if g.is_empty() {
                        self.groups.remove(&who);
                    }
                }
                touched.insert(who);
            }
            match rec {
                Some(rec) => {
                    let short = key
                        .rsplit_once(proxies_prefix)
                        .map_or(key.clone(), |(_, k)| k.to_string());
                    self.keys.insert(id, short);
                    let who = ident(&rec);
                    self.groups.entry(who.clone()).or_default().insert(id);
                    self.theirs.insert(id, rec);
                    touched.insert(who);
                }
                None => {
                    self.keys.remove(&id);
                    if self.merged.remove(&id).is_some() {
                        self.relist_due = true;
                    }
                }
            }
        }
        for who in touched {
            self.regroup(&who);
        }
        if self.listings_changed.swap(false, Ordering::SeqCst) {
            self.relist_due = true;
        }
    }
}

impl Drop for EtcdRegistrations {
    fn drop(&mut self) {
        self.writes.change(|p| p.closed = true);
    }
}

/// Writes this replica's proxies' records (the newest state of each) and its listing under its
/// lease, many to a transaction, retrying while etcd does not answer.
async fn write_through(etcd: Etcd, writes: Arc<Writes>) {
    let client = etcd.client().clone();
    loop {
        let Pending {
            records,
            listing,
            closed,
        } = std::mem::take(&mut *writes.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if closed {
            return;
        }
        if records.is_empty() && listing.is_none() {
            writes.wake.notified().await;
            continue;
        }
        let mut ops: Vec<(Option<u64>, super::client::pb::etcdserverpb::RequestOp)> = records
            .iter()
            .map(|(id, rec)| {
                let key = etcd.key(&format!("proxies/{}/{id}", etcd.replica));
                let op = match rec {
                    Some(r) => super::client::put_leased_op(
                        &key,
                        serde_json::to_vec(r).expect("a record serializes"),
                        etcd.lease,
                    ),
                    None => super::client::delete_op(&key),
                };
                (Some(*id), op)
            })
            .collect();
        if let Some(l) = &listing {
            let key = etcd.key(&format!("listed/{}", etcd.replica));
            let value = serde_json::to_vec(l).expect("a listing serializes");
            ops.push((None, super::client::put_leased_op(&key, value, etcd.lease)));
        }
        let mut failed: Vec<Option<u64>> = Vec::new();
        let mut batch = Vec::new();
        for (what, op) in ops {
            batch.push((what, op));
            if batch.len() == OPS_PER_TXN {
                failed.extend(write_batch(&client, std::mem::take(&mut batch)).await);
            }
        }
        failed.extend(write_batch(&client, batch).await);
        if failed.is_empty() {
            continue;
        }
        // What failed goes back, unless a newer state of it arrived meanwhile (that one wins).
        writes.change(|p| {
            for what in failed {
                match what {
                    Some(id) => {
                        if let (false, Some(rec)) = (p.records.contains_key(&id), records.get(&id))
                        {
                            p.records.insert(id, rec.clone());
                        }
                    }
                    None => {
                        if p.listing.is_none() {
                            p.listing = listing.clone();
                        }
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes one transaction; what it carried, if it failed.
async fn write_batch(
    client: &super::Client,
    batch: Vec<(Option<u64>, super::client::pb::etcdserverpb::RequestOp)>,
) -> Vec<Option<u64>> {
    if batch.is_empty() {
        return Vec::new();
    }
    let (whats, ops): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match client.txn(Vec::new(), ops, Vec::new()).await {
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e.message(), "writing registrations to etcd; retrying");
            whats
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
                listings_changed,
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
                    // Whether the snapshot may change (who is registered, ready, draining),
                    // or only what the proxies answered and the listings.
                    let (mut snapshot, mut answers) = (false, false);
                    for e in events {
                        let (kv, put) = match e {
                            Event::Put(kv) => (kv, true),
                            Event::Delete(kv) => (kv, false),
                        };
                        if kv.key.starts_with(&proxies) && !kv.key.starts_with(&mine) {
                            let mut theirs = lock(&remote);
                            if put {
                                if let Ok(rec) = serde_json::from_slice::<ProxyRecord>(&kv.value) {
                                    let same = theirs.records.get(&kv.key).is_some_and(|old| {
                                        old.node == rec.node
                                            && old.ready == rec.ready
                                            && old.draining == rec.draining
                                            && old.reported == rec.reported
                                            && old.registered_ms == rec.registered_ms
                                    });
                                    snapshot |= !same;
                                    answers = true;
                                    theirs.changed.insert(kv.key.clone());
                                    theirs.records.insert(kv.key, rec);
                                }
                            } else if theirs.records.remove(&kv.key).is_some() {
                                theirs.changed.insert(kv.key);
                                snapshot = true;
                            }
                        } else if let Some(replica) = kv.key.strip_prefix(&listed) {
                            if kv.key == own_listing {
                                continue;
                            }
                            let mut l = lock_l(&listings);
                            let changed = if put {
                                serde_json::from_slice(&kv.value)
                                    .map(|map| l.insert(replica.to_string(), map))
                                    .is_ok()
                            } else {
                                l.remove(replica).is_some()
                            };
                            if changed {
                                listings_changed.store(true, Ordering::SeqCst);
                                answers = true;
                            }
                        }
                    }
                    if snapshot {
                        registry.refresh();
                    } else if answers {
                        registry.refresh_answers();
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
                        {
                            let mut theirs = lock(&remote);
                            let records = others(p, &mine);
                            let changed: BTreeSet<String> = theirs
                                .records
                                .keys()
                                .chain(records.keys())
                                .cloned()
                                .collect();
                            theirs.changed.extend(changed);
                            theirs.records = records;
                        }
                        *lock_l(&listings) = listings_of(&etcd, l);
                        listings_changed.store(true, Ordering::SeqCst);
                        start = rev + 1;
                        registry.refresh();
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}
