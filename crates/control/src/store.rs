//! The resources in force (the routing and security YAML that `weft apply`, `weft delete` and
//! `--watch` change) behind a small interface, and the one way they change: the whole set with
//! the change is validated together; if the changed resources are honoured, the snapshot it
//! would produce is decoded as every proxy decodes one (`api`'s `TryFrom`, the proxy's own
//! check), and only if that succeeds is it saved and handed to the registry, whose snapshot
//! builder turns it into the next snapshot. A bad change changes nothing and the last good set
//! keeps serving.
//!
//! Where the set is kept is a [`Backend`]: [`Memory`], or an etcd key range shared by several
//! control-plane replicas ([`crate::etcd`]); the Kubernetes API implements the same two calls.
//! The validation, the registry and the snapshot builder stay as they are.

use crate::registry::Registry;
use config::{Diagnostic, Loaded, Resource};
use std::sync::{Arc, Mutex};

/// Where the resources in force are kept.
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The resources in force.
    fn load(&self) -> config::Store;
    /// Keeps `next` as the resources in force (it validated), if the resources in force are
    /// still `base` (what [`Backend::load`] gave): a backend shared with other writers refuses
    /// a change made over one they have replaced meanwhile. Returns the store's revision of
    /// the change when the store has revisions shared by several replicas (etcd), else `None`.
    async fn save(
        &self,
        base: &config::Store,
        next: &config::Store,
    ) -> Result<Option<u64>, BackendError>;

    /// Whether this replica runs the controllers that change the resources on their own (the
    /// canary controller): every replica over a shared store whose writes are conditional, only
    /// the elected one where they go to a cluster's objects.
    fn runs_controllers(&self) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot save the configuration: {0}")]
pub struct BackendError(pub String);

/// The resources in this process's memory: a control plane's configuration lives as long as
/// it does (`weft up` and `weft control` reload their files when they start).
#[derive(Default)]
pub struct Memory(Mutex<config::Store>);

impl Memory {
    pub fn new(initial: config::Store) -> Memory {
        Memory(Mutex::new(initial))
    }
}

#[tonic::async_trait]
impl Backend for Memory {
    fn load(&self) -> config::Store {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn save(
        &self,
        _base: &config::Store,
        next: &config::Store,
    ) -> Result<Option<u64>, BackendError> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = next.clone();
        Ok(None)
    }
}

/// Why a change was refused; nothing changed.
#[derive(Debug)]
pub enum Refused {
    /// The set with the change does not validate: every error, located.
    Invalid(config::Errors),
    /// It validates, but these changed resources would not be in force: their diagnostics.
    Rejected(Vec<Diagnostic>),
    /// It validates, but the snapshot it would produce does not decode as a proxy decodes it:
    /// every proxy would refuse it. `blamed`: the changed resources that make it so, where
    /// that can be told (applied alone, each one does).
    Undecodable {
        error: api::WireError,
        blamed: Vec<Resource>,
    },
    /// The backend could not keep it.
    Backend(BackendError),
    /// It changes a resource a rollout manages (the canary controller owns it): the message
    /// names it and what to do instead.
    Owned(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(errors) => write!(f, "{errors}"),
            Refused::Rejected(ds) => {
                let lines: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
                f.write_str(&lines.join("\n"))
            }
            Refused::Undecodable { error, blamed } if blamed.is_empty() => write!(
                f,
                "the proxies would refuse the snapshot this change makes: {error}"
            ),
            Refused::Undecodable { error, blamed } => {
                let lines: Vec<String> = blamed
                    .iter()
                    .map(|r| {
                        format!(
                            "{}:{}: {} {}/{}: the proxies would refuse the snapshot it makes: {error}",
                            r.file.display(),
                            r.first_line,
                            r.kind,
                            r.namespace,
                            r.name
                        )
                    })
                    .collect();
                f.write_str(&lines.join("\n"))
            }
            Refused::Backend(e) => write!(f, "{e}"),
            Refused::Owned(why) => f.write_str(why),
        }
    }
}

