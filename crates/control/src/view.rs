//! What each proxy is sent: the snapshot narrowed to the services its Istio Sidecar admits
//! (`model::egress`), encoded once for every proxy that gets the same one. Views are cached per
//! snapshot by what makes them differ (the Sidecar's hosts as they apply, the proxy's own
//! service, whether it is the ingress) and then by their content, so that a change costs one
//! build and one encoding per distinct view, not per proxy; every proxy no Sidecar narrows
//! shares one.

use crate::registry::Node;
use api::{pb, EncodedControlMessage};
use model::egress::{self, EgressHost, Viewer};
use model::{ServiceKey, Snapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One proxy's snapshot, ready to send.
#[derive(Debug)]
pub struct View {
    pub version: u64,
    pub message: EncodedControlMessage,
    /// How many services it carries.
    pub services: usize,
}

/// What makes two proxies' views differ.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// No Sidecar narrows it: the whole snapshot.
    Whole,
    Scoped {
        hosts: Vec<EgressHost>,
        service: ServiceKey,
        ingress: bool,
    },
}

#[derive(Default)]
struct Cache {
    /// The snapshot version and CA state the entries are for.
    version: u64,
    generation: u64,
    bundle: String,
    /// Services admitted per set of hosts (before each proxy's own additions).
    admitted: HashMap<Vec<EgressHost>, Arc<Vec<usize>>>,
    by_key: HashMap<Key, Arc<View>>,
    /// By content: (services, with the gateway).
    by_content: HashMap<(Vec<usize>, bool), Arc<View>>,
}

/// Distinct views built, for whoever measures the cache (`/status` does not show them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewStats {
    /// Views built since the control plane started (each encoded once).
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

    /// The view of `snapshot` the proxy `node` is sent.
    pub fn view(&self, snapshot: &Snapshot, node: &Node) -> Arc<View> {
        let service = ServiceKey::new(&node.service, &node.namespace);
        let who = Viewer {
            service: &service,
            labels: &node.labels,
            ingress: node.mode == "ingress",
        };
        let hosts = egress::hosts_for(snapshot, &who);
        let key = match &hosts {
            None => Key::Whole,
            Some(h) => Key::Scoped {
                hosts: h.clone(),
                service: service.clone(),
                ingress: who.ingress,
            },
        };
        let (generation, bundle) = match &self.ca {
            Some(ca) => (ca.generation(), ca.bundle_pem()),
            None => (0, String::new()),
        };
        // Entries are for one snapshot and one CA state; an older snapshot (a proxy's task
        // still sending the one before) is built without touching them.
        let current = {
            let mut c = self.lock();
            if snapshot.version > c.version
                || (snapshot.version == c.version
                    && (generation != c.generation || bundle != c.bundle))
            {
                *c = Cache {
                    version: snapshot.version,
                    generation,
                    bundle: bundle.clone(),
                    ..Cache::default()
                };
            }
            let current = c.version == snapshot.version;
            if current {
                if let Some(v) = c.by_key.get(&key) {
                    let v = v.clone();
                    drop(c);
                    self.count(false);
                    return v;
                }
            }
            current
        };
        let content = match &hosts {
            None => None,
            Some(h) => {
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
                Some((egress::visible(snapshot, &admitted, &who), who.ingress))
            }
        };
        if let (true, Some(c)) = (current, &content) {
            let found = self.lock().by_content.get(c).cloned();
            if let Some(v) = found {
                self.lock().by_key.insert(key, v.clone());
                self.count(false);
                return v;
            }
        }
        let mut wire = match &content {
            None => pb::Snapshot::from(snapshot),
            Some((indices, gateway)) => pb::Snapshot::from(&snapshot.scoped(indices, *gateway)),
        };
        wire.trust_bundle_pem = bundle;
        wire.ca_generation = generation;
        let view = Arc::new(View {
            version: snapshot.version,
            services: wire.services.len(),
            message: EncodedControlMessage::new(&wire),
        });
        self.count(true);
        if current {
            let mut c = self.lock();
            if c.version == snapshot.version {
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
