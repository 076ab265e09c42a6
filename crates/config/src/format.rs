//! The `kind: Mesh` document as written, for serde: no defaults applied, nothing checked yet.

use model::security::DefaultPolicy;
use model::{Labels, LoadBalancer};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The only `apiVersion` of `kind: Mesh`.
pub const API_VERSION: &str = "weft.dev/v1alpha1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MeshDocument {
    // Read (and checked) from the marked tree before serde sees the document.
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: MeshBody,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MeshBody {
    pub ingress: Option<String>,
    #[serde(default)]
    pub services: Vec<Service>,
    /// Istio's root namespace: security policies there without a selector are mesh-wide
    /// (`istio-system` when no Mesh document sets it).
    #[serde(rename = "rootNamespace")]
    pub root_namespace: Option<String>,
    /// Linkerd's cluster-wide default inbound policy (`all-unauthenticated` when none sets it).
    #[serde(rename = "defaultInboundPolicy")]
    pub default_inbound_policy: Option<DefaultPolicy>,
    /// Linkerd's `clusterNetworks`: a comma-separated CIDR list (as Linkerd's install value) or
    /// a YAML list.
    #[serde(rename = "clusterNetworks")]
    pub cluster_networks: Option<CidrList>,
    /// The retry policy of routes that set none: `istio`, `linkerd`, `none`, or an Istio
    /// `HTTPRetry` (`attempts`, `retryOn`, `perTryTimeout`). Read by the loader, which locates
    /// its errors.
    #[serde(rename = "defaultRetries")]
    pub default_retries: Option<serde_yaml_ng::Value>,
    /// `proxy-env` (the default) or `transparent`.
    pub interception: Option<String>,
    /// Istio's mesh config `outboundTrafficPolicy: {mode: ALLOW_ANY | REGISTRY_ONLY}`.
    #[serde(rename = "outboundTrafficPolicy")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Which services the proxies no Sidecar narrows are told about: `whole` (the default),
    /// `declared` or `observed`.
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboundTrafficPolicy {
    pub mode: String,
}

/// CIDRs written `"10.0.0.0/8,100.64.0.0/10"` or as a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum CidrList {
    Text(String),
    List(Vec<String>),
}

impl CidrList {
    pub fn items(&self) -> Vec<String> {
        match self {
            CidrList::Text(t) => t
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            CidrList::List(l) => l.iter().map(|c| c.trim().to_string()).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Service {
    pub name: String,
    pub namespace: Option<String>,
    /// The one port (with `protocol`); or `ports`.
    pub port: Option<u16>,
    /// `http` (default), `http2`, `grpc` or `tcp`, for `port`.
    pub protocol: Option<String>,
    /// Several ports, each with its protocol and name.
    pub ports: Option<Vec<PortEntry>>,
    pub lb: Option<LoadBalancer>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// The services it calls: `NAME`, `NAME.NAMESPACE`, `NAMESPACE/NAME` or `NAMESPACE/*`.
    #[serde(rename = "dependsOn")]
    pub depends_on: Option<Vec<String>>,
}

/// One entry of a service's `ports`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortEntry {
    pub port: u16,
    pub protocol: Option<String>,
    pub name: Option<String>,
    /// Kubernetes' `appProtocol` (Istio honours it before the name's prefix).
    #[serde(rename = "appProtocol")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Workload {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default = "one")]
    pub replicas: u32,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `false`: the workload runs without a sidecar, as a plaintext client outside the mesh.
    #[serde(default = "yes")]
    pub sidecar: bool,
    /// `Always` (default), `OnFailure` or `Never`; checked by the loader, which locates its
    /// errors.
    #[serde(rename = "restartPolicy")]
    pub restart_policy: Option<String>,
    /// The joined hosts its replicas run on, by name (replica `i` on `hosts[i % len]`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Or: the joined hosts with these labels.
    #[serde(default, rename = "hostSelector")]
    pub host_selector: Labels,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}
