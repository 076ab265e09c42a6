//! The Mesh file's `spec.defaultRetries`: with `istio`, a service no VirtualService routes
//! retries a 503 as Istio's default policy does (2 retries), and a VirtualService's
//! `retries: {attempts: 0}` turns it off for its routes; unset (as in Linkerd), the 503 reaches
//! the client.

mod common;

use common::*;

/// One `ratings` replica (an echo) behind the ingress; `default_retries` is the Mesh's
/// `spec.defaultRetries` line, if any.
fn ratings_mesh(name: &str, default_retries: &str) -> String {
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
  {default_retries}
  services:
  - name: ratings
    port: 9080
    workloads:
    - name: ratings-v1
      labels: {{app: ratings, version: v1}}
      replicas: 1
      command: [weft, demo, echo, --service, ratings, --version, v1]
"#
    )
}

/// The status a request to `ratings` gets when its first `fails` attempts answer 503.
async fn status_failing(c: &HttpClient, mesh: &Mesh, fails: u32) -> u16 {
    let path = format!("/r?fail_times={fails}&status=503");
    get(c, mesh.ingress, "ratings", &path).await.unwrap().status
}

/// Retries the ingress made (it is the client-side proxy of these requests).
async fn ingress_retries(c: &HttpClient, mesh: &Mesh) -> f64 {
    let admin = mesh.status_json(None)["ingress_admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    metric_sum(c, admin, "weft_retries_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_default_retries_a_503_without_any_virtual_service() {
    let mesh = Mesh::up(&ratings_mesh("retries-istio", "defaultRetries: istio"));
    let c = client();

    let before = ingress_retries(&c, &mesh).await;
    assert_eq!(status_failing(&c, &mesh, 1).await, 200, "retried once");
    assert_eq!(status_failing(&c, &mesh, 2).await, 200, "retried twice");
    assert_eq!(
        status_failing(&c, &mesh, 3).await,
        503,
        "Istio's default is 2 retries: the third failure is the answer"
    );
    // 1 + 2 + 2 retries, counted as any configured retry is.
    assert_eq!(
        eventually(5.0, || async { ingress_retries(&c, &mesh).await - before }).await,
        5.0
    );

    // A VirtualService's own policy wins: `attempts: 0` turns retries off for its routes.
    mesh.apply_yaml(
        "vs.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
"#,
    );
    assert_eq!(status_failing(&c, &mesh, 1).await, 503, "attempts: 0");

    // A VirtualService without `retries` gets the default, as in Istio.
    mesh.apply_yaml(
        "vs.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
"#,
    );
    assert_eq!(
        status_failing(&c, &mesh, 2).await,
        200,
        "the default applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_default_retries_a_503_reaches_the_client() {
    // Unset is Linkerd's behaviour (and `linkerd` / `none` say so explicitly).
    let mesh = Mesh::up(&ratings_mesh("retries-none", ""));
    let c = client();
    let before = ingress_retries(&c, &mesh).await;
    assert_eq!(status_failing(&c, &mesh, 1).await, 503);
    assert_eq!(ingress_retries(&c, &mesh).await - before, 0.0);
}
