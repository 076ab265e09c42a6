//! The registry: what the mesh declares and which proxies are connected, and the snapshot built
//! from both (by `snapshot::build`, a pure function of the two). Mutations come from the push server (control path only); the data plane never
//! reads this — proxies get immutable snapshots.

use crate::snapshot::{build, mark_listed, Discovered};
use crate::status::Finished;
use model::security::SecuritySpec;
use model::{Identity, Labels, MeshSpec, Snapshot};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A control plane that has just started waits this long for the proxies it expects to
/// reconnect before it pushes a snapshot, so a restart never pushes an empty endpoint set that
/// would wipe the routes proxies are serving from.
pub const WARMUP: Duration = Duration::from_secs(2);

/// Registrations and health reports come in bursts (a fleet starting, a replica's proxies
/// moving to another): the snapshot they change is rebuilt at most this often, the first
/// change of a burst at once and the rest together at the end of the interval, so that a
/// thousand proxies becoming ready make a few snapshots rather than a thousand (istiod
/// debounces its pushes the same way, by 100 ms). Changes of the configuration are built at
/// once.
pub const COALESCE: Duration = Duration::from_millis(100);

/// How long `wait_applied` lets acks gather before it walks every proxy again.
const ANSWERS_EVERY: Duration = Duration::from_millis(10);

/// What a proxy said about itself in its hello, validated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub mode: String,
    pub service: String,
    pub namespace: String,
    pub workload: String,
    pub instance: String,
    pub labels: Labels,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub app: Option<SocketAddr>,
    pub identity: Identity,
    pub pid: u32,
    /// It asks for services its snapshot lacks (proxies that predate asking do not).
    #[serde(default)]
    pub asks: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("hello: {field} {value:?} is not HOST:PORT")]
pub struct BadHello {
    pub field: &'static str,
    pub value: String,
}

impl TryFrom<api::pb::Hello> for Node {
    type Error = BadHello;

    fn try_from(h: api::pb::Hello) -> Result<Self, BadHello> {
        let addr = |field: &'static str, v: &str| -> Result<Option<SocketAddr>, BadHello> {
            if v.is_empty() {
                return Ok(None);
            }
            v.parse().map(Some).map_err(|_| BadHello {
                field,
                value: v.to_string(),
            })
        };
        Ok(Node {
            inbound: addr("inbound", &h.inbound)?,
            outbound: addr("outbound", &h.outbound)?,
            admin: addr("admin", &h.admin)?,
            app: addr("app", &h.app)?,
            mode: h.mode,
            service: h.service,
            namespace: h.namespace,
            workload: h.workload,
            instance: h.instance,
            labels: h.labels.into_iter().collect(),
            identity: Identity(h.identity),
            pid: h.pid,
            asks: h.asks,
        })
    }
}

/// One connected proxy.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProxyRecord {
    pub node: Node,
    pub ready: bool,
    pub reason: String,
    /// Whether the proxy has reported its health at least once.
    pub reported: bool,
    pub draining: bool,
    pub acked: u64,
    /// The last snapshot the proxy refused and why, while its last answer is a refusal (an
    /// ack clears it); it keeps serving snapshot `acked`.
    pub nack: Option<(u64, String)>,
    /// The snapshot version since which this proxy's replica has been an endpoint (listed in
    /// every snapshot from that one on); `None` while it is not one.
    pub listed_since: Option<u64>,
    /// The CA generation that signed the proxy's leaf, as it reports; 0: none (yet).
    pub leaf_generation: u64,
    /// The control-plane replica the proxy is connected to, when several share a store;
    /// empty for a control plane alone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// When it registered with that replica (ms since the epoch; 0 for a control plane
    /// alone): a proxy that moved to another replica is listed by both until the first one's
    /// lease lapses, and the newer registration is where it is.
    #[serde(default)]
    pub registered_ms: u64,
    /// With several replicas: since which snapshot version each replica lists this proxy's
    /// replica as an endpoint (every replica numbers its own snapshots, and a proxy applies
    /// its own replica's). Empty for a control plane alone, where `listed_since` says it.
    #[serde(skip)]
    pub listed_by: BTreeMap<String, u64>,
    /// With several replicas: the snapshot version the proxy's own replica serves now (what
    /// "up to date" means for it). `None` for a control plane alone.
    #[serde(skip)]
    pub current: Option<u64>,
}

