//! Turns documents into one validated [`MeshSpec`]: reads each document's header, parses and
//! checks `kind: Mesh` documents, merges them, hands routing documents (Istio, Gateway API,
//! SMI, Linkerd) and security documents (Istio, Linkerd, Namespaces) to their modules, and
//! records everything else as unsupported. Errors in Mesh documents are fatal; a routing or
//! security resource with errors is rejected alone.

use crate::diagnostic::reject;
use crate::doc::{at, whole_file, Doc};
use crate::format::{MeshDocument, API_VERSION};
use crate::k8s;
use crate::marked::{Node, Value};
use crate::split::{split, unprintable, Document};
use crate::{gateway, ingress, istio, linkerd, policy, security};
use crate::{Diagnostic, Errors, Loaded};
use model::mesh::DEFAULT_INGRESS;
use model::names::DEFAULT_NAMESPACE;
use model::{MeshSpec, RetryPolicy, ServiceSpec, WorkloadSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Default)]
pub(crate) struct Loader {
    errors: Vec<Diagnostic>,
    unsupported: Vec<Diagnostic>,
    /// The errors of routing resources (Istio, Gateway API, SMI) that are rejected alone.
    rejected: Vec<Diagnostic>,
    /// The first Mesh document's `metadata.name`; `None` until a Mesh document is seen.
    name: Option<String>,
    /// The ingress set so far and where (`FILE:LINE`) it was set.
    ingress: Option<(SocketAddr, String)>,
    services: Vec<ServiceSpec>,
    /// Where each service (name, namespace) and each workload name was first defined.
    service_at: HashMap<(String, String), String>,
    workload_at: HashMap<String, String>,
    /// Istio VirtualServices, DestinationRules and Gateways, resolved once every file is read.
    istio: Vec<istio::Pending>,
    /// Gateway API HTTPRoutes and Gateways and SMI TrafficSplits, resolved once every file is
    /// read.
    gateway: Vec<gateway::Pending>,
    /// Linkerd ServiceProfiles and annotations, resolved once every file is read.
    linkerd: linkerd::Linkerd,
    /// Linkerd's `clusterNetworks` from the Mesh document, validated.
    cluster_networks: Vec<String>,
    /// `spec.defaultRetries` as set so far (`None` inside: no retries) and where
    /// (`FILE:LINE`) it was set.
    default_retries: Option<(Option<RetryPolicy>, String)>,
    /// `spec.interception` and `spec.outboundTrafficPolicy.mode` as set so far, and where.
    interception: Option<(model::Interception, String)>,
    outbound_policy: Option<(model::OutboundPolicy, String)>,
    scope: Option<(model::egress::MeshScope, String)>,
    /// Each `dependsOn` entry that names one service, with where it is written: checked
    /// against the mesh's services once every file is read.
    depends_on: Vec<(model::ServiceKey, Diagnostic)>,
    /// Istio and Linkerd security documents, inbound routes and default inbound policies,
    /// resolved once every file is read.
    security: security::Security,
    /// `kind: Canary` documents, checked against the services once every file is read.
    canaries: Vec<crate::doc::Parsed<crate::canary::Document>>,
}

impl Loader {
    pub fn file(&mut self, file: &Path) {
        match crate::read_text(file) {
            Ok(text) => self.text(file, &text),
            Err(d) => self.errors.push(d),
        }
    }

    pub fn dir(&mut self, dir: &Path) {
        let files = match crate::config_files(dir) {
            Ok(files) => files,
            Err(e) => {
                return self
                    .errors
                    .push(whole_file(dir, format!("cannot read directory: {e}")))
            }
        };
        for file in files {
            self.file(&file);
        }
    }

    pub fn text(&mut self, file: &Path, text: &str) {
        if let Some((line, column, c)) = unprintable(text) {
            return self.errors.push(Diagnostic {
                file: file.to_path_buf(),
                line,
                column,
                field: String::new(),
                message: format!(
                    "not YAML or JSON text: it holds the control character U+{:04X} (a binary \
                     file?)",
                    u32::from(c)
                ),
            });
        }
        for document in split(text.strip_prefix('\u{feff}').unwrap_or(text)) {
            self.document(file, &document);
        }
    }

