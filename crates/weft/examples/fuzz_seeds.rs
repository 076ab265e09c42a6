//! Writes seed inputs for the `snapshot` fuzz target: the snapshots the control plane builds
//! from the repository's examples and Gateway API conformance manifests, with an endpoint per
//! workload replica, protobuf-encoded as proxies receive them. `fuzz/seed.sh` runs it.
//!
//! Usage: `cargo run -p weft --example fuzz_seeds -- OUT_DIR` (from the repository root).

use model::{Endpoint, MeshSpec};
use prost::Message;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds OUT_DIR"));
    std::fs::create_dir_all(&out).expect("creating the output directory");
    let mut meshes: Vec<(String, MeshSpec)> = Vec::new();
    let mut examples: Vec<PathBuf> = std::fs::read_dir("examples")
        .expect("run from the repository root")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    examples.sort();
    for dir in examples {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match config::load(&[dir]) {
            Ok(loaded) => meshes.extend(loaded.mesh.map(|m| (name, m))),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
    for (name, services, namespace) in [
        (
            "conformance",
            &["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"][..],
            "gateway-conformance-infra",
        ),
        (
            "conformance-mesh",
            &["echo", "echo-v1", "echo-v2"][..],
            "gateway-conformance-mesh",
        ),
    ] {
        match conformance(name, services, namespace) {
            Ok(m) => meshes.push((name.to_string(), m)),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
    for (name, mesh) in meshes {
        let (mut snapshot, _) = control::snapshot::build(
            &mesh,
            &BTreeMap::new(),
            &control::snapshot::Discovered::default(),
            1,
        );
        let mut port = 20000u16;
        for (svc, spec) in snapshot.services.iter_mut().zip(&mesh.services) {
            for w in &spec.workloads {
                for i in 0..w.replicas {
                    port += 1;
                    svc.endpoints.push(Endpoint {
                        instance: format!("{}-{i}", w.name),
                        workload: w.name.clone(),
                        address: SocketAddr::from(([127, 0, 0, 1], port)),
                        labels: w.labels.clone(),
                        identity: spec.identity(),
                    });
                }
            }
        }
        let bytes = api::pb::Snapshot::from(&snapshot).encode_to_vec();
        let file = out.join(format!("seed-{name}"));
        std::fs::write(&file, bytes).expect("writing a seed");
    }
}

/// A mesh of `services` in `namespace` with the conformance manifests of `dir` applied to it,
/// and (for the ingress manifests) the Gateway they name.
fn conformance(dir: &str, services: &[&str], namespace: &str) -> Result<MeshSpec, String> {
    let mut text = String::from(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: conformance}\nspec:\n  ingress: 127.0.0.1:8080\n  services:\n",
    );
    for s in services {
        text.push_str(&format!(
            "  - name: {s}\n    namespace: {namespace}\n    port: 8080\n    workloads:\n    - {{name: {s}, labels: {{app: {s}}}, command: [app]}}\n"
        ));
    }
    text.push_str(&format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: same-namespace, namespace: {namespace}}}\nspec:\n  gatewayClassName: weft\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"
    ));
    let root = Path::new("testdata/conformance/gateway-api").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let manifest = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
        text.push_str("---\n");
        text.push_str(&manifest);
        text.push('\n');
    }
    let loaded = config::load_str(Path::new(dir), &text).map_err(|e| e.to_string())?;
    loaded.mesh.ok_or_else(|| "no mesh".to_string())
}
