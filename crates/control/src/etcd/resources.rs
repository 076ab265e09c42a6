//! The resources in force, in etcd: one key per resource, a copy in memory kept current by a
//! watch, and changes written in one transaction that only succeeds if no other replica
//! changed the resources since this one read them. A change another replica made is loaded
//! and handed to this replica's registry, so its proxies get it too.

use super::client::{self, Event, WatchEnd};
use super::{Etcd, EtcdError};
use crate::registry::Registry;
use crate::store::{Backend, BackendError};
use config::Resource;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A resource as its key holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    /// Its place in the order resources were first applied.
    seq: u64,
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
    file: PathBuf,
    first_line: usize,
    text: String,
}

/// What this replica last read: the set, each key's order, and the revision of
/// `resources-rev` it was read at.
#[derive(Default)]
struct Copy {
    store: config::Store,
    seqs: BTreeMap<String, u64>,
    rev: i64,
}

pub struct EtcdResources {
    etcd: Etcd,
    copy: Mutex<Copy>,
}

fn lock(m: &Mutex<Copy>) -> std::sync::MutexGuard<'_, Copy> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EtcdResources {
    /// The resources in etcd, with `seed` (the files the replica was started with) applied over
    /// them as `weft apply` would: a resource of the files replaces the one of its key.
    /// Returns the backend and the set in force.
    pub async fn open(etcd: Etcd, seed: &config::Store) -> Result<Arc<EtcdResources>, EtcdError> {
        let me = Arc::new(EtcdResources {
            etcd,
            copy: Mutex::new(Copy::default()),
        });
        me.reread().await?;
        for attempt in 0.. {
            let current = me.load();
            let next = current.applied(seed.resources.clone());
            if same(&current, &next) {
                break;
            }
            match me.write(&current, &next).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    tracing::debug!(error = %e, "seeding the resources raced another replica");
                    me.reread().await?;
                }
                Err(e) => {
                    return Err(EtcdError::BadValue {
                        key: me.etcd.key("resources/"),
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(me)
    }

    /// The store revision of the resources in force (of their last change).
    pub fn revision(&self) -> u64 {
        lock(&self.copy).rev.max(0) as u64
    }

    /// Reads every resource key into the copy.
    async fn reread(&self) -> Result<(), EtcdError> {
        let (kvs, _) = self
            .etcd
            .client()
            .get(&self.etcd.key("resources"), true)
            .await
            .map_err(|e| self.etcd.err(e))?;
        let marker = self.etcd.key("resources-rev");
        let mut rev = 0;
        let mut items: Vec<(u64, String, Resource)> = Vec::new();
        for kv in kvs {
            if kv.key == marker {
                rev = kv.mod_revision;
                continue;
            }
            let s: Stored = serde_json::from_slice(&kv.value).map_err(|e| EtcdError::BadValue {
                key: kv.key.clone(),
                reason: e.to_string(),
            })?;
            items.push((
                s.seq,
                kv.key,
                Resource {
                    kind: s.kind,
                    api_version: s.api_version,
                    namespace: s.namespace,
                    name: s.name,
                    file: s.file,
                    first_line: s.first_line,
                    text: s.text,
                },
            ));
        }
        items.sort_by_key(|(seq, _, _)| *seq);
        let mut copy = lock(&self.copy);
        copy.seqs = items.iter().map(|(seq, k, _)| (k.clone(), *seq)).collect();
        copy.store = config::Store {
            resources: items.into_iter().map(|(_, _, r)| r).collect(),
        };
        copy.rev = rev;
        Ok(())
    }

    fn key_of(&self, r: &Resource) -> String {
        let (group, kind, ns, name) = r.key();
        let group = if group.is_empty() { "core" } else { group };
        let ns = if ns.is_empty() { "_" } else { ns };
        self.etcd
            .key(&format!("resources/{group}/{kind}/{ns}/{name}"))
    }

    /// Writes `next` over `base` in one transaction, if no one changed the resources since
    /// `base` was read.
    async fn write(&self, base: &config::Store, next: &config::Store) -> Result<(), BackendError> {
        let (rev, seqs) = {
            let copy = lock(&self.copy);
            if !same(&copy.store, base) {
                return Err(changed_elsewhere());
            }
            (copy.rev, copy.seqs.clone())
        };
        let marker = self.etcd.key("resources-rev");
        let mut next_seq = seqs.values().max().map_or(0, |m| m + 1);
        let mut ops = Vec::new();
        let mut kept = Vec::new();
        let mut new_seqs = BTreeMap::new();
        for r in &next.resources {
            let key = self.key_of(r);
            let seq = match seqs.get(&key) {
                Some(s) => *s,
                None => {
                    next_seq += 1;
                    next_seq
                }
            };
            let old = base.resources.iter().find(|o| o.key() == r.key());
            if old != Some(r) {
                let value = serde_json::to_vec(&Stored {
                    seq,
                    api_version: r.api_version.clone(),
                    kind: r.kind.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    file: r.file.clone(),
                    first_line: r.first_line,
                    text: r.text.clone(),
                })
                .expect("a resource serializes");
                ops.push(client::put_op(&key, value));
            }
            new_seqs.insert(key.clone(), seq);
            kept.push(key);
        }
        for r in &base.resources {
            let key = self.key_of(r);
            if !kept.contains(&key) {
                ops.push(client::delete_op(&key));
            }
        }
        ops.push(client::put_op(
            &marker,
            self.etcd.replica.as_bytes().to_vec(),
        ));
        let (wrote, revision, _) = self
            .etcd
            .client()
            .txn(vec![client::mod_revision_is(&marker, rev)], ops, vec![])
            .await
            .map_err(|e| BackendError(format!("etcd: {}", e.message())))?;
        if !wrote {
            return Err(changed_elsewhere());
        }
        let mut copy = lock(&self.copy);
        copy.store = next.clone();
        copy.seqs = new_seqs;
        copy.rev = revision;
        Ok(())
    }

    /// Watches the resources; a change another replica made is read, loaded and handed to
    /// `registry` (whose proxies then get it). Runs until the process exits.
    pub fn follow(self: &Arc<Self>, registry: Arc<Registry>) {
        let me = self.clone();
        tokio::spawn(async move {
            let marker = me.etcd.key("resources-rev");
            loop {
                let start = lock(&me.copy).rev + 1;
                let mut events = match me
                    .etcd
                    .client()
                    .watch(&me.etcd.key("resources"), start)
                    .await
                {
                    Ok(rx) => rx,
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "watching the resources in etcd");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(batch) = events.recv().await {
                    match batch {
                        Ok((_, events)) => {
                            // Each change ends with the marker's write: read the whole set then.
                            let theirs = events.iter().any(|e| match e {
                                Event::Put(kv) => {
                                    kv.key == marker && kv.mod_revision > lock(&me.copy).rev
                                }
                                Event::Delete(_) => false,
                            });
                            if theirs {
                                me.take_in(&registry).await;
                            }
                        }
                        Err(WatchEnd::Compacted) => {
                            me.take_in(&registry).await;
                            break;
                        }
                        Err(WatchEnd::Lost(why)) => {
                            tracing::debug!(%why, "resources watch lost; watching again");
                            break;
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
    }

    /// Reads the set another replica wrote and puts it in force here.
    async fn take_in(&self, registry: &Registry) {
        if let Err(e) = self.reread().await {
            tracing::warn!(error = %e, "reading the resources another replica changed");
            return;
        }
        match self.load().load() {
            Ok(loaded) => {
                tracing::info!("resources changed by another control-plane replica");
                registry.set_traffic_at(loaded.mesh, self.revision());
            }
            // Only a set that validated is ever written; a change of the keys by hand may not.
            Err(errors) => {
                tracing::error!(%errors, "the resources in etcd do not validate; the last good set keeps serving")
            }
        }
    }
}

fn changed_elsewhere() -> BackendError {
    BackendError(
        "another control-plane replica changed the resources at the same time; nothing was changed, apply again".into(),
    )
}

/// The same resources, text and place included, in the same order.
fn same(a: &config::Store, b: &config::Store) -> bool {
    a.resources == b.resources
}

#[tonic::async_trait]
impl Backend for EtcdResources {
    fn load(&self) -> config::Store {
        lock(&self.copy).store.clone()
    }

    async fn save(
        &self,
        base: &config::Store,
        next: &config::Store,
    ) -> Result<Option<u64>, BackendError> {
        let r = self.write(base, next).await;
        if r.is_err() {
            // Whatever happened, read what is there now: the next change starts from it.
            let _ = self.reread().await;
        }
        r.map(|()| Some(self.revision()))
    }
}
