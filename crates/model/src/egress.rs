//! Which services a workload's proxy is told about: Istio's Sidecar `egress[].hosts`
//! (`NAMESPACE/DNS_NAME`, as `./*`, `istio-system/*`, `*/reviews.prod.svc.cluster.local`,
//! `~/*`), scoped to the workloads a Sidecar selects. The control plane sends each proxy only
//! the services its Sidecar admits (and what it cannot work without: its own service, the
//! destinations of the routes it holds); a service outside that set is, to the proxy, an
//! unknown host.
//!
//! Without a Sidecar, the Mesh file's `spec.scope` ([`MeshScope`]) decides: the whole mesh
//! (`whole`, the default), the services a service declares it calls (`dependsOn`, with
//! `declared` or `observed`), or, with `observed`, only what the proxy cannot work without at
//! first, growing with the hosts it asks the control plane for ([`asked_service`]).

use crate::names::ServiceKey;
use crate::security::Scope;
use crate::snapshot::Snapshot;
use crate::Labels;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The namespace part of an egress host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressNamespace {
    /// `*`: every namespace.
    Any,
    /// `.`: the namespace of the workload the Sidecar applies to (for a Sidecar in the root
    /// namespace applied as the mesh default, the workload's own, not the root namespace).
    Own,
    /// `~`: no namespace (`~/*` admits no service at all).
    Nothing,
    /// A namespace by name.
    Named(String),
}

/// One `egress[].hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EgressHost {
    pub namespace: EgressNamespace,
    /// `*` (every service of the namespace), `*.SUFFIX` (names ending in `.SUFFIX`) or a name
    /// (`NAME.NAMESPACE.svc.cluster.local`, or a shorter form a client may call: `NAME`,
    /// `NAME.NAMESPACE`, `NAME.NAMESPACE.svc`); lowercase.
    pub name: String,
}

/// Why an egress host cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressHostError {
    #[error("`{0}` is not NAMESPACE/DNS_NAME (as `./*`, `istio-system/*` or `*/NAME.NAMESPACE.svc.cluster.local`)")]
    NoSlash(String),
    #[error("`{0}`: the namespace must be `*`, `.`, `~` or a namespace's name")]
    Namespace(String),
    #[error("`{0}`: the name must be `*`, `*.SUFFIX` or a DNS name (a wildcard only as the whole first label)")]
    Name(String),
}

/// How the proxies no Sidecar narrows are scoped: the Mesh file's `spec.scope`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshScope {
    /// Every such proxy is told about every service (`dependsOn` is not applied).
    #[default]
    Whole,
    /// A proxy of a service that declares `dependsOn` is told about those services; others
    /// about every service.
    Declared,
    /// A proxy is told about what its service declares (`dependsOn`), else only about what it
    /// cannot work without, and about every service it asks for when a request names one it
    /// lacks.
    Observed,
}

impl MeshScope {
    pub const ALL: [MeshScope; 3] = [MeshScope::Whole, MeshScope::Declared, MeshScope::Observed];

    pub fn as_str(self) -> &'static str {
        match self {
            MeshScope::Whole => "whole",
            MeshScope::Declared => "declared",
            MeshScope::Observed => "observed",
        }
    }

    pub fn parse(s: &str) -> Option<MeshScope> {
        MeshScope::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The services one service declares it calls (a Mesh-file service's `dependsOn`), as egress
/// hosts resolved for its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Declared {
    pub service: ServiceKey,
    pub hosts: Vec<EgressHost>,
}

/// Why a `dependsOn` entry cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DependsOnError {
    #[error("`{0}` is not NAME, NAME.NAMESPACE, NAMESPACE/NAME or NAMESPACE/* (names are lowercase letters, digits and '-')")]
    Form(String),
}

