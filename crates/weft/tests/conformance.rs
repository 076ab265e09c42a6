//! The Gateway API conformance manifests (HTTPRoutes whose parent is a Gateway), unchanged,
//! applied one at a time to a running mesh's ingress gateway with `weft apply`, and the answers
//! the upstream conformance tests expect (testdata/conformance/README.md).

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};

const NS: &str = "gateway-conformance-infra";

fn mesh() -> String {
    let mut y = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: conformance}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n".to_string();
    for v in ["v1", "v2", "v3"] {
        y.push_str(&format!(
            "  - name: infra-backend-{v}\n    namespace: {NS}\n    port: 8080\n    workloads:\n    - name: infra-backend-{v}\n      labels: {{app: infra-backend-{v}}}\n      replicas: 1\n      command: [weft, demo, echo, --service, infra-backend-{v}]\n"
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: same-namespace, namespace: {NS}}}\nspec:\n  gatewayClassName: weft\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"
    ));
    y
}

fn manifest(name: &str) -> String {
    format!(
        "{}/../../testdata/conformance/gateway-api/conformance/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Sends one request; the backend that answered (`v1`…), or the status when it is not 200.
async fn ask(
    c: &HttpClient,
    mesh: &Mesh,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", mesh.ingress))
        .header("host", "example.com");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = c.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    if status != 200 {
        return status.to_string();
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    v["service"]
        .as_str()
        .and_then(|s| s.strip_prefix("infra-backend-"))
        .unwrap_or("?")
        .to_string()
}

/// (method, path, headers, expected answer: `v1`… or a status).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// Applies one manifest, checks every case, deletes it.
async fn check(c: &HttpClient, mesh: &Mesh, name: &str, cases: &[Case<'_>]) {
    let file = manifest(name);
    let out = mesh.weft(&["apply", "-f", &file]);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wrong = Vec::new();
    for (method, path, headers, want) in cases {
        let got = ask(c, mesh, method, path, headers).await;
        if got != *want {
            wrong.push(format!(
                "{method} {path} {headers:?}: want {want}, got {got}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
    let out = mesh.weft(&["delete", "-f", &file]);
    assert!(out.status.success(), "{name}: delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_conformance_through_the_ingress() {
    let mesh = Mesh::up(&mesh());
    let c = client();
    const NONE: &[(&str, &str)] = &[];
    check(
        &c,
        &mesh,
        "httproute-matching",
        &[
            ("GET", "/", NONE, "v1"),
            ("GET", "/example", NONE, "v1"),
            ("GET", "/", &[("version", "one")], "v1"),
            ("GET", "/v2", NONE, "v2"),
            ("GET", "/v2/example", NONE, "v2"),
            ("GET", "/v2/", NONE, "v2"),
            ("GET", "/", &[("version", "two")], "v2"),
            ("GET", "/v2example", NONE, "v1"),
            ("GET", "/foo/v2/example", NONE, "v1"),
        ],
    )
    .await;
    check(
        &c,
        &mesh,
        "httproute-header-matching",
        &[
            ("GET", "/", &[("version", "one")], "v1"),
            ("GET", "/", &[("version", "two")], "v2"),
            ("GET", "/", &[("version", "two"), ("color", "orange")], "v1"),
            ("GET", "/", &[("version", "two"), ("color", "blue")], "v2"),
            ("GET", "/", &[("color", "blue")], "v1"),
            ("GET", "/", &[("color", "green")], "v1"),
            ("GET", "/", &[("color", "red")], "v2"),
            ("GET", "/", &[("color", "yellow")], "v2"),
            ("GET", "/", &[("color", "orange")], "404"),
            ("GET", "/", &[("color", "purple")], "404"),
            ("GET", "/", &[("some-other-header", "one")], "404"),
        ],
    )
    .await;
    check(
        &c,
        &mesh,
        "httproute-method-matching",
        &[
            ("POST", "/", NONE, "v1"),
            ("GET", "/", NONE, "v2"),
            ("HEAD", "/", NONE, "404"),
            ("GET", "/path1", NONE, "v1"),
            ("PUT", "/", &[("version", "one")], "v2"),
            ("POST", "/path2", &[("version", "two")], "v3"),
            ("PATCH", "/path3", NONE, "v1"),
            ("DELETE", "/path4", &[("version", "three")], "v1"),
            ("GET", "/path5", NONE, "v1"),
            ("PATCH", "/", NONE, "v2"),
        ],
    )
    .await;
    check(
        &c,
        &mesh,
        "httproute-query-param-matching",
        &[
            ("GET", "/?animal=whale", NONE, "v1"),
            ("GET", "/?animal=dolphin", NONE, "v2"),
            ("GET", "/?animal=dolphin&color=blue", NONE, "v3"),
            ("GET", "/?ANIMAL=Whale", NONE, "v3"),
            ("GET", "/?animal=whaledolphin", NONE, "404"),
            ("GET", "/?color=blue", NONE, "404"),
            ("GET", "/", NONE, "404"),
        ],
    )
    .await;
    check(
        &c,
        &mesh,
        "httproute-path-match-order",
        &[
            ("GET", "/match/exact/one", NONE, "v3"),
            ("GET", "/match/exact", NONE, "v2"),
            ("GET", "/match", NONE, "v1"),
            ("GET", "/match/prefix/one/any", NONE, "v2"),
            ("GET", "/match/prefix/any", NONE, "v1"),
            ("GET", "/match/any", NONE, "v3"),
        ],
    )
    .await;
    check(
        &c,
        &mesh,
        "httproute-timeout-request",
        &[
            ("GET", "/request-timeout", NONE, "v1"),
            ("GET", "/request-timeout?delay=1s", NONE, "504"),
            ("GET", "/disable-request-timeout?delay=1s", NONE, "v1"),
        ],
    )
    .await;
    check(
        &c,
        &mesh,
        "httproute-timeout-backend-request",
        &[
            ("GET", "/backend-timeout", NONE, "v1"),
            ("GET", "/backend-timeout?delay=1s", NONE, "504"),
            ("GET", "/disable-backend-timeout?delay=1s", NONE, "v1"),
        ],
    )
    .await;
    // `?fail_times=N&status=S`: the echo fails the first N attempts of a request.
    check(
        &c,
        &mesh,
        "httproute-retry",
        &[
            (
                "GET",
                "/retry/code-500-attempts-3?fail_times=2&status=500",
                NONE,
                "v3",
            ),
            (
                "GET",
                "/retry/code-500-attempts-3?fail_times=4&status=500",
                NONE,
                "500",
            ),
            (
                "GET",
                "/retry/code-500-attempts-3?fail_times=1&status=503",
                NONE,
                "503",
            ),
            (
                "GET",
                "/retry/code-all-attempts-2?fail_times=1&status=502",
                NONE,
                "v3",
            ),
            (
                "GET",
                "/retry/code-all-attempts-2?fail_times=3&status=504",
                NONE,
                "504",
            ),
        ],
    )
    .await;
}

/// What the backend received: its echo of the request headers (lowercase names; repeated
/// headers joined with ", ").
async fn seen_headers(
    c: &HttpClient,
    mesh: &Mesh,
    path: &str,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    let mut req = http::Request::builder()
        .uri(format!("http://{}{path}", mesh.ingress))
        .header("host", "example.com");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = c.request(req.body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(rsp.status(), 200, "{path}");
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["headers"].clone()
}

/// The two Gateway-parent manifests the test above does not run: request header edits (the
/// upstream test's cases, header by header) and weighted backends (70/30/0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_conformance_header_modifier_and_weights() {
    let mesh = Mesh::up(&mesh());
    let c = client();
    let file = manifest("httproute-request-header-modifier");
    mesh.weft_ok(&["apply", "-f", &file]);
    // (path, request headers, headers the backend must see, headers it must not see)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "/set",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "/set",
            &[("X-Header-Set", "some-other-value")],
            &[("x-header-set", "set-overwrites-values")],
            &[],
        ),
        (
            "/add",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-add", "add-appends-values"),
            ],
            &[],
        ),
        (
            "/add",
            &[("X-Header-Add", "some-other-value")],
            &[("x-header-add", "some-other-value, add-appends-values")],
            &[],
        ),
        (
            "/remove",
            &[("X-Header-Remove", "val")],
            &[],
            &["x-header-remove"],
        ),
        (
            "/multiple",
            &[
                ("X-Header-Set-2", "set-val"),
                ("X-Header-Add-2", "add-val"),
                ("X-Header-Remove-2", "remove-val"),
            ],
            &[
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-val, header-add-2"),
                ("x-header-add-3", "header-add-3"),
            ],
            &["x-header-remove-1", "x-header-remove-2"],
        ),
        (
            "/case-insensitivity",
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
            ],
            &[
                ("x-header-set", "header-set"),
                ("x-header-add", "original-val-add, header-add"),
            ],
            &["x-header-remove"],
        ),
    ];
    let mut wrong = Vec::new();
    for (path, send, want, absent) in cases {
        let got = seen_headers(&c, &mesh, path, send).await;
        for (k, v) in *want {
            if got[*k] != *v {
                wrong.push(format!("{path} {send:?}: {k} is {}, not {v:?}", got[*k]));
            }
        }
        for k in *absent {
            if !got[*k].is_null() {
                wrong.push(format!("{path} {send:?}: {k} still there: {}", got[*k]));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    mesh.weft_ok(&["delete", "-f", &file]);

    // Weights 70/30/0 over 1,000 requests: each share within 4 standard deviations
    // (binomial, 1.5 points at 1,000 requests), and none for weight 0.
    let file = manifest("httproute-weight");
    mesh.weft_ok(&["apply", "-f", &file]);
    let mut counts = std::collections::HashMap::<String, usize>::new();
    let n = 1000;
    for _ in 0..n {
        *counts
            .entry(ask(&c, &mesh, "GET", "/", &[]).await)
            .or_default() += 1;
    }
    let share = |v: &str| counts.get(v).copied().unwrap_or(0) as f64 / n as f64;
    let sd = (0.7f64 * 0.3 / n as f64).sqrt();
    assert!((share("v1") - 0.7).abs() <= 4.0 * sd, "{counts:?}");
    assert!((share("v2") - 0.3).abs() <= 4.0 * sd, "{counts:?}");
    assert_eq!(share("v1") + share("v2"), 1.0, "{counts:?}");
}
