//! The cluster as the mesh (`weft control --kubernetes`): Namespaces, Services, EndpointSlices
//! and Pods, and the custom resources of the mesh APIs that are installed (Istio, Gateway API,
//! Linkerd, SMI, weft's Canary), watched through the Kubernetes API and handed to the path the
//! files of local mode take: one set of resources (a Mesh document made of the cluster's
//! Services, and each custom resource as YAML) validated and compiled by `config`, and the
//! snapshot built from it with the endpoints the EndpointSlices list.
//!
//! Each kind is followed by kube's watcher: a list, then a watch from the list's
//! resourceVersion with bookmarks; a watch that ends (the server's timeout, a dropped
//! connection) is resumed from the last event or bookmark, and a 410 Gone (the version is too
//! old) starts over with a list, whose result replaces what was known of the kind at once.
//!
//! What becomes of each:
//! - A Service is a service of the mesh when one of its endpoints is a meshed pod (one the
//!   injector gave a sidecar) or its namespace opts into injection; else it is left to the
//!   cluster's own networking (a meshed client's connection to it passes through). Its TCP
//!   ports keep their names and `appProtocol`, so a protocol is chosen as Istio chooses;
//!   Linkerd's and Istio's annotations on it are honoured; its ClusterIP is its virtual IP.
//! - An EndpointSlice endpoint that is ready and whose pod is meshed is an endpoint of its
//!   service: the pod's address at the sidecar's inbound port, the pod's labels, and the SPIFFE
//!   identity of its ServiceAccount. Endpoints of pods without a sidecar are left out (a proxy
//!   cannot speak mTLS to them).
//! - A custom resource is rendered as the YAML `kubectl get -o yaml` shows (its header,
//!   metadata, `spec`) under the name `PLURAL.GROUP/NAMESPACE/NAME`, which its diagnostics
//!   carry. One that does not validate is left out with its error logged; the rest applies.
//!
//! The resources are the cluster's: they change with `kubectl apply`, and the control plane's
//! own API refuses `weft apply` ([`ClusterResources`]); the one writer through it is the canary
//! controller (on the leader), whose moves of the routes it owns are written to the cluster's
//! objects with the resourceVersion last seen. The leader among the replicas
//! ([`super::lease`]) writes back what Gateway API expects of a mesh: each HTTPRoute's and
//! GRPCRoute's `status.parents` entry of this controller, with the `Accepted` and
//! `ResolvedRefs` conditions (other controllers' entries kept).

use crate::registry::Registry;
use crate::snapshot::Discovered;
use crate::store::{Backend, BackendError};
use config::Resource;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use model::{Endpoint, Identity, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The API groups of the mesh APIs whose custom resources are watched when installed; which of
/// each group's resources, [`super::CLUSTER_ACCESS`] says (those it may watch).
pub const MESH_API_GROUPS: &[&str] = &[
    "networking.istio.io",
    "security.istio.io",
    "gateway.networking.k8s.io",
    "policy.linkerd.io",
    "linkerd.io",
    "split.smi-spec.io",
    "weft.dev",
];

/// The core kinds every control plane on a cluster follows: (group, resource).
pub const CORE_WATCHES: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "services"),
    ("", "pods"),
    ("discovery.k8s.io", "endpointslices"),
];

/// How long a change waits for the ones that come with it (a Deployment's pods becoming ready
/// together) before the resources are compiled again.
const SETTLE: Duration = Duration::from_millis(100);

/// How often the groups of mesh APIs not installed yet are looked for again.
const REDISCOVER: Duration = Duration::from_secs(30);

/// The Mesh document of a control plane on a cluster given no files: the mesh-wide defaults.
const DEFAULT_MESH: &str =
    "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: kubernetes\nspec: {}\n";

/// The resources of a control plane on a cluster given no files: the default Mesh document.
pub fn default_mesh() -> config::Store {
    config::Store {
        resources: config::resources(Path::new("<kubernetes>"), DEFAULT_MESH),
    }
}

/// The name the Mesh document made of the cluster's Services carries in diagnostics.
pub const SERVICES_FILE: &str = "services (the cluster's)";

/// The mesh APIs' resources this control plane may watch, by group: from
/// [`super::CLUSTER_ACCESS`], so that what is watched and what RBAC grants are one list.
pub fn mesh_api_resources(group: &str) -> BTreeSet<&'static str> {
    super::CLUSTER_ACCESS
        .iter()
        .filter(|a| a.group == group && a.verbs.contains(&"watch"))
        .flat_map(|a| a.resources.iter().copied())
        .filter(|r| !r.contains('/'))
        .collect()
}

/// One object of a followed kind.
#[derive(Clone, Debug)]
enum Object {
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    Pod(Box<Pod>),
    Slice(Box<EndpointSlice>),
    Custom(Arc<ApiResource>, Box<DynamicObject>),
}

/// What the watches know: each followed kind's objects by (namespace, name), and which kinds
/// have been listed once.
#[derive(Default)]
struct Known {
    kinds: BTreeMap<String, BTreeMap<(String, String), Object>>,
    listed: BTreeSet<String>,
}