/// Whether `s` is a DNS label as Kubernetes names are (lowercase letters, digits, `-`).
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl EgressHost {
    /// Reads `NAMESPACE/DNS_NAME` as Istio's validation does: exactly one `/`, a namespace of
    /// `*`, `.`, `~` or a name, and a DNS name with a wildcard only as its whole first label.
    pub fn parse(s: &str) -> Result<EgressHost, EgressHostError> {
        let lower = s.trim().to_ascii_lowercase();
        let Some((ns, name)) = lower.split_once('/') else {
            return Err(EgressHostError::NoSlash(s.to_string()));
        };
        if name.contains('/') {
            return Err(EgressHostError::NoSlash(s.to_string()));
        }
        let namespace = match ns {
            "*" => EgressNamespace::Any,
            "." => EgressNamespace::Own,
            "~" => EgressNamespace::Nothing,
            n if is_label(n) => EgressNamespace::Named(n.to_string()),
            _ => return Err(EgressHostError::Namespace(s.to_string())),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let labels = name.strip_prefix("*.").unwrap_or(name);
        let ok = name == "*" || (!labels.is_empty() && labels.split('.').all(is_label));
        if !ok {
            return Err(EgressHostError::Name(s.to_string()));
        }
        Ok(EgressHost {
            namespace,
            name: name.to_string(),
        })
    }

    /// Reads one `dependsOn` entry of a service in `namespace`: `NAME` (a service of
    /// `namespace`), `NAME.NAMESPACE`, `NAMESPACE/NAME` or `NAMESPACE/*` (every service of a
    /// namespace). Names are as Kubernetes writes them (lowercase).
    pub fn depends_on(s: &str, namespace: &str) -> Result<EgressHost, DependsOnError> {
        let bad = || DependsOnError::Form(s.to_string());
        let (ns, name) = match (s.split_once('/'), s.split_once('.')) {
            (Some((ns, name)), None) => (ns, name),
            (None, Some((name, ns))) => (ns, name),
            (None, None) => (namespace, s),
            (Some(_), Some(_)) => return Err(bad()),
        };
        if !is_label(ns) || !(name == "*" || is_label(name)) || (name == "*" && !s.contains('/')) {
            return Err(bad());
        }
        Ok(EgressHost {
            namespace: EgressNamespace::Named(ns.to_string()),
            name: name.to_string(),
        })
    }

    /// The one service this host names, if it names one (`NAMESPACE/NAME`).
    pub fn service(&self) -> Option<ServiceKey> {
        match &self.namespace {
            EgressNamespace::Named(ns) if is_label(&self.name) => {
                Some(ServiceKey::new(&self.name, ns))
            }
            _ => None,
        }
    }

    /// This host as it applies to a workload of `namespace`: `.` becomes that namespace.
    pub fn resolved(&self, namespace: &str) -> EgressHost {
        match self.namespace {
            EgressNamespace::Own => EgressHost {
                namespace: EgressNamespace::Named(namespace.to_string()),
                name: self.name.clone(),
            },
            _ => self.clone(),
        }
    }

    /// Whether this host admits `service` for a workload of `namespace` (which `.` means).
    pub fn admits(&self, namespace: &str, service: &ServiceKey) -> bool {
        let in_namespace = match &self.namespace {
            EgressNamespace::Any => true,
            EgressNamespace::Own => service.namespace == namespace,
            EgressNamespace::Nothing => false,
            EgressNamespace::Named(ns) => service.namespace == *ns,
        };
        if !in_namespace {
            return false;
        }
        if self.name == "*" {
            return true;
        }
        // Every spelling (`NAME.NS`, `NAME.NS.svc`, the FQDN) is a prefix of the FQDN.
        let fqdn = service.fqdn();
        let short = service.name.len() + 1 + service.namespace.len();
        let spellings = [&fqdn[..short], &fqdn[..short + 4], &fqdn[..]];
        match self.name.strip_prefix('*') {
            // `*.SUFFIX`: any spelling that ends with `.SUFFIX` and has a label before it.
            Some(suffix) => spellings.iter().any(|s| s.ends_with(suffix)),
            // A bare name is a service of the namespace the host names (`*`: any).
            None => service.name == self.name || spellings.contains(&self.name.as_str()),
        }
    }
}

impl fmt::Display for EgressHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            EgressNamespace::Any => f.write_str("*")?,
            EgressNamespace::Own => f.write_str(".")?,
            EgressNamespace::Nothing => f.write_str("~")?,
            EgressNamespace::Named(ns) => f.write_str(ns)?,
        }
        write!(f, "/{}", self.name)
    }
}

