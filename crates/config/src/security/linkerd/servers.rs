//! Linkerd Servers: a port of the workloads a `podSelector` selects, with their default access
//! policy; checked as Linkerd's admission webhook checks them, and against the mesh's workloads
//! (a port that none of them serves is noticed).

use super::super::{Ctx, Out};
use super::Server;
use crate::doc::Doc;
use crate::k8s::Object;
use crate::marked::Value as Tree;
use model::security::{DefaultPolicy, LinkerdServer, Scope};
use model::Labels;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// A Kubernetes LabelSelector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
    pub match_expressions: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ServerSpec {
    pub pod_selector: Option<LabelSelector>,
    pub external_workload_selector: Option<LabelSelector>,
    /// A number or a port name.
    pub port: Value,
    pub proxy_protocol: Option<String>,
    pub access_policy: Option<DefaultPolicy>,
}

/// The labels of a document's `metadata.labels`, read from its tree (Server selectors of
/// ServerAuthorizations match them).
fn object_labels(doc: &Doc) -> Labels {
    let Some(Tree::Map(entries)) = doc
        .tree
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .map(|n| &n.value)
    else {
        return Labels::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect()
}

/// A Kubernetes port name (IANA_SVC_NAME): 1–15 lowercase letters, digits and `-`, with a
/// letter, not starting or ending with `-`, no `--`.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && s.bytes().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

pub(super) fn server(
    o: &Object<ServerSpec>,
    doc: &Doc,
    ctx: &Ctx,
    out: &mut Out,
) -> Option<Server> {
    let spec = &o.spec;
    let namespace = o.metadata.namespace();
    let scope = match (&spec.pod_selector, &spec.external_workload_selector) {
        (Some(_), Some(_)) => {
            out.error(
                "spec.externalWorkloadSelector",
                "set podSelector or externalWorkloadSelector, not both",
            );
            None
        }
        (None, Some(_)) => {
            out.note(
                "spec.externalWorkloadSelector",
                "externalWorkloadSelector: weft has no external workloads; this Server selects \
                 nothing",
            );
            return None;
        }
        (None, None) => {
            out.error("spec", "a Server needs a podSelector");
            None
        }
        (Some(sel), None) => {
            if sel.match_expressions.is_some() {
                out.note(
                    "spec.podSelector.matchExpressions",
                    "podSelector.matchExpressions is not yet supported; ignored (the Server \
                     selects by matchLabels alone)",
                );
            }
            Some(Scope::Workload {
                namespace: namespace.to_string(),
                labels: sel.match_labels.clone(),
            })
        }
    };
    let port = match &spec.port {
        Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(p) if p != 0 => Some(Some(p)),
            _ => {
                out.error("spec.port", format!("port {n} must be between 1 and 65535"));
                None
            }
        },
        Value::String(name) if is_port_name(name) => Some(None),
        other => {
            out.error(
                "spec.port",
                format!("{other:?} is neither a port number nor a port name"),
            );
            None
        }
    };
    match spec.proxy_protocol.as_deref() {
        None | Some("unknown" | "HTTP/1" | "HTTP/2" | "gRPC") => {}
        Some(p @ ("opaque" | "TLS")) => out.note(
            "spec.proxyProtocol",
            format!("proxyProtocol {p} is not yet supported; weft detects the protocol"),
        ),
        Some(other) => out.error(
            "spec.proxyProtocol",
            format!(
                "unknown proxyProtocol `{other}`: unknown, HTTP/1, HTTP/2, gRPC, opaque or TLS"
            ),
        ),
    }
    let (scope, port) = (scope?, port?);
    if let Some(selected) = ctx.selected(&scope) {
        let mut ports: Vec<(String, u16)> = selected
            .iter()
            .map(|w| (w.service.to_string(), w.port))
            .collect();
        ports.sort();
        ports.dedup();
        let listed = || {
            let all: Vec<String> = ports.iter().map(|(s, p)| format!("{s}: {p}")).collect();
            all.join(", ")
        };
        match port {
            _ if ports.is_empty() => {
                out.note("spec.podSelector", "selects no workload of the mesh")
            }
            None if ports.iter().any(|(_, p)| *p != ports[0].1) => out.note(
                "spec.port",
                format!(
                    "port name `{}`: weft workloads have one port, their service's, so the name \
                     means it; the workloads this Server selects serve on different ports ({})",
                    spec.port.as_str().unwrap_or_default(),
                    listed()
                ),
            ),
            Some(p) if !ports.iter().any(|(_, q)| *q == p) => out.note(
                "spec.port",
                format!(
                    "port {p} is not the port of a workload this Server selects ({}); it \
                     covers nothing",
                    listed()
                ),
            ),
            _ => {}
        }
    }
    Some(Server {
        server: LinkerdServer {
            name: format!("{namespace}/{}", o.metadata.name),
            scope,
            port,
            access_policy: spec.access_policy.unwrap_or(DefaultPolicy::Deny),
            routes: Vec::new(),
        },
        namespace: namespace.to_string(),
        labels: object_labels(doc),
    })
}
