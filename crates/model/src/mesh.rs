//! The declared mesh: which services exist, which workloads back them, and how many replicas
//! of each `weft up` runs. Produced by the `config` crate from a `kind: Mesh` file.

use crate::names::{Identity, ServiceKey};
use crate::security::SecuritySpec;
use crate::snapshot::LoadBalancer;
use crate::Labels;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Where the ingress gateway listens when the mesh file does not say.
pub const DEFAULT_INGRESS: &str = "127.0.0.1:8080";

/// A whole mesh, validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeshSpec {
    /// The mesh's name (`metadata.name` of its first `Mesh` document); several meshes may run at once.
    pub name: String,
    /// Where the ingress gateway listens (port 0 picks a free one).
    pub ingress: SocketAddr,
    pub services: Vec<ServiceSpec>,
    /// HTTP routes per service (from VirtualServices, HTTPRoutes…); a service without routes
    /// sends every request to all its endpoints.
    #[serde(default)]
    pub routes: Vec<ServiceRoutes>,
    /// Connection routes per service (VirtualService `tcp` and `tls`); a service without
    /// them sends every connection to all its endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<ServiceTcpRoutes>,
    /// Traffic policies per service (DestinationRules, ServiceProfiles, annotations).
    #[serde(default)]
    pub policies: Vec<crate::policy::ServicePolicy>,
    /// Host-based routes of the ingress gateway.
    #[serde(default)]
    pub gateway: Vec<crate::snapshot::VirtualHost>,
    /// mTLS modes, authorization and JWT policies (Istio `security.istio.io`, Linkerd
    /// `policy.linkerd.io`, default inbound policies).
    #[serde(default = "SecuritySpec::new")]
    pub security: SecuritySpec,
    /// The retry policy of every HTTP route that sets none of its own, and of the catch-all
    /// route a service without routes gets (the Mesh file's `spec.defaultRetries`; Istio's
    /// default retry policy, Linkerd's absence of one). `None`: routes without a policy keep
    /// the proxy's own (connect failures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_retries: Option<crate::route::RetryPolicy>,
    /// How apps' traffic reaches their sidecars (`spec.interception`).
    #[serde(default)]
    pub interception: Interception,
    /// What a sidecar does with captured traffic to an address that is no service of the
    /// mesh (`spec.outboundTrafficPolicy.mode`, as Istio's mesh config).
    #[serde(default)]
    pub outbound_policy: OutboundPolicy,
    /// The outbound policies of Istio Sidecar resources, for the workloads they select.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_policies: Vec<ScopedOutboundPolicy>,
    /// Istio Sidecar resources' egress hosts, for the workloads they select: which services
    /// each proxy is told about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<crate::egress::ScopedEgress>,
    /// How proxies no Sidecar narrows are scoped (`spec.scope`).
    #[serde(default)]
    pub scope: crate::egress::MeshScope,
}

/// An outbound traffic policy for the workloads `scope` selects (an Istio Sidecar resource).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopedOutboundPolicy {
    pub scope: crate::security::Scope,
    pub mode: OutboundPolicy,
}

/// The outbound policy of the workload in `namespace` with `labels`: the most specific of
/// `scoped` that selects it (a namespace scope in `root_namespace` selecting every workload),
/// else the mesh's `default`.
pub fn outbound_policy_for(
    default: OutboundPolicy,
    scoped: &[ScopedOutboundPolicy],
    root_namespace: &str,
    namespace: &str,
    labels: &Labels,
) -> OutboundPolicy {
    use crate::security::Scope;
    scoped
        .iter()
        .filter_map(|s| match &s.scope {
            Scope::Namespace(ns) if ns == root_namespace && ns != namespace => Some((0, s.mode)),
            scope if scope.selects(namespace, labels) => Some((scope.specificity(), s.mode)),
            _ => None,
        })
        .max_by_key(|(rank, _)| *rank)
        .map_or(default, |(_, mode)| mode)
}

/// How apps' traffic reaches their sidecars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interception {
    /// Each app is told its sidecar's address (`HTTP_PROXY`, local client ports) and uses it.
    #[default]
    ProxyEnv,
    /// Each replica runs in its own network namespace (a pod) where iptables rules send its
    /// TCP traffic through its sidecar, as Istio's and Linkerd's init containers set up.
    Transparent,
}

