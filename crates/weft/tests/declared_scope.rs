//! Scoping by what services call, end to end. With `spec.scope: declared`, `client` declares
//! `dependsOn: [far.back]`: its sidecar reaches `far`, answers a call to `near` exactly as one
//! to a host no service has (404, NR), and its admin `/config` lists only `client` and `far`,
//! while `far`, which declares nothing, still sees the whole mesh; an Istio Sidecar that
//! applies to `client` then wins over its declaration. With `spec.scope: observed`, `client`'s
//! sidecar starts with its own service only; its app's first call to `far` succeeds (the
//! sidecar asks the control plane for it and holds the call until it has it), `far` is then in
//! its snapshot, and a call to a host no service has is still a 404, answered without waiting
//! out the ask's bound.

mod common;

use common::scope::*;
use common::*;
use std::time::{Duration, Instant};

fn mesh(scope: &str, client_depends_on: &str) -> String {
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {scope}}}
spec:
  ingress: 127.0.0.1:0
  scope: {scope}
  services:
  - name: client
    namespace: front
    port: 80
{client_depends_on}    workloads:
    - name: client-v1
      labels: {{app: client}}
      command: [weft, demo, echo, --service, client, --version, v1]
  - name: near
    namespace: front
    port: 80
    workloads:
    - name: near-v1
      labels: {{app: near}}
      command: [weft, demo, echo, --service, near, --version, v1]
  - name: far
    namespace: back
    port: 80
    workloads:
    - name: far-v1
      labels: {{app: far}}
      command: [weft, demo, echo, --service, far, --version, v1]
"#
    )
}

const EVERYTHING: [&str; 3] = ["client.front", "far.back", "near.front"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaring_service_reaches_what_it_declares_and_nothing_else() {
    let mesh = Mesh::up(&mesh("declared", "    dependsOn: [far.back]\n"));
    let c = client();

    let (status, body) = from_client(&c, &mesh, "http://far.back/").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = from_client(&c, &mesh, "http://near/").await;
    let (unknown_status, unknown_body) = from_client(&c, &mesh, "http://nosuch/").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no service in the mesh for host"), "{body}");
    assert_eq!(
        (status, body.replace("near", "nosuch")),
        (unknown_status, unknown_body)
    );
    let (declared, declared_bytes) = services_of(&c, &mesh, "client-v1-0").await;
    assert_eq!(declared, ["client.front", "far.back"]);
    // `far` declares nothing: the whole mesh, a larger snapshot.
    let (whole, whole_bytes) = services_of(&c, &mesh, "far-v1-0").await;
    assert_eq!(whole, EVERYTHING);
    assert!(
        declared_bytes < whole_bytes,
        "{declared_bytes} >= {whole_bytes}"
    );

    // An Istio Sidecar that applies to `client` wins over its declaration.
    mesh.apply_yaml("sidecar.yaml", SIDECAR);
    assert_eq!(
        services_of(&c, &mesh, "client-v1-0").await.0,
        ["client.front", "near.front"]
    );
    let (status, body) = from_client(&c, &mesh, "http://near/").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = from_client(&c, &mesh, "http://far.back/").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observing_proxy_gets_a_service_the_first_time_its_app_calls_it() {
    let mesh = Mesh::up(&mesh("observed", ""));
    let c = client();
    assert_eq!(
        services_of(&c, &mesh, "client-v1-0").await.0,
        ["client.front"]
    );

    // The first call succeeds: no failure the app sees.
    let (status, body) = from_client(&c, &mesh, "http://far.back/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("far"), "{body}");
    assert_eq!(
        services_of(&c, &mesh, "client-v1-0").await.0,
        ["client.front", "far.back"]
    );
    // A bare name resolves in the caller's namespace, as ever.
    let (status, body) = from_client(&c, &mesh, "http://near/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(services_of(&c, &mesh, "client-v1-0").await.0, EVERYTHING);

    // A host no service has: the usual 404, refused by the control plane rather than waited
    // out (the ask's bound is 2 s).
    let t0 = Instant::now();
    let (status, body) = from_client(&c, &mesh, "http://nosuch.back/").await;
    let took = t0.elapsed();
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no service in the mesh for host \"nosuch.back\""),
        "{body}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Other proxies started small too and were not given what `client` asked for.
    assert_eq!(services_of(&c, &mesh, "far-v1-0").await.0, ["far.back"]);
}
