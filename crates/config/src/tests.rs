//! Unit tests: mesh files in, specs or located errors out.

use super::*;
use model::{LoadBalancer, MeshSpec, ServiceSpec, WorkloadSpec};
use std::collections::BTreeMap;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// The diagnostics of a file that must fail to load.
fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str(Path::new("mesh.yaml"), text) {
        Ok(loaded) => panic!("expected errors, loaded {loaded:?}"),
        Err(Errors(diagnostics)) => diagnostics,
    }
}

/// The only diagnostic of a file that must fail to load, as `LINE:COL: FIELD: MESSAGE`.
fn error(text: &str) -> String {
    let diagnostics = errors(text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = diagnostics[0].to_string();
    d.strip_prefix("mesh.yaml:").unwrap_or(&d).to_string()
}

fn mesh(text: &str) -> MeshSpec {
    let loaded = load_str(Path::new("mesh.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.unsupported, vec![]);
    loaded.mesh.expect("a mesh")
}

const VALID: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: shop, namespace: store}
spec:
  services:
  - name: hello
    port: 80
    workloads:
    - name: hello-v1
      labels: {version: v1}
      command: [weft, demo, echo, --service, hello]
  - name: db
    namespace: data
    port: 5432
    lb: round-robin
    labels: {tier: db}
    annotations: {note: primary}
    workloads:
    - name: db-0
      labels: {app: postgres}
      replicas: 0
      command: [postgres]
      env: {PGPORT: 5432}
  - name: idle
    port: 9000
";

#[test]
fn valid_mesh_with_defaults() {
    let expected = MeshSpec {
        name: "shop".into(),
        ingress: model::mesh::DEFAULT_INGRESS.parse().unwrap(),
        services: vec![
            ServiceSpec {
                name: "hello".into(),
                namespace: "store".into(),
                port: 80,
                lb: LoadBalancer::PeakEwma,
                labels: map(&[]),
                annotations: map(&[]),
                workloads: vec![WorkloadSpec {
                    name: "hello-v1".into(),
                    labels: map(&[("app", "hello"), ("version", "v1")]),
                    replicas: 1,
                    command: words(&["weft", "demo", "echo", "--service", "hello"]),
                    env: map(&[]),
                }],
            },
            ServiceSpec {
                name: "db".into(),
                namespace: "data".into(),
                port: 5432,
                lb: LoadBalancer::RoundRobin,
                labels: map(&[("tier", "db")]),
                annotations: map(&[("note", "primary")]),
                workloads: vec![WorkloadSpec {
                    name: "db-0".into(),
                    labels: map(&[("app", "postgres")]),
                    replicas: 0,
                    command: words(&["postgres"]),
                    env: map(&[("PGPORT", "5432")]),
                }],
            },
            ServiceSpec {
                name: "idle".into(),
                namespace: "store".into(),
                port: 9000,
                lb: LoadBalancer::PeakEwma,
                labels: map(&[]),
                annotations: map(&[]),
                workloads: vec![],
            },
        ],
    };
    assert_eq!(mesh(VALID), expected);
}

#[test]
fn namespace_defaults_to_default_and_ingress_is_read() {
    let m = mesh(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\n\
         spec:\n  ingress: 0.0.0.0:0\n  services:\n  - {name: a, port: 1}\n",
    );
    assert_eq!(m.services[0].namespace, model::names::DEFAULT_NAMESPACE);
    assert_eq!(m.ingress, "0.0.0.0:0".parse().unwrap());
}

#[test]
fn no_mesh_document_is_no_mesh() {
    let loaded = load_str(Path::new("x.yaml"), "# nothing here\n---\n---\n").unwrap();
    assert_eq!(
        loaded,
        Loaded {
            mesh: None,
            unsupported: vec![]
        }
    );
}

#[test]
fn mesh_as_second_document_reports_file_lines() {
    let text = "\
# a comment
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: a
    port: 0
";
    assert_eq!(
        error(text),
        "12:5: spec.services[0].port: port must be between 1 and 65535"
    );
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let text = "\
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: a
    port: 80
    workloads:
    - name: a-v1
      comand: [x]
";
    let d = &errors(text)[0];
    assert_eq!(
        (d.file.as_path(), d.line, d.column),
        (Path::new("mesh.yaml"), 11, 7)
    );
    assert_eq!(d.field, "spec.services[0].workloads[0].comand");
    assert!(
        d.message
            .starts_with("unknown field `comand`, expected one of"),
        "{d}"
    );
}

#[test]
fn unknown_field_at_the_top_and_wrong_type() {
    let text =
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec: {}\nstatus: {}\n";
    assert!(
        error(text).starts_with("5:1: status: unknown field `status`"),
        "{}",
        error(text)
    );
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  services:\n  - name: a\n    port: http\n";
    assert!(
        error(text).starts_with("7:5: spec.services[0].port: invalid type"),
        "{}",
        error(text)
    );
}

#[test]
fn missing_field_points_at_its_mapping() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  services:\n  - name: a\n    lb: peak-ewma\n";
    assert_eq!(
        error(text),
        "6:5: spec.services[0].port: missing field `port`"
    );
}

#[test]
fn duplicate_service_at_second_occurrence() {
    let text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: a
    port: 80
  - name: b
    port: 80
  - namespace: default
    name: a
    port: 81
";
    assert_eq!(
        error(text),
        "11:5: spec.services[2].name: duplicate service a.default (first defined at mesh.yaml:6)"
    );
}

#[test]
fn duplicate_workload_across_documents() {
    let text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - {name: a, port: 80, workloads: [{name: w, command: [x]}]}
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m, namespace: other}
spec:
  services:
  - {name: a, port: 80, workloads: [{name: w, command: [x]}]}
";
    assert_eq!(
        error(text),
        "13:38: spec.services[0].workloads[0].name: duplicate workload w (first defined at mesh.yaml:6)"
    );
}