    fn document(&mut self, file: &Path, document: &Document) {
        let tree = match Node::parse(document.text) {
            Ok(Some(tree)) => tree,
            Ok(None) => return,
            Err((pos, message)) => {
                return self
                    .errors
                    .push(at(file, document.first_line, pos, "", message));
            }
        };
        let doc = Doc {
            file,
            first_line: document.first_line,
            tree: &tree,
        };
        if !matches!(tree.value, Value::Map(_)) {
            return self
                .errors
                .push(doc.error("", "a document must be a mapping with apiVersion and kind"));
        }
        let header = |field: &str| match tree.get(field).map(|n| n.as_str()) {
            Some(Some(value)) if !value.is_empty() => Ok(value),
            Some(_) => Err(doc.error(field, "must be a non-empty string")),
            None => Err(doc.error(field, format!("missing field `{field}`"))),
        };
        let (api_version, kind) = match (header("apiVersion"), header("kind")) {
            (Ok(api_version), Ok(kind)) => (api_version, kind),
            (a, k) => return self.errors.extend([a.err(), k.err()].into_iter().flatten()),
        };
        if let Some(parsed) = istio::parse(api_version, kind, document.text) {
            match parsed {
                Ok(parsed) => {
                    let pending = istio::Pending {
                        file: file.to_path_buf(),
                        first_line: document.first_line,
                        tree,
                        kind: parsed,
                    };
                    self.unsupported.extend(pending.notices());
                    self.istio.push(pending);
                }
                Err(e) => self.reject_unparsed(&doc, api_version, kind, &e),
            }
            return;
        }
        if let Some(parsed) = gateway::parse(api_version, kind, document.text).or_else(|| {
            linkerd::parse_route(api_version, kind, document.text)
                .map(|parsed| parsed.map(gateway::Kind::HttpRoute))
        }) {
            match parsed {
                Ok(parsed) => self.route(gateway::Pending {
                    file: file.to_path_buf(),
                    first_line: document.first_line,
                    tree,
                    kind: parsed,
                }),
                Err(e) => self.reject_unparsed(&doc, api_version, kind, &e),
            }
            return;
        }
        if let Some(parsed) = linkerd::parse_profile(api_version, kind, document.text) {
            match parsed {
                Ok(profile) => self
                    .linkerd
                    .profile(file, document.first_line, tree, profile),
                Err(e) => self.reject_unparsed(&doc, api_version, kind, &e),
            }
            return;
        }
        if let Some(parsed) = security::parse(api_version, kind, document.text) {
            match parsed {
                Ok(kind) => self.security.document(security::Pending {
                    file: file.to_path_buf(),
                    first_line: document.first_line,
                    tree,
                    kind,
                }),
                Err(e) => self.reject_unparsed(&doc, api_version, kind, &e),
            }
            return;
        }
        if kind == "Canary" && api_version == API_VERSION {
            match serde_yaml_ng::from_str::<crate::canary::Document>(document.text) {
                Ok(parsed) => self.canaries.push(crate::doc::Parsed {
                    file: file.to_path_buf(),
                    first_line: document.first_line,
                    tree,
                    kind: parsed,
                }),
                Err(e) => self.reject_unparsed(&doc, api_version, kind, &e),
            }
            return;
        }
        if kind != "Mesh" {
            let name = tree
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str);
            let what = [kind, &format!("({api_version})"), name.unwrap_or_default()].join(" ");
            return self
                .unsupported
                .push(doc.error("", format!("{} is not yet supported", what.trim_end())));
        }
        if api_version != API_VERSION {
            self.errors.push(doc.error(
                "apiVersion",
                format!("kind Mesh needs apiVersion {API_VERSION}, not `{api_version}`"),
            ));
        }
        match serde_yaml_ng::from_str::<MeshDocument>(document.text) {
            Ok(mesh) => self.mesh(&doc, mesh),
            Err(e) => self.errors.push(doc.serde_error(&e)),
        }
    }

    /// A Gateway API or Linkerd HTTPRoute, a Gateway or a TrafficSplit. An HTTPRoute with a
    /// Server parent is an inbound route (for `security`) too; an outbound one may carry Linkerd
    /// annotations.
    fn route(&mut self, pending: gateway::Pending) {
        let (doc, label) = (pending.doc(), pending.label());
        let http_route = match &pending.kind {
            gateway::Kind::HttpRoute(o) => Some(o),
            _ => None,
        };
        let inbound = match http_route.map(|o| security::inbound_route(&doc, label.clone(), o)) {
            Some(Ok(inbound)) => inbound,
            Some(Err(errors)) => return reject(&label, errors, &mut self.rejected),
            None => None,
        };
        let outbound = http_route.is_none_or(|o| {
            !o.spec.parent_refs.iter().all(|r| r.is_server()) || o.spec.parent_refs.is_empty()
        });
        if outbound
            && http_route.is_some()
            && !self
                .linkerd
                .http_route(&doc, label, &mut self.rejected, &mut self.unsupported)
        {
            return;
        }
        if let Some((route, notices)) = inbound {
            self.unsupported.extend(notices);
            self.security.route(route);
        }
        if outbound {
            self.unsupported.extend(pending.notices());
            self.gateway.push(pending);
        }
    }

    /// A routing or security resource that does not parse is rejected alone, named by what its
    /// header and tree say.
    fn reject_unparsed(
        &mut self,
        doc: &Doc,
        api_version: &str,
        kind: &str,
        e: &serde_yaml_ng::Error,
    ) {
        let label = k8s::label_of(api_version, kind, doc.tree);
        reject(&label, vec![doc.serde_error(e)], &mut self.rejected);
    }

    fn mesh(&mut self, doc: &Doc, mesh: MeshDocument) {
        self.check_name(doc, "metadata.name", &mesh.metadata.name);
        if let Some(namespace) = &mesh.metadata.namespace {
            self.check_name(doc, "metadata.namespace", namespace);
        }
        self.name.get_or_insert(mesh.metadata.name);
        if let Some(root) = &mesh.spec.root_namespace {
            self.check_name(doc, "spec.rootNamespace", root);
        }
        if let Some(list) = &mesh.spec.cluster_networks {
            for cidr in list.items() {
                match parse_cidr(&cidr) {
                    Ok(()) if !self.cluster_networks.contains(&cidr) => {
                        self.cluster_networks.push(cidr)
                    }
                    Ok(()) => {}
                    Err(why) => self.errors.push(doc.error(
                        "spec.clusterNetworks",
                        format!("`{cidr}` is not a CIDR: {why}"),
                    )),
                }
            }
        }
        if let Some(value) = &mesh.spec.default_retries {
            self.default_retries(doc, value);
        }
        if let Some(text) = &mesh.spec.interception {
            let value = match text.as_str() {
                "proxy-env" => Some(model::Interception::ProxyEnv),
                "transparent" => Some(model::Interception::Transparent),
                other => {
                    self.errors.push(doc.error(
                        "spec.interception",
                        format!("unknown interception `{other}`: use proxy-env or transparent"),
                    ));
                    None
                }
            };
            if let Some(v) = value {
                agree(
                    doc,
                    "spec.interception",
                    v,
                    &mut self.interception,
                    &mut self.errors,
                );
            }
        }
        if let Some(p) = &mesh.spec.outbound_traffic_policy {
            const FIELD: &str = "spec.outboundTrafficPolicy.mode";
            let value = match p.mode.as_str() {
                "ALLOW_ANY" => Some(model::OutboundPolicy::AllowAny),
                "REGISTRY_ONLY" => Some(model::OutboundPolicy::RegistryOnly),
                other => {
                    self.errors.push(doc.error(
                        FIELD,
                        format!("unknown mode `{other}`: use ALLOW_ANY or REGISTRY_ONLY"),
                    ));
                    None
                }
            };
            if let Some(v) = value {
                agree(doc, FIELD, v, &mut self.outbound_policy, &mut self.errors);
            }
        }
        if let Some(text) = &mesh.spec.scope {
            const FIELD: &str = "spec.scope";
            match model::egress::MeshScope::parse(text) {
                Some(v) => agree(doc, FIELD, v, &mut self.scope, &mut self.errors),
                None => self.errors.push(doc.error(
                    FIELD,
                    format!("unknown scope `{text}`: use whole, declared or observed"),
                )),
            }
        }
        self.security.defaults.mesh(
            doc,
            mesh.spec.root_namespace.as_deref(),
            mesh.spec.default_inbound_policy,
            &mut self.errors,
        );
        let default_namespace = mesh
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);

        if let Some(text) = &mesh.spec.ingress {
            match (text.parse::<SocketAddr>(), &self.ingress) {
                (Err(e), _) => self
                    .errors
                    .push(doc.error("spec.ingress", format!("invalid address `{text}`: {e}"))),
                (Ok(addr), Some((first, at))) if addr != *first => self.errors.push(doc.error(
                    "spec.ingress",
                    format!("ingress {addr} conflicts with ingress {first} set at {at}"),
                )),
                (Ok(addr), None) => self.ingress = Some((addr, doc.place("spec.ingress"))),
                (Ok(_), Some(_)) => {}
            }
        }

        for (i, s) in mesh.spec.services.into_iter().enumerate() {
            let field = format!("spec.services[{i}]");
            self.check_name(doc, &format!("{field}.name"), &s.name);
            if let Some(namespace) = &s.namespace {
                self.check_name(doc, &format!("{field}.namespace"), namespace);
            }
            let ports =
                crate::ports::ports(doc, &field, &s, &mut self.errors, &mut self.unsupported);
            let namespace = s.namespace.unwrap_or_else(|| default_namespace.to_string());
            let key = (s.name.clone(), namespace.clone());
            match self.service_at.get(&key) {
                Some(at) => self.errors.push(doc.error(
                    &format!("{field}.name"),
                    format!(
                        "duplicate service {}.{} (first defined at {at})",
                        s.name, namespace
                    ),
                )),
                None => {
                    _ = self
                        .service_at
                        .insert(key, doc.place(&format!("{field}.name")))
                }
            }

            let mut workloads = Vec::new();
            for (j, w) in s.workloads.into_iter().enumerate() {
                let field = format!("{field}.workloads[{j}]");
                self.check_name(doc, &format!("{field}.name"), &w.name);
                match self.workload_at.get(&w.name) {
                    Some(at) => self.errors.push(doc.error(
                        &format!("{field}.name"),
                        format!("duplicate workload {} (first defined at {at})", w.name),
                    )),
                    None => {
                        _ = self
                            .workload_at
                            .insert(w.name.clone(), doc.place(&format!("{field}.name")))
                    }
                }
                match w.command.first() {
                    None => self
                        .errors
                        .push(doc.error(&format!("{field}.command"), "command must not be empty")),
                    Some(program) if program.trim().is_empty() => self.errors.push(doc.error(
                        &format!("{field}.command[0]"),
                        "the first word of command must not be empty",
                    )),
                    Some(_) => {}
                }
                doc.check(
                    &format!("{field}.replicas"),
                    model::valid::replicas(w.replicas),
                    &mut self.errors,
                );
                let restart_policy = match w.restart_policy.as_deref() {
                    None => model::RestartPolicy::default(),
                    Some(text) => model::RestartPolicy::parse(text).unwrap_or_else(|| {
                        self.errors.push(doc.error(
                            &format!("{field}.restartPolicy"),
                            format!(
                                "unknown restartPolicy `{text}`: use Always, OnFailure or Never"
                            ),
                        ));
                        model::RestartPolicy::default()
                    }),
                };
                let mut labels = w.labels;
                labels
                    .entry("app".to_string())
                    .or_insert_with(|| s.name.clone());
                workloads.push(WorkloadSpec {
                    name: w.name,
                    labels,
                    replicas: w.replicas,
                    command: w.command,
                    env: w.env,
                    sidecar: w.sidecar,
                    restart_policy,
                    placement: model::Placement {
                        hosts: w.hosts,
                        host_selector: w.host_selector,
                    },
                });
            }

            let depends_on = s.depends_on.map(|entries| {
                let mut hosts = Vec::new();
                for (j, entry) in entries.iter().enumerate() {
                    let field = format!("{field}.dependsOn[{j}]");
                    match model::EgressHost::depends_on(entry, &namespace) {
                        Ok(h) => {
                            if let Some(key) = h.service() {
                                self.depends_on.push((key, doc.error(&field, "")));
                            }
                            hosts.push(h);
                        }
                        Err(e) => self.errors.push(doc.error(&field, e.to_string())),
                    }
                }
                hosts
            });
            let key = model::ServiceKey::new(&s.name, &namespace);
            let capture = crate::capture::capture(doc, &field, &s.annotations, &mut self.errors);
            let (errors, notices) = (&mut self.errors, &mut self.unsupported);
            self.linkerd.service(doc, &field, key, errors, notices);
            let service = ServiceSpec {
                name: s.name,
                namespace,
                port: ports.first().map_or(0, |p| p.port),
                ports,
                lb: s.lb.unwrap_or_default(),
                labels: s.labels,
                annotations: s.annotations,
                workloads,
                capture,
                depends_on,
            };
            self.security
                .defaults
                .service(doc, &field, &service, &mut self.errors);
            self.services.push(service);
        }
    }

    /// `spec.defaultRetries`: checked, and agreeing with any other Mesh document's.
    fn default_retries(&mut self, doc: &Doc, value: &serde_yaml_ng::Value) {
        const FIELD: &str = "spec.defaultRetries";
        let before = self.errors.len();
        let policy = default_retries(doc, value, &mut self.errors, &mut self.unsupported);
        if self.errors.len() > before {
            return;
        }
        match &self.default_retries {
            Some((first, at)) if *first != policy => self.errors.push(doc.error(
                FIELD,
                format!("defaultRetries conflicts with the defaultRetries set at {at}"),
            )),
            Some(_) => {}
            None => self.default_retries = Some((policy, doc.place(FIELD))),
        }
    }

    fn check_name(&mut self, doc: &Doc, field: &str, name: &str) {
        if !is_dns_label(name) {
            self.errors.push(doc.error(
                field,
                format!(
                    "`{name}` is not a valid name: use at most 63 lowercase letters, digits and '-', \
                     starting and ending with a letter or digit"
                ),
            ));
        }
    }

    pub fn finish(mut self) -> Result<Loaded, Errors> {
        let keys: std::collections::HashSet<model::ServiceKey> =
            self.services.iter().map(ServiceSpec::key).collect();
        for (key, at) in std::mem::take(&mut self.depends_on) {
            if !keys.contains(&key) {
                self.errors.push(Diagnostic {
                    message: format!("{key} is not a service of the mesh"),
                    ..at
                });
            }
        }
        let services = self.name.is_some().then_some(self.services.as_slice());
        let istio = istio::resolve(
            services,
            &self.istio,
            &mut self.rejected,
            &mut self.unsupported,
        );
        let mut routes = istio.routes;
        let mut placed = gateway::Placed::new();
        let gateway_api = gateway::resolve(
            services,
            &self.gateway,
            &mut routes,
            &istio.owners,
            &mut self.rejected,
            &mut self.unsupported,
            &mut placed,
        );
        let mut policies = istio.policies;
        self.linkerd.resolve(
            services,
            &mut routes,
            linkerd::Earlier {
                owners: &istio.owners,
                placed: &placed,
            },
            &mut policies,
            &mut self.rejected,
            &mut self.unsupported,
        );
        let gateway = ingress::assemble(istio.ingress, gateway_api, &mut self.unsupported);
        let mut security =
            self.security
                .resolve(services, &mut self.rejected, &mut self.unsupported);
        security.cluster_networks = self.cluster_networks.clone();
        let mut canaries = Vec::new();
        for pending in std::mem::take(&mut self.canaries) {
            let crate::doc::Parsed {
                file,
                first_line,
                tree,
                kind,
            } = pending;
            let doc = Doc {
                file: &file,
                first_line,
                tree: &tree,
            };
            let label = k8s::label_of(API_VERSION, "Canary", doc.tree);
            match crate::canary::check(&doc, kind, services) {
                Ok(c) => canaries.push(c),
                Err(errors) => reject(&label, errors, &mut self.rejected),
            }
        }
        if !self.errors.is_empty() {
            // Everything wrong at once: the fatal errors, then the rejections.
            self.errors.append(&mut self.rejected);
            return Err(Errors(self.errors));
        }
        let ingress = match self.ingress {
            Some((addr, _)) => addr,
            None => DEFAULT_INGRESS
                .parse()
                .expect("DEFAULT_INGRESS is a socket address"),
        };
        let services = self.services;
        Ok(Loaded {
            mesh: self.name.map(|name| MeshSpec {
                name,
                ingress,
                services,
                routes,
                tcp_routes: istio.tcp_routes,
                policies,
                gateway,
                security,
                default_retries: self.default_retries.and_then(|(policy, _)| policy),
                interception: self.interception.map(|(v, _)| v).unwrap_or_default(),
                outbound_policy: self.outbound_policy.map(|(v, _)| v).unwrap_or_default(),
                outbound_policies: istio.outbound_policies,
                egress: istio.egress,
                scope: self.scope.map(|(v, _)| v).unwrap_or_default(),
            }),
            unsupported: self.unsupported,
            rejected: self.rejected,
            canaries,
        })
    }
}

