//! What each proxy is sent: the snapshot narrowed to the services its Istio Sidecar admits, or
//! (by the Mesh file's `spec.scope`) those its service declares it calls, or what it cannot
//! work without plus the services it asked for (`model::egress::bound_for`), encoded once for
//! every proxy that gets the same one. Views are cached per snapshot by what makes them differ
//! (the hosts as they apply, the proxy's own service, whether it is the ingress, what it asked
//! for) and then by their content, so that a change costs one build and one encoding per
//! distinct view, not per proxy; every proxy nothing narrows shares one.
//!
//! Each view also knows the latest snapshot version at which anything it carries changed
//! (services are compared with the snapshot before, one by one): a proxy whose view did not
//! change since the one it was sent ([`View::same_as`]) need not be sent anything, so a change
//! costs pushes only to the proxies that see it.

use crate::registry::Node;
use api::pb;
use bytes::Bytes;
use model::egress::{self, EgressHost, Viewer};
use model::{ServiceKey, Snapshot};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// One proxy's snapshot.
#[derive(Debug)]
pub struct View {
    pub version: u64,
    stamp: Stamp,
    /// `None`: the whole snapshot; else the indices of its services.
    indices: Option<Vec<usize>>,
    /// The CA's generation and trust bundle it carries.
    ca: (u64, String),
    message: OnceLock<Bytes>,
}

/// What a view says, as far as telling whether a later one says the same: kept for each proxy
/// in place of the view it was sent, whose encoded bytes can then go.
#[derive(Clone, Debug)]
pub struct Stamp {
    pub version: u64,
    /// The services it carries, in order.
    keys: Arc<Vec<ServiceKey>>,
    gateway: bool,
    /// The proxy may ask for more services.
    on_demand: bool,
    /// The latest snapshot version at which anything it carries changed.
    changed_at: u64,
}

impl View {
    /// How many services it carries.
    pub fn services(&self) -> usize {
        self.stamp.keys.len()
    }

    pub fn stamp(&self) -> Stamp {
        self.stamp.clone()
    }

    /// Whether it says what the view `earlier` (of an older snapshot) said: the same services,
    /// none of which (nor anything else it carries) changed since.
    pub fn same_as(&self, earlier: &Stamp) -> bool {
        let now = &self.stamp;
        now.changed_at <= earlier.version
            && now.gateway == earlier.gateway
            && now.on_demand == earlier.on_demand
            && (Arc::ptr_eq(&now.keys, &earlier.keys) || now.keys == earlier.keys)
    }

    /// The snapshot to send, encoded on first use (once for every proxy that gets this view);
    /// `snapshot` is the one it is a view of.
    pub fn message(&self, snapshot: &Snapshot) -> Bytes {
        debug_assert_eq!(snapshot.version, self.version);
        self.message
            .get_or_init(|| {
                let mut wire = match &self.indices {
                    None => pb::Snapshot::from(snapshot),
                    Some(indices) => pb::Snapshot::from(&snapshot.scoped(
                        indices,
                        self.stamp.gateway,
                        self.stamp.on_demand,
                    )),
                };
                (wire.ca_generation, wire.trust_bundle_pem) = self.ca.clone();
                prost::Message::encode_to_vec(&wire).into()
            })
            .clone()
    }
}

/// What makes two proxies' views differ.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// Nothing narrows it: the whole snapshot.
    Whole,
    Scoped {
        hosts: Vec<EgressHost>,
        service: ServiceKey,
        ingress: bool,
        on_demand: bool,
        /// The services it asked for (on demand), in order.
        asked: Vec<ServiceKey>,
    },
}

/// Since which version each part of a snapshot has been as it is.
#[derive(Clone, Debug, Default)]
struct Revisions {
    /// Per service, by index.
    services: Vec<u64>,
    gateway: u64,
    /// Security and outbound policies, and the CA state views carry.
    rest: u64,
}

#[derive(Default)]
struct Cache {
    /// The snapshot the entries are for, and the CA state.
    snapshot: Option<Arc<Snapshot>>,
    ca: (u64, String),
    revisions: Revisions,
    /// Services admitted per set of hosts (before each proxy's own additions).
    admitted: HashMap<Vec<EgressHost>, Arc<Vec<usize>>>,
    by_key: HashMap<Key, Arc<View>>,
    /// By content: (services, with the gateway, on demand).
    by_content: HashMap<(Vec<usize>, bool, bool), Arc<View>>,
}

impl Cache {
    fn version(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.version)
    }

    /// Moves on to `next` (a later snapshot) or to a new CA state: what changed since the
    /// snapshot before is dated `next.version`.
    fn advance(&mut self, next: &Arc<Snapshot>, ca: (u64, String)) {
        let v = next.version;
        let revisions = match &self.snapshot {
            None => Revisions {
                services: vec![v; next.services.len()],
                gateway: v,
                rest: v,
            },
            Some(prev) => {
                let at: HashMap<&ServiceKey, usize> = prev
                    .services
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (&s.key, i))
                    .collect();
                let r = &self.revisions;
                let same_rest = prev.security == next.security
                    && prev.outbound_policy == next.outbound_policy
                    && prev.outbound_policies == next.outbound_policies
                    && self.ca == ca;
                Revisions {
                    services: next
                        .services
                        .iter()
                        .map(|s| match at.get(&s.key) {
                            Some(&i) if prev.services[i] == *s => r.services[i],
                            _ => v,
                        })
                        .collect(),
                    gateway: if prev.gateway == next.gateway {
                        r.gateway
                    } else {
                        v
                    },
                    rest: if same_rest { r.rest } else { v },
                }
            }
        };
        *self = Cache {
            snapshot: Some(next.clone()),
            ca,
            revisions,
            ..Cache::default()
        };
    }
}

