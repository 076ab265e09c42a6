//! `weft up --watch` and the Mesh document: an edit to it applies live. More replicas start and
//! serve, fewer drain without failing a request, a changed workload is replaced one replica at a
//! time while requests keep succeeding, and a field that cannot change live (the ingress) is
//! named in a notice while the rest of the edit applies.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A mesh with one service `web` (workload `web`, `replicas` echo replicas, `env` as a flow
/// mapping) on `ingress`.
fn web(name: &str, ingress: &str, replicas: u32, env: &str) -> String {
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: {ingress}
  services:
  - name: web
    port: 80
    workloads:
    - name: web
      labels: {{app: web, version: v1}}
      replicas: {replicas}
      env: {env}
      command: [weft, demo, echo, --service, web]
"#
    )
}

/// Rewrites the watched mesh file.
fn edit(mesh: &Mesh, yaml: &str) {
    std::fs::write(mesh.files.path().join("mesh.yaml"), yaml).unwrap();
}

/// Waits (up to 60 s: replicas start, become ready and reach every proxy) until `weft up` has
/// printed `line`.
async fn printed(mesh: &Mesh, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mesh.stderr().contains(line) {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in:\n{}",
            mesh.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The instances listed in `weft status`.
fn instances(mesh: &Mesh) -> BTreeSet<String> {
    mesh.status_json(None)["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["instance"].as_str().unwrap().to_string())
        .collect()
}

/// Sends requests to `web` through the ingress one after another until `done`; every answer
/// (instance) seen, and every request that did not get a 200.
async fn traffic(
    mesh: &Mesh,
    done: tokio_util::sync::CancellationToken,
) -> (Vec<String>, Vec<String>) {
    let c = client();
    let (mut seen, mut failed) = (Vec::new(), Vec::new());
    // Bounded: a stuck rollout fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done.is_cancelled() && Instant::now() < deadline {
        match get(&c, mesh.ingress, "web", "/").await {
            Ok(r) if r.status == 200 => {
                seen.push(r.body["instance"].as_str().unwrap_or_default().to_string())
            }
            Ok(r) => failed.push(format!("{} {:?} {}", r.status, r.flag, r.text)),
            Err(e) => failed.push(format!("{e:?}")),
        }
    }
    (seen, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_edited_in_the_watched_mesh_file_start_and_drain() {
    let mesh = Mesh::up_watching(&web("scale", "127.0.0.1:0", 2, "{}"), &[]);
    let c = client();

    // 2 → 3: the third replica starts, becomes an endpoint and serves.
    edit(&mesh, &web("scale", "127.0.0.1:0", 3, "{}"));
    printed(&mesh, "mesh: web replicas 2 → 3: started web-2").await;
    assert_eq!(
        instances(&mesh),
        ["web-0", "web-1", "web-2"].map(String::from).into()
    );
    let mut answered = BTreeSet::new();
    for _ in 0..60 {
        let r = get(&c, mesh.ingress, "web", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        answered.insert(r.body["instance"].as_str().unwrap().to_string());
    }
    assert!(answered.contains("web-2"), "{answered:?}");

    // 3 → 1 while a client keeps sending: the two removed replicas drain, no request fails.
    let done = tokio_util::sync::CancellationToken::new();
    let load = {
        let (mesh, done) = (&mesh, done.clone());
        async move { traffic(mesh, done).await }
    };
    let change = async {
        // Some requests before the edit, so that every replica has connections in use.
        tokio::time::sleep(Duration::from_millis(300)).await;
        edit(&mesh, &web("scale", "127.0.0.1:0", 1, "{}"));
        printed(&mesh, "mesh: web replicas 3 → 1: stopped web-1").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        done.cancel();
    };
    let ((seen, failed), ()) = tokio::join!(load, change);
    assert!(failed.is_empty(), "{failed:?}\n{}", mesh.stderr());
    assert!(seen.len() > 20, "only {} requests", seen.len());
    assert!(mesh
        .stderr()
        .contains("mesh: web replicas 3 → 1: stopped web-2"));
    assert_eq!(instances(&mesh), ["web-0"].map(String::from).into());
    for _ in 0..20 {
        let r = get(&c, mesh.ingress, "web", "/").await.unwrap();
        assert_eq!(
            (r.status, r.body["instance"].as_str()),
            (200, Some("web-0"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_workload_rolls_without_failing_requests_and_the_ingress_needs_a_restart() {
    // The app's WEFT_INSTANCE (what the echo answers as `instance`) comes from its env.
    let blue = "{WEFT_INSTANCE: blue}";
    let mesh = Mesh::up_watching(&web("roll", "127.0.0.1:0", 2, blue), &[]);
    let c = client();
    let r = get(&c, mesh.ingress, "web", "/").await.unwrap();
    assert_eq!(r.body["instance"], "blue");

    let done = tokio_util::sync::CancellationToken::new();
    let load = {
        let (mesh, done) = (&mesh, done.clone());
        async move { traffic(mesh, done).await }
    };
    let change = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        edit(
            &mesh,
            &web("roll", "127.0.0.1:0", 2, "{WEFT_INSTANCE: green}"),
        );
        printed(&mesh, "mesh: web env changed: replaced web-1").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        done.cancel();
    };
    let ((seen, failed), ()) = tokio::join!(load, change);
    assert!(failed.is_empty(), "{failed:?}\n{}", mesh.stderr());
    assert!(mesh
        .stderr()
        .contains("mesh: web env changed: replaced web-0"));
    assert_eq!(seen.first().map(String::as_str), Some("blue"));
    assert_eq!(seen.last().map(String::as_str), Some("green"), "{seen:?}");
    for _ in 0..20 {
        let r = get(&c, mesh.ingress, "web", "/").await.unwrap();
        assert_eq!(
            (r.status, r.body["instance"].as_str()),
            (200, Some("green"))
        );
    }

    // The ingress cannot move while the mesh runs: a notice names the field; the replica
    // change in the same edit applies.
    let moved = web("roll", "127.0.0.1:1", 3, "{WEFT_INSTANCE: green}");
    edit(&mesh, &moved);
    printed(&mesh, "mesh: web replicas 2 → 3: started web-2").await;
    let err = mesh.stderr();
    assert!(
        err.contains(
            "notice: Mesh spec.ingress changed (127.0.0.1:0 → 127.0.0.1:1): it needs a restart"
        ),
        "{err}"
    );
    let r = get(&c, mesh.ingress, "web", "/").await.unwrap();
    assert_eq!(r.status, 200, "the ingress stays where it was");
}