impl Interception {
    pub fn as_str(self) -> &'static str {
        match self {
            Interception::ProxyEnv => "proxy-env",
            Interception::Transparent => "transparent",
        }
    }
}

/// Where services' virtual IPs are (transparent interception): `10.235.0.0/16`. They never
/// leave a pod: its capture rules send connections to them to its sidecar.
pub const SERVICE_VIP_PREFIX: [u8; 2] = [10, 235];

/// Each service's virtual IP: a slot of [`SERVICE_VIP_PREFIX`] drawn from a stable hash of its
/// name and namespace (FNV-1a), the next free one on a collision, so a service keeps its
/// address across restarts and across changes to the other services (unless two collide).
pub fn service_vips<'a>(
    keys: impl IntoIterator<Item = &'a ServiceKey>,
) -> BTreeMap<ServiceKey, std::net::Ipv4Addr> {
    let mut keys: Vec<&ServiceKey> = keys.into_iter().collect();
    keys.sort();
    keys.dedup();
    let slot = |k: &ServiceKey| {
        let mut h: u32 = 0x811c_9dc5;
        for b in format!("{}.{}", k.name, k.namespace).bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        // 1..=65534: neither the network's nor its broadcast address.
        (h % 65534) + 1
    };
    let mut taken = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for k in keys {
        let mut s = slot(k);
        while !taken.insert(s) {
            s = s % 65534 + 1;
        }
        let [a, b] = SERVICE_VIP_PREFIX;
        out.insert(
            k.clone(),
            std::net::Ipv4Addr::new(a, b, (s >> 8) as u8, (s & 0xff) as u8),
        );
    }
    out
}

/// What a sidecar does with captured traffic to an address that is no service of the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// Sends it on to where it was going (Istio's `PassthroughCluster`).
    #[default]
    AllowAny,
    /// Refuses it (Istio's `BlackHoleCluster`).
    RegistryOnly,
}

/// Which traffic of a service's replicas the capture rules leave alone (Istio's
/// `traffic.sidecar.istio.io/*` and Linkerd's `config.linkerd.io/skip-*` annotations).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// Outbound connections to these ports go straight out, past the sidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_outbound_ports: Vec<u16>,
    /// Inbound connections to these ports go straight to the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_inbound_ports: Vec<u16>,
    /// When set, only outbound connections to these CIDRs are captured (`*`: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_outbound_cidrs: Vec<String>,
    /// Outbound connections to these CIDRs go straight out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_outbound_cidrs: Vec<String>,
}

impl Capture {
    pub fn is_empty(&self) -> bool {
        *self == Capture::default()
    }
}

/// The routes of one service, in the order they are tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRoutes {
    pub service: ServiceKey,
    pub routes: Vec<crate::route::HttpRoute>,
}

/// The connection routes of one service, in the order they are tried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTcpRoutes {
    pub service: ServiceKey,
    pub routes: Vec<crate::route::TcpRoute>,
}

/// One service: the name clients call, its port, and the workloads that serve it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    /// The port clients call (`http://NAME:PORT/`): the first of `ports`.
    pub port: u16,
    /// Every port, the first being `port`, with what each carries.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    pub lb: LoadBalancer,
    pub labels: Labels,
    pub annotations: Labels,
    pub workloads: Vec<WorkloadSpec>,
    /// Traffic its replicas' capture rules leave alone (transparent interception).
    #[serde(default, skip_serializing_if = "Capture::is_empty")]
    pub capture: Capture,
    /// The services it calls (`dependsOn`), resolved for its namespace; `None`: not declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<crate::egress::EgressHost>>,
}

/// What a service port carries, as Istio's protocol selection names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 to the app (HTTP/2 between proxies). The default.
    #[default]
    Http,
    /// HTTP/2 without TLS (h2c) to the app.
    Http2,
    /// gRPC: HTTP/2 to the app, success judged by `grpc-status`.
    Grpc,
    /// An opaque byte stream.
    Tcp,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Http,
        Protocol::Http2,
        Protocol::Grpc,
        Protocol::Tcp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }

    /// `http`, `http2`, `grpc` or `tcp` (any case), as the Mesh file and `--app-protocol`
    /// write them.
    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// The app speaks HTTP/2 on this port (h2c).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    /// HTTP of any version: routed per request.
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: Protocol,
    /// Its name (empty when the service has only `port`); workloads get `PORT_<NAME>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// How the protocol was decided, for `weft check` (`protocol: grpc`, `name prefix grpc-`,
    /// `annotation config.linkerd.io/opaque-ports`, `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