/// Why a replica does not receive traffic from every proxy that could send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotRoutable {
    /// Its proxy has not registered (yet).
    NoProxy,
    Draining,
    /// Its proxy reports it cannot take traffic (app not accepting, no certificate…).
    NotReady(String),
    /// Ready, but not listed as an endpoint (no inbound listener).
    NotListed,
    /// Listed since `since`, but these proxies (instance, version applied) run an older snapshot.
    Behind {
        since: u64,
        proxies: Vec<(String, u64)>,
    },
}

impl std::fmt::Display for NotRoutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRoutable::NoProxy => f.write_str("no proxy registered yet"),
            NotRoutable::Draining => f.write_str("draining"),
            NotRoutable::NotReady(reason) => f.write_str(reason),
            NotRoutable::NotListed => {
                f.write_str("ready but not an endpoint (no inbound listener)")
            }
            NotRoutable::Behind { since, proxies } => {
                write!(f, "endpoint since snapshot {since}; not yet applied by ")?;
                for (i, (instance, acked)) in proxies.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{instance} (at {acked})")?;
                }
                Ok(())
            }
        }
    }
}

impl ProxyRecord {
    /// Whether this record's replica receives traffic from every proxy in `all` that could send
    /// it: it is an endpoint, and every live proxy has applied a snapshot that lists it.
    pub fn routable(&self, all: &[ProxyRecord]) -> Result<(), NotRoutable> {
        if self.draining {
            return Err(NotRoutable::Draining);
        }
        if !self.ready {
            return Err(NotRoutable::NotReady(self.reason.clone()));
        }
        let Some(since) = self.listed_since else {
            return Err(NotRoutable::NotListed);
        };
        // A proxy has applied a snapshot listing this replica once its acked version reaches
        // the version since which its own control-plane replica lists it.
        let since_for = |q: &ProxyRecord| -> Option<u64> {
            if self.listed_by.is_empty() {
                Some(since)
            } else {
                self.listed_by.get(&q.replica).copied()
            }
        };
        let behind: Vec<(String, u64)> = all
            .iter()
            .filter(|q| !q.draining && since_for(q).is_none_or(|s| q.acked < s))
            .map(|q| (q.name(), q.acked))
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(NotRoutable::Behind {
                since,
                proxies: behind,
            })
        }
    }

    /// The snapshot this proxy refused, and why, if it refused `version` or a later one and has
    /// applied neither since: it will not run `version` before the configuration changes.
    pub fn refused(&self, version: u64) -> Option<&(u64, String)> {
        self.nack
            .as_ref()
            .filter(|(v, _)| *v >= version && self.acked < version)
    }

    /// How messages name this proxy: its instance, or its mode for the one ingress.
    pub fn name(&self) -> String {
        match self.node.mode.as_str() {
            "sidecar" => format!("{} proxy", self.node.instance),
            mode => format!("{mode} {}", self.node.instance),
        }
    }
}

/// A proxy's refusal of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The proxy, as messages name it ([`ProxyRecord::name`]).
    pub proxy: String,
    /// The snapshot it refused.
    pub version: u64,
    /// Why (the proxy's nack: which resource or policy it could not apply).
    pub error: String,
    /// The snapshot it keeps serving.
    pub runs: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} refused snapshot {}: {} (it keeps serving snapshot {})",
            self.proxy, self.version, self.error, self.runs
        )
    }
}

/// How the live proxies answered a snapshot version: once every one of them applied or refused
/// it, or when the wait ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    /// The live (not draining) proxies.
    pub proxies: usize,
    /// Proxies that refused it (or a later snapshot).
    pub refused: Vec<Refusal>,
    /// Proxies that had answered neither way when the wait ended: name and the snapshot they
    /// run.
    pub silent: Vec<(String, u64)>,
}

impl Answers {
    /// Every live proxy runs the version (or a later one).
    pub fn all_applied(&self) -> bool {
        self.refused.is_empty() && self.silent.is_empty()
    }
}

