//! Routing features end to end that no other test drives through running proxies: Istio's
//! `withoutHeaders` and `uriRegexRewrite`; Linkerd's `retry.linkerd.io` / `timeout.linkerd.io`
//! annotations, ServiceProfile `responseClasses` and `dstOverrides`; Gateway API
//! `RequestRedirect` and `RequestMirror` on a Service parent (GAMMA); and which API wins when
//! several route one service.

mod common;

use common::*;
use serde_json::Value;

const MESH: &str = r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: routing}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: reviews
    port: 80
    workloads:
    - name: reviews-v1
      labels: {app: reviews, version: v1}
      command: [weft, demo, echo, --service, reviews, --version, v1]
    - name: reviews-v2
      labels: {app: reviews, version: v2}
      command: [weft, demo, echo, --service, reviews, --version, v2]
  - name: ratings
    port: 80
    annotations:
      retry.linkerd.io/http: 5xx
      retry.linkerd.io/limit: "2"
      timeout.linkerd.io/request: 500ms
    workloads:
    - name: ratings-v1
      labels: {app: ratings}
      command: [weft, demo, echo, --service, ratings, --version, v1]
  - name: books
    port: 80
    workloads:
    - name: books-v1
      labels: {app: books}
      command: [weft, demo, echo, --service, books, --version, v1]
  - name: books-v2
    port: 80
    workloads:
    - name: books-v2
      labels: {app: books-v2}
      command: [weft, demo, echo, --service, books-v2, --version, v2]
  - name: web
    port: 80
    workloads:
    - name: web-v1
      labels: {app: web}
      command: [weft, demo, echo, --service, web, --version, v1]
  - name: shadow
    port: 80
    workloads:
    - name: shadow-v1
      labels: {app: shadow}
      command: [weft, demo, echo, --service, shadow, --version, v1]
"#;

const SUBSETS: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

const REVIEWS_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api/}
    rewrite:
      uriRegexRewrite: {match: "^/api/(.*)$", rewrite: "/v1/\\1"}
    route: [{destination: {host: reviews, subset: v2}}]
  - match:
    - withoutHeaders: {end-user: {exact: jason}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v2}}]
"#;

/// Loses to the VirtualService above for the same service (VirtualService > HTTPRoute).
const REVIEWS_HTTPROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-gamma, namespace: default}
spec:
  parentRefs:
  - {group: "", kind: Service, name: reviews, port: 80}
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-from, value: httproute}]
    backendRefs: [{name: reviews, port: 80}]
"#;

const PROFILE: &str = r#"apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local, namespace: default}
spec:
  routes:
  - name: teapots
    condition: {method: GET, pathRegex: /teapot}
    isRetryable: true
    responseClasses:
    - condition: {status: {min: 418, max: 418}}
      isFailure: true
  dstOverrides:
  - {authority: books-v2.default.svc.cluster.local:80, weight: 1}
"#;