impl PortSpec {
    /// `PORT_<NAME>`: the name upper-cased, `-` and `.` as `_`; `None` without a name.
    pub fn env_name(&self) -> Option<String> {
        (!self.name.is_empty()).then(|| format!("PORT_{}", env_word(&self.name)))
    }
}

/// A name as it stands in an environment variable's name: upper case, `-` and `.` as `_`.
pub fn env_word(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

impl ServiceSpec {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.name, &self.namespace)
    }

    /// The identity the service's workloads run as (service account = service name).
    pub fn identity(&self) -> Identity {
        Identity::spiffe(&self.namespace, &self.name)
    }

    /// The protocol of the first port (what the sidecar's inbound speaks to the app).
    pub fn protocol(&self) -> Protocol {
        self.ports.first().map_or(Protocol::Http, |p| p.protocol)
    }

    /// [`ServiceSpec::identity`] in the mesh CA's `trust_domain`.
    pub fn identity_in(&self, trust_domain: &str) -> Identity {
        Identity::spiffe_in(trust_domain, &self.namespace, &self.name)
    }
}

/// One workload (a Deployment, in Kubernetes terms): a command run as `replicas` processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub name: String,
    pub labels: Labels,
    pub replicas: u32,
    /// argv; a first word of `weft` means the running weft executable.
    pub command: Vec<String>,
    /// Extra environment for the process.
    pub env: BTreeMap<String, String>,
    /// Whether the workload runs with a sidecar. Without one (`false`) it is a plain process
    /// outside the mesh — a plaintext client, as Istio's `legacy` namespace — and never an
    /// endpoint of its service.
    #[serde(default = "yes")]
    pub sidecar: bool,
    /// Whether a replica whose app exits is started again (a Kubernetes pod's
    /// `restartPolicy`). Its sidecar is always restarted while the app runs.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Where its replicas run when hosts join the mesh (`weft host join`): replica `i` on
    /// `placement.hosts[i % len]`, or on the joined hosts whose labels match
    /// `placement.host_selector`; empty: on no joined host (`weft up` runs every replica on
    /// its own machine whatever this says).
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
}