/// The state the watches share with the task that compiles it.
struct Shared {
    known: Mutex<Known>,
    changed: tokio::sync::Notify,
    /// Every mesh API has been found or is known not to be installed.
    discovered: std::sync::atomic::AtomicBool,
    /// The first compilation after every followed kind was listed has been handed over.
    compiled: tokio::sync::watch::Sender<bool>,
    /// Kinds being followed; `listed` catching up with it is the first sync.
    followed: Mutex<BTreeSet<String>>,
    /// The custom kinds the cluster serves, by (group, kind).
    served: Mutex<BTreeMap<(String, String), Arc<ApiResource>>>,
    /// Every mesh API is settled and every kind followed has been listed.
    synced: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.followed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_synced(&self) {
        let followed = self.followed().clone();
        let listed = self.known().listed.clone();
        let discovered = self.discovered.load(std::sync::atomic::Ordering::Acquire);
        if discovered && followed.is_subset(&listed) {
            self.synced
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// The resources in force on a cluster: what the watches compiled last. A change through the
/// control plane's API is refused (the cluster's objects change through the Kubernetes API),
/// except a rollout's: the canary controller's moves of the routes it owns are written to the
/// cluster's objects.
pub struct ClusterResources {
    store: Mutex<config::Store>,
    shared: Arc<Shared>,
    client: kube::Client,
    leader: super::lease::Leader,
}

#[tonic::async_trait]
impl Backend for ClusterResources {
    fn load(&self) -> config::Store {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn save(
        &self,
        base: &config::Store,
        next: &config::Store,
    ) -> Result<Option<u64>, BackendError> {
        let changes = changed(base, next);
        let owned = |r: &Option<&Resource>| r.is_some_and(|r| crate::canary::owner_of(r).is_some());
        if !changes.iter().any(|(b, a)| owned(b) || owned(a)) {
            return Err(BackendError(
                "on Kubernetes the resources are the cluster's: change them with `kubectl apply` \
                 or `kubectl delete`"
                    .to_string(),
            ));
        }
        for (before, after) in changes {
            self.write(before, after).await?;
        }
        *self.store.lock().unwrap_or_else(|p| p.into_inner()) = next.clone();
        Ok(None)
    }

    fn runs_controllers(&self) -> bool {
        self.leader.is_leader()
    }
}

/// The resources that differ between `base` and `next`: (before, after), `None` where there
/// is none.
fn changed<'a>(
    base: &'a config::Store,
    next: &'a config::Store,
) -> Vec<(Option<&'a Resource>, Option<&'a Resource>)> {
    let before: BTreeMap<_, &Resource> = base.resources.iter().map(|r| (r.key(), r)).collect();
    let after: BTreeMap<_, &Resource> = next.resources.iter().map(|r| (r.key(), r)).collect();
    let keys: BTreeSet<_> = before.keys().chain(after.keys()).cloned().collect();
    keys.into_iter()
        .filter_map(|k| {
            let (b, a) = (before.get(&k).copied(), after.get(&k).copied());
            (b.map(|r| &r.text) != a.map(|r| &r.text)).then_some((b, a))
        })
        .collect()
}

impl ClusterResources {
    /// Writes one resource's change to the cluster: replaced (with the resourceVersion last
    /// seen, so a change made meanwhile is not overwritten), created or deleted; what the API
    /// answers is what the watches know from then on.
    async fn write(
        &self,
        before: Option<&Resource>,
        after: Option<&Resource>,
    ) -> Result<(), BackendError> {
        let r = after
            .or(before)
            .ok_or_else(|| BackendError("nothing to write".into()))?;
        let what = format!("{} {}/{}", r.kind, r.namespace, r.name);
        let ar = self
            .shared
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(r.group().to_string(), r.kind.clone()))
            .cloned()
            .ok_or_else(|| BackendError(format!("{what}: the cluster does not serve its kind")))?;
        let kind_name = format!("{}.{}", ar.plural, ar.group);
        let key = (r.namespace.clone(), r.name.clone());
        let seen = self
            .shared
            .known()
            .kinds
            .get(&kind_name)
            .and_then(|objects| objects.get(&key))
            .and_then(|o| match o {
                Object::Custom(_, o) => o.metadata.resource_version.clone(),
                _ => None,
            });
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &r.namespace, &*ar);
        let failed = |e: kube::Error| match e {
            kube::Error::Api(e) if e.code == 409 => BackendError(format!(
                "{what} changed in the cluster meanwhile; try again"
            )),
            e => BackendError(format!("{what}: {e}")),
        };
        let Some(after) = after else {
            api.delete(&r.name, &kube::api::DeleteParams::default())
                .await
                .map_err(failed)?;
            if let Some(objects) = self.shared.known().kinds.get_mut(&kind_name) {
                objects.remove(&key);
            }
            self.shared.changed.notify_one();
            return Ok(());
        };
        let mut value: serde_json::Value = serde_yaml_ng::from_str(&after.text)
            .map_err(|e| BackendError(format!("{what}: {e}")))?;
        match &seen {
            Some(rv) => value["metadata"]["resourceVersion"] = rv.clone().into(),
            None => {
                if let Some(m) = value["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
            }
        }
        let obj: DynamicObject =
            serde_json::from_value(value).map_err(|e| BackendError(format!("{what}: {e}")))?;
        let params = kube::api::PostParams::default();
        let written = match seen {
            Some(_) => api.replace(&r.name, &params, &obj).await,
            None => api.create(&params, &obj).await,
        }
        .map_err(failed)?;
        self.shared
            .known()
            .kinds
            .entry(kind_name)
            .or_default()
            .insert(key, Object::Custom(ar, Box::new(written)));
        self.shared.changed.notify_one();
        Ok(())
    }
}

/// A control plane's view of its cluster, kept current by the watches.
pub struct Cluster {
    pub resources: Arc<ClusterResources>,
    shared: Arc<Shared>,
}

impl Cluster {
    /// Starts following the cluster `client` speaks to: the core kinds, and the mesh APIs that
    /// are installed (looked for again every 30 s while some are not). `seed` (the files the
    /// control plane was given: a Mesh document with the mesh-wide settings, resources that are
    /// not the cluster's) is part of every compilation. Each change is compiled and handed to
    /// `registry`.
    pub async fn start(
        client: kube::Client,
        seed: config::Store,
        registry: Arc<Registry>,
        leader: super::lease::Leader,
        identity: String,
    ) -> Cluster {
        let shared = Arc::new(Shared {
            known: Mutex::new(Known::default()),
            changed: tokio::sync::Notify::new(),
            followed: Mutex::new(BTreeSet::new()),
            served: Mutex::new(BTreeMap::new()),
            synced: std::sync::atomic::AtomicBool::new(false),
            compiled: tokio::sync::watch::Sender::new(false),
            discovered: std::sync::atomic::AtomicBool::new(false),
        });
        follow(
            &shared,
            "namespaces".into(),
            Api::<Namespace>::all(client.clone()),
            |o| Object::Namespace(Box::new(o)),
        );
        follow(
            &shared,
            "services".into(),
            Api::<Service>::all(client.clone()),
            |o| Object::Service(Box::new(o)),
        );
        follow(
            &shared,
            "pods".into(),
            Api::<Pod>::all(client.clone()),
            |o| Object::Pod(Box::new(o)),
        );
        follow(
            &shared,
            "endpointslices".into(),
            Api::<EndpointSlice>::all(client.clone()),
            |o| Object::Slice(Box::new(o)),
        );
        tokio::spawn(discover(shared.clone(), client.clone()));
        let resources = Arc::new(ClusterResources {
            store: Mutex::new(seed.clone()),
            shared: shared.clone(),
            client: client.clone(),
            leader: leader.clone(),
        });
        let writer = StatusWriter {
            client,
            leader,
            identity,
        };
        tokio::spawn(compile_changes(
            shared.clone(),
            seed,
            registry,
            resources.clone(),
            writer,
        ));
        Cluster { resources, shared }
    }

    /// Waits until every kind followed has been listed once and what they hold has been
    /// compiled and handed to the registry (or `within` passed): whether it has.
    pub async fn synced(&self, within: Duration) -> bool {
        let mut rx = self.shared.compiled.subscribe();
        tokio::time::timeout(within, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Finds which mesh APIs the cluster serves and follows them: every group is looked for until
/// it is found or known not to be installed (an API server that does not answer is asked
/// again every second), which the first sync waits for; those not installed are looked for
/// again every 30 s.
async fn discover(shared: Arc<Shared>, client: kube::Client) {
    let mut pending: Vec<&str> = MESH_API_GROUPS.to_vec();
    let mut missing = Vec::new();
    while !pending.is_empty() {
        let mut again = Vec::new();
        for group in pending {
            match follow_group(&shared, &client, group).await {
                Lookup::Followed => {}
                Lookup::NotInstalled => missing.push(group),
                Lookup::Unreachable => again.push(group),
            }
        }
        pending = again;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    shared
        .discovered
        .store(true, std::sync::atomic::Ordering::Release);
    shared.check_synced();
    while !missing.is_empty() {
        tokio::time::sleep(REDISCOVER).await;
        let mut still = Vec::new();
        for group in missing {
            if !matches!(
                follow_group(&shared, &client, group).await,
                Lookup::Followed
            ) {
                still.push(group);
            }
        }
        missing = still;
    }
}

/// What looking for a mesh API found.
enum Lookup {
    Followed,
    NotInstalled,
    /// The API server did not answer (or not as one does): look again.
    Unreachable,
}

/// Follows the resources of the mesh API `group` that [`super::CLUSTER_ACCESS`] lets us watch,
/// at the most stable version the cluster serves each.
async fn follow_group(shared: &Arc<Shared>, client: &kube::Client, group: &str) -> Lookup {
    let wanted = mesh_api_resources(group);
    let found = match kube::discovery::group(client, group).await {
        Ok(found) => found,
        Err(kube::Error::Discovery(e)) => {
            tracing::debug!(group, error = %e, "mesh API not installed");
            return Lookup::NotInstalled;
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::debug!(group, error = %e, "mesh API not installed");
            return Lookup::NotInstalled;
        }
        Err(e) => {
            tracing::warn!(group, error = %e, "cannot look for a mesh API; trying again");
            return Lookup::Unreachable;
        }
    };
    for (ar, caps) in found.resources_by_stability() {
        if !wanted.contains(ar.plural.as_str()) || !caps.supports_operation("watch") {
            continue;
        }
        tracing::info!(group, resource = %ar.plural, version = %ar.version, "watching");
        let name = format!("{}.{}", ar.plural, ar.group);
        let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
        let ar = Arc::new(ar);
        shared
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ar.group.clone(), ar.kind.clone()), ar.clone());
        follow(shared, name, api, move |o| {
            Object::Custom(ar.clone(), Box::new(o))
        });
    }
    Lookup::Followed
}

/// Follows one kind: its objects kept in `shared` under `kind` (replaced as a whole by each
/// complete list), every change announced.
fn follow<K>(
    shared: &Arc<Shared>,
    kind: String,
    api: Api<K>,
    wrap: impl Fn(K) -> Object + Send + 'static,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    shared.followed().insert(kind.clone());
    shared
        .synced
        .store(false, std::sync::atomic::Ordering::Release);
    let shared = shared.clone();
    tokio::spawn(async move {
        let key = |o: &K| {
            let m = o.meta();
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing: BTreeMap<(String, String), Object> = BTreeMap::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listing.clear(),
                watcher::Event::InitApply(o) => {
                    listing.insert(key(&o), wrap(o));
                }
                watcher::Event::InitDone => {
                    {
                        let mut known = shared.known();
                        known
                            .kinds
                            .insert(kind.clone(), std::mem::take(&mut listing));
                        known.listed.insert(kind.clone());
                    }
                    tracing::debug!(kind = %kind, "listed");
                    shared.check_synced();
                    shared.changed.notify_one();
                }
                watcher::Event::Apply(o) => {
                    let k = key(&o);
                    shared
                        .known()
                        .kinds
                        .entry(kind.clone())
                        .or_default()
                        .insert(k, wrap(o));
                    shared.changed.notify_one();
                }
                watcher::Event::Delete(o) => {
                    let k = key(&o);
                    if let Some(objects) = shared.known().kinds.get_mut(&kind) {
                        objects.remove(&k);
                    }
                    shared.changed.notify_one();
                }
            }
        }
    });
}

/// Compiles what the watches know after each change (those that come together, together) and
/// hands it to the registry; a compilation that fails as a whole leaves the last one serving.
async fn compile_changes(
    shared: Arc<Shared>,
    seed: config::Store,
    registry: Arc<Registry>,
    resources: Arc<ClusterResources>,
    writer: StatusWriter,
) {
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut checked = Checks::default();
    let mut leader = writer.leader.clone();
    loop {
        tokio::select! {
            _ = shared.changed.notified() => {}
            // A new leader writes the status its predecessor may have left stale.
            leads = leader.changed() => if !leads { continue },
        }
        tokio::time::sleep(SETTLE).await;
        let synced = shared.synced.load(std::sync::atomic::Ordering::Acquire);
        let trust_domain = registry.trust_domain();
        let leads = writer.leader.is_leader();
        let (view, routes) = {
            let known = shared.known();
            let routes = if leads { routes_of(&known) } else { Vec::new() };
            (View::of(&known, &trust_domain), routes)
        };
        let compiled = compile(&seed, &view, &mut checked);
        let now: BTreeSet<String> = compiled.problems.iter().cloned().collect();
        for p in now.difference(&reported) {
            tracing::warn!("{p}");
        }
        reported = now;
        match compiled.loaded {
            Some((store, loaded)) => {
                registry.set_traffic_discovered(loaded.mesh.clone(), view.discovered);
                if leads {
                    let stated = crate::store::stated(&store, &loaded);
                    writer.write(&routes, &stated, &compiled.problems).await;
                }
                *resources.store.lock().unwrap_or_else(|p| p.into_inner()) = store;
                if synced {
                    shared.compiled.send_replace(true);
                }
            }
            None => tracing::warn!(
                "the cluster's resources do not compile as a whole; the last set that did keeps serving"
            ),
        }
    }
}

/// The controller name of this mesh in routes' `status.parents`.
pub const CONTROLLER_NAME: &str = "weft.dev/control-plane";

/// The kinds whose status Gateway API expects a mesh to write.
const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

/// The Gateway API routes the watches know, with their API resource.
fn routes_of(known: &Known) -> Vec<(Arc<ApiResource>, DynamicObject)> {
    known
        .kinds
        .values()
        .flat_map(|objects| objects.values())
        .filter_map(|o| match o {
            Object::Custom(ar, obj)
                if ar.group == "gateway.networking.k8s.io"
                    && ROUTE_KINDS.contains(&ar.kind.as_str()) =>
            {
                Some((ar.clone(), (**obj).clone()))
            }
            _ => None,
        })
        .collect()
}

/// Writes routes' status (the leader does).
struct StatusWriter {
    client: kube::Client,
    leader: super::lease::Leader,
    /// This replica's name, as the field manager of its writes.
    identity: String,
}

impl StatusWriter {
    /// Writes each route's status where it differs from what the route has.
    async fn write(
        &self,
        routes: &[(Arc<ApiResource>, DynamicObject)],
        stated: &[crate::store::Stated],
        problems: &[String],
    ) {
        for (ar, route) in routes {
            let (Some(name), Some(ns)) = (&route.metadata.name, &route.metadata.namespace) else {
                continue;
            };
            let file = PathBuf::from(format!("{}.{}/{ns}/{name}", ar.plural, ar.group));
            let state = stated.iter().find(|s| s.resource.file == file);
            let problems: Vec<String> = problems
                .iter()
                .filter(|p| p.contains(&format!("{}:", file.display())))
                .cloned()
                .collect();
            let current = route.data["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let Some(parents) = route_parents(route, state, &problems, &current) else {
                continue;
            };
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &**ar);
            let params = kube::api::PatchParams {
                field_manager: Some(self.identity.clone()),
                ..Default::default()
            };
            let patch = serde_json::json!({"status": {"parents": parents}});
            match api
                .patch_status(name, &params, &kube::api::Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(kind = %ar.kind, route = %format!("{ns}/{name}"), "status written")
                }
                Err(e) => {
                    tracing::warn!(kind = %ar.kind, route = %format!("{ns}/{name}"), error = %e, "cannot write status")
                }
            }
        }
    }
}

/// A route's `status.parents` with this controller's entry for each of its `parentRefs` (the
/// other controllers' entries as they are), or `None` when that is what it has.
fn route_parents(
    route: &DynamicObject,
    state: Option<&crate::store::Stated>,
    problems: &[String],
    current: &[serde_json::Value],
) -> Option<Vec<serde_json::Value>> {
    use crate::store::State;
    let refs = route.data["spec"]["parentRefs"].as_array()?;
    let generation = route.metadata.generation;
    let reasons: Vec<String> = match state {
        Some(s) => s.reasons.clone(),
        None => problems.to_vec(),
    };
    let message = reasons.join("; ");
    let not_found = |field: &str| {
        reasons
            .iter()
            .any(|r| r.contains(field) && r.contains("not a service of the mesh"))
    };
    let (accepted, accepted_reason) = match state.map(|s| s.state) {
        Some(State::Applied) => (true, "Accepted"),
        _ if not_found("parentRefs") => (false, "NoMatchingParent"),
        _ => (false, "UnsupportedValue"),
    };
    let (resolved, resolved_reason) = if not_found("backendRefs") {
        (false, "BackendNotFound")
    } else {
        (true, "ResolvedRefs")
    };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |kind: &str, ok: bool, reason: &str, parent_ref: &serde_json::Value| {
        let message = if ok { String::new() } else { message.clone() };
        // The transition time stays while the condition does.
        let since = current
            .iter()
            .filter(|p| p["controllerName"] == CONTROLLER_NAME && &p["parentRef"] == parent_ref)
            .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
            .find(|c| c["type"] == kind && c["status"] == if ok { "True" } else { "False" })
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.clone());
        serde_json::json!({
            "type": kind,
            "status": if ok { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": since,
        })
    };
    let mut parents: Vec<serde_json::Value> = current
        .iter()
        .filter(|p| p["controllerName"] != CONTROLLER_NAME)
        .cloned()
        .collect();
    for parent_ref in refs {
        parents.push(serde_json::json!({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": [
                condition("Accepted", accepted, accepted_reason, parent_ref),
                condition("ResolvedRefs", resolved, resolved_reason, parent_ref),
            ],
        }));
    }
    (parents != current).then_some(parents)
}