const WEB_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web, port: 80}
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: new.example.com, path: {type: ReplaceFullPath, replaceFullPath: /new}}
  - matches: [{path: {type: PathPrefix, value: /mirrored}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
    backendRefs: [{name: web, port: 80}]
"#;

/// GET from ratings' app through its sidecar to `host_path`: what the app behind it answered
/// (or the sidecar's own answer), as the demo's `/fetch` reports it.
async fn via_mesh(
    c: &HttpClient,
    mesh: &Mesh,
    host_path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, Value) {
    let path = format!(
        "/fetch?url={}",
        form_urlencoded::byte_serialize(format!("http://{host_path}").as_bytes())
            .collect::<String>()
    );
    let mut req =
        http::Request::get(format!("http://{}{path}", mesh.ingress)).header("host", "ratings");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = c
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    let bytes = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let d = &v["downstream"];
    (
        d["status"].as_u64().unwrap_or(0) as u16,
        d["body"].clone(),
        v.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_features_through_running_proxies() {
    let mesh = Mesh::up(MESH);
    let c = client();
    mesh.apply_yaml("subsets.yaml", SUBSETS);
    mesh.apply_yaml("reviews-vs.yaml", REVIEWS_VS);

    // withoutHeaders: everyone but jason gets v1; jason falls through to v2.
    let r = get(&c, mesh.ingress, "reviews", "/").await.unwrap();
    assert_eq!(r.body["version"], "v1", "{}", r.text);
    let req = http::Request::get(format!("http://{}/", mesh.ingress))
        .header("host", "reviews")
        .header("end-user", "jason")
        .body(http_body_util::Empty::new())
        .unwrap();
    let rsp = c.request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], "v2", "{v}");
    // uriRegexRewrite: /api/x → /v1/x, to v2.
    let r = get(&c, mesh.ingress, "reviews", "/api/books/7?x=1")
        .await
        .unwrap();
    assert_eq!(
        (&r.body["version"], &r.body["path"], &r.body["query"]["x"]),
        (
            &Value::from("v2"),
            &Value::from("/v1/books/7"),
            &Value::from("1")
        ),
        "{}",
        r.text
    );

    // Precedence: an HTTPRoute for the same service is applied with a warning naming the
    // winner, and the VirtualService keeps routing.
    let file = mesh.files.path().join("reviews-route.yaml");
    std::fs::write(&file, REVIEWS_HTTPROUTE).unwrap();
    let out = mesh.weft(&["apply", "-f", file.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("VirtualService wins") && said.contains("HTTPRoute default/reviews-gamma"),
        "{said}"
    );
    let r = get(&c, mesh.ingress, "reviews", "/").await.unwrap();
    assert_eq!(r.body["version"], "v1", "{}", r.text);
    assert!(r.body["headers"].get("x-from").is_none(), "{}", r.text);
    // Without the VirtualService, the HTTPRoute is in force.
    mesh.delete_file("reviews-vs.yaml");
    let r = get(&c, mesh.ingress, "reviews", "/").await.unwrap();
    assert_eq!(r.body["headers"]["x-from"], "httproute", "{}", r.text);

    // Linkerd annotations on ratings: 5xx retried up to 2 more times; a 500 ms request timeout.
    let r = get(&c, mesh.ingress, "ratings", "/?fail_times=2&status=500")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "two failures, two retries: {}", r.text);
    let r = get(&c, mesh.ingress, "ratings", "/?fail_times=3&status=500")
        .await
        .unwrap();
    assert_eq!(r.status, 500, "three failures, two retries: {}", r.text);
    let r = get(&c, mesh.ingress, "ratings", "/?delay=1s")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.flag.as_deref()),
        (504, Some("UT")),
        "{}",
        r.text
    );

    // ServiceProfile: dstOverrides sends books' traffic to books-v2; a 418 on the teapot route
    // is a failure by its response class, so the retryable route retries it.
    mesh.apply_yaml("profile.yaml", PROFILE);
    let r = get(&c, mesh.ingress, "books", "/").await.unwrap();
    assert_eq!(r.body["service"], "books-v2", "{}", r.text);
    let r = get(&c, mesh.ingress, "books", "/teapot?fail_times=1&status=418")
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "a failure by its class is retried: {}",
        r.text
    );
    let r = get(&c, mesh.ingress, "books", "/other?fail_times=1&status=418")
        .await
        .unwrap();
    assert_eq!(r.status, 418, "no route, no retry: {}", r.text);

    // Gateway API filters on a Service parent, as a client in the mesh meets them.
    mesh.apply_yaml("web-route.yaml", WEB_ROUTE);
    let (status, _, whole) = via_mesh(&c, &mesh, "web/old/page", &[]).await;
    assert_eq!(status, 302, "{whole}");
    let shadow_before = inbound_requests(&c, &mesh, "shadow-v1-0").await;
    let (status, body, whole) = via_mesh(&c, &mesh, "web/mirrored/x", &[]).await;
    assert_eq!(
        (status, &body["service"]),
        (200, &Value::from("web")),
        "{whole}"
    );
    // The mirror is fire-and-forget: the shadow's own sidecar counts the copy when it lands.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while inbound_requests(&c, &mesh, "shadow-v1-0").await < shadow_before + 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the shadow never got the mirrored request"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Linkerd's books-app walkthrough, as its docs write it: an HTTPRoute whose parent is the
/// Service (`group: core`), whose rule has only `matches`, and whose annotations set a timeout
/// and retries. The rule sends to the parent service, with the annotations in force.
const BOOKS_LIST_ROUTE: &str = r#"kind: HTTPRoute
apiVersion: gateway.networking.k8s.io/v1beta1
metadata:
  name: books-list
  namespace: default
  annotations:
    timeout.linkerd.io/request: 500ms
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: "2"
spec:
  parentRefs:
    - name: books
      group: core
      kind: Service
      port: 80
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: "/books.json"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_rule_without_backend_refs_routes_to_its_parent_service() {
    let mesh = Mesh::up(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: books}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: books
    port: 80
    workloads:
    - name: books-v1
      labels: {app: books}
      command: [weft, demo, echo, --service, books, --version, v1]
"#,
    );
    let c = client();
    mesh.apply_yaml("books-list.yaml", BOOKS_LIST_ROUTE);
    let routes = mesh.weft_ok(&["routes", "books"]);
    assert!(routes.contains("HTTPRoute default/books-list"), "{routes}");

    let r = get(&c, mesh.ingress, "books", "/books.json").await.unwrap();
    assert_eq!(
        (r.status, &r.body["service"]),
        (200, &Value::from("books")),
        "{}",
        r.text
    );
    // The annotations apply to the rule: 5xx retried twice more, 500 ms for the whole request.
    let r = get(
        &c,
        mesh.ingress,
        "books",
        "/books.json?fail_times=2&status=500",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "two failures, two retries: {}", r.text);
    let r = get(&c, mesh.ingress, "books", "/books.json?delay=1s")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.flag.as_deref()),
        (504, Some("UT")),
        "{}",
        r.text
    );
}
