//! The ingress gateway's virtual hosts: which hostnames a route bound to a gateway serves (the
//! intersection of its own hosts with the gateway's: Istio `Gateway` `servers[].hosts`, Gateway
//! API listener `hostname`), and the assembly of every API's ingress routes into
//! [`model::VirtualHost`]s, host by host.
//!
//! weft runs one ingress gateway: every Istio `Gateway` and Gateway API `Gateway` describes it,
//! and their ports and selectors do not pick another one. When a VirtualService and an HTTPRoute
//! both route one host, the VirtualService wins (as for services; see `services::PRECEDENCE`).

use crate::diagnostic::Diagnostic;
use crate::services::PRECEDENCE;
use model::{HttpRoute, VirtualHost};

/// `*`: any host. `*.example.com`: any host with one or more labels before `.example.com`.
fn covers(wide: &str, narrow: &str) -> bool {
    if wide == "*" {
        return true;
    }
    if narrow == "*" {
        return false;
    }
    match (wide.strip_prefix("*."), narrow.strip_prefix("*.")) {
        (Some(w), Some(n)) => n == w || n.ends_with(&format!(".{w}")),
        (Some(w), None) => narrow.ends_with(&format!(".{w}")),
        (None, Some(_)) => false,
        (None, None) => wide == narrow,
    }
}

/// The hosts both `a` and `b` match, as one hostname (the more specific of the two, lowercase),
/// or `None` when no host matches both.
pub(crate) fn intersect(a: &str, b: &str) -> Option<String> {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if covers(&a, &b) {
        Some(b)
    } else if covers(&b, &a) {
        Some(a)
    } else {
        None
    }
}

/// One API's routes for one ingress host.
#[derive(Debug)]
pub(crate) struct HostRoutes {
    /// Lowercase; may be a wildcard.
    pub host: String,
    /// The resources the routes come from (`VirtualService NS/NAME`, …) and where each binds
    /// the host, for the precedence warning.
    pub sources: Vec<(String, Diagnostic)>,
    /// Tried in order.
    pub routes: Vec<HttpRoute>,
}

/// The virtual hosts of the ingress gateway, from the VirtualServices' hosts and the HTTPRoutes'
/// (in that order: a VirtualService wins a host both claim, with a warning naming both). Hosts
/// with the same routes from the same resources share one virtual host.
pub(crate) fn assemble(
    istio: Vec<HostRoutes>,
    gateway_api: Vec<HostRoutes>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<VirtualHost> {
    let mut all = istio;
    for g in gateway_api {
        if let Some(vs) = all.iter().find(|h| h.host == g.host) {
            let winners: Vec<&str> = vs.sources.iter().map(|(l, _)| l.as_str()).collect();
            for (label, at) in &g.sources {
                warnings.push(at.with_message(format!(
                    "{label}: ingress host {} is also routed by {}; VirtualService wins; \
                     {PRECEDENCE}",
                    g.host,
                    winners.join(", "),
                )));
            }
            continue;
        }
        all.push(g);
    }
    let mut out: Vec<VirtualHost> = Vec::new();
    for h in all {
        let names: Vec<&str> = h.sources.iter().map(|(l, _)| l.as_str()).collect();
        let name = names.join(", ");
        match out
            .iter_mut()
            .find(|v| v.name == name && v.routes == h.routes)
        {
            Some(v) => v.hosts.push(h.host),
            None => out.push(VirtualHost {
                name,
                hosts: vec![h.host],
                routes: h.routes,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_intersections() {
        for (a, b, want) in [
            ("*", "foo.com", Some("foo.com")),
            ("foo.com", "*", Some("foo.com")),
            ("*", "*", Some("*")),
            ("Foo.COM", "foo.com", Some("foo.com")),
            ("*.example.com", "a.example.com", Some("a.example.com")),
            ("*.example.com", "a.b.example.com", Some("a.b.example.com")),
            ("*.example.com", "example.com", None),
            ("*.example.com", "*.a.example.com", Some("*.a.example.com")),
            ("*.a.example.com", "*.example.com", Some("*.a.example.com")),
            ("*.example.com", "*.example.org", None),
            ("a.example.com", "b.example.com", None),
            ("*.example.com", "xexample.com", None),
        ] {
            assert_eq!(intersect(a, b).as_deref(), want, "{a} ∩ {b}");
        }
    }
}