/// A handle to one proxy's registration; dropping it deregisters the proxy.
pub struct Registration {
    registry: Arc<Registry>,
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// Where the registrations of connected proxies are kept: the snapshot builder's other input
/// besides the declared mesh. [`InMemory`] today, for a control plane that is alone. A store
/// shared by several control-plane replicas (etcd) implements the same calls: `put` and
/// `delete` write this replica's registrations through, `all` answers from a local copy, and
/// `reload` takes in what other replicas wrote when a watch says it changed (the watch then
/// calls [`Registry::refresh`], which reloads and rebuilds the snapshot). The registry, the
/// builder and the push server stay as they are.
pub trait Registrations: Send + 'static {
    /// Every registration, by id.
    fn all(&self) -> &BTreeMap<u64, ProxyRecord>;
    /// Adds a registration or replaces it.
    fn put(&mut self, id: u64, record: ProxyRecord);
    /// Removes a registration (its proxy disconnected).
    fn delete(&mut self, id: u64);
    /// Takes in the registrations written elsewhere since the last call; nothing to do when
    /// this registry is the only writer.
    fn reload(&mut self) {}
    /// The snapshot version this registry serves now (shared stores tell the other replicas,
    /// whose view of "has this proxy applied its replica's snapshot" needs it).
    fn at_version(&mut self, _version: u64) {}
    /// Called after a batch of `put`s (each snapshot's marking of who it lists): what a
    /// store derives from all the records at once (a listing it publishes) is derived here
    /// rather than after each one.
    fn settle(&mut self) {}
}

/// Registrations in this process's memory.
#[derive(Default)]
pub struct InMemory(BTreeMap<u64, ProxyRecord>);

impl Registrations for InMemory {
    fn all(&self) -> &BTreeMap<u64, ProxyRecord> {
        &self.0
    }

    fn put(&mut self, id: u64, record: ProxyRecord) {
        self.0.insert(id, record);
    }

    fn delete(&mut self, id: u64) {
        self.0.remove(&id);
    }
}

struct Inner {
    spec: MeshSpec,
    proxies: Box<dyn Registrations>,
    next_id: u64,
    snapshot: Arc<Snapshot>,
    /// The URL of the Prometheus `weft up --prometheus` runs beside the mesh.
    prometheus: Option<String>,
    /// The URL of the dashboard's own listener (`--dashboard`).
    dashboard: Option<String>,
    /// The mesh runs an ingress gateway of its own (`weft up` does): it is not ready without it.
    runs_ingress: bool,
    /// The trust domain of the mesh's SPIFFE identities (its CA's).
    trust_domain: String,
    /// Where replicas run in a transparent mesh: their pods, and the network they share.
    pods: crate::status::Pods,
    /// The replicas whose app has finished for good (a job's), by (service, namespace,
    /// instance): how, and its exit status as text.
    finished: BTreeMap<(String, String, String), (Finished, String)>,
    /// Registrations changed elsewhere ([`Registry::refresh`]): reloaded before the next build.
    reload: bool,
    /// Over a shared store: the least version the next snapshot may carry, the revision of the
    /// resources it reflects shifted up 32 bits (see [`Registry::set_traffic_at`]). `None`: a
    /// control plane alone, numbering snapshots on the wall clock.
    floor: Option<u64>,
    /// Endpoints and virtual IPs a cluster's API says (EndpointSlices, ClusterIPs).
    discovered: Discovered,
}

impl Inner {
    fn next_version(&self) -> u64 {
        next_version(self.snapshot.version, self.floor)
    }

    /// Changes the registration `id`, if it is still there.
    fn update(&mut self, id: u64, change: impl FnOnce(&mut ProxyRecord)) {
        if let Some(mut p) = self.proxies.all().get(&id).cloned() {
            change(&mut p);
            self.proxies.put(id, p);
        }
    }
}

/// When the snapshot was last rebuilt for registrations and health, and whether a rebuild is
/// due at the end of the current interval.
#[derive(Default)]
struct Rebuilds {
    last: Option<Instant>,
    scheduled: bool,
}

pub struct Registry {
    inner: Mutex<Inner>,
    /// This registry, for the task that rebuilds it at the end of a coalescing interval.
    me: std::sync::Weak<Registry>,
    rebuilds: Mutex<Rebuilds>,
    started: Instant,
    snapshots: watch::Sender<Arc<Snapshot>>,
    /// Bumped on every change (registrations, health, acks), for whoever waits on the mesh state.
    generation: watch::Sender<u64>,
}

impl Registry {
    pub fn new(spec: MeshSpec) -> Arc<Self> {
        Self::with_registrations(spec, Box::<InMemory>::default())
    }

