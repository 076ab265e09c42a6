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
}

fn yes() -> bool {
    true
}

impl WorkloadSpec {
    /// The name of replica `i`: `WORKLOAD-i`, like a StatefulSet pod.
    pub fn instance_name(&self, i: u32) -> String {
        format!("{}-{}", self.name, i)
    }
}
