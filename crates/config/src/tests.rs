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

/// The diagnostics of a file that must fail to load, or else of the resources it rejects
/// (without the `KIND NS/NAME: ` each rejection's message starts with).
fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str(Path::new("mesh.yaml"), text) {
        Ok(loaded) if loaded.rejected.is_empty() => panic!("expected errors, loaded {loaded:?}"),
        Ok(loaded) => loaded.rejected.into_iter().map(unlabel).collect(),
        Err(Errors(diagnostics)) => diagnostics,
    }
}

/// A rejection without the `KIND NS/NAME: ` its message starts with.
pub(crate) fn unlabel(d: Diagnostic) -> Diagnostic {
    let message = match d.message.split_once(": ") {
        Some((_, rest)) => rest.to_string(),
        None => d.message.clone(),
    };
    Diagnostic { message, ..d }
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
                ports: vec![default_port(80)],
                lb: LoadBalancer::PeakEwma,
                labels: map(&[]),
                annotations: map(&[]),
                workloads: vec![WorkloadSpec {
                    name: "hello-v1".into(),
                    labels: map(&[("app", "hello"), ("version", "v1")]),
                    replicas: 1,
                    command: words(&["weft", "demo", "echo", "--service", "hello"]),
                    env: map(&[]),
                    sidecar: true,
                    restart_policy: Default::default(),
                    placement: Default::default(),
                }],
                capture: Default::default(),
                depends_on: None,
            },
            ServiceSpec {
                name: "db".into(),
                namespace: "data".into(),
                port: 5432,
                ports: vec![default_port(5432)],
                lb: LoadBalancer::RoundRobin,
                labels: map(&[("tier", "db")]),
                annotations: map(&[("note", "primary")]),
                workloads: vec![WorkloadSpec {
                    name: "db-0".into(),
                    labels: map(&[("app", "postgres")]),
                    replicas: 0,
                    command: words(&["postgres"]),
                    env: map(&[("PGPORT", "5432")]),
                    sidecar: true,
                    restart_policy: Default::default(),
                    placement: Default::default(),
                }],
                capture: Default::default(),
                depends_on: None,
            },
            ServiceSpec {
                name: "idle".into(),
                namespace: "store".into(),
                port: 9000,
                ports: vec![default_port(9000)],
                lb: LoadBalancer::PeakEwma,
                labels: map(&[]),
                annotations: map(&[]),
                workloads: vec![],
                capture: Default::default(),
                depends_on: None,
            },
        ],
        routes: Vec::new(),
        tcp_routes: Vec::new(),
        policies: Vec::new(),
        gateway: Vec::new(),
        security: model::security::SecuritySpec::new(),
        default_retries: None,
        interception: Default::default(),
        outbound_policy: Default::default(),
        outbound_policies: Default::default(),
        egress: Default::default(),
        scope: Default::default(),
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
            unsupported: vec![],
            rejected: vec![],
            canaries: vec![],
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
        "6:5: spec.services[0]: a service needs `port` or `ports`"
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
fn placement_on_joined_hosts_is_read() {
    let text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: a
    port: 80
    workloads:
    - {name: a-v1, replicas: 2, hosts: [h1, h2], command: [x]}
    - {name: a-v2, hostSelector: {zone: b}, command: [x]}
    - {name: a-v3, command: [x]}
";
    let w = &mesh(text).services[0].workloads;
    assert_eq!(w[0].placement.hosts, ["h1", "h2"]);
    assert_eq!(w[1].placement.host_selector["zone"], "b");
    assert!(w[2].placement.is_empty());
    let bad = text.replace("hostSelector", "hostselector");
    assert!(error(&bad).contains("hostselector"), "{}", error(&bad));
}

#[test]
fn restart_policy_is_read_and_checked() {
    let text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: a
    port: 80
    workloads:
    - {name: a-v1, command: [x]}
    - {name: a-job, command: [x], restartPolicy: OnFailure}
    - {name: a-once, command: [x], restartPolicy: Never}
";
    let policies: Vec<_> = mesh(text).services[0]
        .workloads
        .iter()
        .map(|w| w.restart_policy)
        .collect();
    use model::RestartPolicy::*;
    assert_eq!(policies, [Always, OnFailure, Never]);
    let bad = text.replace("restartPolicy: Never", "restartPolicy: never");
    assert_eq!(
        error(&bad),
        "11:36: spec.services[0].workloads[2].restartPolicy: unknown restartPolicy `never`: use Always, OnFailure or Never"
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
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [api.example.com]
...
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {}
---

# comment
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
";
    let loaded = load_str(Path::new("all.yaml"), text).unwrap();
    assert_eq!(loaded.mesh.map(|m| m.name).as_deref(), Some("m"));
    let notices: Vec<String> = loaded.unsupported.iter().map(ToString::to_string).collect();
    assert_eq!(
        notices,
        [
            "all.yaml:1:1: ServiceEntry (networking.istio.io/v1) reviews is not yet supported",
            "all.yaml:16:1: GRPCRoute (gateway.networking.k8s.io/v1) is not yet supported",
        ]
    );
    assert_eq!(loaded.rejected, vec![]);
}

#[test]
fn a_routing_resource_that_cannot_be_honoured_is_rejected_alone() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
spec:
  selector: {istio: ingressgateway}
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a]
  http:
  - route:
    - destination: {host: a}
