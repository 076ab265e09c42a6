//! A snapshot compiled for the hot path: services indexed by key, each with its balancer, its
//! traffic policy and the live state of its endpoints, plus the ingress gateway's virtual
//! hosts. Built off the data path whenever a snapshot arrives, as part of the proxy's state
//! (`state::ProxyState`), which requests read through one load.

use crate::balance::{self, Choice, EndpointState};
use crate::policy::{now_ns, Counters, Outcome, Policy};
use crate::route::connection::ConnRoute;
use crate::route::{Dest, Me, Route, RouteError};
use http::request::Parts;
use model::{Authority, Labels, LoadBalancer, ServiceKey, Snapshot, TrafficPolicy};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// A set of endpoints and how to choose among them: a whole service, or the subset of one a
/// route's destination selects (Envoy's "cluster").
pub struct Backend {
    /// What it is, for messages: `reviews.default` or `reviews.default (subset v2)`.
    pub name: String,
    /// Service and labels: what identifies the backend across snapshots.
    key: String,
    pub policy: Arc<Policy>,
    /// Limits and retry budget, shared by every request to this backend.
    pub counters: Arc<Counters>,
    /// The service, as Istio's metrics label it.
    pub service: crate::telemetry::DestinationService,
    /// The service, as tunnels to it name it.
    pub service_key: ServiceKey,
    pub endpoints: Vec<Arc<EndpointState>>,
    rr_next: AtomicUsize,
}

impl Backend {
    fn new(
        name: String,
        key: String,
        policy: Arc<Policy>,
        counters: Arc<Counters>,
        endpoints: Vec<Arc<EndpointState>>,
        service: &ServiceKey,
    ) -> Self {
        Backend {
            name,
            key,
            policy,
            counters,
            service: crate::telemetry::DestinationService::new(service),
            service_key: service.clone(),
            endpoints,
            rr_next: AtomicUsize::new(0),
        }
    }

    /// The endpoint for the next attempt, never one of `exclude` (already tried). `hash` is the
    /// request's consistent-hash key when the policy hashes.
    pub fn pick(
        &self,
        exclude: &[usize],
        hash: Option<u64>,
    ) -> Option<(usize, &Arc<EndpointState>)> {
        if let Some(key) = hash {
            return balance::pick(&self.endpoints, Choice::Hash(key), exclude);
        }
        match self.policy.lb {
            LoadBalancer::PeakEwma => balance::pick(&self.endpoints, Choice::PeakEwma, exclude),
            LoadBalancer::LeastRequest => {
                balance::pick(&self.endpoints, Choice::LeastRequest, exclude)
            }
            LoadBalancer::Random => balance::pick(&self.endpoints, Choice::Random, exclude),
            LoadBalancer::RoundRobin => {
                balance::pick_round_robin(&self.endpoints, &self.rr_next, exclude)
            }
        }
    }

    /// Feeds an attempt's outcome to outlier detection and failure accrual.
    pub fn record(&self, ep: &EndpointState, outcome: Outcome) {
        if self.policy.outlier.is_none() && self.policy.accrual.is_none() {
            return;
        }
        let ejected = ep.health.record(
            &self.policy,
            outcome,
            || {
                let now = now_ns();
                self.endpoints
                    .iter()
                    .filter(|e| e.health.is_ejected(now))
                    .count()
            },
            self.endpoints.len(),
        );
        if ejected {
            tracing::info!(backend = %self.name, endpoint = %ep.endpoint.instance, ?outcome, "endpoint taken out of rotation");
        }
    }
}

/// What a request falls under.
pub struct Routed<'a> {
    /// The rule (if the service has rules).
    pub rule: Option<&'a Route>,
    /// The path prefix the rule's match matched, for prefix rewrites.
    pub prefix: Option<&'a str>,
    /// The destination drawn (with its header edits), if the rule has destinations.
    pub dest: Option<&'a Dest>,
    /// Where the request goes; `None` only for a rule that answers by itself.
    pub backend: Option<&'a Arc<Backend>>,
    /// The request's span name: the rule's, or the service's when it has no rules.
    pub operation: &'a Arc<str>,
}

/// Finds the first rule of `routes` a request matches and draws its destination.
fn route_in<'a>(routes: &'a [Route], req: &Parts) -> Option<Routed<'a>> {
    let (rule, prefix) = routes.iter().find_map(|r| r.matched(req).map(|p| (r, p)))?;
    let dest = rule.pick();
    Some(Routed {
        rule: Some(rule),
        prefix,
        backend: dest.map(|d| &d.backend),
        dest,
        operation: &rule.operation,
    })
}