/// One Istio Sidecar, as far as it says which services the workloads it selects see.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopedEgress {
    /// `Sidecar NS/NAME`, for messages.
    pub name: String,
    /// A workload selector, or the Sidecar's namespace when it has none.
    pub scope: Scope,
    /// The union of its `egress[].hosts`; `None`: it has no `egress` and its workloads see
    /// every service (Istio's default egress listener, `*/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<EgressHost>>,
}

/// The Sidecar that applies to the workload of `namespace` with `labels`, as Istio picks it:
/// the first one of its namespace whose workload selector selects it, else its namespace's one
/// without a selector, else the one without a selector in `root_namespace` (the mesh's
/// default). `None`: no Sidecar applies and the workload sees every service.
pub fn egress_for<'a>(
    scoped: &'a [ScopedEgress],
    root_namespace: &str,
    namespace: &str,
    labels: &Labels,
) -> Option<&'a ScopedEgress> {
    let by_selector = scoped
        .iter()
        .find(|s| matches!(s.scope, Scope::Workload { .. }) && s.scope.selects(namespace, labels));
    let namespace_wide = |ns: &str| {
        scoped
            .iter()
            .find(|s| matches!(&s.scope, Scope::Namespace(n) if n == ns))
    };
    by_selector
        .or_else(|| namespace_wide(namespace))
        .or_else(|| namespace_wide(root_namespace))
}

/// Who a proxy is, as far as the services it is told about depend on it.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    /// The service whose replica it fronts (the ingress: its own name).
    pub service: &'a ServiceKey,
    pub labels: &'a Labels,
    /// The ingress gateway: only a Sidecar whose workload selector picks it applies (Istio's
    /// gateways heed no Sidecar; namespace-wide and mesh-default ones never narrow the
    /// ingress, which routes by service name).
    pub ingress: bool,
    /// It asks for services it lacks (`spec.scope: observed`); one that cannot (it predates
    /// asking) is treated as in a mesh that declares.
    pub asks: bool,
}

/// The Sidecar that applies to `who`, if any: for the ingress only one whose workload selector
/// picks it.
fn sidecar_for<'a>(snapshot: &'a Snapshot, who: &Viewer<'_>) -> Option<&'a ScopedEgress> {
    let namespace = &who.service.namespace;
    if who.ingress {
        snapshot.egress.iter().find(|s| {
            matches!(s.scope, Scope::Workload { .. }) && s.scope.selects(namespace, who.labels)
        })
    } else {
        egress_for(
            &snapshot.egress,
            &snapshot.security.root_namespace,
            namespace,
            who.labels,
        )
    }
}

/// The egress hosts that bound what `who` is told about in `snapshot`, with `.` resolved to
/// its namespace, sorted and without repeats: the same for every proxy a Sidecar treats alike.
/// `None`: no Sidecar with `egress` applies, and it is told about every service.
pub fn hosts_for(snapshot: &Snapshot, who: &Viewer<'_>) -> Option<Vec<EgressHost>> {
    let namespace = &who.service.namespace;
    let mut hosts: Vec<EgressHost> = sidecar_for(snapshot, who)?
        .hosts
        .as_ref()?
        .iter()
        .map(|h| h.resolved(namespace))
        .collect();
    hosts.sort();
    hosts.dedup();
    Some(hosts)
}

/// What bounds the services a proxy is told about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bound {
    /// The egress hosts whose services it is told about (sorted, without repeats); `None`:
    /// every service.
    pub hosts: Option<Vec<EgressHost>>,
    /// It may ask for more services as requests name them (`spec.scope: observed`, no
    /// Sidecar applies).
    pub on_demand: bool,
}

/// What bounds what `who` is told about in `snapshot`: an Istio Sidecar that applies to it
/// (the explicit resource wins), else, by `spec.scope`, what its service declares
/// (`dependsOn`), else (`observed`) nothing but what it cannot work without, to grow on demand.
/// The ingress, which routes by any service's name, is bounded by a Sidecar only.
pub fn bound_for(snapshot: &Snapshot, who: &Viewer<'_>) -> Bound {
    if let Some(sidecar) = sidecar_for(snapshot, who) {
        if sidecar.hosts.is_some() {
            return Bound {
                hosts: hosts_for(snapshot, who),
                on_demand: false,
            };
        }
        // A Sidecar without `egress` narrows nothing, as Istio's default egress listener.
        return Bound {
            hosts: None,
            on_demand: false,
        };
    }
    if who.ingress || snapshot.scope == MeshScope::Whole {
        return Bound {
            hosts: None,
            on_demand: false,
        };
    }
    let on_demand = snapshot.scope == MeshScope::Observed && who.asks;
    let declared = snapshot
        .declared
        .iter()
        .find(|d| &d.service == who.service)
        .map(|d| {
            let mut hosts = d.hosts.clone();
            hosts.sort();
            hosts.dedup();
            hosts
        });
    Bound {
        hosts: match (declared, on_demand) {
            (Some(hosts), _) => Some(hosts),
            (None, true) => Some(Vec::new()),
            (None, false) => None,
        },
        on_demand,
    }
}