";
    let loaded = load_str(Path::new("all.yaml"), text).unwrap();
    let rejected: Vec<String> = loaded.rejected.iter().map(ToString::to_string).collect();
    assert_eq!(
        rejected,
        [
            // Parse errors are found first, while reading.
            "all.yaml:14:1: spec: Gateway edge/web: missing field `spec`",
            "all.yaml:5:1: spec.servers: Gateway default/ingress: needs at least one server",
        ]
    );
    assert_eq!(loaded.rejected_for("Gateway", "edge", "web").count(), 1);
    assert_eq!(
        loaded
            .rejected_for("VirtualService", "default", "a")
            .count(),
        0
    );
    // The rest applies.
    let mesh = loaded.mesh.unwrap();
    assert_eq!(mesh.routes.len(), 1);
    assert_eq!(loaded.unsupported, vec![]);

    // A fatal error carries the rejections too.
    let bad = text.replace("port: 80", "port: 0");
    let Err(Errors(all)) = load_str(Path::new("all.yaml"), &bad) else {
        panic!("port 0 accepted")
    };
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[0].field, "spec.services[0].port");
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

// ---- Istio VirtualService / DestinationRule ----

const BOOKINFO_MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: bookinfo}
spec:
  services:
  - name: reviews
    port: 9080
    workloads:
    - {name: reviews-v1, labels: {version: v1}, command: [x]}
    - {name: reviews-v2, labels: {version: v2}, command: [x]}
  - name: ratings
    port: 9080
";

const REVIEWS_DR: &str = "\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
";

/// The mesh file followed by `docs` (each a whole document), as one multi-document file.
fn istio(docs: &[&str]) -> String {
    let mut text = BOOKINFO_MESH.to_string();
    for d in docs {
        text.push_str("---\n");
        text.push_str(d);
    }
    text
}

fn reviews() -> model::ServiceKey {
    model::ServiceKey::new("reviews", "default")
}

fn dest(subset: &str, weight: u32) -> model::Destination {
    model::Destination {
        subset: Some(subset.into()),
        labels: map(&[("version", subset)]),
        ..model::Destination::service(reviews(), weight)
    }
}

fn routes(text: &str) -> Vec<model::HttpRoute> {
    let m = mesh(text);
    assert_eq!(m.routes.len(), 1, "{:#?}", m.routes);
    assert_eq!(m.routes[0].service, reviews());
    m.routes[0].routes.clone()
}

#[test]
fn istio_canary_90_10() {
    let vs = "\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews.default.svc.cluster.local, subset: v2, port: {number: 9080}}
      weight: 10
";
    let m = mesh(&istio(&[REVIEWS_DR, vs]));
    assert_eq!(
        m.routes,
        vec![model::ServiceRoutes {
            service: reviews(),
            routes: vec![model::HttpRoute {
                name: "VirtualService default/reviews http[0]".into(),
                matches: vec![],
                destinations: vec![dest("v1", 90), dest("v2", 10)],
                ..Default::default()
            }],
        }]
    );
}

#[test]
fn istio_header_match_then_default_keeps_order() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  gateways: [mesh]
  http:
  - name: jason
    match:
    - headers:
        End-User: {exact: jason}
        x-canary: {}
      withoutHeaders:
        x-debug: {prefix: 'on'}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
";
    let r = routes(&istio(&[vs, REVIEWS_DR]));
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].name, "jason");
    assert_eq!(
        r[0].matches,
        vec![model::RouteMatch {
            headers: vec![
                model::HeaderMatch {
                    name: "end-user".into(),
                    value: model::StringMatch::Exact("jason".into()),
                    invert: false,
                },
                model::HeaderMatch {
                    name: "x-canary".into(),
                    value: model::StringMatch::Present,
                    invert: false,
                },
                model::HeaderMatch {
                    name: "x-debug".into(),
                    value: model::StringMatch::Prefix("on".into()),
                    invert: true,
                },
            ],
            ..Default::default()
        }]
    );
    assert_eq!(r[0].destinations, vec![dest("v2", 100)]);
    assert_eq!(r[1].name, "VirtualService default/reviews http[1]");
    assert!(r[1].matches.is_empty());
    assert_eq!(r[1].destinations, vec![dest("v1", 100)]);
}

#[test]
fn istio_uri_method_and_query_matches() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api}
      method: {exact: GET}
    - uri: {regex: '/v[0-9]+/.*'}
      queryParams:
        debug: {exact: '1'}
    - uri: {exact: /health}
    route:
    - destination: {host: reviews}