/// The cluster's state as the mesh sees it: its services (as Mesh-file entries), their
/// endpoints and virtual IPs, and the custom resources.
#[derive(Debug, Default)]
struct View {
    services: Vec<serde_json::Value>,
    discovered: Discovered,
    custom: Vec<Resource>,
}

impl View {
    fn of(known: &Known, trust_domain: &str) -> View {
        let empty = BTreeMap::new();
        let kind = |k: &str| known.kinds.get(k).unwrap_or(&empty);
        let pods: BTreeMap<&(String, String), &Pod> = kind("pods")
            .iter()
            .filter_map(|(k, o)| match o {
                Object::Pod(p) => Some((k, &**p)),
                _ => None,
            })
            .collect();
        let opted_in: BTreeSet<&str> = kind("namespaces")
            .values()
            .filter_map(|o| match o {
                Object::Namespace(n) => Some(n),
                _ => None,
            })
            .filter(|n| namespace_opts_in(n))
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        // Each service's endpoints, and which services have a meshed pod behind them.
        let mut endpoints: BTreeMap<ServiceKey, BTreeMap<String, Endpoint>> = BTreeMap::new();
        let mut meshed: BTreeSet<ServiceKey> = BTreeSet::new();
        for o in kind("endpointslices").values() {
            let Object::Slice(slice) = o else { continue };
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            else {
                continue;
            };
            let key = ServiceKey::new(service, &ns);
            for ep in &slice.endpoints {
                let Some(pod) = ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone())
                    .and_then(|name| pods.get(&(ns.clone(), name)).copied())
                else {
                    continue;
                };
                if !is_meshed(pod) {
                    continue;
                }
                meshed.insert(key.clone());
                let conditions = ep.conditions.as_ref();
                // `ready` unset means ready, as the API documents it.
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                    && !conditions.and_then(|c| c.terminating).unwrap_or(false);
                let address = ep
                    .addresses
                    .iter()
                    .find_map(|a| a.parse::<std::net::IpAddr>().ok());
                let (true, Some(address)) = (ready, address) else {
                    continue;
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                let labels: model::Labels = pod
                    .metadata
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let account = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".to_string());
                let workload = labels
                    .get("app")
                    .or_else(|| labels.get("app.kubernetes.io/name"))
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                endpoints.entry(key.clone()).or_default().insert(
                    name.clone(),
                    Endpoint {
                        instance: name,
                        workload,
                        address: std::net::SocketAddr::new(address, model::names::POD_INBOUND_PORT),
                        labels,
                        identity: Identity::spiffe_in(trust_domain, &ns, &account),
                    },
                );
            }
        }
        let mut view = View::default();
        for o in kind("services").values() {
            let Object::Service(s) = o else { continue };
            let (Some(name), Some(ns)) = (&s.metadata.name, &s.metadata.namespace) else {
                continue;
            };
            let key = ServiceKey::new(name, ns);
            if !meshed.contains(&key) && !opted_in.contains(ns.as_str()) {
                continue;
            }
            let Some(entry) = service_entry(s) else {
                continue;
            };
            view.services.push(entry);
            if let Some(ip) = s
                .spec
                .as_ref()
                .and_then(|sp| sp.cluster_ip.as_deref())
                .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            {
                view.discovered.vips.insert(key.clone(), ip);
            }
            let eps = endpoints.remove(&key).unwrap_or_default();
            view.discovered
                .endpoints
                .insert(key, eps.into_values().collect());
        }
        for (kind_name, objects) in &known.kinds {
            for o in objects.values() {
                if let Object::Custom(ar, obj) = o {
                    if let Some(r) = custom_resource(kind_name, ar, obj) {
                        view.custom.push(r);
                    }
                }
            }
        }
        view
    }
}