#[test]
fn empty_command_points_at_command() {
    let text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: a
    port: 80
    workloads:
    - name: a-v1
      replicas: 2
      command: []
    - name: a-v2
      command:
      - ''
      - serve
";
    let diagnostics: Vec<String> = errors(text).iter().map(ToString::to_string).collect();
    assert_eq!(
        diagnostics,
        [
            "mesh.yaml:11:7: spec.services[0].workloads[0].command: command must not be empty",
            "mesh.yaml:14:9: spec.services[0].workloads[1].command[0]: the first word of command must not be empty",
        ]
    );
}

#[test]
fn bad_ingress() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  ingress: localhost:80\n";
    assert!(
        error(text).starts_with("5:3: spec.ingress: invalid address `localhost:80`"),
        "{}",
        error(text)
    );
}

#[test]
fn conflicting_ingress_across_documents() {
    let text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {ingress: '127.0.0.1:80'}
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: n}
spec: {ingress: '127.0.0.1:80'}
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: o}
spec: {ingress: '127.0.0.1:81'}
";
    assert_eq!(
        error(text),
        "14:8: spec.ingress: ingress 127.0.0.1:81 conflicts with ingress 127.0.0.1:80 set at mesh.yaml:4"
    );
}

#[test]
fn wrong_api_version() {
    let text = "apiVersion: weft.dev/v1\nkind: Mesh\nmetadata: {name: m}\nspec: {}\n";
    assert_eq!(
        error(text),
        "1:1: apiVersion: kind Mesh needs apiVersion weft.dev/v1alpha1, not `weft.dev/v1`"
    );
}

#[test]
fn unsupported_kind_is_recorded_and_the_mesh_still_loads() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
...
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {}
---

# comment
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
";
    let loaded = load_str(Path::new("all.yaml"), text).unwrap();
    assert_eq!(loaded.mesh.map(|m| m.name).as_deref(), Some("m"));
    let notices: Vec<String> = loaded.unsupported.iter().map(ToString::to_string).collect();
    assert_eq!(
        notices,
        [
            "all.yaml:1:1: VirtualService (networking.istio.io/v1) reviews is not yet supported",
            "all.yaml:16:1: HTTPRoute (gateway.networking.k8s.io/v1) is not yet supported",
        ]
    );
}

#[test]
fn two_errors_in_one_file_are_both_reported() {
    let text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: Hello_World
    port: 80
  - name: b
    namespace: ''
    port: 0
";
    let diagnostics: Vec<(usize, String)> = errors(text)
        .into_iter()
        .map(|d| (d.line, d.field))
        .collect();
    assert_eq!(
        diagnostics,
        [
            (6, "spec.services[0].name".to_string()),
            (9, "spec.services[1].namespace".to_string()),
            (10, "spec.services[1].port".to_string()),
        ]
    );
}

#[test]
fn document_without_kind() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec: {}\n---\n\napiVersion: v1\nmetadata: {name: x}\n";
    assert_eq!(error(text), "7:1: kind: missing field `kind`");
    let diagnostics: Vec<String> = errors("- a\n- b\n---\nfoo: [\n")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
    assert!(
        diagnostics[0].starts_with("mesh.yaml:1:3: a document must be a mapping"),
        "{diagnostics:?}"
    );
    assert!(
        diagnostics[1].starts_with("mesh.yaml:5:"),
        "{diagnostics:?}"
    );
}

#[test]
fn directory_of_files_merges_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: first}
spec:
  services:
  - {name: a, port: 80}
";
    let second = serde_json::json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": "second"},
        "spec": {"ingress": "127.0.0.1:9000", "services": [{"name": "b", "port": 81}]},
    });
    std::fs::write(dir.path().join("1-a.yaml"), first).unwrap();
    std::fs::write(
        dir.path().join("2-b.json"),
        serde_json::to_string_pretty(&second).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a mesh").unwrap();
    std::fs::create_dir(dir.path().join("nested.yaml")).unwrap();

    let m = load(&[dir.path().to_path_buf()]).unwrap().mesh.unwrap();
    assert_eq!(m.name, "first");
    assert_eq!(m.ingress, "127.0.0.1:9000".parse().unwrap());
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);

    // The same service in both files: reported in the second file, at its line.
    std::fs::write(dir.path().join("3-c.yml"), first.replace("first", "third")).unwrap();
    let Err(Errors(d)) = load(&[dir.path().to_path_buf()]) else {
        panic!("duplicate accepted")
    };
    assert_eq!(
        (d.len(), d[0].file.clone(), d[0].line),
        (1, dir.path().join("3-c.yml"), 6)
    );
}

#[test]
fn unreadable_file_is_named() {
    let Err(Errors(d)) = load(&[PathBuf::from("/nonexistent/mesh.yaml")]) else {
        panic!()
    };
    assert!(
        d[0].to_string()
            .starts_with("/nonexistent/mesh.yaml: cannot read: "),
        "{}",
        d[0]
    );
}

#[test]
fn hostile_input_does_not_panic() {
    for text in [
        "[[[[[[[[",
        &"[".repeat(10_000),
        &"- ".repeat(5_000),
        "a: &x [*x]\n",
        "\u{feff}---\n...\n",
        "\t\0",
    ] {
        let _ = load_str(Path::new("x"), text);
    }
}