";
    let r = routes(&istio(&[vs]));
    let m = &r[0].matches;
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].path, Some(model::PathMatch::Prefix("/api".into())));
    assert_eq!(m[0].method.as_deref(), Some("GET"));
    assert_eq!(
        m[1].path,
        Some(model::PathMatch::Regex("/v[0-9]+/.*".into()))
    );
    assert_eq!(
        m[1].query,
        vec![model::QueryMatch {
            name: "debug".into(),
            value: model::StringMatch::Exact("1".into()),
        }]
    );
    assert_eq!(m[2].path, Some(model::PathMatch::Exact("/health".into())));
    assert_eq!(
        r[0].destinations,
        vec![model::Destination::service(reviews(), 100)]
    );
}

#[test]
fn istio_unknown_subset_points_at_the_subset() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v3
";
    // The mesh is 12 lines, the DR 11 (with its `---`), so the VS's `---` is line 25.
    assert_eq!(
        error(&istio(&[REVIEWS_DR, vs])),
        "34:9: spec.http[0].route[0].destination.subset: unknown subset v3 of reviews.default"
    );
}

#[test]
fn istio_unknown_host_is_an_error_naming_it() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  http:
  - route:
    - destination: {host: reviews}
";
    assert_eq!(
        error(&istio(&[vs])),
        "18:11: spec.hosts[0]: host `details` is not a service of the mesh"
    );
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: nope.other}\n";
    assert_eq!(
        error(&istio(&[dr])),
        "17:8: spec.host: host `nope.other` is not a service of the mesh"
    );
}

#[test]
fn istio_bad_regex_and_query_prefix_and_method_forms() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: '/v[0-9'
    - queryParams:
        q: {prefix: a}
    - method: {prefix: G}
    route:
    - destination: {host: reviews}
";
    let diagnostics: Vec<String> = errors(&istio(&[vs]))
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(diagnostics.len(), 3, "{diagnostics:#?}");
    assert!(
        diagnostics[0]
            .starts_with("mesh.yaml:22:9: spec.http[0].match[0].uri.regex: invalid regex:"),
        "{diagnostics:#?}"
    );
    assert!(
        diagnostics[1].starts_with("mesh.yaml:24:13: spec.http[0].match[1].queryParams.q.prefix: Istio does not support prefix"),
        "{diagnostics:#?}"
    );
    assert_eq!(
        diagnostics[2],
        "mesh.yaml:25:7: spec.http[0].match[2].method: only exact is supported for method"
    );
}

#[test]
fn istio_ignored_fields_are_reported_and_the_route_still_loads() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries:
      attempts: 3
      retryOn: 5xx,retriable-headers
      retryRemoteLocalities: true
";
    let dr = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 10s}}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: SIMPLE}}
";
    let loaded = load_str(Path::new("mesh.yaml"), &istio(&[vs, dr])).unwrap();
    let notices: Vec<String> = loaded.unsupported.iter().map(ToString::to_string).collect();
    assert_eq!(
        notices,
        [
            "mesh.yaml:24:7: spec.http[0].retries.retryOn: VirtualService default/reviews: retryOn retriable-headers is not yet supported; ignored",
            "mesh.yaml:25:7: spec.http[0].retries.retryRemoteLocalities: VirtualService default/reviews: retryRemoteLocalities is not yet supported; ignored",
            "mesh.yaml:32:55: spec.trafficPolicy.loadBalancer.warmup: DestinationRule default/reviews: warmup is not yet supported; ignored",
            "mesh.yaml:36:21: spec.subsets[0].trafficPolicy.tls: DestinationRule default/reviews: tls is ignored: weft's proxies secure traffic between them with mutual TLS themselves",
        ]
    );
    let mesh = loaded.mesh.unwrap();
    assert_eq!(mesh.routes[0].routes[0].destinations[0].weight, 100);
    assert_eq!(mesh.policies[0].policy.lb, Some(LoadBalancer::RoundRobin));
}

#[test]
fn istio_unknown_field_is_an_error_with_its_line() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  htttp: []
";
    let e = error(&istio(&[vs]));
    assert!(
        e.starts_with("19:3: spec.htttp: unknown field `htttp`"),
        "{e}"
    );
    let vs = vs.replace(
        "htttp: []",
        "http:\n  - route:\n    - destination: {host: reviews, version: v1}",
    );
    let e = error(&istio(&[&vs]));
    assert!(
        e.starts_with("21:36: spec.http[0].route[0].destination.version: unknown field `version`"),
        "{e}"
    );
}

#[test]
fn istio_dr_before_mesh_and_vs_in_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = format!("{REVIEWS_DR}---\n{BOOKINFO_MESH}");
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
";
    std::fs::write(dir.path().join("a.yaml"), first).unwrap();
    std::fs::write(dir.path().join("b.yaml"), vs).unwrap();
    let loaded = load(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.unsupported, vec![]);
    let m = loaded.mesh.unwrap();
    assert_eq!(m.services.len(), 2);
    assert_eq!(m.routes[0].routes[0].destinations, vec![dest("v2", 100)]);
}

#[test]
fn istio_two_virtual_services_for_one_host() {
    let vs = |name: &str, host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n\
             spec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n"
        )
    };
    let (a, b) = (
        vs("a", "reviews"),
        vs("b", "reviews.default.svc.cluster.local"),
    );
    let e = error(&istio(&[&a, &b]));
    assert_eq!(
        e,
        "27:11: spec.hosts[0]: one VirtualService per host: reviews.default already has one at mesh.yaml:18"
    );
}

