//! Sidecar injection, as `istioctl kube-inject` and `linkerd inject` do it: Kubernetes
//! workloads (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, in a
//! `List` too) given the weft proxy as a native sidecar (an init container that keeps running,
//! so the app starts only once the proxy is ready and a Job's pod ends when its app does) and
//! an init container that installs the capture rules (`weft capture`, the same rules as
//! `weft up`'s transparent pods, the proxy's own traffic let through by its user id). Probes
//! are rewritten to the proxy's admin port, which asks the app itself, so the kubelet's checks
//! reach the app past mTLS. Istio's and Linkerd's annotations are honoured (see
//! [`Options`] and the docs); a pod already injected is left as it is, so injecting twice
//! changes nothing.
//!
//! Pure: YAML in, YAML out, errors located (file, line, field). `weft inject` and the control
//! plane's admission webhook both call [`inject`].

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::marked::Node;
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;

/// The proxy's user id: the capture rules let this user's connections through (Istio's).
pub const PROXY_UID: i64 = 1337;
/// The sidecar container's name.
pub const SIDECAR: &str = "weft-proxy";
/// The init container that installs the capture rules.
pub const INIT: &str = "weft-init";
/// Set on an injected pod: the weft version that injected it.
pub const INJECTED: &str = "weft.dev/injected";
/// The audience of the ServiceAccount token the proxy presents to the control plane.
pub const TOKEN_AUDIENCE: &str = "weft";
/// Where the sidecar finds that token.
pub const TOKEN_PATH: &str = "/var/run/secrets/weft/tokens/weft-token";
/// The ConfigMap (in every injected namespace) with the mesh's roots, `root-cert.pem`.
pub const CA_CONFIGMAP: &str = "weft-ca-root";
/// Where the sidecar finds the mesh's roots.
pub const CA_PATH: &str = "/var/run/weft/ca/root-cert.pem";
/// The sidecar's environment variable with the app's own probes, keyed by the admin path that
/// stands for each.
pub const PROBERS_ENV: &str = "WEFT_APP_PROBERS";
/// Where a sidecar takes the connections its pod receives.
pub const INBOUND_PORT: u16 = model::names::POD_INBOUND_PORT;
/// The sidecar's admin listener: readiness, metrics, the app's probes.
pub const ADMIN_PORT: u16 = model::names::POD_ADMIN_PORT;
/// Where the capture rules send the app's outbound TCP.
pub const CAPTURE_PORT: u16 = model::names::POD_CAPTURE_PORT;
/// The sidecar's explicit outbound listener (for clients told a proxy).
pub const OUTBOUND_PORT: u16 = model::names::POD_OUTBOUND_PORT;

/// What the injected containers run and where their proxies connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// The weft container image (the user's reference: `REGISTRY/weft:TAG`).
    pub image: String,
    /// The control plane's gRPC address as the pods reach it (`weft-control.weft-system.svc:15010`).
    pub control: String,
    pub trust_domain: String,
    /// The weft version written in [`INJECTED`].
    pub version: String,
    /// Inject workloads that neither they nor their namespace opt in or out (`weft inject`:
    /// yes, as `istioctl kube-inject`; the webhook: no, a namespace opts in).
    pub by_default: bool,
    /// Namespaces whose labels or annotations opt in (`Some(true)`) or out, for workloads
    /// that say nothing themselves (the webhook knows them from the API; `weft inject` from
    /// Namespace documents in its input, which are added to these).
    pub namespaces: std::collections::BTreeMap<String, bool>,
}

/// What became of one object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "why", rename_all = "kebab-case")]
pub enum Outcome {
    Injected,
    /// It already has weft's sidecar: left as it is.
    AlreadyInjected,
    /// Not injected, and why (an annotation, its namespace, host networking).
    Skipped(String),
    /// Not a workload (a Service, a ConfigMap…): passed through.
    NotAWorkload,
}

/// The documents with every workload injected, and each object's outcome (`KIND NS/NAME`).
#[derive(Clone, Debug)]
pub struct Injected {
    pub yaml: String,
    pub objects: Vec<(String, Outcome)>,
}