/// What `spec.defaultRetries` says: `istio` (Istio's default policy), `linkerd` or `none` (no
/// retries), or an Istio `HTTPRetry` object (`attempts: 0`: none). `None`: no default policy.
/// Errors go to `errors`, retry conditions weft ignores to `notices`.
fn default_retries(
    doc: &Doc,
    value: &serde_yaml_ng::Value,
    errors: &mut Vec<Diagnostic>,
    notices: &mut Vec<Diagnostic>,
) -> Option<RetryPolicy> {
    use serde_yaml_ng::Value as V;
    const FIELD: &str = "spec.defaultRetries";
    const SHAPES: &str = "use istio, linkerd, none, or {attempts, retryOn, perTryTimeout}";
    let map = match value {
        V::String(name) => match name.as_str() {
            "istio" => return Some(policy::istio_default_retry()),
            "linkerd" | "none" => return None,
            other => {
                errors
                    .push(doc.error(FIELD, format!("unknown defaultRetries `{other}`: {SHAPES}")));
                return None;
            }
        },
        V::Mapping(map) => map,
        _ => {
            errors.push(doc.error(
                FIELD,
                format!("defaultRetries must be a name or a mapping: {SHAPES}"),
            ));
            return None;
        }
    };
    let mut out = policy::istio_default_retry();
    let mut attempts = None;
    for (key, v) in map {
        let Some(key) = key.as_str() else {
            errors.push(doc.error(FIELD, "keys must be strings"));
            continue;
        };
        let field = format!("{FIELD}.{key}");
        match key {
            "attempts" => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => attempts = Some(n),
                None => errors.push(doc.error(&field, "attempts must be a whole number, 0 or more")),
            },
            "retryOn" => match v.as_str() {
                Some(text) => {
                    let list = policy::istio_retry_on(text);
                    errors.extend(list.invalid.into_iter().map(|m| doc.error(&field, m)));
                    notices.extend(list.unsupported.into_iter().map(|value| {
                        doc.error(&field, format!("retryOn {value} is not yet supported; ignored"))
                    }));
                    out.on = list.on;
                }
                None => errors.push(doc.error(&field, "retryOn must be a string like `5xx,connect-failure`")),
            },
            "perTryTimeout" => match v.as_str().map(policy::istio_duration) {
                Some(Ok(ms)) => out.per_try_timeout_ms = ms,
                Some(Err(message)) => errors.push(doc.error(&field, message)),
                None => errors.push(doc.error(&field, "perTryTimeout must be a duration like 2s")),
            },
            other => errors.push(doc.error(
                &field,
                format!("unknown field `{other}`, expected one of `attempts`, `retryOn`, `perTryTimeout`"),
            )),
        }
    }
    match attempts {
        None => {
            errors.push(doc.error(FIELD, "missing field `attempts` (0 turns retries off)"));
            None
        }
        Some(0) => None,
        Some(n) => {
            out.attempts = n;
            Some(out)
        }
    }
}

