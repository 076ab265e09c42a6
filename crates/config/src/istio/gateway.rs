//! Istio Gateways: their serde shape, their checks, and the HTTP hosts each serves, with the
//! namespaces whose VirtualServices may bind them (`HOST`, `NAMESPACE/HOST`, `./HOST`, `~/HOST`).

use super::{Kind, Pending};
use crate::diagnostic::{reject, Diagnostic};
use model::Labels;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;

/// An Istio Gateway: which hosts the ingress serves, per server. weft runs one ingress, so the
/// `selector` (which gateway workloads run it) and the ports are not used to pick another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewaySpec {
    #[allow(dead_code)]
    pub selector: Option<Labels>,
    #[serde(default)]
    pub servers: Vec<Server>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Server {
    pub port: ServerPort,
    pub bind: Option<Value>,
    /// `HOST`, or `NAMESPACE/HOST`: only VirtualServices of that namespace (`.`: the
    /// Gateway's own; `*`: any; `~`: none) may bind the host.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub tls: Option<Value>,
    pub default_endpoint: Option<Value>,
    #[allow(dead_code)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ServerPort {
    /// Accepted; weft's ingress listens where the Mesh's `spec.ingress` says.
    #[allow(dead_code)]
    pub number: u32,
    pub protocol: String,
    #[allow(dead_code)]
    pub name: Option<String>,
    pub target_port: Option<Value>,
}

impl Server {
    /// Whether the server carries plain HTTP, which weft's ingress routes.
    pub(super) fn is_http(&self) -> bool {
        matches!(
            self.port.protocol.to_ascii_uppercase().as_str(),
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
        )
    }
}

/// A Gateway's (namespace, name).
pub(super) type GatewayKey = (String, String);

/// Which VirtualServices may bind a host of an Istio Gateway server.
#[derive(Debug)]
pub(super) enum Namespaces {
    Any,
    Only(String),
    None,
}

/// A Gateway's HTTP hosts, and where it is defined.
pub(super) type GatewayHosts = (Vec<(Namespaces, String)>, String);

/// Every Istio Gateway's HTTP hosts, by (namespace, name).
pub(super) fn gateways(
    pending: &[Pending],
    rejected: &mut Vec<Diagnostic>,
) -> HashMap<GatewayKey, GatewayHosts> {
    let mut out: HashMap<GatewayKey, GatewayHosts> = HashMap::new();
    for p in pending {
        let Kind::Gateway(gw) = &p.kind else {
            continue;
        };
        let (doc, label) = (p.doc(), p.label());
        let namespace = gw.metadata.namespace();
        let mut errors = Vec::new();
        let key = (namespace.to_string(), gw.metadata.name.clone());
        if let Some((_, at)) = out.get(&key) {
            errors.push(doc.error(
                "metadata.name",
                format!("Gateway {}/{} is already defined at {at}", key.0, key.1),
            ));
        }
        let mut hosts = Vec::new();
        for (i, server) in gw.spec.servers.iter().enumerate() {
            if server.hosts.is_empty() {
                errors.push(doc.error(
                    &format!("spec.servers[{i}].hosts"),
                    "needs at least one host",
                ));
            }
            if !server.is_http() {
                continue;
            }
            for (k, h) in server.hosts.iter().enumerate() {
                let (allowed, host) = match h.split_once('/') {
                    None | Some(("*", _)) => (Namespaces::Any, h.rsplit('/').next().unwrap_or(h)),
                    Some((".", host)) => (Namespaces::Only(namespace.to_string()), host),
                    Some(("~", host)) => (Namespaces::None, host),
                    Some((ns, host)) => (Namespaces::Only(ns.to_string()), host),
                };
                if host.is_empty() || host.contains('/') {
                    errors.push(doc.error(
                        &format!("spec.servers[{i}].hosts[{k}]"),
                        format!("`{h}` is not a host or NAMESPACE/HOST"),
                    ));
                    continue;
                }
                hosts.push((allowed, host.to_ascii_lowercase()));
            }
        }
        if gw.spec.servers.is_empty() {
            errors.push(doc.error("spec.servers", "needs at least one server"));
        }
        if !errors.is_empty() {
            reject(&label, errors, rejected);
            continue;
        }
        out.insert(key, (hosts, doc.place("metadata.name")));
    }
    out
}
