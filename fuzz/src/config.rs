//! The configuration loader ([`config::load_str`]) on fuzzed YAML, one harness per dialect.
//!
//! YAML is text, and a resource reaches its dialect's translator only with the right
//! `apiVersion` and `kind` and with services to route: so a dialect harness loads a fixed Mesh
//! document ([`MESH`]) and, after it, one resource whose `apiVersion` / `kind` header the first
//! input byte picks from the dialect's table and whose body (metadata, spec, …) is the rest of
//! the input. [`mesh`] does the same for the `kind: Mesh` document itself; [`any`] loads the
//! input as it is. Errors are fine (they are the point); a panic is a crash. Every diagnostic
//! must point into the text it was given.
//!
//! `fuzz/seed.sh` reads the tables below to turn example documents into seeds: keep one
//! `("apiVersion", "Kind"),` entry per line.

use std::path::Path;

/// Istio's routing (`networking.istio.io`) and security (`security.istio.io`) resources.
pub const ISTIO: &[(&str, &str)] = &[
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1alpha3", "VirtualService"),
    ("networking.istio.io/v1beta1", "DestinationRule"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("security.istio.io/v1", "RequestAuthentication"),
    ("security.istio.io/v1beta1", "AuthorizationPolicy"),
];

/// Linkerd: ServiceProfiles, `policy.linkerd.io` routes and policies, and Namespaces (their
/// default-inbound-policy annotation).
pub const LINKERD: &[(&str, &str)] = &[
    ("linkerd.io/v1alpha2", "ServiceProfile"),
    ("policy.linkerd.io/v1beta3", "HTTPRoute"),
    ("policy.linkerd.io/v1beta1", "HTTPRoute"),
    ("policy.linkerd.io/v1beta3", "Server"),
    ("policy.linkerd.io/v1beta1", "Server"),
    ("policy.linkerd.io/v1beta1", "ServerAuthorization"),
    ("policy.linkerd.io/v1alpha1", "AuthorizationPolicy"),
    ("policy.linkerd.io/v1alpha1", "MeshTLSAuthentication"),
    ("policy.linkerd.io/v1alpha1", "NetworkAuthentication"),
    ("v1", "Namespace"),
];

/// The Gateway API (`gateway.networking.k8s.io`): HTTPRoutes (GAMMA and ingress) and Gateways.
pub const GATEWAY_API: &[(&str, &str)] = &[
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1beta1", "Gateway"),
];

/// SMI TrafficSplits, every version read.
pub const SMI: &[(&str, &str)] = &[
    ("split.smi-spec.io/v1alpha1", "TrafficSplit"),
    ("split.smi-spec.io/v1alpha2", "TrafficSplit"),
    ("split.smi-spec.io/v1alpha3", "TrafficSplit"),
    ("split.smi-spec.io/v1alpha4", "TrafficSplit"),
];

/// weft's own `kind: Mesh` document.
pub const MESH_KIND: &[(&str, &str)] = &[("weft.dev/v1alpha1", "Mesh")];

/// The services the dialect harnesses route: those the repository's examples, conformance
/// manifests and loader tests name, with versioned workloads for subsets.
pub const MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: fuzz, namespace: default}
spec:
  ingress: 127.0.0.1:8080
  services:
  - name: reviews
    port: 9080
    workloads:
    - {name: reviews-v1, labels: {app: reviews, version: v1}, command: [app]}
    - {name: reviews-v2, labels: {app: reviews, version: v2}, command: [app]}
    - {name: reviews-v3, labels: {app: reviews, version: v3}, command: [app]}
  - name: ratings
    port: 9080
    workloads:
    - {name: ratings-v1, labels: {app: ratings, version: v1}, command: [app]}
  - name: httpbin
    namespace: foo
    port: 8000
    workloads:
    - {name: httpbin-v1, labels: {app: httpbin, version: v1}, command: [app]}
  - {name: sleep, namespace: foo, port: 80, workloads: [{name: sleep, labels: {app: sleep}, command: [app]}]}
  - {name: httpbin, port: 80, workloads: [{name: httpbin, labels: {app: httpbin}, command: [app]}]}
  - {name: web, port: 80, workloads: [{name: web, labels: {app: web}, command: [app]}]}
  - {name: web-v1, port: 80}
  - {name: web-v2, port: 80}
  - {name: web-v3, port: 80}
  - {name: books, port: 7000, workloads: [{name: books, labels: {app: books}, command: [app]}]}
  - {name: books-v2, port: 7000}
  - {name: authors, port: 7001}
  - {name: auth, port: 80}
  - {name: api, port: 80}
  - {name: api-v2, port: 80}
  - {name: hello, port: 80}
  - {name: echo, port: 80}
  - {name: echo-v1, port: 80}
  - {name: echo-v2, port: 80}
  - {name: foo-v1, port: 8080}
  - {name: foo-v2, port: 8080}
  - {name: shadow, port: 80}
  - {name: infra-backend-v1, namespace: gateway-conformance-infra, port: 8080}
  - {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
  - {name: infra-backend-v3, namespace: gateway-conformance-infra, port: 8080}
  - {name: echo, namespace: gateway-conformance-mesh, port: 80}
  - {name: echo-v1, namespace: gateway-conformance-mesh, port: 80}
  - {name: echo-v2, namespace: gateway-conformance-mesh, port: 80}
";

/// One resource of `kinds` (the first byte picks it) after [`MESH`].
pub fn dialect(kinds: &[(&str, &str)], data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (api_version, kind) = kinds[usize::from(pick) % kinds.len()];
    let body = String::from_utf8_lossy(body);
    load(&format!(
        "{MESH}---\napiVersion: {api_version}\nkind: {kind}\n{body}"
    ));
}

/// A `kind: Mesh` document whose body (metadata, spec) is the input.
pub fn mesh(data: &[u8]) {
    let body = String::from_utf8_lossy(data);
    load(&format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\n{body}"
    ));
}