/// Injects every workload of the documents `text` of `file`. Documents that are not
/// workloads, or are not injected, are passed through as written.
pub fn inject(file: &Path, text: &str, opts: &Options) -> Result<Injected, Vec<Diagnostic>> {
    let docs: Vec<_> = crate::split::split(text)
        .into_iter()
        .filter(|d| !blank(d.text))
        .collect();
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for d in &docs {
        let tree = match Node::parse(d.text) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err((pos, message)) => {
                errors.push(crate::doc::at(file, d.first_line, pos, "", message));
                continue;
            }
        };
        match serde_yaml_ng::from_str::<Value>(d.text) {
            Ok(v) => parsed.push((d, tree, v)),
            Err(e) => errors.push(
                Doc {
                    file,
                    first_line: d.first_line,
                    tree: &tree,
                }
                .serde_error(&e),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Namespaces in the input say whether their workloads are injected.
    let mut opts = opts.clone();
    for (_, _, v) in &parsed {
        if str_at(v, &["kind"]) == Some("Namespace") {
            if let (Some(name), Some(wants)) = (
                str_at(v, &["metadata", "name"]),
                opted(&v["metadata"]).map(|o| o.0),
            ) {
                opts.namespaces.insert(name.to_string(), wants);
            }
        }
    }
    let mut out = String::new();
    let mut objects = Vec::new();
    for (d, tree, mut v) in parsed {
        let doc = Doc {
            file,
            first_line: d.first_line,
            tree: &tree,
        };
        let before = objects.len();
        let changed = inject_object(&doc, "", &mut v, &opts, &mut objects, &mut errors);
        if !out.is_empty() {
            out.push_str("---\n");
        }
        if changed {
            out.push_str(&serde_yaml_ng::to_string(&v).unwrap_or_default());
        } else {
            let t = d.text.strip_prefix("---\n").unwrap_or(d.text);
            out.push_str(t);
            if !t.ends_with('\n') {
                out.push('\n');
            }
        }
        if objects.len() == before {
            objects.push((label(&v), Outcome::NotAWorkload));
        }
    }
    if errors.is_empty() {
        Ok(Injected { yaml: out, objects })
    } else {
        Err(errors)
    }
}

fn blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for k in path {
        v = v.get(*k)?;
    }
    v.as_str()
}

/// `KIND NAMESPACE/NAME` of an object.
fn label(v: &Value) -> String {
    format!(
        "{} {}/{}",
        str_at(v, &["kind"]).unwrap_or("?"),
        str_at(v, &["metadata", "namespace"]).unwrap_or("default"),
        str_at(v, &["metadata", "name"]).unwrap_or("?")
    )
}

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// Injects the object at `base` (and, for a `List`, its items); whether anything changed.
fn inject_object(
    doc: &Doc,
    base: &str,
    v: &mut Value,
    opts: &Options,
    objects: &mut Vec<(String, Outcome)>,
    errors: &mut Vec<Diagnostic>,
) -> bool {
    let kind = str_at(v, &["kind"]).unwrap_or("").to_string();
    if kind == "List" || kind.ends_with("List") {
        let mut changed = false;
        if let Some(Value::Sequence(items)) = v.get_mut("items") {
            for (i, item) in items.iter_mut().enumerate() {
                let at = join(base, &format!("items[{i}]"));
                changed |= inject_object(doc, &at, item, opts, objects, errors);
            }
        }
        return changed;
    }
    let Some(path) = template_path(&kind) else {
        return false;
    };
    let name = label(v);
    let namespace = str_at(v, &["metadata", "namespace"])
        .unwrap_or(model::names::DEFAULT_NAMESPACE)
        .to_string();
    let workload = str_at(v, &["metadata", "name"]).unwrap_or("").to_string();
    let owner_meta = v.get("metadata").cloned().unwrap_or(Value::Null);
    let mut template_field = base.to_string();
    let mut template = &mut *v;
    for k in path {
        template_field = join(&template_field, k);
        template = match template.get_mut(*k) {
            Some(t) => t,
            None => {
                objects.push((
                    name,
                    Outcome::Skipped(format!("it has no {template_field}")),
                ));
                return false;
            }
        };
    }
    let ctx = Ctx {
        doc,
        owner_field: base.to_string(),
        field: template_field,
        namespace,
        workload,
        owner_meta,
    };
    let outcome = inject_template(&ctx, template, opts, errors);
    let changed = outcome == Outcome::Injected;
    objects.push((name, outcome));
    changed
}

fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_string()
    } else {
        format!("{base}.{field}")
    }
}

