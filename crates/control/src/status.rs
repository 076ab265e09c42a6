//! The `weft status` document: the control plane, the ingress, and every declared replica with
//! where it listens and whether it is ready. Field names are a stable interface scripts use:
//! fields may be added, never renamed.

use crate::registry::{NotRoutable, ProxyRecord, Registry};
use model::Labels;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub mesh: String,
    pub control: String,
    pub api: String,
    pub ingress: String,
    /// The ingress gateway proxy's admin address (empty before it registers).
    #[serde(default)]
    pub ingress_admin: String,
    /// The URL of the Prometheus scraping the mesh (`weft up --prometheus`), empty without one.
    #[serde(default)]
    pub prometheus: String,
    /// The URL of the web dashboard's own listener (`--dashboard`), empty without one (the
    /// dashboard is always under the API's `/dashboard/`; `weft dashboard` prints the URL to
    /// sign in with).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dashboard: String,
    /// The trust domain of the mesh's SPIFFE identities.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    pub version: u64,
    /// The mesh routes whatever it can route: every replica is `ready`, every proxy runs
    /// snapshot `version`, and the ingress (when the mesh runs one) is registered and ready.
    /// `weft up` prints its ready line when this first holds.
    #[serde(default)]
    pub ready: bool,
    /// What keeps the mesh from being ready, one line each; empty when it is.
    #[serde(default)]
    pub pending: Vec<String>,
    pub workloads: Vec<WorkloadStatus>,
    /// Sidecars registered under names the mesh does not declare: never trusted as replicas by
    /// the CLI's live views, listed so that no registration goes unseen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undeclared: Vec<WorkloadStatus>,
    /// Proxies whose last answer was a refusal (a nack): the snapshot they refused and why (the
    /// resource or policy they could not apply); each keeps serving the last snapshot it
    /// accepted. Empty (and left out) when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nacks: Vec<Nack>,
    /// The network the mesh's pods share (transparent interception); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// The store control-plane replicas share (`weft control --store`): the replicas and the
    /// store's members with their health; absent for a control plane alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
}

/// A shared store, as `weft status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStatus {
    /// `etcd`.
    pub kind: String,
    /// The replica that answered.
    pub replica: String,
    /// Every live control-plane replica.
    pub replicas: Vec<crate::etcd::Replica>,
    /// The store's members and whether each answers.
    pub members: Vec<crate::etcd::Member>,
}

/// The host side of a transparent mesh's pods: one bridge, one subnet.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    /// The bridge's interface name.
    pub bridge: String,
    /// The pods' subnet (`10.234.N.0/24`).
    pub subnet: String,
    /// The bridge's address: the host as pods see it, their default route.
    pub gateway: String,
}

/// A replica's pod: its network namespace and its address there.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub address: String,
}

/// Where a transparent mesh's replicas run, as `weft up` tells the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pods {
    pub network: Option<Network>,
    /// By (service, namespace, instance): the newest pod of that replica.
    pub pods: std::collections::BTreeMap<(String, String, String), Pod>,
}

/// One proxy's refusal of a snapshot, in [`Status::nacks`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Nack {
    /// The proxy, as messages name it (`hello-v1-0 proxy`, `ingress …`).
    pub proxy: String,
    /// `sidecar`, `ingress` or `client`.
    pub mode: String,
    pub service: String,
    pub namespace: String,
    pub instance: String,
    /// The snapshot it refused.
    pub version: u64,
    /// Why, as the proxy said.
    pub error: String,
    /// The snapshot it keeps serving.
    pub config_version: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub service: String,
    pub namespace: String,
    pub workload: String,
    pub instance: String,
    pub labels: Labels,
    pub app: String,
    pub inbound: String,
    pub outbound: String,
    pub admin: String,
    pub identity: String,
    /// The replica receives traffic from every proxy that could send it: its proxy reports it
    /// ready and every live proxy has applied a snapshot that lists it as an endpoint.
    pub ready: bool,
    /// `ready`, `starting` (no proxy yet), `not-ready` (with `reason`), `draining`, or, once its
    /// app has finished for good, `completed` or `failed` (with the exit status as `reason`).
    pub state: String,
    pub reason: String,
    pub pid: u32,
    /// The snapshot version this replica's proxy last applied.
    pub config_version: u64,
    /// The control-plane replica its proxy is connected to, when several share a store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub control_replica: String,
    /// The network namespace it runs in (transparent interception); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Its address in that namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_address: String,
    /// Set once its app has finished for good (a job's, `restartPolicy: OnFailure | Never`):
    /// `completed` (exit 0) or `failed`, as `state` then says too, with the exit status as
    /// `reason`. A finished replica is no endpoint and keeps nothing pending. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finished>,
}