/// Distinct views built, for whoever measures the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewStats {
    /// Views built (each encoded at most once).
    pub built: u64,
    /// Views handed out from the cache.
    pub shared: u64,
}

pub struct Views {
    ca: Option<Arc<crate::ca::Ca>>,
    cache: Mutex<Cache>,
    stats: Mutex<ViewStats>,
}

impl Views {
    /// Views that carry `ca`'s trust bundle and generation (none without a CA).
    pub fn new(ca: Option<Arc<crate::ca::Ca>>) -> Views {
        Views {
            ca,
            cache: Mutex::new(Cache::default()),
            stats: Mutex::new(ViewStats::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // Plain data: a panic while building leaves nothing half-written that matters.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> ViewStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, built: bool) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if built {
            s.built += 1;
        } else {
            s.shared += 1;
        }
    }

    /// The view of `snapshot` the proxy `node` is sent; `asked`: the services it asked for,
    /// added when it may ask ([`egress::Bound::on_demand`]).
    pub fn view(
        &self,
        snapshot: &Arc<Snapshot>,
        node: &Node,
        asked: &BTreeSet<ServiceKey>,
    ) -> Arc<View> {
        let service = ServiceKey::new(&node.service, &node.namespace);
        let who = Viewer {
            service: &service,
            labels: &node.labels,
            ingress: node.mode == "ingress",
            asks: node.asks,
        };
        let egress::Bound { hosts, on_demand } = egress::bound_for(snapshot, &who);
        let asked: Vec<ServiceKey> = if on_demand {
            asked.iter().cloned().collect()
        } else {
            Vec::new()
        };
        let key = match &hosts {
            None => Key::Whole,
            Some(h) => Key::Scoped {
                hosts: h.clone(),
                service: service.clone(),
                ingress: who.ingress,
                on_demand,
                asked: asked.clone(),
            },
        };
        let ca = match &self.ca {
            Some(ca) => (ca.generation(), ca.bundle_pem()),
            None => (0, String::new()),
        };
        // Entries are for one snapshot and one CA state; an older snapshot (a proxy's task
        // still on the one before) gets a view built aside, dated its own version.
        let (current, revisions) = {
            let mut c = self.lock();
            if snapshot.version > c.version() || (snapshot.version == c.version() && ca != c.ca) {
                c.advance(snapshot, ca.clone());
            }
            let current = c.version() == snapshot.version;
            if current {
                if let Some(v) = c.by_key.get(&key) {
                    let v = v.clone();
                    drop(c);
                    self.count(false);
                    return v;
                }
            }
            (current, current.then(|| c.revisions.clone()))
        };
        let indices = hosts.as_ref().map(|h| {
            let cached = current
                .then(|| self.lock().admitted.get(h).cloned())
                .flatten();
            let admitted = cached.unwrap_or_else(|| {
                let a = Arc::new(egress::admitted(snapshot, h, &service.namespace));
                if current {
                    self.lock().admitted.insert(h.clone(), a.clone());
                }
                a
            });
            if asked.is_empty() {
                return egress::visible(snapshot, &admitted, &who);
            }
            let mut with_asked: BTreeSet<usize> = admitted.iter().copied().collect();
            with_asked.extend(
                snapshot
                    .services
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| asked.binary_search(&s.key).is_ok())
                    .map(|(i, _)| i),
            );
            let with_asked: Vec<usize> = with_asked.into_iter().collect();
            egress::visible(snapshot, &with_asked, &who)
        });
        // The whole snapshot carries the gateway; a narrowed one only for the ingress.
        let gateway = indices.is_none() || who.ingress;
        let on_demand = on_demand && indices.is_some();
        let content = indices.clone().map(|i| (i, gateway, on_demand));
        if let (true, Some(c)) = (current, &content) {
            let found = self.lock().by_content.get(c).cloned();
            if let Some(v) = found {
                self.lock().by_key.insert(key, v.clone());
                self.count(false);
                return v;
            }
        }
        let all: Vec<usize>;
        let carried = match &indices {
            Some(i) => i,
            None => {
                all = (0..snapshot.services.len()).collect();
                &all
            }
        };
        let changed_at = match &revisions {
            None => snapshot.version,
            Some(r) => carried
                .iter()
                .map(|&i| r.services[i])
                .chain([r.rest])
                .chain(gateway.then_some(r.gateway))
                .max()
                .unwrap_or(snapshot.version),
        };
        let view = Arc::new(View {
            version: snapshot.version,
            stamp: Stamp {
                version: snapshot.version,
                keys: Arc::new(
                    carried
                        .iter()
                        .map(|&i| snapshot.services[i].key.clone())
                        .collect(),
                ),
                gateway,
                on_demand,
                changed_at,
            },
            indices,
            ca,
            message: OnceLock::new(),
        });
        self.count(true);
        if current {
            let mut c = self.lock();
            if c.version() == snapshot.version {
                if let Some(content) = content {
                    c.by_content.insert(content, view.clone());
                }
                c.by_key.insert(key, view.clone());
            }
        }
        view
    }
}

#[cfg(test)]
mod tests;
