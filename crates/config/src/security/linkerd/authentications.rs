//! Linkerd MeshTLSAuthentications and NetworkAuthentications, and the networks and identities
//! they (and ServerAuthorizations) list: `networks` become one network authentication (every
//! `cidr`, minus every `except`), ServiceAccounts and Namespaces become identities.

use super::super::{values, Out};
use super::{service_account, PolicyRef};
use crate::k8s::Object;
use model::security::LinkerdAuthn;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Network {
    pub cidr: String,
    #[serde(default)]
    pub except: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MeshTlsAuthenticationSpec {
    pub identities: Option<Vec<String>>,
    pub identity_refs: Option<Vec<PolicyRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkAuthenticationSpec {
    #[serde(default)]
    pub networks: Vec<Network>,
}

/// `networks` as one network authentication, checked as Linkerd checks them.
pub(super) fn networks(field: &str, list: &[Network], out: &mut Out) -> LinkerdAuthn {
    let mut cidrs = Vec::new();
    let mut except = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let nf = format!("{field}[{i}]");
        let net = match values::cidr(&n.cidr) {
            Ok(net) => Some(net),
            Err(message) => {
                out.error(&format!("{nf}.cidr"), message);
                None
            }
        };
        for (j, e) in n.except.iter().enumerate() {
            let ef = format!("{nf}.except[{j}]");
            match (values::cidr(e), net) {
                (Err(message), _) => out.error(&ef, message),
                (Ok(ex), Some(net)) if values::contains(ex, net) => out.error(
                    &ef,
                    format!("cidr `{}` is completely negated by exception `{e}`", n.cidr),
                ),
                (Ok(ex), Some(net)) if !values::contains(net, ex) => out.error(
                    &ef,
                    format!("cidr `{}` does not include exception `{e}`", n.cidr),
                ),
                _ => except.push(e.clone()),
            }
        }
        cidrs.push(n.cidr.clone());
    }
    LinkerdAuthn::Network { cidrs, except }
}

pub(super) fn identities(field: &str, list: &[String], out: &mut Out) -> Vec<String> {
    for (i, id) in list.iter().enumerate() {
        if id.is_empty() {
            out.error(&format!("{field}[{i}]"), "must not be empty");
        }
    }
    list.to_vec()
}

pub(super) fn mesh_tls_authentication(
    o: &Object<MeshTlsAuthenticationSpec>,
    out: &mut Out,
) -> LinkerdAuthn {
    let namespace = o.metadata.namespace();
    let mut found = identities(
        "spec.identities",
        o.spec.identities.as_deref().unwrap_or_default(),
        out,
    );
    for (i, r) in o.spec.identity_refs.iter().flatten().enumerate() {
        let field = format!("spec.identityRefs[{i}]");
        if r.is("", "ServiceAccount") {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            found.push(service_account(ns, &r.name));
        } else if r.is("", "Namespace") {
            if r.namespace.is_some() {
                out.error(
                    &format!("{field}.namespace"),
                    "a Namespace identityRef is cluster-scoped and cannot have a namespace",
                );
            }
            found.push(format!(
                "*.{}.serviceaccount.identity.linkerd.{}",
                r.name,
                model::names::TRUST_DOMAIN
            ));
        } else {
            out.error(
                &format!("{field}.kind"),
                format!(
                    "invalid identity target kind {}: ServiceAccount or Namespace",
                    r.kind
                ),
            );
        }
    }
    if found.is_empty() {
        out.note(
            "spec",
            "has no identities or identityRefs, so it authenticates no client",
        );
    }
    LinkerdAuthn::MeshTls { identities: found }
}

pub(super) fn network_authentication(
    o: &Object<NetworkAuthenticationSpec>,
    out: &mut Out,
) -> LinkerdAuthn {
    if o.spec.networks.is_empty() {
        out.error("spec.networks", "at least one network must be specified");
    }
    networks("spec.networks", &o.spec.networks, out)
}