/// One service as requests see it: its port, all its endpoints, and its routes.
pub struct Service {
    pub key: ServiceKey,
    pub port: u16,
    pub all: Arc<Backend>,
    pub routes: Vec<Route>,
    /// Connection rules (tunnels, TCP), tried in order; empty: all endpoints.
    pub tcp_routes: Vec<ConnRoute>,
    /// The span name of its requests that fall under no rule (`HOST:PORT/*`).
    pub operation: Arc<str>,
}

impl Service {
    /// The rule this request falls under (if the service has rules) and the endpoints it goes
    /// to: that rule's destination drawn by weight, or all endpoints when the service has no
    /// rules. `None`: the service has rules and none matched.
    pub fn route(&self, req: &Parts) -> Option<Routed<'_>> {
        if self.routes.is_empty() {
            return Some(Routed {
                rule: None,
                prefix: None,
                dest: None,
                backend: Some(&self.all),
                operation: &self.operation,
            });
        }
        route_in(&self.routes, req)
    }
}

/// A host pattern of a virtual host: exact, `*.suffix`, or `*`.
enum HostPattern {
    Exact(String),
    Suffix(String),
    Any,
}

impl HostPattern {
    fn new(h: &str) -> HostPattern {
        let h = h.to_ascii_lowercase();
        if h == "*" {
            HostPattern::Any
        } else if let Some(rest) = h.strip_prefix('*') {
            HostPattern::Suffix(rest.to_string())
        } else {
            HostPattern::Exact(h)
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host
                        .get(host.len() - s.len()..)
                        .is_some_and(|t| t.eq_ignore_ascii_case(s))
            }
        }
    }

    /// Exact hosts beat wildcards, longer wildcards beat shorter ones.
    fn rank(&self) -> usize {
        match self {
            HostPattern::Exact(_) => usize::MAX,
            HostPattern::Suffix(s) => s.len(),
            HostPattern::Any => 0,
        }
    }
}

/// A compiled gateway virtual host.
pub struct VirtualHost {
    pub name: String,
    hosts: Vec<HostPattern>,
    pub routes: Vec<Route>,
}

/// Everything a request needs to be routed, at one snapshot version.
#[derive(Default)]
pub struct RouteTable {
    pub snapshot: Arc<Snapshot>,
    services: HashMap<ServiceKey, Arc<Service>>,
    /// Every service by the lowercase host forms that name it in any namespace
    /// (`NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`), and by bare `NAME` (one entry
    /// per namespace): resolving a request's host then allocates nothing.
    by_host: HashMap<String, Vec<Arc<Service>>>,
    /// Services by their virtual IP (transparent interception).
    by_vip: HashMap<std::net::Ipv4Addr, Arc<Service>>,
    gateway: Vec<VirtualHost>,
    /// What this workload's capture listener does with connections to addresses that are no
    /// service (the mesh's policy, or a Sidecar resource's that selects it).
    pub outbound_policy: model::OutboundPolicy,
}

impl RouteTable {
    /// Compiles `snapshot`, carrying over the state (latency estimates, in-flight counts, pooled
    /// connections, limits and budgets) of endpoints and backends that `previous` already had.
    pub fn compile(snapshot: Snapshot, previous: &RouteTable) -> Result<RouteTable, RouteError> {
        Self::compile_for(snapshot, previous, Me::nobody())
    }