/// A change in force: what the whole set loaded to (warnings, other resources' rejections),
/// and the snapshot version that carries it.
pub struct Changed {
    pub loaded: Loaded,
    pub version: u64,
}

/// The resources in force and the registry that builds snapshots from them.
pub struct Resources {
    backend: Arc<dyn Backend>,
    registry: Arc<Registry>,
    /// One change at a time: validate, save, hand over. Nothing on the data path waits on it.
    changing: tokio::sync::Mutex<()>,
}

impl Resources {
    pub fn new(backend: Arc<dyn Backend>, registry: Arc<Registry>) -> Resources {
        Resources {
            backend,
            registry,
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// The resources in force.
    pub fn current(&self) -> config::Store {
        self.backend.load()
    }

    /// Whether this replica runs the controllers that change the resources on their own.
    pub fn runs_controllers(&self) -> bool {
        self.backend.runs_controllers()
    }

    /// Removes the resources keyed as `gone`, adds or replaces `new`, and puts the result in
    /// force if it validates and every resource of `new` is honoured. A resource a rollout
    /// manages (see [`crate::canary`]) is refused to this path.
    pub async fn change(&self, gone: &[Resource], new: Vec<Resource>) -> Result<Changed, Refused> {
        let _one_at_a_time = self.changing.lock().await;
        let current = self.backend.load();
        for r in gone.iter().chain(&new) {
            let owned = current
                .resources
                .iter()
                .find(|o| o.key() == r.key())
                .and_then(|o| crate::canary::owner_of(o).map(|owner| (o, owner)));
            if let Some((o, owner)) = owned {
                return Err(Refused::Owned(format!(
                    "{}:{}: {} {}/{} is managed by Canary {owner} while it exists: move its traffic with `weft canary promote|abort|pause`, or delete the Canary first",
                    r.file.display(),
                    r.first_line,
                    o.kind,
                    o.namespace,
                    o.name
                )));
            }
        }
        self.put(current, gone, new).await
    }

    /// Changes the resources as `decide` says, given those in force (`None`: no change), with
    /// no other change in between: how the canary controller moves a rollout's routes (its own
    /// resources, which [`Resources::change`] refuses to others).
    pub async fn update<F>(&self, decide: F) -> Result<Option<Changed>, Refused>
    where
        F: FnOnce(&config::Store) -> Option<(Vec<Resource>, Vec<Resource>)>,
    {
        let _one_at_a_time = self.changing.lock().await;
        let current = self.backend.load();
        match decide(&current) {
            None => Ok(None),
            Some((gone, new)) => self.put(current, &gone, new).await.map(Some),
        }
    }

    /// Validates `current` with `gone` removed and `new` applied, and keeps it (the caller
    /// holds `changing`).
    async fn put(
        &self,
        current: config::Store,
        gone: &[Resource],
        new: Vec<Resource>,
    ) -> Result<Changed, Refused> {
        let base = current.deleted(gone);
        let next = base.applied(new.clone());
        let loaded = next.load().map_err(Refused::Invalid)?;
        // What is applied must be honoured; a resource already in force that is rejected (it
        // was, or what it needs is gone) is only reported.
        let rejected: Vec<Diagnostic> = new.iter().flat_map(|r| rejections(&loaded, r)).collect();
        if !rejected.is_empty() {
            return Err(Refused::Rejected(rejected));
        }
        // What the proxies would be sent must be what they accept: else they would refuse it,
        // keep serving the last snapshot, and every later change would be refused with it.
        if let Err(error) = proxies_accept(&self.registry.preview(loaded.mesh.clone())) {
            let blamed = self.blame(&base, &new);
            return Err(Refused::Undecodable { error, blamed });
        }
        let revision = self
            .backend
            .save(&current, &next)
            .await
            .map_err(Refused::Backend)?;
        let version = match revision {
            // Every replica's snapshot carrying this revision is numbered at least so.
            Some(rev) => self.registry.set_traffic_at(loaded.mesh.clone(), rev),
            None => {
                self.registry.set_traffic(loaded.mesh.clone());
                self.registry.snapshot().version
            }
        };
        Ok(Changed { loaded, version })
    }
}

/// Whether a resource in the store is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Translated and in the snapshots the proxies run.
    Applied,
    /// Left out: it does not validate, or names what is not there (`reasons` says which).
    Rejected,
    /// Of a kind weft does not implement: kept, but nothing comes of it.
    Ignored,
}

/// A resource of the store with its state, as `GET /resources` and `weft get` show it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stated {
    #[serde(flatten)]
    pub resource: Resource,
    pub state: State,
    /// Why it is rejected or ignored: each diagnostic, located (`FILE:LINE:COL: FIELD: …`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// What applies but is ignored or may surprise (an ignored field, a route another API
    /// overrides), each located.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Every resource of `store` with its state in `loaded` (what `store` loads to).
pub fn stated(store: &config::Store, loaded: &Loaded) -> Vec<Stated> {
    store
        .resources
        .iter()
        .map(|r| {
            let rejected: Vec<String> = rejections(loaded, r)
                .iter()
                .map(|d| d.to_string())
                .collect();
            // The document's lines: from its first line up to (not including) the next one's
            // of the same file.
            let end = store
                .resources
                .iter()
                .filter(|o| o.file == r.file && o.first_line > r.first_line)
                .map(|o| o.first_line)
                .min()
                .unwrap_or(usize::MAX);
            let mine = |d: &&Diagnostic| d.file == r.file && (r.first_line..end).contains(&d.line);
            let unsupported_kind = format!("{} ({})", r.kind, r.api_version);
            let (ignored, warnings): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
                loaded.unsupported.iter().filter(mine).partition(|d| {
                    d.field.is_empty()
                        && d.message.starts_with(&unsupported_kind)
                        && d.message.ends_with("is not yet supported")
                });
            let (state, reasons) = if !rejected.is_empty() {
                (State::Rejected, rejected)
            } else if !ignored.is_empty() {
                (
                    State::Ignored,
                    ignored.iter().map(|d| d.to_string()).collect(),
                )
            } else {
                (State::Applied, Vec::new())
            };
            Stated {
                resource: r.clone(),
                state,
                reasons,
                warnings: warnings.iter().map(|d| d.to_string()).collect(),
            }
        })
        .collect()
}

impl Resources {
    /// The resources in force, each with its state. A store that no longer loads as a whole
    /// (it did when it was saved; only a backend changed behind our back can do this) shows
    /// every resource rejected with the errors.
    pub fn stated(&self) -> Vec<Stated> {
        let store = self.current();
        stated_as_loaded(&store, &store.load())
    }
}

/// [`stated`] of what `store` loaded to; every resource rejected with the errors when it did
/// not load.
pub fn stated_as_loaded(
    store: &config::Store,
    loaded: &Result<Loaded, config::Errors>,
) -> Vec<Stated> {
    match loaded {
        Ok(loaded) => stated(store, loaded),
        Err(errors) => store
            .resources
            .iter()
            .map(|r| Stated {
                resource: r.clone(),
                state: State::Rejected,
                reasons: vec![errors.to_string()],
                warnings: Vec::new(),
            })
            .collect(),
    }
}

impl Resources {
    /// The resources of `new` that, applied alone to `base`, give a snapshot the proxies
    /// refuse; all of `new` when none does alone (it is their combination).
    fn blame(&self, base: &config::Store, new: &[Resource]) -> Vec<Resource> {
        if new.len() <= 1 {
            return new.to_vec();
        }
        let refused = |r: &Resource| {
            base.applied(vec![r.clone()])
                .load()
                .is_ok_and(|l| proxies_accept(&self.registry.preview(l.mesh)).is_err())
        };
        let blamed: Vec<Resource> = new.iter().filter(|r| refused(r)).cloned().collect();
        if blamed.is_empty() {
            new.to_vec()
        } else {
            blamed
        }
    }
}

/// Decodes `snapshot` as every proxy decodes the snapshots it is sent (model → wire →
/// `TryFrom`, which checks every route, policy and JWT rule as the proxy compiles them).
pub fn proxies_accept(snapshot: &model::Snapshot) -> Result<(), api::WireError> {
    model::Snapshot::try_from(api::pb::Snapshot::from(snapshot)).map(|_| ())
}

/// The rejection diagnostics of `r` in `loaded` (named by kind, or by kind and API group).
pub(crate) fn rejections(loaded: &Loaded, r: &Resource) -> Vec<Diagnostic> {
    let grouped = format!("{}.{}", r.kind, r.group());
    let mut out: Vec<Diagnostic> = loaded
        .rejected_for(&r.kind, &r.namespace, &r.name)
        .cloned()
        .collect();
    out.extend(
        loaded
            .rejected_for(&grouped, &r.namespace, &r.name)
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    //! Unit tests: a change is validated as a whole, kept by the backend and handed to the
    //! registry; a refused one changes nothing.
    use super::*;
    use std::path::Path;

    fn peer_authn(mode: &str) -> Vec<Resource> {
        let text = format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: {mode}\n"
        );
        config::resources(Path::new("pa.yaml"), &text)
    }

    /// The store a control plane starts with: the mesh file's `kind: Mesh` document.
    fn mesh() -> Arc<Memory> {
        let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: t}\nspec:\n  services:\n  - {name: a, port: 1}\n";
        let resources = config::resources(Path::new("mesh.yaml"), text);
        Arc::new(Memory::new(config::Store { resources }))
    }