/// Whether a Namespace opts into injection (`istio-injection=enabled`, `linkerd.io/inject:
/// enabled`…).
fn namespace_opts_in(n: &Namespace) -> bool {
    serde_yaml_ng::to_value(&n.metadata)
        .ok()
        .and_then(|m| config::inject::opts_in(&m))
        .unwrap_or(false)
}

/// Whether the injector gave a pod its sidecar.
fn is_meshed(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(config::inject::INJECTED));
    let has_sidecar = pod.spec.as_ref().is_some_and(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
            .any(|c| c.name == config::inject::SIDECAR)
    });
    annotated || has_sidecar
}

/// A Service as an entry of the Mesh document's `services`: its TCP ports (named, with their
/// `appProtocol`), labels and the mesh's annotations on it; `None` for an ExternalName Service
/// or one without TCP ports.
fn service_entry(s: &Service) -> Option<serde_json::Value> {
    let spec = s.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let ports: Vec<serde_json::Value> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let mut e = serde_json::json!({ "port": port });
            if let Some(name) = &p.name {
                e["name"] = name.clone().into();
            }
            if let Some(app) = &p.app_protocol {
                e["appProtocol"] = app.clone().into();
            }
            Some(e)
        })
        .collect();
    if ports.is_empty() {
        return None;
    }
    let mut entry = serde_json::json!({
        "name": s.metadata.name,
        "namespace": s.metadata.namespace,
        "ports": ports,
    });
    let mesh_annotations: BTreeMap<&String, &String> = s
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.contains("linkerd.io/") || k.contains("istio.io/"))
        .collect();
    if !mesh_annotations.is_empty() {
        entry["annotations"] = serde_json::to_value(mesh_annotations).unwrap_or_default();
    }
    if let Some(labels) = s.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        entry["labels"] = serde_json::to_value(labels).unwrap_or_default();
    }
    Some(entry)
}