/// The service of `snapshot` a proxy of `namespace` names with `host` (a name as the proxy's
/// app wrote it, without port: `NAME`, `NAME.NAMESPACE`, the FQDN; or a service's virtual IP),
/// as an index into `snapshot.services`.
pub fn asked_service(snapshot: &Snapshot, host: &str, namespace: &str) -> Option<usize> {
    let host = host.trim().trim_end_matches('.');
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return snapshot.services.iter().position(|s| s.vip == Some(ip));
    }
    let key = crate::names::Authority::parse(host).service_key(namespace)?;
    snapshot.services.iter().position(|s| s.key == key)
}

/// Indices into `snapshot.services` of the services `hosts` (from [`hosts_for`]) admit for a
/// workload of `namespace`, ascending.
pub fn admitted(snapshot: &Snapshot, hosts: &[EgressHost], namespace: &str) -> Vec<usize> {
    snapshot
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| hosts.iter().any(|h| h.admits(namespace, &s.key)))
        .map(|(i, _)| i)
        .collect()
}

/// Indices into `snapshot.services` of what a proxy is told about when its hosts admit
/// `admitted` (from [`admitted`]), ascending: those, and what it cannot work without: its own
/// service, every service the routes of those name (destinations and mirrors, as Istio adds a
/// VirtualService's destinations to a Sidecar's scope), the services the ingress's gateway
/// routes name when `who` is the ingress, and the services a `jwksUri` names (the proxy
/// fetches keys through its own outbound listener).
pub fn visible(snapshot: &Snapshot, admitted: &[usize], who: &Viewer<'_>) -> Vec<usize> {
    use std::collections::BTreeSet;
    let namespace = &who.service.namespace;
    let index = |k: &ServiceKey| snapshot.services.iter().position(|s| &s.key == k);
    let mut seen: BTreeSet<usize> = admitted.iter().copied().collect();
    seen.extend(index(who.service));
    let mut named: Vec<&ServiceKey> = Vec::new();
    for &i in admitted {
        let svc = &snapshot.services[i];
        for r in &svc.routes {
            named.extend(r.destinations.iter().map(|d| &d.service));
            named.extend(r.mirrors.iter().map(|m| &m.destination.service));
        }
        for r in &svc.tcp_routes {
            named.extend(r.destinations.iter().map(|d| &d.to.service));
        }
    }
    if let Some(own) = index(who.service) {
        let svc = &snapshot.services[own];
        for r in &svc.routes {
            named.extend(r.destinations.iter().map(|d| &d.service));
        }
    }
    if who.ingress {
        for r in snapshot.gateway.iter().flat_map(|v| &v.routes) {
            named.extend(r.destinations.iter().map(|d| &d.service));
            named.extend(r.mirrors.iter().map(|m| &m.destination.service));
        }
    }
    let jwks: Vec<ServiceKey> = snapshot
        .security
        .request_authns
        .iter()
        .flat_map(|a| &a.rules)
        .filter_map(|r| r.jwks_uri.as_deref())
        .filter_map(|uri| jwks_service(uri, namespace))
        .collect();
    named.extend(jwks.iter());
    named.sort();
    named.dedup();
    seen.extend(named.into_iter().filter_map(index));
    seen.into_iter().collect()
}

/// The mesh service a `jwksUri` names (`http://auth/…`, `http://auth.ns.svc.cluster.local:80/…`),
/// a bare name resolving in `namespace`.
fn jwks_service(uri: &str, namespace: &str) -> Option<ServiceKey> {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    crate::names::Authority::parse(authority).service_key(namespace)
}

#[cfg(test)]
mod tests;