    fn registry() -> Arc<Registry> {
        Registry::new(model::MeshSpec {
            name: "t".into(),
            ingress: "127.0.0.1:0".parse().unwrap(),
            services: Vec::new(),
            routes: Vec::new(),
            tcp_routes: Vec::new(),
            policies: Vec::new(),
            gateway: Vec::new(),
            security: model::security::SecuritySpec::new(),
            default_retries: None,
            interception: Default::default(),
            outbound_policy: Default::default(),
            outbound_policies: Default::default(),
            egress: Default::default(),
            scope: Default::default(),
        })
    }

    /// Keeps nothing: every save fails.
    struct Refusing;

    #[tonic::async_trait]
    impl Backend for Refusing {
        fn load(&self) -> config::Store {
            config::Store::default()
        }
        async fn save(
            &self,
            _: &config::Store,
            _: &config::Store,
        ) -> Result<Option<u64>, BackendError> {
            Err(BackendError("read-only".into()))
        }
    }

    fn strict(r: &Registry) -> bool {
        let s = r.snapshot();
        s.security
            .peer_authns
            .iter()
            .any(|p| p.mode == model::security::MtlsMode::Strict)
    }

    #[tokio::test]
    async fn an_accepted_change_is_kept_and_reaches_the_registry() {
        let (memory, registry) = (mesh(), registry());
        let resources = Resources::new(memory.clone(), registry.clone());
        let before = registry.snapshot().version;
        let changed = resources.change(&[], peer_authn("STRICT")).await.unwrap();
        assert!(changed.version > before);
        assert!(strict(&registry));
        assert_eq!(memory.load().resources.len(), 2);
        // Deleting it by key empties the set again.
        resources
            .change(&peer_authn("STRICT"), vec![])
            .await
            .unwrap();
        assert!(!strict(&registry));
        assert_eq!(memory.load().resources.len(), 1);
    }

