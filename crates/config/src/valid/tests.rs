//! Unit tests: values a proxy would refuse are refused at load, each with its line and field,
//! whichever dialect wrote them; what the field checks miss the whole-route backstop catches.

use crate::{load_str, Diagnostic, Errors};
use std::path::Path;

const MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: t}
spec:
  services:
  - name: hello
    port: 80
    workloads:
    - {name: hello-v1, command: [x]}
---
";

/// Every error (fatal or rejection) of `MESH` followed by `doc`, as `LINE: FIELD: MESSAGE`
/// (lines of the whole file; the mesh takes 10).
fn refused(doc: &str) -> Vec<String> {
    let text = format!("{MESH}{doc}");
    let diagnostics: Vec<Diagnostic> = match load_str(Path::new("f.yaml"), &text) {
        Ok(loaded) => loaded.rejected,
        Err(Errors(d)) => d,
    };
    diagnostics
        .iter()
        .map(|d| format!("{}: {}: {}", d.line, d.field, d.message))
        .collect()
}

fn one(doc: &str) -> String {
    let got = refused(doc);
    assert_eq!(got.len(), 1, "{got:#?}");
    got[0].clone()
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [hello]\n  http:\n{http}"
    )
}

#[test]
fn istio_values_the_proxy_cannot_build_are_located() {
    let cases: [(&str, &str, &str); 8] = [
        (
            "  - headers: {request: {set: {\"\": x}}}\n    route: [{destination: {host: hello}}]\n",
            "17: spec.http[0].headers.request.set[]",
            "\"\" is not an HTTP header name",
        ),
        (
            "  - route:\n    - destination: {host: hello}\n      headers:\n        response:\n          remove: [\"bad name\"]\n",
            "21: spec.http[0].route[0].headers.response.remove[0]",
            "\"bad name\" is not an HTTP header name",
        ),
        (
            "  - headers: {request: {add: {x-a: \"a\\nb\"}}}\n    route: [{destination: {host: hello}}]\n",
            "17: spec.http[0].headers.request.add[x-a]",
            "is not an HTTP header value",
        ),
        (
            "  - redirect: {uri: \"/a b\"}\n",
            "17: spec.http[0].redirect.uri",
            "\"/a b\" is not a URI path",
        ),
        (
            "  - redirect: {uri: /new, authority: \"bad host\"}\n",
            "17: spec.http[0].redirect.authority",
            "\"bad host\" is not HOST or HOST:PORT",
        ),
        (
            "  - rewrite: {authority: \"a@b\"}\n    route: [{destination: {host: hello}}]\n",
            "17: spec.http[0].rewrite.authority",
            "user info",
        ),
        (
            "  - match: [{method: {exact: \"GET ME\"}}]\n    route: [{destination: {host: hello}}]\n",
            "17: spec.http[0].match[0].method",
            "\"GET ME\" is not an HTTP method",
        ),
        (
            "  - match:\n    - headers:\n        \"x y\": {exact: a}\n    route: [{destination: {host: hello}}]\n",
            "19: spec.http[0].match[0].headers[x y]",
            "\"x y\" is not an HTTP header name",
        ),
    ];
    for (http, at, why) in cases {
        let got = one(&vs(http));
        assert!(
            got.starts_with(&format!("{at}: VirtualService default/vs: ")) && got.contains(why),
            "{http}\n=> {got}"
        );
    }
}

#[test]
fn what_field_checks_miss_the_whole_route_catches() {
    // A rewrite after an exact match replaces the whole path: an empty one leaves none.
    let got = one(&vs(
        "  - match: [{uri: {exact: /a}}]\n    rewrite: {uri: \"\"}\n    route: [{destination: {host: hello}}]\n",
    ));
    assert_eq!(
        got,
        "17: spec.http[0]: VirtualService default/vs: a proxy would refuse it: rewrite: \"\" is \
         not a URI path: it must start with /"
    );
}

#[test]
fn gateway_api_and_destination_rule_values() {
    let route = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{group: \"\", kind: Service, name: hello}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-a, value: \"one\\r\\ntwo\"}]
    - type: URLRewrite
      urlRewrite: {hostname: \"bad host\"}
    backendRefs: [{name: hello, port: 80}]
";
    let got = refused(route);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("20: spec.rules[0].filters[0].requestHeaderModifier.set[0].value: ")
            && got[0].contains("is not an HTTP header value"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("22: spec.rules[0].filters[1].urlRewrite.hostname: "),
        "{got:#?}"
    );
    let dr = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: hello
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: \"x y\"}
";
    let got = one(dr);
    assert!(
        got.starts_with("18: spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName: "),
        "{got}"
    );
}

#[test]
fn replicas_keys_and_files_that_are_no_text() {
    let many = MESH.replace("command: [x]}", "command: [x], replicas: 4294967295}");
    let Err(Errors(d)) = load_str(Path::new("f.yaml"), &many) else {
        panic!("replicas: 4294967295 loaded")
    };
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].line, d[0].field.as_str()),
        (9, "spec.services[0].workloads[0].replicas")
    );
    assert!(d[0].message.contains("at most 64"), "{}", d[0]);

    let Err(Errors(d)) = load_str(Path::new("zeros.yaml"), "\0\0\0\0") else {
        panic!("NUL bytes loaded")
    };
    assert_eq!(
        d[0].to_string(),
        "zeros.yaml:1:1: not YAML or JSON text: it holds the control character U+0000 (a binary \
         file?)"
    );
    // Where it is, in a file that starts well.
    let Err(Errors(d)) = load_str(Path::new("late.yaml"), &format!("{MESH}a: \x01\n")) else {
        panic!("a control character loaded")
    };
    assert_eq!((d[0].line, d[0].column), (11, 4));
    // And as `weft apply` keeps resources: one that validation refuses, named by its file.
    let store = crate::Store::default().applied(crate::resources(Path::new("zeros.yaml"), "\0"));
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.starts_with("zeros.yaml:1:1: not YAML or JSON text"),
        "{err}"
    );

    let jwks = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-999\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}'
";
    let got = one(jwks);
    assert!(
        got.starts_with("17: spec.jwtRules[0].jwks: RequestAuthentication default/jwt: the JWKS has no usable signing key")
            && got.contains("keys[0]: EC curve \"P-999\" is not P-256 or P-384"),
        "{got}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_named_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.yaml");
    std::fs::write(&file, b"apiVersion: v1\nkind: caf\xe9\n").unwrap();
    let Err(Errors(d)) = crate::load(std::slice::from_ref(&file)) else {
        panic!("a Latin-1 file loaded")
    };
    assert_eq!(
        d[0].to_string(),
        format!(
            "{}:2:10: not UTF-8 text: byte 0xE9 here (a binary file, or another encoding?)",
            file.display()
        )
    );
    assert_eq!(crate::read_text(&file).unwrap_err(), d[0]);
}
