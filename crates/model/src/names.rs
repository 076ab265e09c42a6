//! Service names, authorities and workload identities.
//!
//! A client may call a service as `NAME`, `NAME:PORT`, `NAME.NAMESPACE`,
//! `NAME.NAMESPACE.svc`, or `NAME.NAMESPACE.svc.cluster.local` (with or without a port), as in
//! Kubernetes. These helpers turn any of those into one [`ServiceKey`].

use serde::{Deserialize, Serialize};
use std::fmt;

/// The namespace a service lives in when none is given, as in Kubernetes.
/// The environment variable a proxy finds its one-time join token in (`weft up` sets it for
/// the proxies it starts; argv would show it to every user in `ps`).
pub const JOIN_TOKEN_ENV: &str = "WEFT_JOIN_TOKEN";

/// The environment variable a proxy finds the credential in that its admin listener asks of
/// `POST /shutdown` and `GET /tap` (`weft up` gives its proxies the mesh's admin credential).
pub const ADMIN_TOKEN_ENV: &str = "WEFT_ADMIN_TOKEN";

/// The environment variable a proxy finds the mesh's trust anchors in (PEM): the roots its
/// control plane's certificate must chain to (`weft up` sets it for the proxies it starts;
/// `weft proxy --trust-anchors-file` reads them from a file).
pub const TRUST_ANCHORS_ENV: &str = "WEFT_TRUST_ANCHORS";

/// The namespace of the control plane's own identity, reserved: no workload gets a
/// certificate in it.
pub const CONTROL_NAMESPACE: &str = "weft-system";
/// The control plane's service account in [`CONTROL_NAMESPACE`].
pub const CONTROL_ACCOUNT: &str = "weft-control";
/// The service-account prefix of operators' identities ([`Identity::operator`]).
pub const OPERATOR_ACCOUNT_PREFIX: &str = "operator-";

pub const DEFAULT_NAMESPACE: &str = "default";
/// The cluster domain of fully qualified service names, as in Kubernetes.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Istio's default SPIFFE trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// In a pod (a `weft up` transparent pod or a Kubernetes pod): where a sidecar takes the
/// connections its pod receives (Istio's inbound capture port).
pub const POD_INBOUND_PORT: u16 = 15006;
/// In a pod: the sidecar's admin listener (Istio's status port), reachable from outside it.
pub const POD_ADMIN_PORT: u16 = 15020;
/// In a pod: where the capture rules send the app's outbound TCP (Istio's outbound capture
/// port).
pub const POD_CAPTURE_PORT: u16 = 15001;
/// In a pod: the sidecar's explicit outbound listener (for clients that are told a proxy).
pub const POD_OUTBOUND_PORT: u16 = 15080;

/// A service's name and namespace: the key everything about a service is stored under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub name: String,
    pub namespace: String,
}

impl ServiceKey {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// `NAME.NAMESPACE.svc.cluster.local`, as Istio's `destination_service` label spells it.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.{}", self.name, self.namespace, CLUSTER_DOMAIN)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// A request's host and optional port, split from a `Host` header or an `:authority`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: &'a str,
    pub port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// Splits `host[:port]` (and `[v6]:port`). A port that is not a number makes the whole
    /// string the host, so it cannot match any service and the caller reports it as unknown.
    pub fn parse(s: &'a str) -> Authority<'a> {
        if let Some(rest) = s.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                let host = &rest[..end];
                let port = rest[end + 1..]
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok());
                return Authority { host, port };
            }
        }
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => match p.parse() {
                Ok(port) => Authority {
                    host: h,
                    port: Some(port),
                },
                Err(_) => Authority {
                    host: s,
                    port: None,
                },
            },
            _ => Authority {
                host: s,
                port: None,
            },
        }
    }

    /// The service this host names, if it has one of the Kubernetes service-name forms.
    /// `default_namespace` is the namespace a bare `NAME` resolves in (the caller's own).
    pub fn service_key(&self, default_namespace: &str) -> Option<ServiceKey> {
        let host = self.host.trim_end_matches('.');
        if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let mut parts = host.split('.');
        let name = parts.next()?;
        let rest: Vec<&str> = parts.collect();
        let namespace = match rest.as_slice() {
            [] => default_namespace,
            [ns] => ns,
            [ns, "svc"] => ns,
            [ns, "svc", domain @ ..] if domain.join(".").eq_ignore_ascii_case(CLUSTER_DOMAIN) => ns,
            _ => return None,
        };
        Some(ServiceKey::new(
            name.to_ascii_lowercase(),
            namespace.to_ascii_lowercase(),
        ))
    }
}

/// A workload identity: a SPIFFE ID such as `spiffe://cluster.local/ns/default/sa/hello`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(pub String);

impl Identity {
    /// The SPIFFE ID of a service account in a namespace, in the default trust domain.
    pub fn spiffe(namespace: &str, service_account: &str) -> Self {
        Self::spiffe_in(TRUST_DOMAIN, namespace, service_account)
    }

    /// The control plane's own SPIFFE ID in `trust_domain`: what its gRPC listener's certificate
    /// names and proxies expect. The CA signs it for no one else (its namespace,
    /// [`CONTROL_NAMESPACE`], is reserved).
    pub fn control_plane(trust_domain: &str) -> Self {
        Self::spiffe_in(trust_domain, CONTROL_NAMESPACE, CONTROL_ACCOUNT)
    }

    /// An operator's SPIFFE ID in `trust_domain` (`weft ca operator NAME`): what an operator's
    /// client certificate for the control plane's API names. In the reserved
    /// [`CONTROL_NAMESPACE`], so no proxy can be given it.
    pub fn operator(trust_domain: &str, name: &str) -> Self {
        Self::spiffe_in(
            trust_domain,
            CONTROL_NAMESPACE,
            &format!("{OPERATOR_ACCOUNT_PREFIX}{name}"),
        )
    }

    /// The operator's name if this is an operator's identity ([`Identity::operator`]) of
    /// `trust_domain`.
    pub fn operator_name(&self, trust_domain: &str) -> Option<&str> {
        let rest = self
            .0
            .strip_prefix("spiffe://")?
            .strip_prefix(trust_domain)?;
        let rest = rest.strip_prefix(&format!("/ns/{CONTROL_NAMESPACE}/sa/"))?;
        rest.strip_prefix(OPERATOR_ACCOUNT_PREFIX)
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }

    /// The SPIFFE ID of a service account in a namespace of `trust_domain`.
    pub fn spiffe_in(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity(format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