    #[tokio::test]
    async fn a_refused_change_changes_nothing() {
        let (memory, registry) = (mesh(), registry());
        let resources = Resources::new(memory.clone(), registry.clone());
        resources.change(&[], peer_authn("STRICT")).await.unwrap();
        let version = registry.snapshot().version;
        let refused = resources.change(&[], peer_authn("SOMETIMES")).await;
        let message = refused
            .err()
            .expect("an invalid mode was accepted")
            .to_string();
        assert!(message.contains("pa.yaml"), "{message}");
        assert_eq!(registry.snapshot().version, version);
        assert!(strict(&registry));
        assert_eq!(
            memory.load().resources[1].text,
            peer_authn("STRICT")[0].text
        );
    }

    #[test]
    fn the_proxies_decode_is_run_on_snapshots() {
        let registry = registry();
        let mut snapshot = (*registry.snapshot()).clone();
        assert!(proxies_accept(&snapshot).is_ok());
        let mut route = model::HttpRoute {
            name: "VirtualService default/hello http[0]".into(),
            destinations: vec![model::Destination::service(
                model::ServiceKey::new("hello", "default"),
                1,
            )],
            ..model::HttpRoute::default()
        };
        route
            .request_headers
            .set
            .push(("bad name".into(), "x".into()));
        snapshot.gateway.push(model::VirtualHost {
            name: "www".into(),
            hosts: vec!["www.example.com".into()],
            routes: vec![route],
        });
        let error = proxies_accept(&snapshot).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "route VirtualService default/hello http[0]: request header edit set:"
            ),
            "{error}"
        );
        let refused = Refused::Undecodable {
            error: proxies_accept(&snapshot).unwrap_err(),
            blamed: peer_authn("STRICT"),
        };
        assert!(
            refused.to_string().starts_with(
                "pa.yaml:1: PeerAuthentication istio-system/default: the proxies would refuse the snapshot it makes: route "
            ),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_previewed_change_changes_nothing() {
        let (memory, registry) = (mesh(), registry());
        let version = registry.snapshot().version;
        let loaded = memory.load().applied(peer_authn("STRICT")).load().unwrap();
        let preview = registry.preview(loaded.mesh);
        assert!(preview.version > version);
        assert!(preview
            .security
            .peer_authns
            .iter()
            .any(|p| p.mode == model::security::MtlsMode::Strict));
        assert_eq!(registry.snapshot().version, version);
        assert!(!strict(&registry));
    }

    #[test]
    fn each_resource_shows_whether_it_is_in_force() {
        let mut store = mesh().load();
        store.resources.extend(peer_authn("STRICT"));
        let more = "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: web-public\n  namespace: default\nspec:\n  targetRef:\n    - {group: policy.linkerd.io, kind: Server, name: web-http}\n  requiredAuthenticationRefs: [{name: public, kind: NetworkAuthentication, group: policy.linkerd.io}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\nspec: {hosts: [example.com]}\n";
        store
            .resources
            .extend(config::resources(Path::new("more.yaml"), more));
        let loaded = store.load().unwrap();
        let states: Vec<(String, State, Vec<String>)> = stated(&store, &loaded)
            .into_iter()
            .map(|s| (s.resource.name, s.state, s.reasons))
            .collect();
        assert_eq!(states[0].0, "t");
        assert_eq!(states[0].1, State::Applied);
        assert_eq!(
            (states[1].0.as_str(), states[1].1),
            ("default", State::Applied)
        );
        assert_eq!(
            (states[2].0.as_str(), states[2].1),
            ("web-public", State::Rejected)
        );
        assert!(
            states[2].2[0].starts_with("more.yaml:7:3: spec.targetRef: "),
            "{:?}",
            states[2].2
        );
        assert_eq!((states[3].0.as_str(), states[3].1), ("ext", State::Ignored));
        assert!(
            states[3].2[0].contains("more.yaml:11")
                && states[3].2[0].ends_with("is not yet supported"),
            "{:?}",
            states[3].2
        );
        // Serialized with the resource's own fields, as `GET /resources` sends it.
        let json = serde_json::to_value(stated(&store, &loaded)).unwrap();
        assert_eq!(json[2]["kind"], "AuthorizationPolicy");
        assert_eq!(json[2]["first_line"], 1);
        assert_eq!(json[2]["state"], "rejected");
        assert_eq!(json[0]["state"], "applied");
        assert!(json[0].get("reasons").is_none());
    }

    #[tokio::test]
    async fn a_backend_that_cannot_keep_a_change_leaves_the_registry_alone() {
        let registry = registry();
        let resources = Resources::new(Arc::new(Refusing), registry.clone());
        let version = registry.snapshot().version;
        let refused = resources.change(&[], peer_authn("STRICT")).await;
        assert!(matches!(refused, Err(Refused::Backend(_))));
        assert_eq!(registry.snapshot().version, version);
        assert!(!strict(&registry));
    }
}
