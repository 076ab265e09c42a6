//! An Istio Sidecar's `egress.hosts` narrows what a workload's proxy is told about, end to end:
//! with `./*` on namespace `front`, `client`'s sidecar answers a call to `far.back` exactly as
//! it answers one to a host no service has (404, flag NR), still reaches `near` in its own
//! namespace, and its admin `/config` lists only `front`'s services; proxies elsewhere keep
//! seeing the whole mesh, and deleting the Sidecar gives `client` everything back.

mod common;

use common::scope::*;
use common::*;

const MESH: &str = r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: scope}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: client
    namespace: front
    port: 80
    workloads:
    - name: client-v1
      labels: {app: client}
      command: [weft, demo, echo, --service, client, --version, v1]
  - name: near
    namespace: front
    port: 80
    workloads:
    - name: near-v1
      labels: {app: near}
      command: [weft, demo, echo, --service, near, --version, v1]
  - name: far
    namespace: back
    port: 80
    workloads:
    - name: far-v1
      labels: {app: far}
      command: [weft, demo, echo, --service, far, --version, v1]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_limits_a_client_to_its_namespace() {
    let mesh = Mesh::up(MESH);
    let c = client();
    let everything = ["client.front", "far.back", "near.front"];

    // Before: the whole mesh.
    let (status, body) = from_client(&c, &mesh, "http://far.back/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(services_of(&c, &mesh, "client-v1-0").await.0, everything);

    mesh.apply_yaml("sidecar.yaml", SIDECAR);
    // `weft apply` answered once every proxy runs the change: no waiting.
    let (status, body) = from_client(&c, &mesh, "http://far.back/").await;
    let (unknown_status, unknown_body) = from_client(&c, &mesh, "http://nosuch.back/").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        (status, body.replace("far.back", "nosuch.back")),
        (unknown_status, unknown_body)
    );
    assert!(body.contains("no service in the mesh for host"), "{body}");
    let (status, body) = from_client(&c, &mesh, "http://near/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        services_of(&c, &mesh, "client-v1-0").await.0,
        ["client.front", "near.front"]
    );
    // The Sidecar is `front`'s: `far` in `back` still sees the whole mesh.
    assert_eq!(services_of(&c, &mesh, "far-v1-0").await.0, everything);

    mesh.delete_file("sidecar.yaml");
    let (status, body) = from_client(&c, &mesh, "http://far.back/").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(services_of(&c, &mesh, "client-v1-0").await.0, everything);
}
