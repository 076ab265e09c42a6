//! What the scoping tests share: the mesh-default Sidecar they apply, a call made by `client`'s
//! app through its sidecar, and the services a proxy's snapshot holds.

use super::*;
use serde_json::Value;
use std::net::SocketAddr;

pub const SIDECAR: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: front}
spec:
  egress:
  - hosts: ["./*"]
"#;

/// What `client`'s app got for a call to `url` through its sidecar: the status and body
/// (text), as the demo's `/fetch` reports them.
pub async fn from_client(c: &HttpClient, mesh: &Mesh, url: &str) -> (u16, String) {
    let path = format!(
        "/fetch?url={}",
        form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
    );
    let r = get(c, mesh.ingress, "client.front", &path).await.unwrap();
    let d = &r.body["downstream"];
    assert!(d.is_object(), "{url}: {}", r.text);
    let body = match &d["body"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (d["status"].as_u64().unwrap_or(0) as u16, body)
}

/// The services (`NAME.NAMESPACE`) in the snapshot instance `instance`'s proxy runs, and the
/// size of that snapshot as its admin `/config` shows it (JSON bytes).
pub async fn services_of(c: &HttpClient, mesh: &Mesh, instance: &str) -> (Vec<String>, usize) {
    let status = mesh.status_json(None);
    let admin: SocketAddr = workload(&status, instance)["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = get(c, admin, "admin", "/config").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let snapshot = &r.body["snapshot"];
    let mut names: Vec<String> = snapshot["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}.{}",
                s["key"]["name"].as_str().unwrap(),
                s["key"]["namespace"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    (names, snapshot.to_string().len())
}