    /// [`RouteTable::compile`] for the workload `me` (Istio `sourceLabels` matches).
    pub fn compile_for(
        snapshot: Snapshot,
        previous: &RouteTable,
        me: Me<'_>,
    ) -> Result<RouteTable, RouteError> {
        let mut known: HashMap<(&ServiceKey, SocketAddr, &str), &Arc<EndpointState>> =
            HashMap::new();
        let mut old_counters: HashMap<&str, &Arc<Counters>> = HashMap::new();
        for svc in previous.services.values() {
            for e in &svc.all.endpoints {
                known.insert((&svc.key, e.endpoint.address, &e.endpoint.instance), e);
            }
            old_counters.insert(&svc.all.key, &svc.all.counters);
            let backends = svc
                .routes
                .iter()
                .flat_map(|r| r.backends())
                .chain(svc.tcp_routes.iter().flat_map(|r| r.backends()))
                .chain(
                    previous
                        .gateway
                        .iter()
                        .flat_map(|v| v.routes.iter())
                        .flat_map(|r| r.backends()),
                );
            for b in backends {
                old_counters.insert(&b.key, &b.counters);
            }
        }
        let counters_for = |key: &str, policy: &Policy| match old_counters.get(key) {
            Some(c) if c.fit(policy) => (*c).clone(),
            _ => Counters::for_policy(policy),
        };
        // First every service's endpoints, then routes, which may point at other services.
        let mut alls: HashMap<&ServiceKey, Arc<Backend>> = HashMap::new();
        let mut specs: HashMap<&ServiceKey, &model::Service> = HashMap::new();
        for svc in &snapshot.services {
            // An endpoint the table in force has, unchanged, keeps its state; nothing is
            // written into state that table still serves from.
            let (mut kept, mut fresh) = (Vec::new(), Vec::new());
            for ep in &svc.endpoints {
                let mode = snapshot
                    .security
                    .mtls_mode(&svc.key.namespace, &ep.labels, svc.port);
                let plaintext = mode == model::security::MtlsMode::Disable;
                match known.get(&(&svc.key, ep.address, ep.instance.as_str())) {
                    Some(state) if state.endpoint == *ep && state.plaintext == plaintext => {
                        kept.push((*state).clone())
                    }
                    _ => fresh.push((ep.clone(), plaintext)),
                }
            }
            let initial = balance::initial_rtt_ns(&kept);
            let mut endpoints = kept;
            endpoints.extend(fresh.into_iter().map(|(ep, plaintext)| {
                Arc::new(EndpointState::new(ep, initial).in_plaintext(plaintext))
            }));
            endpoints.sort_by(|a, b| a.endpoint.instance.cmp(&b.endpoint.instance));
            let key = backend_key(&svc.key, &Labels::new());
            let policy = Arc::new(Policy::compile(svc.lb, &svc.policy));
            let counters = counters_for(&key, &policy);
            alls.insert(
                &svc.key,
                Arc::new(Backend::new(
                    svc.key.to_string(),
                    key,
                    policy,
                    counters,
                    endpoints,
                    &svc.key,
                )),
            );
            specs.insert(&svc.key, svc);
        }
        // Subset backends, one per (service, labels), shared by every route that names them.
        let mut subsets: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut backend_for = |d: &model::route::Destination| -> Arc<Backend> {
            let key = backend_key(&d.service, &d.labels);
            if let Some(b) = subsets.get(&key) {
                return b.clone();
            }
            let Some(all) = alls.get(&d.service) else {
                let policy = Arc::new(Policy::default());
                let counters = counters_for(&key, &policy);
                return Arc::new(Backend::new(
                    d.service.to_string(),
                    key,
                    policy,
                    counters,
                    Vec::new(),
                    &d.service,
                ));
            };
            if d.labels.is_empty() {
                return all.clone();
            }
            let spec = specs[&d.service];
            let policy = match spec
                .subsets
                .iter()
                .find(|s| d.subset.as_deref() == Some(s.name.as_str()) || s.labels == d.labels)
            {
                Some(s) => Arc::new(Policy::compile(
                    spec.lb,
                    &TrafficPolicy::default().merged(&s.policy),
                )),
                None => all.policy.clone(),
            };
            let endpoints = all
                .endpoints
                .iter()
                .filter(|e| {
                    d.labels
                        .iter()
                        .all(|(k, v)| e.endpoint.labels.get(k) == Some(v))
                })
                .cloned()
                .collect();
            let name = match &d.subset {
                Some(s) => format!("{} (subset {s})", d.service),
                None => format!("{} {:?}", d.service, d.labels),
            };
            let counters = counters_for(&key, &policy);
            let b = Arc::new(Backend::new(
                name,
                key.clone(),
                policy,
                counters,
                endpoints,
                &d.service,
            ));
            subsets.insert(key, b.clone());
            b
        };
        let mut services = HashMap::with_capacity(snapshot.services.len());
        for svc in &snapshot.services {
            let mut routes = svc
                .routes
                .iter()
                .map(|r| {
                    Route::compile_for(r, me, &mut backend_for)
                        .map(|c| c.on_port(r, Some(svc.port)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tcp_routes = svc
                .tcp_routes
                .iter()
                .map(|r| ConnRoute::compile_for(r, me, &mut backend_for))
                .collect::<Result<Vec<_>, _>>()?;
            // A route the previous snapshot had keeps its counters.
            if let Some(old) = previous.services.get(&svc.key) {
                for r in &mut routes {
                    if let Some(o) = old.routes.iter().find(|o| o.name == r.name) {
                        r.stats = o.stats.clone();
                    }
                }
            }
            services.insert(
                svc.key.clone(),
                Arc::new(Service {
                    key: svc.key.clone(),
                    port: svc.port,
                    all: alls[&svc.key].clone(),
                    routes,
                    tcp_routes,
                    operation: crate::route::default_operation(&svc.key, svc.port).into(),
                }),
            );
        }
        let mut gateway = Vec::with_capacity(snapshot.gateway.len());
        for v in &snapshot.gateway {
            gateway.push(VirtualHost {
                name: v.name.clone(),
                hosts: v.hosts.iter().map(|h| HostPattern::new(h)).collect(),
                routes: v
                    .routes
                    .iter()
                    .map(|r| {
                        // Named with the port of the service it sends to, as Istio's gateway
                        // names its spans.
                        let port = r.destinations.first().and_then(|d| {
                            snapshot
                                .services
                                .iter()
                                .find(|s| s.key == d.service)
                                .map(|s| s.port)
                        });
                        Route::compile_for(r, me, &mut backend_for).map(|c| c.on_port(r, port))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            });
        }
        let mut by_host: HashMap<String, Vec<Arc<Service>>> = HashMap::new();
        for s in services.values() {
            let (name, ns) = (&s.key.name, &s.key.namespace);
            for host in [
                name.clone(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                s.key.fqdn(),
            ] {
                by_host.entry(host).or_default().push(s.clone());
            }
        }
        let by_vip = snapshot
            .services
            .iter()
            .filter_map(|s| Some((s.vip?, services.get(&s.key)?.clone())))
            .collect();
        let outbound_policy = model::mesh::outbound_policy_for(
            snapshot.outbound_policy,
            &snapshot.outbound_policies,
            &snapshot.security.root_namespace,
            me.namespace,
            me.labels,
        );
        Ok(RouteTable {
            snapshot: Arc::new(snapshot),
            services,
            by_host,
            by_vip,
            gateway,
            outbound_policy,
        })
    }

    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    /// Endpoints across all services by state: (ready, ejected or tripped, in connect backoff).
    pub fn endpoint_states(&self) -> (u64, u64, u64) {
        let now = now_ns();
        let (mut ready, mut ejected, mut failing) = (0, 0, 0);
        for svc in self.services.values() {
            for e in &svc.all.endpoints {
                if e.health.is_ejected(now) {
                    ejected += 1;
                } else if e.is_failing_now() {
                    failing += 1;
                } else {
                    ready += 1;
                }
            }
        }
        (ready, ejected, failing)
    }

    /// Every service's routes with their counters, for the admin `/routes`.
    pub fn route_stats(&self) -> serde_json::Value {
        let mut services: Vec<&Arc<Service>> = self.services.values().collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        serde_json::Value::Array(
            services
                .iter()
                .filter(|s| !s.routes.is_empty())
                .map(|s| {
                    serde_json::json!({
                        "service": s.key.to_string(),
                        "routes": s.routes.iter().map(|r| {
                            let mut v = r.stats.to_json();
                            v["name"] = serde_json::Value::String(r.name.clone());
                            v
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }

    /// The service an authority names (`NAME`, `NAME.NS`, `NAME.NS.svc.cluster.local`, or its
    /// virtual IP, with or without a port), a bare name resolving in `namespace`. A request to a
    /// service's virtual IP (`http://10.235.0.7/` from an app whose connection was captured)
    /// names it as Istio's virtual hosts do, which list the service's cluster IP beside its
    /// names.
    pub fn resolve(&self, authority: &Authority<'_>, namespace: &str) -> Option<&Arc<Service>> {
        let bare = !authority.host.contains('.');
        if let Some(found) = self.by_host.get(authority.host) {
            // A dotted form names one service; a bare name means the one in `namespace`.
            return found.iter().find(|s| !bare || s.key.namespace == namespace);
        }
        if let Ok(ip) = authority.host.parse::<std::net::Ipv4Addr>() {
            return self.by_vip.get(&ip);
        }
        // Upper case, a trailing dot: the general parser.
        self.services.get(&authority.service_key(namespace)?)
    }

    /// The service whose virtual IP `ip` is.
    pub fn by_vip(&self, ip: std::net::IpAddr) -> Option<&Arc<Service>> {
        match ip {
            std::net::IpAddr::V4(v4) => self.by_vip.get(&v4),
            std::net::IpAddr::V6(_) => None,
        }
    }

    /// The service `key`, if the snapshot has it.
    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// The gateway virtual host for `host` (the most specific pattern wins), if any.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.gateway
            .iter()
            .filter_map(|v| {
                v.hosts
                    .iter()
                    .filter(|p| p.matches(host))
                    .map(HostPattern::rank)
                    .max()
                    .map(|rank| (rank, v))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, v)| v)
    }
}

impl VirtualHost {
    /// The rule a request falls under; `None`: no rule matches (404).
    pub fn route(&self, req: &Parts) -> Option<Routed<'_>> {
        route_in(&self.routes, req)
    }
}

fn backend_key(service: &ServiceKey, labels: &Labels) -> String {
    let mut k = service.to_string();
    for (n, v) in labels {
        k.push_str(&format!("|{n}={v}"));
    }
    k
}

#[cfg(test)]
pub(crate) mod tests_support {
    //! Test helpers for building backends without a snapshot.
    use super::*;

    pub fn backend(name: &str, lb: LoadBalancer) -> Backend {
        let policy = Arc::new(Policy {
            lb,
            ..Policy::default()
        });
        let counters = Counters::for_policy(&policy);
        Backend::new(
            name.to_string(),
            name.to_string(),
            policy,
            counters,
            Vec::new(),
            &ServiceKey::new(name, "default"),
        )
    }
}