#[test]
fn istio_weights() {
    let vs = |route: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\n\
             spec:\n  hosts: [reviews]\n  http:\n  - route:\n{route}"
        )
    };
    // Several without weights.
    let text = istio(&[
        REVIEWS_DR,
        &vs("    - destination: {host: reviews, subset: v1}\n    - destination: {host: reviews, subset: v2}\n"),
    ]);
    assert_eq!(
        error(&text),
        "31:5: spec.http[0].route: several destinations need weights"
    );
    // A missing weight among several is 0.
    let text = istio(&[
        REVIEWS_DR,
        &vs("    - destination: {host: reviews, subset: v1}\n      weight: 100\n    - destination: {host: reviews, subset: v2}\n"),
    ]);
    assert_eq!(
        routes(&text)[0].destinations,
        vec![dest("v1", 100), dest("v2", 0)]
    );
    // All zero.
    let text = istio(&[
        REVIEWS_DR,
        &vs("    - destination: {host: reviews, subset: v1}\n      weight: 0\n    - destination: {host: reviews, subset: v2}\n      weight: 0\n"),
    ]);
    assert_eq!(error(&text), "31:5: spec.http[0].route: all weights are 0");
}

#[test]
fn istio_without_mesh_skips_host_checks() {
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: anything}
spec:
  hosts: [nowhere.example.com]
  http:
  - route:
    - destination: {host: nowhere, subset: v9}
";
    let loaded = load_str(Path::new("vs.yaml"), vs).unwrap();
    assert_eq!(
        loaded,
        Loaded {
            mesh: None,
            unsupported: vec![],
            rejected: vec![],
            canaries: vec![],
        }
    );
}

/// A VirtualService for reviews whose one rule (line 20 on, after the mesh) ends with `extra`.
fn reviews_vs(extra: &str) -> String {
    let vs = format!(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
{extra}"
    );
    istio(&[&vs])
}

#[test]
fn istio_timeout_and_retries_are_translated() {
    use model::{RetryOn, RetryPolicy};
    let rule = |extra: &str| routes(&reviews_vs(extra)).remove(0);

    let r = rule("    timeout: 1.5s\n    retries: {attempts: 3, perTryTimeout: 100ms, retryOn: \"5xx,gateway-error,reset,retriable-status-codes,503,429\"}\n");
    assert_eq!(r.timeout_ms, Some(1500));
    assert_eq!(
        r.retry,
        Some(RetryPolicy {
            attempts: 3,
            per_try_timeout_ms: Some(100),
            on: RetryOn {
                server_error: true,
                gateway_error: true,
                reset: true,
                status_codes: vec![503, 429],
                ..RetryOn::default()
            },
        })
    );

    // `0s`: no timeout; no retryOn: Istio's default; attempts 0: retries disabled.
    let r = rule("    timeout: 0s\n    retries: {attempts: 0}\n");
    assert_eq!(r.timeout_ms, None);
    assert_eq!(
        r.retry,
        Some(RetryPolicy {
            attempts: 0,
            per_try_timeout_ms: None,
            on: RetryOn {
                connect_failure: true,
                refused_stream: true,
                status_codes: vec![503],
                grpc_statuses: vec![1, 14],
                ..RetryOn::default()
            },
        })
    );

    // Bare codes, refused-stream, connect-failure; minutes and hours.
    let r = rule("    timeout: 1m\n    retries: {attempts: 2, perTryTimeout: 1h, retryOn: 'connect-failure,refused-stream,502'}\n");
    assert_eq!(r.timeout_ms, Some(60_000));
    let retry = r.retry.unwrap();
    assert_eq!(retry.per_try_timeout_ms, Some(3_600_000));
    assert_eq!(
        retry.on,
        RetryOn {
            connect_failure: true,
            refused_stream: true,
            status_codes: vec![502],
            ..RetryOn::default()
        }
    );

    // Neither: none.
    let r = rule("");
    assert_eq!((r.timeout_ms, r.retry), (None, None));
}

#[test]
fn istio_bad_timeout_and_retries_are_errors_with_their_lines() {
    assert_eq!(
        error(&reviews_vs("    timeout: 5 seconds\n")),
        "22:5: spec.http[0].timeout: `5 seconds` is not a duration like 1s, 0.5s, 100ms or 1m"
    );
    assert_eq!(
        error(&reviews_vs("    retries:\n      attempts: 2\n      perTryTimeout: 10\n")),
        "24:7: spec.http[0].retries.perTryTimeout: `10` is not a duration like 1s, 0.5s, 100ms or 1m"
    );
    assert_eq!(
        error(&reviews_vs(
            "    retries:\n      attempts: 2\n      retryOn: 5xx,sometimes\n"
        )),
        "24:7: spec.http[0].retries.retryOn: unknown retryOn `sometimes`: use 5xx, gateway-error, \
         connect-failure, reset, refused-stream, retriable-status-codes, status codes, or the gRPC \
         cancelled, deadline-exceeded, internal, resource-exhausted, unavailable"
    );
    assert_eq!(
        error(&reviews_vs("    retries:\n      attempts: -1\n")),
        "23:7: spec.http[0].retries.attempts: attempts -1 must be 0 or more"
    );
    // attempts is required.
    let missing = error(&reviews_vs("    retries: {retryOn: 5xx}\n"));
    assert!(missing.contains("attempts"), "{missing}");
}

