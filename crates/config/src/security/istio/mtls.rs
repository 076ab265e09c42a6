//! Istio PeerAuthentications: the mutual TLS mode of a namespace, of the mesh (in the root
//! namespace) or of the workloads a selector picks, and per port (`portLevelMtls`, which needs
//! a selector).

use super::super::{values, Ctx, Out};
use super::{selector, WorkloadSelector};
use crate::k8s::Object;
use model::security::{MtlsMode, PeerAuthn};
use serde::Deserialize;
use serde_yaml_ng::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PeerAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    pub mtls: Option<MutualTls>,
    /// Port → MutualTLS; read by hand, so that a bad port is named.
    pub port_level_mtls: Option<serde_yaml_ng::Mapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

pub(crate) fn peer_authentication(
    o: &Object<Option<PeerAuthenticationSpec>>,
    ctx: &Ctx,
    out: &mut Out,
) -> Vec<PeerAuthn> {
    let default = PeerAuthenticationSpec::default();
    let spec = o.spec.as_ref().unwrap_or(&default);
    let namespace = o.metadata.namespace();
    let labels = selector(&spec.selector);
    let mut ports = Vec::new();
    if let Some(map) = &spec.port_level_mtls {
        if labels.is_none() {
            out.error(
                "spec.portLevelMtls",
                "portLevelMtls needs a workload selector (selector.matchLabels), as in Istio",
            );
        }
        for (key, value) in map {
            let shown = match key {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            let field = format!("spec.portLevelMtls.{shown}");
            let port = match values::port(key) {
                Ok(port) => port,
                Err(message) => {
                    out.error(&field, message);
                    continue;
                }
            };
            match serde_yaml_ng::from_value::<MutualTls>(value.clone()) {
                Ok(m) => ports.push((port, m.mode)),
                Err(e) => out.error(&field, e.to_string()),
            }
        }
    }
    if labels.is_some() && namespace == ctx.root {
        out.note(
            "spec.selector",
            format!(
                "a PeerAuthentication with a selector in the root namespace {} is ignored, as in \
                 Istio (a workload's PeerAuthentication goes in the workload's namespace)",
                ctx.root
            ),
        );
        return Vec::new();
    }
    let scope = ctx.istio_scopes(namespace, labels).remove(0);
    vec![PeerAuthn {
        name: format!("PeerAuthentication {namespace}/{}", o.metadata.name),
        scope,
        mode: spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default(),
        ports,
    }]
}
