//! Injection on small manifests: what the sidecar and the init container get, what is left
//! alone, idempotency, and located errors. (The bookinfo and emojivoto golden files are the
//! CLI's tests.)

use super::*;
use std::path::Path;

fn opts() -> Options {
    Options {
        image: "registry.example/weft:1.0".into(),
        control: "weft-control.weft-system.svc:15010".into(),
        trust_domain: "cluster.local".into(),
        version: "1.0".into(),
        by_default: true,
        namespaces: Default::default(),
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage-v1
  namespace: shop
spec:
  selector:
    matchLabels: {app: productpage}
  template:
    metadata:
      labels: {app: productpage, version: v1}
      annotations:
        traffic.sidecar.istio.io/excludeOutboundPorts: \"5432,6379\"
        sidecar.istio.io/proxyMemoryLimit: 1Gi
    spec:
      containers:
      - name: productpage
        image: productpage:1
        ports:
        - {containerPort: 9080, name: http}
        - {containerPort: 9090, name: grpc-admin}
        readinessProbe:
          httpGet: {path: /health, port: 9080}
          timeoutSeconds: 3
        livenessProbe:
          tcpSocket: {port: 9080}
";

fn one(text: &str, opts: &Options) -> (Value, Outcome) {
    let out = inject(Path::new("app.yaml"), text, opts).unwrap();
    let v: Value = serde_yaml_ng::from_str(&out.yaml).unwrap();
    (v, out.objects[0].1.clone())
}

fn container<'a>(spec: &'a Value, list: &str, name: &str) -> &'a Value {
    spec[list]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn flag(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn a_deployment_gets_the_sidecar_the_init_container_and_its_probes_rewritten() {
    let (v, outcome) = one(DEPLOYMENT, &opts());
    assert_eq!(outcome, Outcome::Injected);
    let t = &v["spec"]["template"];
    assert_eq!(t["metadata"]["annotations"][INJECTED], "1.0");
    assert_eq!(
        t["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "productpage"
    );
    let spec = &t["spec"];
    let inits: Vec<&str> = spec["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, [INIT, SIDECAR], "the rules first, then the proxy");

    let proxy = container(spec, "initContainers", SIDECAR);
    assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(proxy["image"], "registry.example/weft:1.0");
    assert_eq!(proxy["securityContext"]["runAsUser"], PROXY_UID);
    assert_eq!(proxy["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(proxy["resources"]["requests"]["cpu"], "10m");
    let a = args(proxy);
    assert_eq!(flag(&a, "--service"), ["productpage"]);
    assert_eq!(flag(&a, "--workload"), ["productpage-v1"]);
    assert_eq!(
        flag(&a, "--control"),
        ["weft-control.weft-system.svc:15010"]
    );
    assert_eq!(flag(&a, "--app"), ["127.0.0.1:9080"]);
    assert_eq!(flag(&a, "--app-protocol"), ["http"]);
    assert_eq!(
        flag(&a, "--app-port"),
        ["9080=127.0.0.1:9080", "9090=127.0.0.1:9090"]
    );
    assert_eq!(flag(&a, "--label"), ["app=productpage", "version=v1"]);
    assert_eq!(
        flag(&a, "--identity"),
        ["spiffe://cluster.local/ns/$(WEFT_POD_NAMESPACE)/sa/$(WEFT_SERVICE_ACCOUNT)"]
    );

    let init = container(spec, "initContainers", INIT);
    let ia = args(init);
    assert_eq!(ia[0], "capture");
    assert_eq!(flag(&ia, "--proxy-uid"), ["1337"]);
    assert_eq!(flag(&ia, "--exclude-outbound-ports"), ["5432,6379"]);
    let caps = &init["securityContext"]["capabilities"]["add"];
    assert_eq!(
        *caps,
        serde_yaml_ng::from_str::<Value>("[NET_ADMIN, NET_RAW]").unwrap()
    );

    // The kubelet asks the proxy's admin port, which asks the app as the probe said.
    let app = container(spec, "containers", "productpage");
    assert_eq!(
        app["readinessProbe"]["httpGet"]["path"],
        "/app-health/productpage/readyz"
    );
    assert_eq!(
        app["readinessProbe"]["httpGet"]["port"],
        u64::from(ADMIN_PORT)
    );
    assert_eq!(app["readinessProbe"]["timeoutSeconds"], 3);
    assert!(app["livenessProbe"].get("tcpSocket").is_none());
    let env = proxy["env"].as_sequence().unwrap();
    let probers = env.iter().find(|e| e["name"] == PROBERS_ENV).unwrap();
    let probers: serde_json::Value =
        serde_json::from_str(probers["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probers["/app-health/productpage/readyz"]["httpGet"]["path"],
        "/health"
    );
    assert_eq!(
        probers["/app-health/productpage/livez"]["tcpSocket"]["port"],
        9080
    );
    let volumes: Vec<&str> = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["weft-token", "weft-ca-root", "weft-state"]);
}

#[test]
fn injecting_twice_changes_nothing() {
    let once = inject(Path::new("a.yaml"), DEPLOYMENT, &opts()).unwrap();
    let twice = inject(Path::new("a.yaml"), &once.yaml, &opts()).unwrap();
    assert_eq!(once.yaml, twice.yaml);
    assert_eq!(twice.objects[0].1, Outcome::AlreadyInjected);
}

#[test]
fn opting_out_and_in_by_annotation_label_and_namespace() {
    let out = DEPLOYMENT.replace(
        "labels: {app: productpage, version: v1}",
        "labels: {app: productpage, version: v1, sidecar.istio.io/inject: \"false\"}",
    );
    let (_, o) = one(&out, &opts());
    assert_eq!(
        o,
        Outcome::Skipped("opted out: labels sidecar.istio.io/inject: false".into())
    );
    // The webhook's default: only what opts in.
    let webhook = Options {
        by_default: false,
        ..opts()
    };
    assert!(matches!(one(DEPLOYMENT, &webhook).1, Outcome::Skipped(_)));
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\n";
    let both = inject(Path::new("a.yaml"), &format!("{ns}{DEPLOYMENT}"), &webhook).unwrap();
    assert_eq!(both.objects[0].1, Outcome::NotAWorkload);
    assert_eq!(both.objects[1].1, Outcome::Injected);
    let linkerd_off = DEPLOYMENT.replace(
        "      annotations:\n",
        "      annotations:\n        linkerd.io/inject: disabled\n",
    );
    assert!(matches!(one(&linkerd_off, &opts()).1, Outcome::Skipped(_)));
    let host = DEPLOYMENT.replace(
        "    spec:\n      containers:",
        "    spec:\n      hostNetwork: true\n      containers:",
    );
    assert_eq!(
        one(&host, &opts()).1,
        Outcome::Skipped("it uses the host's network".into())
    );
}

#[test]
fn what_is_not_a_workload_passes_through_as_written() {
    let text = "# a comment kept\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{port: 80}]\n";
    let out = inject(Path::new("s.yaml"), text, &opts()).unwrap();
    assert_eq!(out.yaml, text);
    assert_eq!(
        out.objects,
        [("Service default/a".to_string(), Outcome::NotAWorkload)]
    );
}

#[test]
fn grpc_ports_and_linkerd_resources() {
    let text = DEPLOYMENT
        .replace(
            "{containerPort: 9080, name: http}",
            "{containerPort: 9080, name: grpc}",
        )
        .replace(
            "sidecar.istio.io/proxyMemoryLimit: 1Gi",
            "config.linkerd.io/proxy-cpu-request: 20m",
        );
    let (v, _) = one(&text, &opts());
    let proxy = container(&v["spec"]["template"]["spec"], "initContainers", SIDECAR);
    assert_eq!(flag(&args(proxy), "--app-protocol"), ["grpc"]);
    assert_eq!(proxy["resources"]["requests"]["cpu"], "20m");
}

#[test]
fn bad_annotations_are_errors_with_file_line_and_field() {
    let text = DEPLOYMENT
        .replace("\"5432,6379\"", "\"5432,sixty\"")
        .replace("proxyMemoryLimit: 1Gi", "proxyMemoryLimit: lots");
    let errors = inject(Path::new("app.yaml"), &text, &opts()).unwrap_err();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{text:?}");
    assert!(text[0].starts_with("app.yaml:13:"), "{text:?}");
    assert!(
        text[0].contains("excludeOutboundPorts") && text[0].contains("`sixty`"),
        "{text:?}"
    );
    assert!(
        text[1].contains("proxyMemoryLimit") && text[1].contains("`lots`"),
        "{text:?}"
    );
    let broken = inject(Path::new("b.yaml"), "kind: [", &opts()).unwrap_err();
    assert!(broken[0].to_string().starts_with("b.yaml:"), "{broken:?}");
}

#[test]
fn quantities() {
    for ok in ["100m", "0.5", "64Mi", "1G", "2", "1e3"] {
        assert!(quantity(ok), "{ok}");
    }
    for bad in ["", "lots", "-1", "5 Mi", "1Mb"] {
        assert!(!quantity(bad), "{bad}");
    }
}

#[test]
fn named_probe_ports_are_resolved_and_https_probes_left_alone() {
    let text = DEPLOYMENT
        .replace(
            "httpGet: {path: /health, port: 9080}",
            "httpGet: {path: /health, port: http}",
        )
        .replace(
            "tcpSocket: {port: 9080}",
            "httpGet: {path: /live, port: 9443, scheme: HTTPS}",
        );
    let (v, _) = one(&text, &opts());
    let spec = &v["spec"]["template"]["spec"];
    let app = container(spec, "containers", "productpage");
    assert_eq!(
        app["livenessProbe"]["httpGet"]["port"], 9443,
        "HTTPS: as it was"
    );
    let proxy = container(spec, "initContainers", SIDECAR);
    let env = proxy["env"].as_sequence().unwrap();
    let probers = env.iter().find(|e| e["name"] == PROBERS_ENV).unwrap();
    let probers: serde_json::Value =
        serde_json::from_str(probers["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probers["/app-health/productpage/readyz"]["httpGet"]["port"],
        9080
    );
    assert!(probers.get("/app-health/productpage/livez").is_none());
    let unknown = DEPLOYMENT.replace(
        "httpGet: {path: /health, port: 9080}",
        "httpGet: {path: /health, port: web}",
    );
    let errors = inject(Path::new("a.yaml"), &unknown, &opts()).unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .contains("no port of container productpage is named `web`"),
        "{errors:?}"
    );
}