#[test]
fn istio_fault_injection_is_translated() {
    use model::Fault;
    let fault = |extra: &str| {
        routes(&reviews_vs(&format!("    fault:\n{extra}")))
            .remove(0)
            .fault
    };

    // Delay 5s for every request.
    assert_eq!(
        fault("      delay:\n        fixedDelay: 5s\n        percentage: {value: 100}\n"),
        Some(Fault {
            delay_ms: Some(5000),
            delay_per_million: 1_000_000,
            ..Fault::default()
        })
    );
    // Abort 500 for half.
    assert_eq!(
        fault("      abort:\n        httpStatus: 500\n        percentage: {value: 50.0}\n"),
        Some(Fault {
            abort_status: Some(500),
            abort_per_million: 500_000,
            ..Fault::default()
        })
    );
    // The deprecated integer `percent`; both at once.
    assert_eq!(
        fault("      delay: {fixedDelay: 100ms, percent: 10}\n      abort: {httpStatus: 503, percent: 100}\n"),
        Some(Fault {
            delay_ms: Some(100),
            delay_per_million: 100_000,
            abort_status: Some(503),
            abort_per_million: 1_000_000,
        })
    );
    // No share given: no request, as Istio translates it.
    let f = fault("      abort: {httpStatus: 404}\n      delay: {fixedDelay: 1s}\n").unwrap();
    assert_eq!((f.abort_per_million, f.delay_per_million), (0, 0));
    // Fractions of a percent, rounded to millionths.
    let f = fault("      abort: {httpStatus: 500, percentage: {value: 0.1}}\n").unwrap();
    assert_eq!(f.abort_per_million, 1_000);
    let f = fault("      abort: {httpStatus: 500, percentage: {value: 0.00005}}\n").unwrap();
    assert_eq!(f.abort_per_million, 1);
    // `percentage` wins over `percent`; 0%.
    let f = fault("      abort: {httpStatus: 500, percentage: {value: 0}, percent: 50}\n").unwrap();
    assert_eq!(f.abort_per_million, 0);
    // No fault, an empty one, a 0s delay: none.
    assert_eq!(routes(&reviews_vs("")).remove(0).fault, None);
    assert_eq!(fault("      {}\n"), None);
    assert_eq!(fault("      delay: {fixedDelay: 0s}\n"), None);
}

#[test]
fn istio_bad_faults_are_errors_with_their_lines() {
    let fault = |extra: &str| error(&reviews_vs(&format!("    fault:\n{extra}")));
    assert_eq!(
        fault("      delay:\n        fixedDelay: 5s\n        percentage:\n          value: 100.5\n"),
        "26:11: spec.http[0].fault.delay.percentage.value: percentage 100.5 must be between 0 and 100"
    );
    assert_eq!(
        fault("      abort:\n        httpStatus: 500\n        percentage: {value: -1}\n"),
        "25:22: spec.http[0].fault.abort.percentage.value: percentage -1 must be between 0 and 100"
    );
    assert_eq!(
        fault("      abort:\n        httpStatus: 500\n        percent: 101\n"),
        "25:9: spec.http[0].fault.abort.percent: percent 101 must be between 0 and 100"
    );
    assert_eq!(
        fault("      delay:\n        percent: 10\n        fixedDelay: 5 seconds\n"),
        "25:9: spec.http[0].fault.delay.fixedDelay: `5 seconds` is not a duration like 1s, 0.5s, 100ms or 1m"
    );
    assert_eq!(
        fault("      abort:\n        httpStatus: 600\n"),
        "24:9: spec.http[0].fault.abort.httpStatus: httpStatus 600 must be between 200 and 599"
    );
    assert_eq!(
        fault("      abort:\n        httpStatus: 199\n"),
        "24:9: spec.http[0].fault.abort.httpStatus: httpStatus 199 must be between 200 and 599"
    );
    assert_eq!(
        fault("      delay:\n        percent: 10\n"),
        "23:7: spec.http[0].fault.delay: a delay needs fixedDelay"
    );
    assert_eq!(
        fault("      delay: {fixedDelay: 1s}\n      abort:\n        percentage: {value: 5}\n"),
        "24:7: spec.http[0].fault.abort: an abort needs httpStatus"
    );
    // Unknown fields are errors too.
    let unknown = fault("      delay: {fixedDelay: 1s, jitter: 1s}\n");
    assert!(unknown.contains("jitter"), "{unknown}");
}