struct Ctx<'a> {
    doc: &'a Doc<'a>,
    /// The pod template's field path in the document (empty for a Pod).
    field: String,
    /// The workload object's field path (empty but in a `List`).
    owner_field: String,
    namespace: String,
    workload: String,
    /// The workload object's metadata (annotations there count too).
    owner_meta: Value,
}

impl Ctx<'_> {
    fn error(&self, field: &str, message: String) -> Diagnostic {
        self.doc.error(&join(&self.field, field), message)
    }

    /// Puts diagnostics about an annotation (`….annotations.KEY`) on the line of that
    /// annotation, in the pod template's metadata or the workload's.
    fn locate_annotations(&self, errors: &mut [Diagnostic]) {
        let written: Vec<_> = [&self.field, &self.owner_field]
            .into_iter()
            .flat_map(|base| self.doc.annotations(&join(base, "metadata")))
            .collect();
        for e in errors {
            let Some((_, key)) = e.field.split_once(".annotations.") else {
                continue;
            };
            if let Some(a) = written.iter().find(|a| a.key == key) {
                e.line = a.at.line;
                e.column = a.at.column;
            }
        }
    }
}

/// Whether an object's `metadata` (a Namespace's, a pod's) opts into injection (`Some(true)`),
/// out of it (`Some(false)`), or says nothing, by the annotations and labels Istio and Linkerd
/// read.
pub fn opts_in(metadata: &Value) -> Option<bool> {
    opted(metadata).map(|(yes, _)| yes)
}

/// Whether `metadata` opts in or out, and by which annotation or label.
fn opted(metadata: &Value) -> Option<(bool, String)> {
    let get = |map: &str, key: &str| str_at(metadata, &[map, key]).map(str::to_string);
    for map in ["annotations", "labels"] {
        if let Some(v) = get(map, "sidecar.istio.io/inject") {
            return Some((v == "true", format!("{map} sidecar.istio.io/inject: {v}")));
        }
        if let Some(v) = get(map, "linkerd.io/inject") {
            return Some((
                matches!(v.as_str(), "enabled" | "ingress"),
                format!("{map} linkerd.io/inject: {v}"),
            ));
        }
    }
    if let Some(v) = get("labels", "istio-injection") {
        return Some((v == "enabled", format!("label istio-injection: {v}")));
    }
    None
}