/// How a replica's app finished for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    /// It exited with status 0.
    Completed,
    /// It exited otherwise, and its restart policy says not to start it again.
    Failed,
}

impl Finished {
    pub fn as_str(self) -> &'static str {
        match self {
            Finished::Completed => "completed",
            Finished::Failed => "failed",
        }
    }
}

/// A replica's row from its newest registration `rec` (`None`: no proxy yet); names are
/// filled in by the caller.
fn row(rec: Option<&ProxyRecord>, proxies: &[ProxyRecord], identity: String) -> WorkloadStatus {
    let (state, reason) = match rec.map(|p| p.routable(proxies)) {
        None => ("starting", NotRoutable::NoProxy.to_string()),
        Some(Ok(())) => ("ready", String::new()),
        Some(Err(NotRoutable::Draining)) => ("draining", String::new()),
        Some(Err(why)) => ("not-ready", why.to_string()),
    };
    let n = rec.map(|r| &r.node);
    WorkloadStatus {
        service: String::new(),
        namespace: String::new(),
        workload: String::new(),
        instance: String::new(),
        labels: Labels::new(),
        app: addr(n.and_then(|n| n.app)),
        inbound: addr(n.and_then(|n| n.inbound)),
        outbound: addr(n.and_then(|n| n.outbound)),
        admin: addr(n.and_then(|n| n.admin)),
        identity: n.map(|n| n.identity.0.clone()).unwrap_or(identity),
        ready: state == "ready",
        state: state.into(),
        reason,
        pid: n.map(|n| n.pid).unwrap_or(0),
        config_version: rec.map(|r| r.acked).unwrap_or(0),
        control_replica: rec.map(|r| r.replica.clone()).unwrap_or_default(),
        pod: String::new(),
        pod_address: String::new(),
        finished: None,
    }
}

fn default_trust_domain() -> String {
    model::names::TRUST_DOMAIN.to_string()
}

fn addr(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}

pub fn build(registry: &Registry, control: SocketAddr, api: SocketAddr) -> Status {
    let spec = registry.spec();
    let trust_domain = registry.trust_domain();
    let version = registry.snapshot().version;
    let proxies = registry.proxies();
    let newest =
        |pred: &dyn Fn(&ProxyRecord) -> bool| proxies.iter().rev().find(|p| pred(p)).cloned();
    let ingress_proxy = newest(&|p| p.node.mode == "ingress");
    let ingress_admin = addr(ingress_proxy.as_ref().and_then(|p| p.node.admin));
    let ingress = ingress_proxy
        .and_then(|p| p.node.outbound)
        .unwrap_or(spec.ingress);
    let pods = registry.pods();
    let finished = registry.finished();
    let mut workloads = Vec::new();
    let mut listed: Vec<(&str, &str, String)> = Vec::new();
    for svc in &spec.services {
        // A workload without a sidecar never registers: it is not a replica of the mesh.
        for w in svc.workloads.iter().filter(|w| w.sidecar) {
            for i in 0..w.replicas {
                let instance = w.instance_name(i);
                let rec = newest(&|p| {
                    p.node.mode == "sidecar"
                        && p.node.instance == instance
                        && p.node.service == svc.name
                        && p.node.namespace == svc.namespace
                });
                listed.push((&svc.name, &svc.namespace, instance.clone()));
                let key = (svc.name.clone(), svc.namespace.clone(), instance.clone());
                let done = finished.get(&key);
                // A finished replica's sidecar is gone: its last registration says nothing.
                let rec = rec.filter(|_| done.is_none());
                let mut row = row(rec.as_ref(), &proxies, svc.identity_in(&trust_domain).0);
                if let Some((outcome, exit)) = done {
                    row.state = outcome.as_str().into();
                    row.reason = exit.clone();
                    row.finished = Some(*outcome);
                }
                row.service = svc.name.clone();
                row.namespace = svc.namespace.clone();
                row.workload = w.name.clone();
                row.instance = instance;
                row.labels = w.labels.clone();
                if let Some(pod) = pods.pods.get(&(
                    svc.name.clone(),
                    svc.namespace.clone(),
                    row.instance.clone(),
                )) {
                    row.pod = pod.name.clone();
                    row.pod_address = pod.address.clone();
                }
                workloads.push(row);
            }
        }
    }
    // Every other sidecar registration, newest per instance: nothing registers unseen.
    let mut undeclared = Vec::new();
    let mut others: Vec<&ProxyRecord> = Vec::new();
    for p in proxies.iter().rev().filter(|p| p.node.mode == "sidecar") {
        let n = &p.node;
        let known = listed
            .iter()
            .any(|(s, ns, i)| *s == n.service && *ns == n.namespace && *i == n.instance);
        let seen = others.iter().any(|o| {
            o.node.service == n.service
                && o.node.namespace == n.namespace
                && o.node.instance == n.instance
        });
        if !known && !seen {
            others.push(p);
        }
    }
    for p in others.into_iter().rev() {
        let n = &p.node;
        let mut row = row(Some(p), &proxies, n.identity.0.clone());
        row.service = n.service.clone();
        row.namespace = n.namespace.clone();
        row.workload = n.workload.clone();
        row.instance = n.instance.clone();
        row.labels = n.labels.clone();
        undeclared.push(row);
    }
    let pending = pending(&workloads, &proxies, version, registry.runs_ingress());
    let nacks = proxies
        .iter()
        .filter(|p| !p.draining)
        .filter_map(|p| {
            let (refused, error) = p.nack.as_ref()?;
            Some(Nack {
                proxy: p.name(),
                mode: p.node.mode.clone(),
                service: p.node.service.clone(),
                namespace: p.node.namespace.clone(),
                instance: p.node.instance.clone(),
                version: *refused,
                error: error.clone(),
                config_version: p.acked,
            })
        })
        .collect();
    Status {
        mesh: spec.name,
        control: control.to_string(),
        api: api.to_string(),
        ingress: ingress.to_string(),
        ingress_admin,
        prometheus: registry.prometheus().unwrap_or_default(),
        dashboard: registry.dashboard().unwrap_or_default(),
        trust_domain,
        version,
        ready: pending.is_empty(),
        pending,
        workloads,
        undeclared,
        nacks,
        store: None,
        network: pods.network,
    }
}