/// A custom resource as YAML (header, name, namespace, labels, annotations, `spec`), named
/// `PLURAL.GROUP/NAMESPACE/NAME` for its diagnostics.
fn custom_resource(kind_name: &str, ar: &ApiResource, o: &DynamicObject) -> Option<Resource> {
    let name = o.metadata.name.clone()?;
    let ns = o
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| model::names::DEFAULT_NAMESPACE.to_string());
    let mut metadata = serde_json::json!({ "name": name, "namespace": ns });
    if let Some(t) = &o.metadata.creation_timestamp {
        metadata["creationTimestamp"] = serde_json::to_value(t).unwrap_or_default();
    }
    if let Some(labels) = o.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        metadata["labels"] = serde_json::to_value(labels).unwrap_or_default();
    }
    let annotations: BTreeMap<&String, &String> = o
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
        .collect();
    if !annotations.is_empty() {
        metadata["annotations"] = serde_json::to_value(annotations).unwrap_or_default();
    }
    let mut doc = serde_json::json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": metadata,
    });
    if let Some(spec) = o.data.get("spec") {
        doc["spec"] = spec.clone();
    }
    let text = serde_yaml_ng::to_string(&doc).ok()?;
    let file = PathBuf::from(format!("{kind_name}/{ns}/{name}"));
    config::resources(&file, &text).into_iter().next()
}