#[test]
fn istio_unsupported_fault_kinds_are_notices() {
    let text = reviews_vs(
        "    fault:\n      delay:\n        exponentialDelay: 1s\n      abort:\n        grpcStatus: UNAVAILABLE\n        http2Error: REFUSED_STREAM\n        httpStatus: 503\n        percentage: {value: 100}\n",
    );
    let loaded = load_str(Path::new("mesh.yaml"), &text).unwrap();
    let notices: Vec<String> = loaded.unsupported.iter().map(ToString::to_string).collect();
    assert_eq!(
        notices,
        [
            "mesh.yaml:24:9: spec.http[0].fault.delay.exponentialDelay: VirtualService default/reviews: exponentialDelay is not yet supported; ignored",
            "mesh.yaml:26:9: spec.http[0].fault.abort.grpcStatus: VirtualService default/reviews: grpcStatus is not yet supported; ignored",
            "mesh.yaml:27:9: spec.http[0].fault.abort.http2Error: VirtualService default/reviews: http2Error is not yet supported; ignored",
        ]
    );
    // The exponential delay is left out; the HTTP abort still applies.
    let mesh = loaded.mesh.unwrap();
    assert_eq!(
        mesh.routes[0].routes[0].fault,
        Some(model::Fault {
            abort_status: Some(503),
            abort_per_million: 1_000_000,
            ..model::Fault::default()
        })
    );
    // A gRPC-only abort is ignored without an error.
    let text = reviews_vs("    fault:\n      abort: {grpcStatus: UNAVAILABLE}\n");
    let loaded = load_str(Path::new("mesh.yaml"), &text).unwrap();
    assert_eq!(loaded.unsupported.len(), 1);
    assert_eq!(loaded.mesh.unwrap().routes[0].routes[0].fault, None);
}

#[test]
fn store_rejections_name_the_applied_resource_at_its_own_file_and_line() {
    let store = Store::default().applied(resources(Path::new("mesh.yaml"), &istio(&[REVIEWS_DR])));
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
";
    let applied = resources(Path::new("vs.yaml"), &format!("# canary\n---\n{vs}"));
    let loaded = store.applied(applied.clone()).load().unwrap();
    let r = &applied[0];
    let own: Vec<String> = loaded
        .rejected_for(&r.kind, &r.namespace, &r.name)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        own,
        ["vs.yaml:10:36: spec.http[0].route[0].destination.subset: VirtualService default/reviews: \
          unknown subset v9 of reviews.default"]
    );
    // The store without it still loads cleanly, and the DestinationRule is not blamed.
    assert_eq!(
        loaded
            .rejected_for("DestinationRule", "default", "reviews")
            .count(),
        0
    );
    assert_eq!(store.load().unwrap().rejected, vec![]);
}

#[test]
fn a_yaml_syntax_error_stays_fatal_through_the_store() {
    let text = format!("{BOOKINFO_MESH}---\nkind: VirtualService\nspec: [oops\n");
    let store = Store::default().applied(resources(Path::new("bad.yaml"), &text));
    let Err(Errors(d)) = store.load() else {
        panic!("a syntax error loaded")
    };
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].file.as_path(), d[0].line),
        (Path::new("bad.yaml"), 16)
    );
}

/// A one-service Mesh whose `spec` also holds `extra` (indented two spaces).
fn mesh_with(extra: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: m}}\nspec:\n  {extra}\n  services:\n  - {{name: a, port: 1}}\n"
    )
}

#[test]
fn default_retries_by_name() {
    let istio = mesh(&mesh_with("defaultRetries: istio")).default_retries;
    assert_eq!(
        istio,
        Some(model::RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            on: model::RetryOn {
                connect_failure: true,
                refused_stream: true,
                status_codes: vec![503],
                // UNAVAILABLE and CANCELLED.
                grpc_statuses: vec![1, 14],
                ..Default::default()
            },
        })
    );
    // Linkerd retries nothing a route does not ask for; neither does an unset default.
    for extra in ["defaultRetries: linkerd", "defaultRetries: none", ""] {
        assert_eq!(mesh(&mesh_with(extra)).default_retries, None, "{extra}");
    }
}

#[test]
fn default_retries_as_an_istio_retry_policy() {
    let p = mesh(&mesh_with(
        "defaultRetries: {attempts: 3, retryOn: \"5xx,reset\", perTryTimeout: 2s}",
    ))
    .default_retries
    .unwrap();
    assert_eq!((p.attempts, p.per_try_timeout_ms), (3, Some(2000)));
    assert!(p.on.server_error && p.on.reset && !p.on.connect_failure);
    // Without retryOn, Istio's default conditions; `attempts: 0` is no policy, as in Istio.
    let p = mesh(&mesh_with("defaultRetries: {attempts: 1}"))
        .default_retries
        .unwrap();
    assert_eq!(p.on.status_codes, vec![503]);
    assert_eq!(
        mesh(&mesh_with("defaultRetries: {attempts: 0}")).default_retries,
        None
    );
}