/// What keeps the mesh from routing whatever it can route, one line each.
fn pending(
    workloads: &[WorkloadStatus],
    proxies: &[ProxyRecord],
    version: u64,
    runs_ingress: bool,
) -> Vec<String> {
    let ingress: Vec<_> = proxies
        .iter()
        .filter(|p| p.node.mode == "ingress" && !p.draining)
        .collect();
    workloads
        .iter()
        .filter(|w| !w.ready && w.finished.is_none())
        .map(|w| format!("{}: {} ({})", w.instance, w.state, w.reason))
        .chain(
            proxies
                .iter()
                .filter(|p| !p.draining && p.acked != p.current.unwrap_or(version))
                .map(|p| match p.refused(p.current.unwrap_or(version)) {
                    Some((refused, error)) => format!(
                        "{}: refused snapshot {refused}: {error} (runs {})",
                        p.name(),
                        p.acked
                    ),
                    None => format!(
                        "{}: has not applied snapshot {} (runs {})",
                        p.name(),
                        p.current.unwrap_or(version),
                        p.acked
                    ),
                }),
        )
        .chain((runs_ingress && ingress.is_empty()).then(|| "ingress: not registered".to_string()))
        .chain(
            ingress
                .iter()
                .filter(|p| !p.ready)
                .map(|p| format!("{}: not ready ({})", p.name(), p.reason)),
        )
        .collect()
}

impl Status {
    /// Every proxy with an admin address, `(instance, admin)`: the replicas' sidecars, then the
    /// ingress gateway (as `ingress`).
    pub fn admins(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .workloads
            .iter()
            .filter(|w| !w.admin.is_empty())
            .map(|w| (w.instance.clone(), w.admin.clone()))
            .collect();
        if !self.ingress_admin.is_empty() {
            out.push(("ingress".into(), self.ingress_admin.clone()));
        }
        out
    }
}

impl WorkloadStatus {
    /// The replica as `stat`'s rows count it, its proxy's readings keyed by [`proxy_key`].
    pub fn replica(&self) -> stat::Replica {
        stat::Replica {
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            workload: self.workload.clone(),
            ready: self.ready,
            proxy: proxy_key(&self.instance, &self.admin),
        }
    }
}

/// The key of a proxy's readings: its instance and admin address (a replica restarted on
/// another address is a new series).
pub fn proxy_key(instance: &str, admin: &str) -> String {
    format!("{instance}@{admin}")
}