/// What a compilation gave: the store and what it loaded to (`None`: it failed as a whole), and
/// the problems found on the way (resources left out, with their located errors).
struct Compiled {
    loaded: Option<(config::Store, config::Loaded)>,
    problems: Vec<String>,
}

/// The seed with the cluster's services added to its Mesh document (one is made when it has
/// none) and the custom resources applied over it; a resource that does not validate is left
/// out (each custom resource is checked alone first, then the whole set, leaving out those the
/// errors name).
fn compile(seed: &config::Store, view: &View, checked: &mut Checks) -> Compiled {
    let mut problems = Vec::new();
    let mut resources: Vec<Resource> = seed
        .resources
        .iter()
        .filter(|r| r.kind != "Mesh")
        .cloned()
        .collect();
    // Each Service checked alone first (a Mesh document of it), so that one the mesh cannot
    // take is left out rather than the whole set.
    let mut services = Vec::new();
    for entry in &view.services {
        let alone = || {
            let doc = mesh_document(&config::Store::default(), std::slice::from_ref(entry));
            config::Store {
                resources: vec![doc],
            }
        };
        match checked.check(entry.to_string(), alone) {
            None => services.push(entry.clone()),
            Some(why) => problems.push(format!(
                "Service {}/{} left out: {why}",
                entry["namespace"].as_str().unwrap_or_default(),
                entry["name"].as_str().unwrap_or_default()
            )),
        }
    }
    resources.push(mesh_document(seed, &services));
    let mut store = config::Store { resources }.applied(Vec::new());
    let mut custom = Vec::new();
    for r in &view.custom {
        let alone = || config::Store {
            resources: vec![r.clone()],
        };
        match checked.check(format!("{}\n{}", r.file.display(), r.text), alone) {
            None => custom.push(r.clone()),
            Some(errors) => problems.push(format!(
                "{} {}/{} left out: {errors}",
                r.kind, r.namespace, r.name
            )),
        }
    }
    store = store.applied(custom);
    for _ in 0..4 {
        match store.load() {
            Ok(loaded) => {
                for d in &loaded.rejected {
                    problems.push(format!("rejected: {d}"));
                }
                return Compiled {
                    loaded: Some((store, loaded)),
                    problems,
                };
            }
            Err(errors) => {
                let blamed: BTreeSet<&Path> = errors.0.iter().map(|d| d.file.as_path()).collect();
                let (out, kept): (Vec<Resource>, Vec<Resource>) = store
                    .resources
                    .iter()
                    .cloned()
                    .partition(|r| blamed.contains(r.file.as_path()) && r.kind != "Mesh");
                if out.is_empty() {
                    problems.push(format!("the cluster's resources do not compile: {errors}"));
                    break;
                }
                for r in &out {
                    problems.push(format!(
                        "{} {}/{} left out: {errors}",
                        r.kind, r.namespace, r.name
                    ));
                }
                store = config::Store { resources: kept };
            }
        }
    }
    Compiled {
        loaded: None,
        problems,
    }
}