    /// A registry whose registrations `proxies` keeps.
    pub fn with_registrations(spec: MeshSpec, proxies: Box<dyn Registrations>) -> Arc<Self> {
        // Versions start at the wall clock in ms, so a restarted control plane never reuses a
        // version a proxy already acked.
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let (snapshot, _) = build(&spec, proxies.all(), &Discovered::default(), epoch);
        let snapshot = Arc::new(snapshot);
        Arc::new_cyclic(|me| Registry {
            me: me.clone(),
            rebuilds: Mutex::new(Rebuilds::default()),
            inner: Mutex::new(Inner {
                spec,
                proxies,
                next_id: 1,
                snapshot: snapshot.clone(),
                prometheus: None,
                dashboard: None,
                runs_ingress: false,
                trust_domain: model::names::TRUST_DOMAIN.to_string(),
                pods: Default::default(),
                finished: BTreeMap::new(),
                reload: false,
                floor: None,
                discovered: Discovered::default(),
            }),
            started: Instant::now(),
            snapshots: watch::Sender::new(snapshot),
            generation: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spec(&self) -> MeshSpec {
        self.lock().spec.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.lock().snapshot.clone()
    }

    /// Records where the mesh's Prometheus answers (`weft status` reports it).
    pub fn set_prometheus(&self, url: Option<String>) {
        self.lock().prometheus = url;
    }

    /// Says that the mesh runs an ingress gateway of its own, so that it is not ready before the
    /// ingress is.
    pub fn set_runs_ingress(&self, runs: bool) {
        self.lock().runs_ingress = runs;
    }

    pub fn runs_ingress(&self) -> bool {
        self.lock().runs_ingress
    }

    /// Records the trust domain the mesh's CA issues identities in.
    pub fn set_trust_domain(&self, trust_domain: &str) {
        self.lock().trust_domain = trust_domain.to_string();
    }

    pub fn trust_domain(&self) -> String {
        self.lock().trust_domain.clone()
    }

    /// Records the pods replicas run in and their network (`weft up` of a transparent mesh), for
    /// `weft status`.
    pub fn set_pods(&self, pods: crate::status::Pods) {
        self.lock().pods = pods;
    }

    pub fn pods(&self) -> crate::status::Pods {
        self.lock().pods.clone()
    }

    /// Records that replica `instance` of `service` in `namespace` has finished for good: its
    /// app ran to its end and will not be restarted (`exit`: its status, as `exit 0`). It is
    /// no longer waited for (`weft status` shows it `completed` or `failed`), nor an endpoint
    /// (its sidecar is stopped). `None`: it runs again (a new replica of that name started).
    pub fn set_finished(
        &self,
        service: &str,
        namespace: &str,
        instance: &str,
        outcome: Option<(Finished, String)>,
    ) {
        let key = (
            service.to_string(),
            namespace.to_string(),
            instance.to_string(),
        );
        let mut inner = self.lock();
        let changed = match outcome {
            Some(o) => inner.finished.insert(key, o.clone()) != Some(o),
            None => inner.finished.remove(&key).is_some(),
        };
        drop(inner);
        // Not part of any snapshot; whoever waits on the mesh state still hears of it.
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// The replicas that have finished for good, as [`Registry::set_finished`] recorded them.
    pub fn finished(&self) -> BTreeMap<(String, String, String), (Finished, String)> {
        self.lock().finished.clone()
    }

    pub fn set_dashboard(&self, url: Option<String>) {
        self.lock().dashboard = url;
    }

    /// The URL of the dashboard's own listener, if `--dashboard` opened one.
    pub fn dashboard(&self) -> Option<String> {
        self.lock().dashboard.clone()
    }

    /// The URL of the mesh's Prometheus, if `weft up --prometheus` runs one.
    pub fn prometheus(&self) -> Option<String> {
        self.lock().prometheus.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    pub fn watch_generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn proxies(&self) -> Vec<ProxyRecord> {
        self.lock().proxies.all().values().cloned().collect()
    }

    /// Whether snapshots may be pushed: every declared replica has registered and reported its
    /// health, or the warm-up period is over.
    pub fn is_warm(&self) -> bool {
        if self.started.elapsed() >= WARMUP {
            return true;
        }
        // A registration or health report whose rebuild is still to come: the snapshot out
        // does not list what the reports say yet.
        if self
            .rebuilds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scheduled
        {
            return false;
        }
        let inner = self.lock();
        let warm = declared_instances(&inner.spec).all(|(svc, inst)| {
            // A finished replica (a job's) registers no more.
            let finished = inner
                .finished
                .keys()
                .any(|(s, _, i)| *s == svc && *i == inst);
            finished
                || inner
                    .proxies
                    .all()
                    .values()
                    .any(|p| p.node.instance == inst && p.node.service == svc && p.reported)
        });
        warm
    }

    pub fn register(self: &Arc<Self>, node: Node) -> Registration {
        let id = self.mutate_soon(|inner| {
            let id = inner.next_id;
            inner.next_id += 1;
            inner.proxies.put(
                id,
                ProxyRecord {
                    node,
                    ready: false,
                    reason: "registered".into(),
                    reported: false,
                    draining: false,
                    acked: 0,
                    nack: None,
                    listed_since: None,
                    leaf_generation: 0,
                    replica: String::new(),
                    registered_ms: 0,
                    listed_by: BTreeMap::new(),
                    current: None,
                },
            );
            id
        });
        Registration {
            registry: self.clone(),
            id,
        }
    }

    /// Replaces every service's routes and policies, the gateway's virtual hosts and the
    /// security policies with `from`'s (after `weft apply` / `weft delete`); proxies get the
    /// new snapshot at once.
    pub fn set_traffic(&self, from: Option<MeshSpec>) {
        self.mutate(|inner| with_traffic(&mut inner.spec, from));
    }

    /// Replaces the endpoints and virtual IPs found outside the registrations (a cluster's
    /// EndpointSlices and ClusterIPs); proxies get the new snapshot at once when it changes
    /// what they see.
    pub fn set_discovered(&self, discovered: Discovered) {
        if self.lock().discovered == discovered {
            return;
        }
        self.mutate(|inner| inner.discovered = discovered);
    }

    /// [`Registry::set_traffic`] and [`Registry::set_discovered`] at once (one snapshot): a
    /// cluster's objects compiled.
    pub fn set_traffic_discovered(&self, from: Option<MeshSpec>, discovered: Discovered) {
        self.mutate(|inner| {
            with_traffic(&mut inner.spec, from);
            inner.discovered = discovered;
        });
    }

    /// Numbers this registry's snapshots after the resources revision of a store shared with
    /// other replicas: from now on every snapshot carries at least `revision << 32` (and a
    /// snapshot built before it took that revision in carries less), so "a proxy acked version
    /// `revision << 32` or later" means, on every replica alike, "it runs the resources of that
    /// revision". Call once, before any proxy connects, with the revision loaded.
    pub fn number_by_revision(&self, revision: u64) {
        let floor = revision << 32;
        let mut inner = self.lock();
        inner.floor = Some(floor);
        let mut snap = (*inner.snapshot).clone();
        snap.version = floor;
        let snap = Arc::new(snap);
        inner.snapshot = snap.clone();
        self.snapshots.send_replace(snap);
    }

    /// [`Registry::set_traffic`] with the resources of store revision `revision` (a registry
    /// numbering by revision): its snapshot carries at least `revision << 32` even when nothing
    /// a proxy gets changed. Returns that version: what "every proxy runs this change" waits for.
    pub fn set_traffic_at(&self, from: Option<MeshSpec>, revision: u64) -> u64 {
        let floor = revision << 32;
        self.mutate(|inner| {
            inner.floor = Some(inner.floor.unwrap_or(0).max(floor));
            with_traffic(&mut inner.spec, from);
        });
        if self.snapshot().version < floor {
            // Same content as before: still a version at the floor, which an ack of the same
            // view stands for.
            self.republish();
        }
        floor
    }

    /// The snapshot [`Registry::set_traffic`] with `from` would push now, without changing
    /// anything: what the proxies would be asked to apply.
    pub fn preview(&self, from: Option<MeshSpec>) -> Snapshot {
        let inner = self.lock();
        let mut spec = inner.spec.clone();
        with_traffic(&mut spec, from);
        build(
            &spec,
            inner.proxies.all(),
            &inner.discovered,
            inner.next_version(),
        )
        .0
    }

    /// Waits until every connected proxy has answered `version`: applied it (or a later one)
    /// or refused it (a refusal is final for that snapshot, so it is not waited out), up to
    /// `within`. Says who refused it and who had not answered.
    pub async fn wait_applied(&self, version: u64, within: std::time::Duration) -> Answers {
        let deadline = tokio::time::Instant::now() + within;
        let mut generation = self.watch_generation();
        loop {
            if self.all_answered(version) {
                return self.answers(version);
            }
            tokio::select! {
                _ = generation.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return self.answers(version),
            }
            // Each check walks every proxy: let a fleet's acks gather first.
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + ANSWERS_EVERY))
                .await;
        }
    }

    /// Whether every live proxy has answered `version` (without naming anyone: cheap enough
    /// to ask after every ack).
    fn all_answered(&self, version: u64) -> bool {
        self.lock()
            .proxies
            .all()
            .values()
            .all(|p| p.draining || p.acked >= version || p.refused(version).is_some())
    }

    /// How the live proxies have answered `version` so far.
    pub fn answers(&self, version: u64) -> Answers {
        let inner = self.lock();
        let mut answers = Answers::default();
        for p in inner.proxies.all().values().filter(|p| !p.draining) {
            answers.proxies += 1;
            if p.acked >= version {
                continue;
            }
            match p.refused(version) {
                Some((v, error)) => answers.refused.push(Refusal {
                    proxy: p.name(),
                    version: *v,
                    error: error.clone(),
                    runs: p.acked,
                }),
                None => answers.silent.push((p.name(), p.acked)),
            }
        }
        answers
    }

    pub fn set_health(&self, id: u64, ready: bool, reason: String) {
        let mut inner = self.lock();
        let same = inner
            .proxies
            .all()
            .get(&id)
            .is_some_and(|p| p.ready == ready);
        if !same {
            drop(inner);
            self.mutate_soon(|inner| {
                inner.update(id, |p| {
                    p.ready = ready;
                    p.reason = reason;
                    p.reported = true;
                })
            });
            return;
        }
        // Whether it is ready is what snapshots depend on: unchanged, nothing to rebuild.
        inner.update(id, |p| {
            p.reason = reason;
            p.reported = true;
        });
        drop(inner);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Records which CA generation signed the proxy's leaf (its health says).
    pub fn set_leaf_generation(&self, id: u64, generation: u64) {
        self.lock().update(id, |p| p.leaf_generation = generation);
        // Not part of any snapshot; whoever waits on the mesh state still hears of it.
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn set_draining(&self, id: u64) {
        self.mutate(|inner| {
            inner.update(id, |p| {
                p.draining = true;
                p.ready = false;
                p.reason = "draining".into();
            })
        });
    }

    pub fn ack(&self, id: u64, version: u64, error: String) {
        // No snapshot depends on what a proxy answered: nothing to rebuild.
        self.lock().update(id, |p| {
            if error.is_empty() {
                p.acked = version;
                p.nack = None;
            } else {
                tracing::warn!(instance = %p.node.instance, version, %error, "proxy rejected a snapshot");
                p.nack = Some((version, error));
            }
        });
        self.generation.send_modify(|g| *g += 1);
    }

    /// Reloads the registrations and rebuilds the snapshot from them (after a change that came
    /// from elsewhere than this registry's calls, such as another replica's in a shared store).
    pub fn refresh(&self) {
        // Reloading walks every registration: once per rebuild, however many changes a burst
        // brings.
        self.mutate_soon(|inner| inner.reload = true);
    }

    /// Takes in registrations changed elsewhere in what the proxies answered (acks, health
    /// reasons) or in the listings, which no snapshot depends on: no rebuild.
    pub fn refresh_answers(&self) {
        {
            let mut inner = self.lock();
            inner.proxies.reload();
            inner.proxies.settle();
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn remove(&self, id: u64) {
        self.mutate_soon(|inner| {
            inner.proxies.delete(id);
        });
    }

    /// Applies a change, rebuilds the snapshot if what proxies get changed (endpoints, routes,
    /// gateway, security), and wakes watchers.
    /// Sends every proxy a new snapshot version even though routes did not change (the CA's
    /// trust bundle travels with it); returns the version.
    pub fn republish(&self) -> u64 {
        let mut inner = self.lock();
        let (next, listed) = build(
            &inner.spec,
            inner.proxies.all(),
            &inner.discovered,
            inner.next_version(),
        );
        let next = Arc::new(next);
        let version = next.version;
        // The version first: the listing the store derives once the marking is done carries it.
        inner.proxies.at_version(version);
        mark_listed(&mut *inner.proxies, &listed, version);
        inner.snapshot = next.clone();
        self.snapshots.send_replace(next);
        drop(inner);
        self.generation.send_modify(|g| *g += 1);
        version
    }

    /// Applies a change of registrations or health, and rebuilds the snapshot now if it was not
    /// rebuilt for one within [`COALESCE`], else at the end of that interval (at once without a
    /// runtime to wait on).
    fn mutate_soon<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let out = f(&mut self.lock());
        let now = Instant::now();
        let mut r = self.rebuilds.lock().unwrap_or_else(|p| p.into_inner());
        if r.scheduled {
            drop(r);
            // The rebuild to come takes this change in; waiters on the records hear of it now.
            self.generation.send_modify(|g| *g += 1);
            return out;
        }
        let due = r.last.map_or(now, |last| last + COALESCE);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if due > now => {
                r.scheduled = true;
                drop(r);
                self.generation.send_modify(|g| *g += 1);
                let me = self.me.clone();
                rt.spawn(async move {
                    tokio::time::sleep_until(due.into()).await;
                    if let Some(registry) = me.upgrade() {
                        {
                            let mut r = registry.rebuilds.lock().unwrap_or_else(|p| p.into_inner());
                            r.scheduled = false;
                            r.last = Some(Instant::now());
                        }
                        registry.mutate(|_| ());
                    }
                });
            }
            _ => {
                r.last = Some(now);
                drop(r);
                self.mutate(|_| ());
            }
        }
        out
    }

    fn mutate<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock();
        let out = f(&mut inner);
        if std::mem::take(&mut inner.reload) {
            inner.proxies.reload();
        }
        let (next, listed) = build(
            &inner.spec,
            inner.proxies.all(),
            &inner.discovered,
            inner.next_version(),
        );
        let now = &inner.snapshot;
        // Unchanged (a restarted proxy may list the same address under a new registration):
        // whoever is listed now is in the snapshot already out.
        let mut listed_in = now.version;
        if !next.same_content(now) {
            let next = Arc::new(next);
            listed_in = next.version;
            inner.snapshot = next.clone();
            self.snapshots.send_replace(next);
        }
        let at = inner.snapshot.version;
        inner.proxies.at_version(at);
        mark_listed(&mut *inner.proxies, &listed, listed_in);
        drop(inner);
        self.generation.send_modify(|g| *g += 1);
        out
    }
}

/// The version after `previous`: for a control plane alone the wall clock in ms (a restarted
/// one never reuses a version a proxy acked), over a shared store `floor` (the resources
/// revision it reflects, shifted up 32 bits); `previous + 1` when that is not later.
fn next_version(previous: u64, floor: Option<u64>) -> u64 {
    match floor {
        Some(floor) => floor.max(previous + 1),
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            now.max(previous + 1)
        }
    }
}

/// `spec` with `from`'s services, routes, policies, gateway virtual hosts, security and
/// default retry policy (without it: no routes, policies… and the services as they were).
fn with_traffic(spec: &mut MeshSpec, from: Option<MeshSpec>) {
    match from {
        Some(m) => {
            // The Mesh document is in force like any other (a `--watch`ed edit changes it);
            // its name and ingress are fixed while the mesh runs.
            spec.services = m.services;
            spec.routes = m.routes;
            spec.tcp_routes = m.tcp_routes;
            spec.policies = m.policies;
            spec.gateway = m.gateway;
            spec.security = m.security;
            spec.default_retries = m.default_retries;
            spec.outbound_policy = m.outbound_policy;
            spec.outbound_policies = m.outbound_policies;
            spec.egress = m.egress;
            spec.scope = m.scope;
        }
        None => {
            spec.routes.clear();
            spec.tcp_routes.clear();
            spec.outbound_policies.clear();
            spec.egress.clear();
            spec.policies.clear();
            spec.gateway.clear();
            spec.security = SecuritySpec::new();
            spec.default_retries = None;
        }
    }
}

/// Every `(service, instance)` the mesh declares with a sidecar (one without never registers).
pub fn declared_instances(spec: &MeshSpec) -> impl Iterator<Item = (String, String)> + '_ {
    spec.services.iter().flat_map(|s| {
        s.workloads
            .iter()
            .filter(|w| w.sidecar)
            .flat_map(move |w| (0..w.replicas).map(move |i| (s.name.clone(), w.instance_name(i))))
    })
}

#[cfg(test)]
mod tests;