/// A DNS-1123 label, as Kubernetes names services and namespaces.
fn is_dns_label(s: &str) -> bool {
    let alphanumeric = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = s.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(&a), Some(&z)) if alphanumeric(a) && alphanumeric(z))
        && bytes.len() <= 63
        && bytes.iter().all(|&c| alphanumeric(c) || c == b'-')
}

/// Checks `a.b.c.d/n` or `v6::/n`.
/// Records `value` of the Mesh field `field` unless another Mesh document set it differently
/// (an error naming both places).
fn agree<T: PartialEq + std::fmt::Debug + Copy>(
    doc: &Doc,
    field: &str,
    value: T,
    set: &mut Option<(T, String)>,
    errors: &mut Vec<Diagnostic>,
) {
    match set {
        Some((first, at)) if *first != value => errors.push(doc.error(
            field,
            format!("{value:?} conflicts with {first:?} set at {at}"),
        )),
        Some(_) => {}
        None => *set = Some((value, doc.place(field))),
    }
}

pub(crate) fn parse_cidr(s: &str) -> Result<(), String> {
    let (ip, bits) = s.split_once('/').ok_or("no /prefix length")?;
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("{e}"))?;
    let bits: u8 = bits.parse().map_err(|e| format!("prefix length: {e}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(format!("prefix length {bits} > {max}"));
    }
    Ok(())
}