/// The pod template's annotations and labels, its owner's under them (the pod's win).
fn merged(ctx: &Ctx, template: &Value, map: &str) -> model::Labels {
    let mut out = model::Labels::new();
    for meta in [&ctx.owner_meta, &template["metadata"]] {
        if let Some(Value::Mapping(m)) = meta.get(map) {
            for (k, v) in m {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    out
}

fn inject_template(
    ctx: &Ctx,
    template: &mut Value,
    opts: &Options,
    errors: &mut Vec<Diagnostic>,
) -> Outcome {
    let spec = &template["spec"];
    let has = |list: &str| {
        spec.get(list)
            .and_then(Value::as_sequence)
            .is_some_and(|cs| cs.iter().any(|c| str_at(c, &["name"]) == Some(SIDECAR)))
    };
    if has("containers") || has("initContainers") {
        return Outcome::AlreadyInjected;
    }
    let decision = opted(&template["metadata"])
        .or_else(|| opted(&ctx.owner_meta))
        .or_else(|| {
            opts.namespaces
                .get(&ctx.namespace)
                .map(|w| (*w, format!("namespace {}", ctx.namespace)))
        });
    match decision {
        Some((false, why)) => return Outcome::Skipped(format!("opted out: {why}")),
        None if !opts.by_default => {
            return Outcome::Skipped(format!(
                "neither it nor namespace {} opts in",
                ctx.namespace
            ))
        }
        _ => {}
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Outcome::Skipped("it uses the host's network".into());
    }
    let annotations = merged(ctx, template, "annotations");
    let labels = merged(ctx, template, "labels");
    let before = errors.len();
    let pod = Pod::read(ctx, template, &annotations, &labels, errors);
    ctx.locate_annotations(&mut errors[before..]);
    if errors.len() > before {
        return Outcome::Skipped("errors".into());
    }
    pod.write(ctx, template, opts);
    Outcome::Injected
}

/// What injection needs to know of a pod.
struct Pod {
    service: String,
    labels: Vec<(String, String)>,
    /// The app's TCP ports, the first one the app's port, with what each speaks.
    ports: Vec<(u16, model::Protocol)>,
    capture: model::Capture,
    resources: Value,
    /// The app containers' probes: (container index, probe key, the admin path, the probe).
    probes: Vec<(usize, &'static str, String, Value)>,
}

/// Istio's and Linkerd's proxy resource annotations: (request or limit, resource, names).
const RESOURCE_ANNOTATIONS: [(&str, &str, [&str; 2]); 4] = [
    (
        "requests",
        "cpu",
        [
            "sidecar.istio.io/proxyCPU",
            "config.linkerd.io/proxy-cpu-request",
        ],
    ),
    (
        "requests",
        "memory",
        [
            "sidecar.istio.io/proxyMemory",
            "config.linkerd.io/proxy-memory-request",
        ],
    ),
    (
        "limits",
        "cpu",
        [
            "sidecar.istio.io/proxyCPULimit",
            "config.linkerd.io/proxy-cpu-limit",
        ],
    ),
    (
        "limits",
        "memory",
        [
            "sidecar.istio.io/proxyMemoryLimit",
            "config.linkerd.io/proxy-memory-limit",
        ],
    ),
];

/// The sidecar's resources when no annotation says otherwise: a proxy's RSS under load is
/// ~20 MiB (docs/benchmarks.md).
const DEFAULT_RESOURCES: [(&str, &str, &str); 3] = [
    ("requests", "cpu", "10m"),
    ("requests", "memory", "32Mi"),
    ("limits", "memory", "256Mi"),
];

/// A Kubernetes quantity (`100m`, `0.5`, `64Mi`, `1G`, `1e3`).
fn quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    let number = digits
        .strip_suffix(|c: char| c == 'e' || c == 'E')
        .unwrap_or(digits);
    !digits.is_empty()
        && number.parse::<f64>().is_ok_and(|n| n >= 0.0)
        && matches!(
            suffix,
            "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
        )
}

/// What a port speaks, by Istio's conventions (its name's prefix, its `appProtocol`) and
/// Linkerd's opaque ports.
fn protocol_of(port: &Value, opaque: &[u16]) -> model::Protocol {
    use model::Protocol;
    let number = port
        .get("containerPort")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u16;
    if opaque.contains(&number) {
        return Protocol::Tcp;
    }
    let by = |s: &str| {
        let s = s.to_ascii_lowercase();
        let prefix = s.split('-').next().unwrap_or("").to_string();
        match prefix.as_str() {
            "grpc" | "grpc-web" => Some(Protocol::Grpc),
            "http2" | "h2c" | "kubernetes.io/h2c" => Some(Protocol::Http2),
            "http" | "https" | "kubernetes.io/http" => Some(Protocol::Http),
            "tcp" | "tls" | "mongo" | "mysql" | "redis" | "kubernetes.io/tcp" => {
                Some(Protocol::Tcp)
            }
            _ => None,
        }
    };
    str_at(port, &["appProtocol"])
        .and_then(by)
        .or_else(|| str_at(port, &["name"]).and_then(by))
        .unwrap_or(Protocol::Http)
}

impl Pod {
    fn read(
        ctx: &Ctx,
        template: &Value,
        annotations: &model::Labels,
        labels: &model::Labels,
        errors: &mut Vec<Diagnostic>,
    ) -> Pod {
        let meta_field = join(&ctx.field, "metadata");
        let capture = crate::capture::capture(ctx.doc, &meta_field, annotations, errors);
        let opaque = annotations
            .get("config.linkerd.io/opaque-ports")
            .map(|v| {
                crate::ports::port_list(
                    ctx.doc,
                    &meta_field,
                    "config.linkerd.io/opaque-ports",
                    v,
                    errors,
                )
            })
            .unwrap_or_default();
        let service = [
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ]
        .iter()
        .find_map(|k| labels.get(*k).cloned())
        .unwrap_or_else(|| ctx.workload.clone());
        let kept: Vec<(String, String)> = ["app", "version"]
            .iter()
            .filter_map(|k| Some((k.to_string(), labels.get(*k)?.clone())))
            .collect();
        let mut ports = Vec::new();
        let mut probes = Vec::new();
        let containers = template["spec"]["containers"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        if containers.is_empty() {
            errors.push(ctx.error("spec.containers", "a pod needs a container".into()));
        }
        for (i, c) in containers.iter().enumerate() {
            for p in c
                .get("ports")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let tcp = str_at(p, &["protocol"]).is_none_or(|p| p == "TCP");
                if let (Some(n), true) = (p.get("containerPort").and_then(Value::as_u64), tcp) {
                    let n = n as u16;
                    if !ports.iter().any(|(q, _)| *q == n) {
                        ports.push((n, protocol_of(p, &opaque)));
                    }
                }
            }
            let name = str_at(c, &["name"]).unwrap_or("app");
            for (key, short) in [
                ("livenessProbe", "livez"),
                ("readinessProbe", "readyz"),
                ("startupProbe", "startupz"),
            ] {
                let Some(probe) = c.get(key) else { continue };
                // HTTPS probes go to the app as they are (the proxy asks in plain HTTP only).
                let https = str_at(probe, &["httpGet", "scheme"])
                    .is_some_and(|s| s.eq_ignore_ascii_case("https"));
                let Some(kind) = ["httpGet", "tcpSocket"]
                    .into_iter()
                    .find(|k| probe.get(*k).is_some())
                    .filter(|_| !https)
                else {
                    continue;
                };
                let mut probe = probe.clone();
                // A named port is the container's port of that name.
                if let Some(port) = probe[kind].get("port").and_then(Value::as_str) {
                    let named = c
                        .get("ports")
                        .and_then(Value::as_sequence)
                        .into_iter()
                        .flatten()
                        .find(|p| str_at(p, &["name"]) == Some(port))
                        .and_then(|p| p.get("containerPort").cloned());
                    match named {
                        Some(n) => probe[kind]["port"] = n,
                        None => {
                            errors.push(ctx.error(
                                &format!("spec.containers[{i}].{key}.{kind}.port"),
                                format!("no port of container {name} is named `{port}`"),
                            ));
                            continue;
                        }
                    }
                }
                probes.push((i, key, format!("/app-health/{name}/{short}"), probe));
            }
        }
        let mut resources = Mapping::new();
        for (kind, what, default) in DEFAULT_RESOURCES {
            set(&mut resources, kind, what, default);
        }
        for (kind, what, names) in RESOURCE_ANNOTATIONS {
            for name in names {
                let Some(value) = annotations.get(name) else {
                    continue;
                };
                if quantity(value) {
                    set(&mut resources, kind, what, value);
                } else {
                    errors.push(ctx.error(
                        &format!("metadata.annotations.{name}"),
                        format!("`{value}` is not a Kubernetes quantity (like 100m, 0.5, 64Mi)"),
                    ));
                }
            }
        }
        Pod {
            service,
            labels: kept,
            ports,
            capture,
            resources: Value::Mapping(resources),
            probes,
        }
    }

    /// The sidecar's command line (Kubernetes expands `$(VAR)` from its environment).
    fn args(&self, ctx: &Ctx, opts: &Options) -> Vec<String> {
        let mut a: Vec<String> = [
            "proxy",
            "--mode",
            "sidecar",
            "--control",
            &opts.control,
            "--service",
            &self.service,
            "--namespace",
            "$(WEFT_POD_NAMESPACE)",
            "--workload",
            &ctx.workload,
            "--instance",
            "$(WEFT_POD_NAME)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push("--identity".into());
        a.push(format!(
            "spiffe://{}/ns/$(WEFT_POD_NAMESPACE)/sa/$(WEFT_SERVICE_ACCOUNT)",
            opts.trust_domain
        ));
        for (k, v) in &self.labels {
            a.push("--label".into());
            a.push(format!("{k}={v}"));
        }
        if let Some((port, protocol)) = self.ports.first() {
            a.push("--app".into());
            a.push(format!("127.0.0.1:{port}"));
            a.push("--app-protocol".into());
            a.push(protocol.as_str().into());
        }
        for (port, _) in &self.ports {
            a.push("--app-port".into());
            a.push(format!("{port}=127.0.0.1:{port}"));
        }
        for (flag, value) in [
            ("--inbound", format!("0.0.0.0:{INBOUND_PORT}")),
            ("--capture-outbound", format!("127.0.0.1:{CAPTURE_PORT}")),
            ("--outbound", format!("127.0.0.1:{OUTBOUND_PORT}")),
            ("--admin", format!("0.0.0.0:{ADMIN_PORT}")),
            ("--join-token-file", TOKEN_PATH.into()),
            ("--trust-anchors-file", CA_PATH.into()),
            ("--state-dir", "/var/run/weft/state".into()),
        ] {
            a.push(flag.into());
            a.push(value);
        }
        a
    }

    fn write(&self, ctx: &Ctx, template: &mut Value, opts: &Options) {
        // `kubectl logs` and `exec` pick the app, not the proxy.
        let app = template["spec"]["containers"]
            .as_sequence()
            .and_then(|cs| cs.first())
            .and_then(|c| str_at(c, &["name"]))
            .map(str::to_string);
        if let Value::Mapping(m) = entry(entry(template, "metadata"), "annotations") {
            m.insert(INJECTED.into(), opts.version.clone().into());
            if let Some(app) = app {
                m.entry("kubectl.kubernetes.io/default-container".into())
                    .or_insert(app.into());
            }
        }
        // The app's probes go to the sidecar's admin port, which asks the app.
        let mut probers = Mapping::new();
        let spec = entry(template, "spec");
        if let Some(Value::Sequence(containers)) = spec.get_mut("containers") {
            for (i, key, path, probe) in &self.probes {
                let Some(c) = containers.get_mut(*i) else {
                    continue;
                };
                let mut original = Mapping::new();
                for k in ["httpGet", "tcpSocket", "timeoutSeconds"] {
                    if let Some(v) = probe.get(k) {
                        original.insert(k.into(), v.clone());
                    }
                }
                probers.insert(path.clone().into(), Value::Mapping(original));
                if let Some(Value::Mapping(p)) = c.get_mut(*key) {
                    p.remove("tcpSocket");
                    let mut get = Mapping::new();
                    get.insert("path".into(), path.clone().into());
                    get.insert("port".into(), u64::from(ADMIN_PORT).into());
                    p.insert("httpGet".into(), Value::Mapping(get));
                }
            }
        }
        let env = |name: &str, field: &str| -> Value {
            yaml(&format!(
                "name: {name}\nvalueFrom:\n  fieldRef:\n    fieldPath: {field}\n"
            ))
        };
        let mut envs = vec![
            env("WEFT_POD_NAME", "metadata.name"),
            env("WEFT_POD_NAMESPACE", "metadata.namespace"),
            env("WEFT_POD_IP", "status.podIP"),
            env("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ];
        if !probers.is_empty() {
            let mut e = Mapping::new();
            e.insert("name".into(), PROBERS_ENV.into());
            e.insert(
                "value".into(),
                serde_json::to_string(&Value::Mapping(probers))
                    .unwrap_or_default()
                    .into(),
            );
            envs.push(Value::Mapping(e));
        }
        let sidecar = yaml(&format!(
            "restartPolicy: Always
ports:
- {{name: weft-admin, containerPort: {ADMIN_PORT}, protocol: TCP}}
startupProbe:
  httpGet: {{path: /ready, port: {ADMIN_PORT}}}
  periodSeconds: 1
  failureThreshold: 600
readinessProbe:
  httpGet: {{path: /ready, port: {ADMIN_PORT}}}
  periodSeconds: 2
securityContext:
  runAsUser: {PROXY_UID}
  runAsGroup: {PROXY_UID}
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {{drop: [ALL]}}
volumeMounts:
- {{name: weft-token, mountPath: /var/run/secrets/weft/tokens, readOnly: true}}
- {{name: weft-ca-root, mountPath: /var/run/weft/ca, readOnly: true}}
- {{name: weft-state, mountPath: /var/run/weft/state}}
"
        ));
        let args = Value::Sequence(self.args(ctx, opts).into_iter().map(Value::from).collect());
        let sidecar = first(
            sidecar,
            [
                ("name", SIDECAR.into()),
                ("image", opts.image.clone().into()),
                ("args", args),
                ("env", Value::Sequence(envs)),
                ("resources", self.resources.clone()),
            ],
        );
        let mut init_args: Vec<String> = vec![
            "capture".into(),
            "--proxy-uid".into(),
            PROXY_UID.to_string(),
        ];
        let list = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let c = &self.capture;
        for (flag, value) in [
            ("--exclude-inbound-ports", list(&c.exclude_inbound_ports)),
            ("--exclude-outbound-ports", list(&c.exclude_outbound_ports)),
            (
                "--include-outbound-cidrs",
                c.include_outbound_cidrs.join(","),
            ),
            (
                "--exclude-outbound-cidrs",
                c.exclude_outbound_cidrs.join(","),
            ),
        ] {
            if !value.is_empty() {
                init_args.push(flag.into());
                init_args.push(value);
            }
        }
        let init = yaml(
            "securityContext:
  runAsUser: 0
  runAsNonRoot: false
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {add: [NET_ADMIN, NET_RAW], drop: [ALL]}
resources:
  requests: {cpu: 10m, memory: 16Mi}
  limits: {cpu: 100m, memory: 64Mi}
",
        );
        let init = first(
            init,
            [
                ("name", INIT.into()),
                ("image", opts.image.clone().into()),
                (
                    "args",
                    Value::Sequence(init_args.into_iter().map(Value::from).collect()),
                ),
            ],
        );
        let spec = entry(template, "spec");
        let inits = entry(spec, "initContainers");
        if !inits.is_sequence() {
            *inits = Value::Sequence(Vec::new());
        }
        if let Value::Sequence(s) = inits {
            s.insert(0, sidecar);
            s.insert(0, init);
        }
        let volumes = entry(spec, "volumes");
        if !volumes.is_sequence() {
            *volumes = Value::Sequence(Vec::new());
        }
        if let Value::Sequence(s) = volumes {
            s.push(yaml(&format!(
                "name: weft-token
projected:
  sources:
  - serviceAccountToken: {{audience: {TOKEN_AUDIENCE}, expirationSeconds: 43200, path: weft-token}}
"
            )));
            s.push(yaml(&format!(
                "name: weft-ca-root\nconfigMap: {{name: {CA_CONFIGMAP}}}\n"
            )));
            s.push(yaml("name: weft-state\nemptyDir: {medium: Memory}\n"));
        }
    }
}

/// `entries`, then the rest of `v`'s.
fn first<const N: usize>(v: Value, entries: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, e) in entries {
        m.insert(k.into(), e);
    }
    if let Value::Mapping(rest) = v {
        for (k, e) in rest {
            m.entry(k).or_insert(e);
        }
    }
    Value::Mapping(m)
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap_or(Value::Null)
}

fn set(m: &mut Mapping, kind: &str, what: &str, value: &str) {
    let e = m
        .entry(kind.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if let Value::Mapping(inner) = e {
        inner.insert(what.into(), value.into());
    }
}

/// `v[key]`, made a mapping when it is missing or null.
fn entry<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_mapping() {
        *v = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(m) = v else {
        unreachable!("made a mapping above")
    };
    let e = m
        .entry(key.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if e.is_null() {
        *e = Value::Mapping(Mapping::new());
    }
    e
}

#[cfg(test)]
mod tests;