#[test]
fn default_retries_errors_name_the_line_and_field() {
    assert_eq!(
        error(&mesh_with("defaultRetries: always")),
        "5:3: spec.defaultRetries: unknown defaultRetries `always`: use istio, linkerd, none, \
         or {attempts, retryOn, perTryTimeout}"
    );
    assert_eq!(
        error(&mesh_with(
            "defaultRetries:\n    attempts: 2\n    retryOn: sometimes"
        )),
        "7:5: spec.defaultRetries.retryOn: unknown retryOn `sometimes`: use 5xx, gateway-error, \
         connect-failure, reset, refused-stream, retriable-status-codes, status codes, or the gRPC \
         cancelled, deadline-exceeded, internal, resource-exhausted, unavailable"
    );
    assert!(error(&mesh_with("defaultRetries: {retryOn: 5xx}"))
        .contains("spec.defaultRetries: missing field `attempts`"),);
    assert!(
        error(&mesh_with("defaultRetries: {attempts: 2, budget: 3}"))
            .contains("spec.defaultRetries.budget: unknown field `budget`")
    );
    // Two Mesh documents must agree.
    let two = format!(
        "{}---\n{}",
        mesh_with("defaultRetries: istio"),
        mesh_with("defaultRetries: none").replace("name: a,", "name: b,")
    );
    assert!(
        error(&two).contains("defaultRetries conflicts with the defaultRetries set at mesh.yaml:5"),
        "{}",
        error(&two)
    );
}

/// The README and docs/config.md state the precedence order the warnings state.
#[test]
fn the_docs_state_the_precedence_the_warnings_state() {
    let order = crate::services::PRECEDENCE
        .strip_prefix("precedence: ")
        .unwrap();
    for doc in ["README.md", "docs/config.md"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(doc);
        let text = std::fs::read_to_string(&path).unwrap();
        // Wrapped lines join with a space, as a reader reads them.
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains(order), "{doc} does not say {order}");
        let orders = text.matches("VirtualService >").count();
        assert_eq!(
            text.matches(order).count(),
            orders,
            "{doc} states another order somewhere"
        );
    }
}

/// The one port of a service that gives only `port`.
fn default_port(port: u16) -> model::PortSpec {
    model::PortSpec {
        port,
        protocol: model::Protocol::Http,
        name: String::new(),
        why: "default".into(),
    }
}