/// Which hosts a workload's replicas run on (Mesh file: `hosts`, `hostSelector`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Host names, in order: replica `i` runs on `hosts[i % hosts.len()]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Labels a joined host must have; replica `i` runs on the `i % n`-th of the `n` matching
    /// hosts, by name.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub host_selector: Labels,
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.host_selector.is_empty()
    }

    /// The host replica `i` runs on, among the joined hosts `joined` (name, labels); `None`:
    /// on none of them.
    pub fn host_of<'a>(&'a self, i: u32, joined: &'a [(String, Labels)]) -> Option<&'a str> {
        if !self.hosts.is_empty() {
            return Some(&self.hosts[i as usize % self.hosts.len()]);
        }
        if self.host_selector.is_empty() {
            return None;
        }
        let mut matching: Vec<&str> = joined
            .iter()
            .filter(|(_, labels)| {
                self.host_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        matching.sort_unstable();
        (!matching.is_empty()).then(|| matching[i as usize % matching.len()])
    }
}

fn yes() -> bool {
    true
}

/// When an app that exited is started again: Kubernetes' `restartPolicy`, with its names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always (a server, a Deployment's pods).
    #[default]
    Always,
    /// Only after a non-zero exit status (or a signal): a job retried until it succeeds.
    OnFailure,
    /// Never: a job run once, whatever its outcome.
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }

    /// The policy named `name` (Kubernetes' spelling), if any.
    pub fn parse(name: &str) -> Option<RestartPolicy> {
        [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }

    /// Whether an app that exited with `success` (status 0) is started again.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

impl WorkloadSpec {
    /// The name of replica `i`: `WORKLOAD-i`, like a StatefulSet pod.
    pub fn instance_name(&self, i: u32) -> String {
        format!("{}-{}", self.name, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_go_to_named_hosts_in_turn_or_to_matching_ones_by_name() {
        let named = Placement {
            hosts: vec!["h1".into(), "h2".into()],
            ..Default::default()
        };
        let joined = vec![
            (
                "h3".to_string(),
                Labels::from([("zone".into(), "a".into())]),
            ),
            (
                "h1".to_string(),
                Labels::from([("zone".into(), "a".into())]),
            ),
            (
                "h2".to_string(),
                Labels::from([("zone".into(), "b".into())]),
            ),
        ];
        let on = |p: &Placement, i| p.host_of(i, &joined).map(str::to_string);
        assert_eq!(on(&named, 0).as_deref(), Some("h1"));
        assert_eq!(on(&named, 3).as_deref(), Some("h2"));
        let zone_a = Placement {
            host_selector: Labels::from([("zone".into(), "a".into())]),
            ..Default::default()
        };
        assert_eq!(on(&zone_a, 0).as_deref(), Some("h1"));
        assert_eq!(on(&zone_a, 1).as_deref(), Some("h3"));
        let zone_c = Placement {
            host_selector: Labels::from([("zone".into(), "c".into())]),
            ..Default::default()
        };
        assert_eq!(on(&zone_c, 0), None);
        assert_eq!(on(&Placement::default(), 0), None);
    }

    #[test]
    fn restart_policies_as_kubernetes_names_them() {
        use RestartPolicy::*;
        let restarts = |p: RestartPolicy| (p.restarts(true), p.restarts(false));
        assert_eq!(restarts(Always), (true, true));
        assert_eq!(restarts(OnFailure), (false, true));
        assert_eq!(restarts(Never), (false, false));
        for p in [Always, OnFailure, Never] {
            assert_eq!(RestartPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(RestartPolicy::parse("always"), None);
        // Older documents without the field read as before.
        let old = r#"{"name":"w","labels":{},"replicas":1,"command":["x"],"env":{}}"#;
        let w: WorkloadSpec = serde_json::from_str(old).unwrap();
        assert_eq!((w.restart_policy, w.sidecar), (Always, true));
    }

    #[test]
    fn service_vips_are_stable_and_distinct() {
        let keys: Vec<ServiceKey> = (0..300)
            .map(|i| ServiceKey::new(format!("svc{i}"), "default"))
            .collect();
        let all = service_vips(&keys);
        let distinct: std::collections::BTreeSet<_> = all.values().collect();
        assert_eq!(distinct.len(), 300);
        assert!(all.values().all(|v| v.octets()[..2] == SERVICE_VIP_PREFIX));
        // A service keeps its address when others come and go (no collision among these).
        let some = service_vips(&keys[100..110]);
        for (k, v) in &some {
            assert_eq!(all[k], *v, "{k}");
        }
        // Fixed by the name alone: the same on every machine and every run.
        let one = service_vips([&ServiceKey::new("reviews", "default")]);
        assert_eq!(one.values().next().unwrap().octets()[..2], [10, 235]);
        assert_eq!(one, service_vips([&ServiceKey::new("reviews", "default")]));
    }

    #[test]
    fn the_most_specific_sidecar_policy_wins() {
        use crate::security::Scope;
        let web: Labels = [("app".to_string(), "web".to_string())].into();
        let scoped = |scope, mode| ScopedOutboundPolicy { scope, mode };
        let (allow, only) = (OutboundPolicy::AllowAny, OutboundPolicy::RegistryOnly);
        let policies = vec![
            scoped(Scope::Namespace("istio-system".into()), only),
            scoped(Scope::Namespace("shop".into()), allow),
            scoped(
                Scope::Workload {
                    namespace: "shop".into(),
                    labels: web.clone(),
                },
                only,
            ),
        ];
        let of = |ns: &str, labels: &Labels| {
            outbound_policy_for(allow, &policies, "istio-system", ns, labels)
        };
        // The root namespace's applies everywhere else; a namespace's beats it; a selector's
        // beats both.
        assert_eq!(of("default", &Labels::new()), only);
        assert_eq!(of("shop", &Labels::new()), allow);
        assert_eq!(of("shop", &web), only);
        assert_eq!(
            outbound_policy_for(only, &[], "istio-system", "x", &web),
            only
        );
    }
}