/// The input as a whole file.
pub fn any(data: &[u8]) {
    load(&String::from_utf8_lossy(data));
}

fn load(text: &str) {
    let file = Path::new("fuzz.yaml");
    let diagnostics = match config::load_str(file, text) {
        Ok(loaded) => [loaded.unsupported, loaded.rejected].concat(),
        Err(errors) => errors.0,
    };
    // Lines are 1-based, and YAML ends a line at LF, CRLF or a lone CR; one past the last line
    // is where an unterminated document ends.
    let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 2;
    for d in &diagnostics {
        assert!(d.line <= lines, "{d} points past the text's {lines} lines");
        assert_eq!(d.file, file, "{d}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_loads_cleanly() {
        let loaded = config::load_str(Path::new("m.yaml"), MESH).unwrap();
        assert!(loaded.rejected.is_empty() && loaded.unsupported.is_empty());
    }

    #[test]
    fn every_dialect_reaches_its_translator() {
        let vs = b"\x00metadata: {name: r, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: nowhere}\n";
        let text = format!(
            "{MESH}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n{}",
            String::from_utf8_lossy(&vs[1..])
        );
        let loaded = config::load_str(Path::new("f.yaml"), &text).unwrap();
        assert_eq!(loaded.rejected.len(), 1, "{:?}", loaded.rejected);
        dialect(ISTIO, vs);
        dialect(LINKERD, b"\x09metadata: {name: foo}\n");
        dialect(GATEWAY_API, b"");
        dialect(SMI, b"\x01spec: [");
        mesh(b"metadata: {name: m}\nspec: {services: [{name: a, port: 1}]}\n");
        any(b"\xff\xfe");
    }

    /// YAML ends lines at lone CRs too, and diagnostics count them (a harness that counted LFs
    /// only found these "past the end").
    #[test]
    fn lone_crs_end_lines() {
        any(include_bytes!(
            "../corpus/config_any/crash-lone-cr-line-breaks"
        ));
        dialect(
            ISTIO,
            include_bytes!("../corpus/config_istio/crash-lone-cr-line-breaks"),
        );
        // Three lines; the unterminated `[` is reported where the text ends, one line past.
        let e = config::load_str(Path::new("f.yaml"), "a: 1\r\rb: [").unwrap_err();
        assert_eq!(e.0[0].line, 4, "{e}");
    }
}