/// What each Service's entry and each custom resource gave when loaded alone (`Some`: its
/// errors), kept while it is the same: a change to one object checks only that one again.
#[derive(Default)]
struct Checks(std::collections::HashMap<String, Option<String>>);

impl Checks {
    /// The errors of `alone()` loaded, for the object whose text is `key`.
    fn check(&mut self, key: String, alone: impl FnOnce() -> config::Store) -> Option<String> {
        if let Some(known) = self.0.get(&key) {
            return known.clone();
        }
        let verdict = alone().load().err().map(|e| e.to_string());
        // Objects come and go: the cache holds what the cluster has now, give or take.
        if self.0.len() > 10_000 {
            self.0.clear();
        }
        self.0.insert(key, verdict.clone());
        verdict
    }
}

/// The Mesh document: the seed's (its name and mesh-wide settings, its own services) with the
/// cluster's services added (a cluster's Service replaces a seed service of the same name and
/// namespace), or one named `kubernetes` with only those.
fn mesh_document(seed: &config::Store, cluster: &[serde_json::Value]) -> Resource {
    let seed_mesh = seed.resources.iter().find(|r| r.kind == "Mesh");
    let mut doc: serde_json::Value = seed_mesh
        .and_then(|r| serde_yaml_ng::from_str(&r.text).ok())
        .or_else(|| serde_yaml_ng::from_str(DEFAULT_MESH).ok())
        .unwrap_or_default();
    let key = |v: &serde_json::Value| {
        (
            v["name"].as_str().unwrap_or_default().to_string(),
            v["namespace"]
                .as_str()
                .unwrap_or(model::names::DEFAULT_NAMESPACE)
                .to_string(),
        )
    };
    let theirs: BTreeSet<(String, String)> = cluster.iter().map(key).collect();
    let mut services: Vec<serde_json::Value> = doc["spec"]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !theirs.contains(&key(s)))
        .collect();
    services.extend(cluster.iter().cloned());
    doc["spec"]["services"] = serde_json::Value::Array(services);
    let text = serde_yaml_ng::to_string(&doc).unwrap_or_default();
    let file = match seed_mesh {
        Some(r) if r.file != Path::new("<kubernetes>") => {
            PathBuf::from(format!("{} + {SERVICES_FILE}", r.file.display()))
        }
        _ => PathBuf::from(SERVICES_FILE),
    };
    config::resources(&file, &text)
        .into_iter()
        .next()
        .unwrap_or_else(|| Resource {
            kind: "Mesh".into(),
            api_version: "weft.dev/v1alpha1".into(),
            namespace: String::new(),
            name: "kubernetes".into(),
            file,
            first_line: 1,
            text,
        })
}

#[cfg(test)]
mod tests {
    //! What the watches use is what RBAC grants; the cluster's objects become a mesh.
    use super::*;

    #[test]
    fn every_watch_is_granted_and_every_read_grant_is_watched_or_used() {
        let granted = |group: &str, resource: &str, verb: &str| {
            super::super::CLUSTER_ACCESS.iter().any(|a| {
                a.group == group && a.resources.contains(&resource) && a.verbs.contains(&verb)
            })
        };
        for (group, resource) in CORE_WATCHES {
            for verb in ["list", "watch"] {
                assert!(granted(group, resource, verb), "{verb} {group}/{resource}");
            }
        }
        for a in super::super::CLUSTER_ACCESS {
            if !a.verbs.contains(&"watch") {
                continue;
            }
            for r in a.resources {
                let watched = CORE_WATCHES.contains(&(a.group, *r))
                    || MESH_API_GROUPS.contains(&a.group)
                    // The roots' ConfigMaps, kept by `ca_roots`.
                    || (a.group.is_empty() && *r == "configmaps");
                assert!(
                    watched,
                    "{}/{r} is granted watch but nothing watches it",
                    a.group
                );
            }
        }
    }