#[test]
fn ports_and_their_protocols() {
    let text = "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - {name: a, port: 80, protocol: grpc}
  - name: b
    ports:
    - {port: 8080, name: http-web}
    - {port: 9090, name: grpc-api}
    - {port: 9091, name: admin, appProtocol: kubernetes.io/h2c}
    - {port: 6379, name: cache}
    - {port: 7000, name: raw, protocol: tcp}
    annotations: {config.linkerd.io/opaque-ports: \"6379\"}
  - {name: c, port: 5000}
";
    let mesh = mesh(text);
    let got: Vec<(String, u16, model::Protocol, String, String)> = mesh
        .services
        .iter()
        .flat_map(|s| {
            s.ports.iter().map(|p| {
                (
                    s.name.clone(),
                    p.port,
                    p.protocol,
                    p.name.clone(),
                    p.why.clone(),
                )
            })
        })
        .collect();
    use model::Protocol::*;
    let want = [
        ("a", 80, Grpc, "", "protocol: grpc"),
        ("b", 8080, Http, "http-web", "port name prefix http-"),
        ("b", 9090, Grpc, "grpc-api", "port name prefix grpc-"),
        ("b", 9091, Http2, "admin", "appProtocol: kubernetes.io/h2c"),
        (
            "b",
            6379,
            Tcp,
            "cache",
            "annotation config.linkerd.io/opaque-ports",
        ),
        ("b", 7000, Tcp, "raw", "protocol: tcp"),
        ("c", 5000, Http, "", "default"),
    ]
    .map(|(s, p, pr, n, w)| (s.to_string(), p, pr, n.to_string(), w.to_string()));
    assert_eq!(got, want);
    assert_eq!(mesh.services[1].port, 8080);
    assert_eq!(
        mesh.services[1].ports[2].env_name().as_deref(),
        Some("PORT_ADMIN")
    );
}

#[test]
fn port_errors_name_their_field() {
    let mesh = |services: &str| {
        format!("apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: m}}\nspec:\n  services:\n{services}")
    };
    for (services, want) in [
        ("  - {name: a, port: 80, protocol: quic}\n", "6:5: spec.services[0].protocol: `quic` is not a protocol: use http, http2, grpc or tcp"),
        ("  - name: a\n    port: 80\n    ports: [{port: 81}]\n", "8:5: spec.services[0].ports: give `port` (with `protocol`) or `ports`, not both"),
        ("  - name: a\n    ports:\n    - {port: 80, name: web}\n    - {port: 81}\n", "9:7: spec.services[0].ports[1].name: each of several ports needs a name (as Kubernetes asks)"),
        ("  - name: a\n    ports:\n    - {port: 80, name: web}\n    - {port: 80, name: web2}\n", "9:7: spec.services[0].ports[1].port: port 80 is listed twice (also as \"web\")"),
        ("  - name: a\n    port: 80\n    annotations: {config.linkerd.io/opaque-ports: \"x\"}\n", "8:5: spec.services[0].annotations.config.linkerd.io/opaque-ports: `x` is not a port or a range of ports like 6379-6380"),
    ] {
        let text = mesh(services);
        let e = error(&text);
        // The line and the message; the column is the field's own.
        let (line, message) = want.split_once(": ").unwrap();
        let (got_line, got_message) = e.split_once(": ").unwrap();
        assert_eq!(got_line.split(':').next(), line.split(':').next(), "{e}");
        assert_eq!(got_message, message, "{e}");
    }
}

#[test]
fn interception_outbound_policy_and_capture_annotations() {
    let m = mesh(
        "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: pods}
spec:
  interception: transparent
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  services:
  - name: web
    port: 80
    annotations:
      traffic.sidecar.istio.io/excludeOutboundPorts: \"5432, 3306\"
      config.linkerd.io/skip-outbound-ports: \"3306,25-26\"
      config.linkerd.io/skip-inbound-ports: \"9090\"
      traffic.sidecar.istio.io/includeOutboundIPRanges: \"10.235.0.0/16,192.168.7.0/24\"
      traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.235.9.9/32\"
    workloads: [{name: web, command: [x]}]
  - {name: api, port: 80}
",
    );
    assert_eq!(m.interception, model::Interception::Transparent);
    assert_eq!(m.outbound_policy, model::OutboundPolicy::RegistryOnly);
    assert_eq!(
        m.services[0].capture,
        model::Capture {
            exclude_outbound_ports: vec![25, 26, 3306, 5432],
            exclude_inbound_ports: vec![9090],
            include_outbound_cidrs: vec!["10.235.0.0/16".into(), "192.168.7.0/24".into()],
            exclude_outbound_cidrs: vec!["10.235.9.9/32".into()],
        }
    );
    assert!(m.services[1].capture.is_empty());
    // The defaults.
    let m = mesh(VALID);
    assert_eq!(m.interception, model::Interception::ProxyEnv);
    assert_eq!(m.outbound_policy, model::OutboundPolicy::AllowAny);

    let e: Vec<String> = errors("\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: pods}
spec:
  interception: iptables
  outboundTrafficPolicy: {mode: ALLOW_SOME}
  services:
  - name: web
    port: 80
    annotations: {config.linkerd.io/skip-inbound-ports: \"80-70\", traffic.sidecar.istio.io/includeOutboundIPRanges: \"10.0.0.0/33\"}
")
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        e,
        [
            "mesh.yaml:5:3: spec.interception: unknown interception `iptables`: use proxy-env or transparent",
            "mesh.yaml:6:27: spec.outboundTrafficPolicy.mode: unknown mode `ALLOW_SOME`: use ALLOW_ANY or REGISTRY_ONLY",
            "mesh.yaml:10:5: spec.services[0].annotations.config.linkerd.io/skip-inbound-ports: `80-70` is not a port or a range of ports like 6379-6380",
            "mesh.yaml:10:5: spec.services[0].annotations.traffic.sidecar.istio.io/includeOutboundIPRanges: `10.0.0.0/33` is not a CIDR: prefix length 33 > 32",
        ]
    );
}

#[test]
fn depends_on_and_the_mesh_scope_are_read() {
    let m = mesh(
        "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: shop, namespace: shop}
spec:
  scope: declared
  services:
  - name: web
    port: 80
    dependsOn: [cart, ratings.prod, prod/reviews, shared/*]
  - {name: cart, port: 80, dependsOn: []}
  - {name: ratings, namespace: prod, port: 80}
  - {name: reviews, namespace: prod, port: 80}
",
    );
    assert_eq!(m.scope, model::egress::MeshScope::Declared);
    let hosts: Vec<String> = m.services[0]
        .depends_on
        .as_ref()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        hosts,
        ["shop/cart", "prod/ratings", "prod/reviews", "shared/*"]
    );
    assert_eq!(m.services[1].depends_on, Some(vec![]));
    assert_eq!(m.services[2].depends_on, None);
    assert_eq!(mesh(VALID).scope, model::egress::MeshScope::Whole);

    let e: Vec<String> = errors(
        "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: shop}
spec:
  scope: lazy
  services:
  - name: web
    port: 80
    dependsOn:
    - cart
    - Cart
    - a.b.c
    - \"*/web\"
  - {name: api, port: 80, dependsOn: [web, nosuch.prod]}
",
    )
    .iter()
    .map(ToString::to_string)
    .collect();
    let form = "is not NAME, NAME.NAMESPACE, NAMESPACE/NAME or NAMESPACE/* (names are lowercase letters, digits and '-')";
    assert_eq!(
        e,
        [
            "mesh.yaml:5:3: spec.scope: unknown scope `lazy`: use whole, declared or observed".to_string(),
            format!("mesh.yaml:11:7: spec.services[0].dependsOn[1]: `Cart` {form}"),
            format!("mesh.yaml:12:7: spec.services[0].dependsOn[2]: `a.b.c` {form}"),
            format!("mesh.yaml:13:7: spec.services[0].dependsOn[3]: `*/web` {form}"),
            "mesh.yaml:10:7: spec.services[0].dependsOn[0]: cart.default is not a service of the mesh".to_string(),
            "mesh.yaml:14:44: spec.services[1].dependsOn[1]: nosuch.prod is not a service of the mesh".to_string(),
        ]
    );
}
