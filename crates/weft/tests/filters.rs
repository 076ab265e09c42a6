//! End-to-end route filters through real proxies: Istio VirtualService header edits,
//! rewrites, redirects, CORS and direct responses (mesh routes, client sidecar and ingress),
//! and the Gateway API conformance `httproute-request-header-modifier` answers through the
//! ingress gateway (an HTTPRoute whose parent is a Gateway).

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;

/// GET `path` with `Host: host` and extra headers; the status, response headers and body.
async fn request(
    c: &HttpClient,
    mesh: &Mesh,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Value) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", mesh.ingress))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = c.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let (parts, body) = rsp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn seen<'a>(body: &'a Value, header: &str) -> Option<&'a str> {
    body["headers"][header].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_header_edits_rewrites_redirects_cors_and_direct_responses() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - name: moved
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: shop.example.com, redirectCode: 308}
  - name: gone
    match: [{uri: {exact: /gone}}]
    directResponse: {status: 410, body: {string: "gone for good"}}
  - name: api
    match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/}
    headers:
      request:
        set: {x-api-version: "2"}
        add: {x-trace: added}
        remove: [x-secret]
      response:
        set: {x-served-by: weft}
        remove: [x-echo-instance]
    corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      maxAge: 24h
    route: [{destination: {host: shop}}]
"#;
    let mesh = Mesh::up(&format!(
        "{}---\n{vs}",
        mesh_yaml("filters", &[("shop", 1, "")])
    ));
    let c = client();

    let (status, headers, body) = request(
        &c,
        &mesh,
        "GET",
        "shop",
        "/api/v1/items?page=2",
        &[("x-secret", "s3cr3t"), ("x-trace", "original")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/v2/items", "prefix rewritten: {body}");
    assert_eq!(body["query"]["page"], "2");
    assert_eq!(seen(&body, "x-api-version"), Some("2"));
    assert_eq!(seen(&body, "x-trace"), Some("original, added"));
    assert_eq!(seen(&body, "x-secret"), None, "removed before the app");
    assert_eq!(headers["x-served-by"], "weft");
    assert!(!headers.contains_key("x-echo-instance"));

    let (status, headers, _) = request(&c, &mesh, "GET", "shop", "/old/page?q=1", &[]).await;
    assert_eq!(status, 308);
    assert_eq!(headers["location"], "http://shop.example.com/new?q=1");

    let (status, _, _) = request(&c, &mesh, "GET", "shop", "/gone", &[]).await;
    assert_eq!(status, 410);

    // A CORS preflight is answered by the proxy; the app never sees it.
    let (status, headers, body) = request(
        &c,
        &mesh,
        "OPTIONS",
        "shop",
        "/api/v1/items",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, Value::Null, "answered by the proxy");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-methods"], "GET,POST");
    assert_eq!(headers["access-control-max-age"], "86400");
    let (_, headers, _) = request(
        &c,
        &mesh,
        "GET",
        "shop",
        "/api/v1/items",
        &[("origin", "https://evil.example.com")],
    )
    .await;
    assert!(!headers.contains_key("access-control-allow-origin"));
    // A preflight from an origin the policy does not allow is passed to the app, as Envoy's
    // CORS filter does: the echo app answers it (with its JSON), and no CORS header is added.
    let (status, headers, body) = request(
        &c,
        &mesh,
        "OPTIONS",
        "shop",
        "/api/v1/items",
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["method"], "OPTIONS", "the app answered it: {body}");
    assert!(!headers.contains_key("access-control-allow-origin"));
    assert!(!headers.contains_key("access-control-allow-methods"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_request_header_modifier_conformance() {
    let ns = "gateway-conformance-infra";
    let mesh_file = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: headers}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: infra-backend-v1\n    namespace: {ns}\n    port: 8080\n    workloads:\n    - name: infra-backend-v1\n      labels: {{app: infra-backend-v1}}\n      replicas: 1\n      command: [weft, demo, echo, --service, infra-backend-v1]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: same-namespace, namespace: {ns}}}\nspec:\n  gatewayClassName: weft\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}\n---\n"
    );
    let route = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/conformance/gateway-api/conformance/httproute-request-header-modifier.yaml"
    ))
    .expect("the conformance manifest");
    let mesh = Mesh::up(&format!("{mesh_file}{route}"));
    let c = client();
    let host = "example.com";
    // (path, headers sent, headers the backend must see: None = absent)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, Option<&'a str>)],
    );
    let cases: &[Case] = &[
        (
            "/set",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", Some("val")),
                ("x-header-set", Some("set-overwrites-values")),
            ],
        ),
        (
            "/set",
            &[("X-Header-Set", "some-other-value")],
            &[("x-header-set", Some("set-overwrites-values"))],
        ),
        (
            "/add",
            &[("X-Header-Add", "some-other-value")],
            &[("x-header-add", Some("some-other-value, add-appends-values"))],
        ),
        (
            "/remove",
            &[("X-Header-Remove", "val")],
            &[("x-header-remove", None)],
        ),
        (
            "/multiple",
            &[
                ("X-Header-Set-2", "set-val"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val"),
            ],
            &[
                ("x-header-set-1", Some("header-set-1")),
                ("x-header-set-2", Some("header-set-2")),
                ("x-header-add-1", Some("header-add-1")),
                ("x-header-add-2", Some("add-val-2, header-add-2")),
                ("x-header-add-3", Some("header-add-3")),
                ("x-header-remove-1", None),
                ("x-header-remove-2", None),
            ],
        ),
        (
            "/case-insensitivity",
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "val"),
            ],
            &[
                ("x-header-set", Some("header-set")),
                ("x-header-add", Some("original-val-add, header-add")),
                ("x-header-remove", None),
            ],
        ),
    ];
    for (path, send, want) in cases {
        let (status, _, body) = request(&c, &mesh, "GET", host, path, send).await;
        assert_eq!(status, 200, "{path}: {body}");
        for (name, value) in *want {
            assert_eq!(seen(&body, name), *value, "{path} {name}: {body}");
        }
    }
    // Nothing else is routed: the Gateway's routes answer 404 for other paths.
    let (status, _, _) = request(&c, &mesh, "GET", host, "/other", &[]).await;
    assert_eq!(status, 404);
}