    fn pod(name: &str, ns: &str, meshed: bool, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "reviews", "version": "v1"},
                          "annotations": if meshed { serde_json::json!({"weft.dev/injected": "true"}) } else { serde_json::json!({}) }},
            "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{"name": "reviews"}]},
            "status": {"podIP": ip},
        }))
        .unwrap()
    }

    fn known(objects: Vec<(&str, Object)>) -> Known {
        let mut known = Known::default();
        for (kind, o) in objects {
            let meta = match &o {
                Object::Namespace(n) => n.metadata.clone(),
                Object::Service(s) => s.metadata.clone(),
                Object::Pod(p) => p.metadata.clone(),
                Object::Slice(s) => s.metadata.clone(),
                Object::Custom(_, c) => c.metadata.clone(),
            };
            known.kinds.entry(kind.to_string()).or_default().insert(
                (
                    meta.namespace.unwrap_or_default(),
                    meta.name.unwrap_or_default(),
                ),
                o,
            );
        }
        known
    }

    #[test]
    fn a_service_with_meshed_pods_is_in_the_mesh_with_their_ready_endpoints() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reviews", "namespace": "bookinfo",
                         "annotations": {"config.linkerd.io/opaque-ports": "3306", "other": "x"}},
            "spec": {"clusterIP": "10.96.0.17", "ports": [
                {"name": "http", "port": 9080, "targetPort": 9080},
                {"name": "dns", "port": 53, "protocol": "UDP"}]},
        }))
        .unwrap();
        let plain: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mysql", "namespace": "bookinfo"},
            "spec": {"clusterIP": "10.96.0.18", "ports": [{"port": 3306}]},
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reviews-abc", "namespace": "bookinfo",
                         "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "reviews-1", "namespace": "bookinfo"}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "reviews-2", "namespace": "bookinfo"}},
                {"addresses": ["10.244.0.7"],
                 "targetRef": {"kind": "Pod", "name": "reviews-3", "namespace": "bookinfo"}},
            ],
        }))
        .unwrap();
        let mysql_slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mysql-abc", "namespace": "bookinfo",
                         "labels": {"kubernetes.io/service-name": "mysql"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.9"],
                 "targetRef": {"kind": "Pod", "name": "mysql-1", "namespace": "bookinfo"}}],
        }))
        .unwrap();
        let known = known(vec![
            ("services", Object::Service(Box::new(service))),
            ("services", Object::Service(Box::new(plain))),
            ("endpointslices", Object::Slice(Box::new(slice))),
            ("endpointslices", Object::Slice(Box::new(mysql_slice))),
            (
                "pods",
                Object::Pod(Box::new(pod("reviews-1", "bookinfo", true, "10.244.0.5"))),
            ),
            (
                "pods",
                Object::Pod(Box::new(pod("reviews-2", "bookinfo", true, "10.244.0.6"))),
            ),
            (
                "pods",
                Object::Pod(Box::new(pod("reviews-3", "bookinfo", false, "10.244.0.7"))),
            ),
            (
                "pods",
                Object::Pod(Box::new(pod("mysql-1", "bookinfo", false, "10.244.0.9"))),
            ),
        ]);
        let view = View::of(&known, "example.org");
        assert_eq!(view.services.len(), 1, "{:?}", view.services);
        assert_eq!(
            view.services[0],
            serde_json::json!({"name": "reviews", "namespace": "bookinfo",
                "ports": [{"port": 9080, "name": "http"}],
                "annotations": {"config.linkerd.io/opaque-ports": "3306"}})
        );
        let key = ServiceKey::new("reviews", "bookinfo");
        let eps = &view.discovered.endpoints[&key];
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].address, "10.244.0.5:15006".parse().unwrap());
        assert_eq!(
            eps[0].identity.0,
            "spiffe://example.org/ns/bookinfo/sa/bookinfo-reviews"
        );
        assert_eq!(eps[0].labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(
            view.discovered.vips[&key],
            "10.96.0.17".parse::<std::net::Ipv4Addr>().unwrap()
        );
        let compiled = compile(&config::Store::default(), &view, &mut Checks::default());
        let (_, loaded) = compiled.loaded.expect("compiles");
        let mesh = loaded.mesh.expect("a mesh");
        assert_eq!(mesh.name, "kubernetes");
        assert_eq!(mesh.services.len(), 1);
        assert_eq!(mesh.services[0].port, 9080);
    }

    #[test]
    fn a_service_the_mesh_cannot_take_is_left_out_and_the_rest_applies() {
        let view = View {
            services: vec![
                serde_json::json!({"name": "reviews", "namespace": "bookinfo", "ports": [{"port": 9080, "name": "http"}]}),
                serde_json::json!({"name": "odd", "namespace": "bookinfo",
                    "ports": [{"port": 80, "name": "http"}, {"port": 81, "name": "http"}]}),
            ],
            ..View::default()
        };
        let mut checked = Checks::default();
        let compiled = compile(&config::Store::default(), &view, &mut checked);
        let (_, loaded) = compiled.loaded.expect("the rest compiles");
        let names: Vec<String> = loaded
            .mesh
            .unwrap()
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["reviews"]);
        assert!(
            compiled
                .problems
                .iter()
                .any(|p| p.starts_with("Service bookinfo/odd left out: ")),
            "{:?}",
            compiled.problems
        );
        assert_eq!(checked.0.len(), 2, "each entry checked once and kept");
    }

    #[test]
    fn a_custom_resource_that_does_not_validate_is_left_out_and_the_rest_applies() {
        let ar = Arc::new(ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "VirtualService".into(),
            plural: "virtualservices".into(),
        });
        let vs = |name: &str, spec: serde_json::Value| {
            let o: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "bookinfo", "resourceVersion": "7",
                             "managedFields": [{"manager": "kubectl"}]},
                "spec": spec,
            }))
            .unwrap();
            Object::Custom(ar.clone(), Box::new(o))
        };
        let good = vs(
            "reviews",
            serde_json::json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}),
        );
        let bad = vs(
            "broken",
            serde_json::json!({"hosts": ["reviews"], "htp": []}),
        );
        let known = known(vec![
            ("virtualservices.networking.istio.io", good),
            ("virtualservices.networking.istio.io", bad),
        ]);
        let mut view = View::of(&known, "cluster.local");
        view.services
            .push(serde_json::json!({"name": "reviews", "namespace": "bookinfo", "port": 9080}));
        assert_eq!(view.custom.len(), 2);
        assert_eq!(
            view.custom[1].file,
            Path::new("virtualservices.networking.istio.io/bookinfo/reviews")
        );
        let compiled = compile(&config::Store::default(), &view, &mut Checks::default());
        let (store, loaded) = compiled.loaded.expect("the rest compiles");
        let stated = crate::store::stated(&store, &loaded);
        let state = |name: &str| {
            stated
                .iter()
                .find(|s| s.resource.name == name)
                .map(|s| s.state)
        };
        assert_eq!(state("reviews"), Some(crate::store::State::Applied));
        assert_ne!(state("broken"), Some(crate::store::State::Applied));
        assert!(
            compiled
                .problems
                .iter()
                .any(|p| p.contains("virtualservices.networking.istio.io/bookinfo/broken:")),
            "{:?}",
            compiled.problems
        );
    }
}
