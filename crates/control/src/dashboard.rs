//! The web dashboard, served by the control plane under `/dashboard/` (and on the listener
//! `--dashboard ADDR` opens): the service graph, golden metrics per service and version, live
//! tap, the routes in force, the resources and their errors, identities and rollouts.
//!
//! The pages are static files compiled into the binary (`dashboard/assets`: plain HTML,
//! JavaScript and CSS, with uPlot for the charts; no build step, nothing fetched from
//! elsewhere) that read the JSON under `/dashboard/api/`. That JSON comes from the proxies'
//! admin endpoints, as the CLI's `weft stat`, `weft edges` and `weft tap` read them: no
//! Prometheus needed. [`sampler`] reads every proxy's `/metrics` every 2 s while someone looks
//! (none at all otherwise); [`tap`] streams their `/tap` while the tap page is open.
//!
//! Access is the control-plane API's: with an admin credential, a browser opens the URL
//! `weft dashboard` prints (`/dashboard/?token=…`) once, which sets an HttpOnly, SameSite=Strict
//! cookie derived from the credential and redirects to the same page without the token; API
//! clients may send `Authorization: Bearer` instead. Requests naming a host other than an IP
//! address or `localhost` are refused (a page elsewhere cannot reach the dashboard by pointing
//! its own name at loopback).

pub mod sampler;
pub mod tap;

use crate::http_api::Api;
use crate::status::{Status, WorkloadStatus};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use model::credential::Presented;
use serde::Serialize;
use stat::Kind;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The cookie that stands for the credential once the token URL was opened.
const COOKIE: &str = "weft_dashboard";
/// Applies refused that the configuration page lists.
const KEEP_REFUSED: usize = 20;

/// The dashboard's state in the control plane.
#[derive(Default)]
pub struct Dashboard {
    pub sampler: Arc<sampler::Sampler>,
    pub tap: Arc<tap::TapFeed>,
    refused: Mutex<VecDeque<Refusal>>,
}

/// An apply or delete the control plane refused, with its errors (file and line each).
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    pub at_ms: u64,
    pub file: String,
    pub error: String,
}

impl Dashboard {
    /// Notes a refused change for the configuration page.
    pub fn refused(&self, file: &str, error: String) {
        let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        r.push_front(Refusal {
            at_ms: sampler::unix_ms(),
            file: file.into(),
            error,
        });
        r.truncate(KEEP_REFUSED);
    }

    fn refusals(&self) -> Vec<Refusal> {
        let r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().cloned().collect()
    }
}

/// Whether `path` is the dashboard's (its pages, its API, or `/`, which leads to it).
pub fn owns(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The session cookie's value for the credential `token`.
fn session(token: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("weft dashboard session\0{token}").as_bytes(),
    );
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query<B>(req: &Request<B>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Whether the Host header names an IP address or `localhost` (or is absent: HTTP/1.0).
fn local_host<B>(req: &Request<B>) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
    else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || name.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Why a dashboard request is refused, or the redirect that trades the token in the URL for
/// the cookie; `None`: it may go on. (`/` only redirects and is never refused.)
pub fn refusal<B>(api: &Api, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    if path == "/" {
        return None;
    }
    if !local_host(req) {
        return Some(text(
            StatusCode::FORBIDDEN,
            "the dashboard answers requests for an IP address or localhost only\n",
        ));
    }
    let token = api.admin_token.as_deref()?;
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if model::credential::check(bearer, token) == Presented::Right {
        return None;
    }
    let expected = session(token);
    if let Some(c) = cookie(req, COOKIE) {
        if model::credential::check(Some(&format!("Bearer {c}")), &expected) == Presented::Right {
            return None;
        }
    }
    if let Some(given) = query(req, "token") {
        if model::credential::check(Some(&format!("Bearer {given}")), token) == Presented::Right {
            let mut rsp = text(StatusCode::SEE_OTHER, "signed in\n");
            let h = rsp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(path) {
                h.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={expected}; Path=/dashboard; HttpOnly; SameSite=Strict"
            )) {
                h.insert(header::SET_COOKIE, v);
            }
            return Some(rsp);
        }
        return Some(page(
            StatusCode::FORBIDDEN,
            "Wrong token for this mesh. Open the URL <code>weft dashboard</code> prints.",
        ));
    }
    Some(page(
        StatusCode::UNAUTHORIZED,
        "This dashboard needs the mesh's admin credential. Open the URL <code>weft dashboard</code> prints (it carries a token once; a cookie keeps you signed in).",
    ))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
    *rsp.status_mut() = status;
    rsp
}

fn page(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>weft dashboard</title><body><main><h1>weft dashboard</h1><p>{message}</p></main></body></html>\n"
    );
    let mut rsp = Response::new(Full::new(Bytes::from(html)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    rsp
}

fn json<T: Serialize>(v: &T) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    let h = rsp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rsp
}

/// The files of the pages, compiled in.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("dashboard/assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard/assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("dashboard/assets/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard/assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("dashboard/assets/uPlot.min.css"),
    ),
    (
        "LICENSE-uPlot.txt",
        "text/plain; charset=utf-8",
        include_bytes!("dashboard/assets/LICENSE-uPlot.txt"),
    ),
];

fn asset(name: &str) -> Option<Response<Full<Bytes>>> {
    let (_, kind, body) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut rsp = Response::new(Full::new(Bytes::from_static(body)));
    let h = rsp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Some(rsp)
}

/// Serves a dashboard request (already allowed by [`refusal`]).
pub async fn serve<B>(api: &Arc<Api>, req: Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/" || path == "/dashboard" {
        let mut rsp = text(StatusCode::SEE_OTHER, "see /dashboard/\n");
        rsp.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/dashboard/"));
        return rsp;
    }
    let rest = &path["/dashboard/".len()..];
    if req.method() == Method::POST {
        // The canary buttons: the same actions as `POST /canaries/NS/NAME/ACTION`.
        if let Some(action) = rest.strip_prefix("api/canaries/") {
            return api.canary_action(&format!("/canaries/{action}")).await;
        }
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let dash = &api.dashboard;
    match rest {
        "" => asset("index.html").unwrap_or_else(|| text(StatusCode::NOT_FOUND, "")),
        "api/overview" => {
            dash.sampler.touch(api);
            let by = match query(&req, "by").as_deref() {
                Some("workload") => Kind::Workload,
                _ => Kind::Service,
            };
            json(&overview(api, by))
        }
        "api/service" => {
            dash.sampler.touch(api);
            let ns = query(&req, "namespace").unwrap_or_else(|| "default".into());
            let name = query(&req, "name").unwrap_or_default();
            match service_page(api, &ns, &name) {
                Some(doc) => json(&doc),
                None => text(StatusCode::NOT_FOUND, "no such service\n"),
            }
        }
        "api/tap" => {
            let after = query(&req, "after")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            json(&dash.tap.poll(api, after, 200))
        }
        "api/config" => json(&config_page(api)),
        "api/identities" => json(&identities(api).await),
        "api/canaries" => json(&crate::canary::views(&api.resources.current())),
        name => asset(name).unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

/// The graph node a caller belongs to: its service's (`NAMESPACE/SERVICE`; by
/// [`Kind::Workload`], its workload's) when it is a replica of the mesh, `outside` for a
/// caller without a mesh identity, else its own workload (`client:NAMESPACE/WORKLOAD`: the
/// ingress gateway, `weft exec`).
pub fn caller(
    kind: Kind,
    workloads: &[WorkloadStatus],
    ns: &str,
    workload: &str,
    principal: &str,
) -> String {
    if let Some(w) = workloads
        .iter()
        .find(|w| w.namespace == ns && w.workload == workload)
    {
        let name = match kind {
            Kind::Service => &w.service,
            Kind::Workload => &w.workload,
        };
        return format!("{}/{name}", w.namespace);
    }
    if matches!(principal, "" | "unknown") {
        return "outside".into();
    }
    format!("client:{ns}/{workload}")
}

/// How healthy a success rate is: `healthy` from 99%, `degraded` from 95%, else `failing`;
/// `idle` without requests. Shown as text as well as colour.
fn health(success: Option<f64>) -> &'static str {
    match success {
        None => "idle",
        Some(s) if s >= 0.99 => "healthy",
        Some(s) if s >= 0.95 => "degraded",
        Some(_) => "failing",
    }
}

#[derive(Serialize)]
struct Node {
    id: String,
    /// `service` (or `workload`, in the graph by workload), `gateway` (the ingress gateway), `client` (another workload that is no
    /// service's replica: a `weft exec`) or `outside` (callers without a mesh identity). For
    /// all but services the numbers are what they send.
    kind: &'static str,
    namespace: String,
    name: String,
    /// The service whose page the node links to (empty for callers that are no replica).
    service: String,
    principal: String,
    workloads: Vec<String>,
    replicas: usize,
    ready: usize,
    rps: f64,
    success_rate: Option<f64>,
    p99_ms: Option<f64>,
    health: &'static str,
}

impl Node {
    /// A node without replicas or traffic yet.
    fn idle(id: String, kind: &'static str, namespace: &str, name: &str, principal: &str) -> Node {
        Node {
            id,
            kind,
            namespace: namespace.into(),
            name: name.into(),
            service: String::new(),
            principal: principal.into(),
            workloads: Vec::new(),
            replicas: 0,
            ready: 0,
            rps: 0.0,
            success_rate: None,
            p99_ms: None,
            health: "idle",
        }
    }
}

#[derive(Serialize)]
struct Edge {
    src: String,
    dst: String,
    src_principal: String,
    dst_principal: String,
    requests: u64,
    rps: f64,
    success_rate: Option<f64>,
    p99_ms: Option<f64>,
    /// Every request of the window came over mutual TLS.
    mtls: bool,
    mtls_share: Option<f64>,
    health: &'static str,
}

#[derive(Serialize)]
struct Overview {
    mesh: String,
    trust_domain: String,
    /// The window the numbers cover (0 until the proxies were read twice).
    window_s: f64,
    /// The proxies are being read (they are, while the dashboard is open).
    sampling: bool,
    prometheus: String,
    ready: bool,
    pending: Vec<String>,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    canaries: Vec<crate::canary::View>,
    /// Resources refused or rejected (shown as a warning on every page).
    problems: usize,
}

fn status(api: &Api) -> Status {
    crate::status::build(&api.registry, api.control, api.api)
}

/// The graph with a node per service, or (by `Kind::Workload`) per workload.
fn overview(api: &Api, by: Kind) -> Overview {
    let st = status(api);
    let window = api.dashboard.sampler.window();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let (kind, rows, window_edges) = match by {
        Kind::Service => ("service", &window.services, &window.edges),
        Kind::Workload => ("workload", &window.workloads, &window.workload_edges),
    };
    for w in &st.workloads {
        let name = match by {
            Kind::Service => &w.service,
            Kind::Workload => &w.workload,
        };
        let id = format!("{}/{name}", w.namespace);
        let n = nodes.entry(id.clone()).or_insert_with(|| {
            let mut n = Node::idle(id, kind, &w.namespace, name, &w.identity);
            n.service = w.service.clone();
            n
        });
        if !n.workloads.contains(&w.workload) {
            n.workloads.push(w.workload.clone());
        }
        n.replicas += 1;
        n.ready += usize::from(w.ready);
    }
    for r in rows {
        if let Some(n) = nodes.get_mut(&format!("{}/{}", r.namespace, r.name)) {
            n.rps = r.rps;
            n.success_rate = r.success_rate;
            n.p99_ms = r.latency_ms.as_ref().map(|l| l.p99);
            n.health = health(r.success_rate);
        }
    }
    let mut edges = Vec::new();
    for e in window_edges {
        let dst = format!("{}/{}", e.dst_namespace, e.dst_name);
        for (id, principal) in [(&e.src, &e.src_principal), (&dst, &e.dst_principal)] {
            if nodes.contains_key(id) {
                continue;
            }
            let (kind, namespace, name) = if id == "outside" {
                ("outside", String::new(), "outside the mesh".to_string())
            } else {
                let bare = id.strip_prefix("client:").unwrap_or(id);
                let (ns, name) = bare.split_once('/').unwrap_or(("", bare));
                let kind = if !id.starts_with("client:") {
                    kind
                } else if name == crate::hosts::INGRESS_NAME {
                    "gateway"
                } else {
                    "client"
                };
                (kind, ns.to_string(), name.to_string())
            };
            nodes.insert(
                id.clone(),
                Node::idle(id.clone(), kind, &namespace, &name, principal),
            );
        }
        edges.push(Edge {
            src: e.src.clone(),
            dst,
            src_principal: e.src_principal.clone(),
            dst_principal: e.dst_principal.clone(),
            requests: e.requests,
            rps: e.rps,
            success_rate: e.success_rate,
            p99_ms: e.latency_ms.as_ref().map(|l| l.p99),
            mtls: e.mtls_share.is_some_and(|s| s >= 1.0 - 1e-9),
            mtls_share: e.mtls_share,
            health: health(e.success_rate),
        });
    }
    // Callers that are no service show what they send.
    for n in nodes.values_mut().filter(|n| n.service.is_empty()) {
        let out: Vec<&Edge> = edges.iter().filter(|e| e.src == n.id).collect();
        let requests: u64 = out.iter().map(|e| e.requests).sum();
        n.rps = out.iter().map(|e| e.rps).sum();
        n.success_rate = (requests > 0).then(|| {
            let ok: f64 = out
                .iter()
                .map(|e| e.success_rate.unwrap_or(1.0) * e.requests as f64)
                .sum();
            ok / requests as f64
        });
        n.health = health(n.success_rate);
    }
    let (canaries, problems) = rollouts_and_problems(api);
    Overview {
        mesh: st.mesh.clone(),
        trust_domain: st.trust_domain.clone(),
        window_s: window.secs,
        sampling: api.dashboard.sampler.running(),
        prometheus: st.prometheus.clone(),
        ready: st.ready,
        pending: st.pending.clone(),
        nodes: nodes.into_values().collect(),
        edges,
        canaries,
        problems,
    }
}

/// The rollouts in force, and how many problems the configuration has (resources rejected in
/// force plus recent refused changes), from one load of the resources.
fn rollouts_and_problems(api: &Api) -> (Vec<crate::canary::View>, usize) {
    let store = api.resources.current();
    let loaded = store.load();
    let rejected = crate::store::stated_as_loaded(&store, &loaded)
        .iter()
        .filter(|s| s.state == crate::store::State::Rejected)
        .count();
    let canaries = match &loaded {
        Ok(l) => crate::canary::views_of(&store, l),
        Err(_) => Vec::new(),
    };
    (canaries, rejected + api.dashboard.refusals().len())
}

/// One version's (workload's) series over the history.
#[derive(Serialize, Default)]
struct Series {
    rps: Vec<Option<f64>>,
    success_rate: Vec<Option<f64>>,
    p50_ms: Vec<Option<f64>>,
    p95_ms: Vec<Option<f64>>,
    p99_ms: Vec<Option<f64>>,
}

impl Series {
    fn push(&mut self, r: Option<&stat::StatRow>) {
        let l = r.and_then(|r| r.latency_ms.as_ref());
        self.rps.push(r.map(|r| r.rps));
        self.success_rate.push(r.and_then(|r| r.success_rate));
        self.p50_ms.push(l.map(|l| l.p50));
        self.p95_ms.push(l.map(|l| l.p95));
        self.p99_ms.push(l.map(|l| l.p99));
    }
}

#[derive(Serialize)]
struct ServicePage {
    namespace: String,
    name: String,
    window_s: f64,
    /// The service over the current window (`weft stat`'s row).
    row: Option<stat::StatRow>,
    /// Each workload (version) over the current window.
    workloads: Vec<stat::StatRow>,
    replicas: Vec<WorkloadStatus>,
    /// The history: times (s since the epoch) and, per workload and for the service, series.
    t: Vec<f64>,
    series: BTreeMap<String, Series>,
    /// What `weft routes` prints for it.
    routes: String,
    /// The resources about it (named after it, or whose errors and warnings name it), with
    /// their state and located errors and warnings.
    resources: Vec<crate::store::Stated>,
    /// Its callers and callees over the current window.
    edges: Vec<stat::EdgeRow>,
    prometheus: Option<String>,
}

fn service_page(api: &Api, ns: &str, name: &str) -> Option<ServicePage> {
    let st = status(api);
    let replicas: Vec<WorkloadStatus> = st
        .workloads
        .iter()
        .filter(|w| w.namespace == ns && w.service == name)
        .cloned()
        .collect();
    if replicas.is_empty() {
        return None;
    }
    let mut workloads: Vec<String> = replicas.iter().map(|w| w.workload.clone()).collect();
    workloads.dedup();
    let window = api.dashboard.sampler.window();
    let points = api.dashboard.sampler.points();
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let mut t = Vec::with_capacity(points.len());
    for p in &points {
        t.push(p.t_ms as f64 / 1000.0);
        let svc = p
            .services
            .iter()
            .find(|r| r.namespace == ns && r.name == name);
        series
            .entry(format!("service {name}"))
            .or_default()
            .push(svc);
        for w in &workloads {
            let r = p
                .workloads
                .iter()
                .find(|r| r.namespace == ns && &r.name == w);
            series.entry(w.clone()).or_default().push(r);
        }
    }
    let snapshot = api.registry.snapshot();
    let key = model::ServiceKey {
        namespace: ns.into(),
        name: name.into(),
    };
    let routes = crate::route_table::service(&snapshot, &key, "the control plane")
        .unwrap_or_else(|| format!("{key}: not in the snapshot in force\n"));
    let me = format!("{ns}/{name}");
    let prometheus = Some(st.prometheus.clone())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let q = format!(
                "sum by (destination_workload) (rate(istio_requests_total{{reporter=\"destination\",destination_service_name=\"{name}\",destination_service_namespace=\"{ns}\"}}[1m]))"
            );
            let q: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
            format!("{}/graph?g0.expr={q}&g0.tab=0", p.trim_end_matches('/'))
        });
    Some(ServicePage {
        namespace: ns.into(),
        name: name.into(),
        window_s: window.secs,
        row: window
            .services
            .iter()
            .find(|r| r.namespace == ns && r.name == name)
            .cloned(),
        workloads: window
            .workloads
            .iter()
            .filter(|r| r.namespace == ns && r.service == name)
            .cloned()
            .collect(),
        replicas,
        t,
        series,
        routes,
        resources: api
            .resources
            .stated()
            .into_iter()
            .filter(|s| about(s, ns, name))
            .collect(),
        edges: window
            .edges
            .iter()
            .filter(|e| e.src == me || (e.dst_namespace == ns && e.dst_name == name))
            .cloned()
            .collect(),
        prometheus,
    })
}

/// Whether a resource is about service `ns/name`: it is named after it, or one of its errors
/// or warnings names the service (`name.ns`, its FQDN, or `name` as a word).
fn about(s: &crate::store::Stated, ns: &str, name: &str) -> bool {
    if s.resource.namespace == ns && s.resource.name == name {
        return true;
    }
    let qualified = format!("{name}.{ns}");
    let word = |t: &str| {
        t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .any(|w| w == name || w == qualified || w.starts_with(&format!("{qualified}.")))
    };
    s.reasons.iter().chain(&s.warnings).any(|t| word(t))
}

#[derive(Serialize)]
struct ConfigPage {
    resources: Vec<crate::store::Stated>,
    refused: Vec<Refusal>,
    nacks: Vec<crate::status::Nack>,
    ingress_routes: String,
}

fn config_page(api: &Api) -> ConfigPage {
    let st = status(api);
    ConfigPage {
        resources: api.resources.stated(),
        refused: api.dashboard.refusals(),
        nacks: st.nacks,
        ingress_routes: crate::route_table::gateway(&api.registry.snapshot()),
    }
}

#[derive(Serialize)]
struct IdentityRow {
    instance: String,
    service: String,
    namespace: String,
    workload: String,
    identity: String,
    not_after: String,
    renew_at: String,
    /// Seconds until the certificate expires (negative: expired).
    expires_in_s: Option<i64>,
    error: Option<String>,
}

/// Every proxy's certificate, read from its admin `/identity`.
async fn identities(api: &Api) -> Vec<IdentityRow> {
    let st = status(api);
    let mut proxies: Vec<(String, String, String, String, String)> = st
        .workloads
        .iter()
        .filter(|w| !w.admin.is_empty())
        .map(|w| {
            (
                w.instance.clone(),
                w.service.clone(),
                w.namespace.clone(),
                w.workload.clone(),
                w.admin.clone(),
            )
        })
        .collect();
    if !st.ingress_admin.is_empty() {
        proxies.push((
            "ingress".into(),
            "ingress gateway".into(),
            String::new(),
            String::new(),
            st.ingress_admin.clone(),
        ));
    }
    let client = crate::proxy_admin::client();
    let now = time::OffsetDateTime::now_utc();
    let reads = proxies
        .into_iter()
        .map(|(instance, service, namespace, workload, admin)| {
            let client = client.clone();
            async move {
                let got = read_json(&client, &format!("http://{admin}/identity")).await;
                let (doc, error) = match got {
                    Ok(d) => (d, None),
                    Err(e) => (serde_json::Value::Null, Some(e)),
                };
                let s = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
                let not_after = s("not_after");
                let expires_in_s = time::OffsetDateTime::parse(
                    &not_after,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
                .map(|t| (t - now).whole_seconds());
                IdentityRow {
                    instance,
                    service,
                    namespace,
                    workload,
                    identity: s("identity"),
                    not_after,
                    renew_at: s("renew_at"),
                    expires_in_s,
                    error,
                }
            }
        });
    futures::future::join_all(reads).await
}

async fn read_json(
    client: &crate::proxy_admin::Client,
    url: &str,
) -> Result<serde_json::Value, String> {
    let (status, body) =
        crate::proxy_admin::get(client, url, std::time::Duration::from_secs(2)).await?;
    if !status.is_success() {
        return Err(String::from_utf8_lossy(&body).trim().to_string());
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_addresses_and_localhost_are_served() {
        let req = |host: &str| {
            Request::get("/dashboard/")
                .header("host", host)
                .body(())
                .unwrap()
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost:1",
            "[::1]:9",
            "10.0.0.1",
            "LOCALHOST",
        ] {
            assert!(local_host(&req(ok)), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:80",
        ] {
            assert!(!local_host(&req(bad)), "{bad}");
        }
    }

    #[test]
    fn callers_map_to_their_service_outside_or_their_own_node() {
        let w = |ns: &str, svc: &str, wl: &str| WorkloadStatus {
            service: svc.into(),
            namespace: ns.into(),
            workload: wl.into(),
            ..serde_json::from_value(serde_json::json!({
                "service": "", "namespace": "", "workload": "", "instance": "", "labels": {},
                "app": "", "inbound": "", "outbound": "", "admin": "", "identity": "",
                "ready": true, "state": "ready", "reason": "", "pid": 0, "config_version": 0
            }))
            .unwrap()
        };
        let all = [
            w("shop", "order", "order-v1"),
            w("shop", "order", "order-v2"),
        ];
        let svc = |ns: &str, wl: &str, p: &str| caller(Kind::Service, &all, ns, wl, p);
        assert_eq!(svc("shop", "order-v2", "spiffe://x"), "shop/order");
        assert_eq!(
            caller(Kind::Workload, &all, "shop", "order-v2", "spiffe://x"),
            "shop/order-v2"
        );
        assert_eq!(svc("shop", "unknown", "unknown"), "outside");
        assert_eq!(
            svc(
                "istio-system",
                "istio-ingressgateway",
                "spiffe://td/ns/istio-system/sa/ingress"
            ),
            "client:istio-system/istio-ingressgateway"
        );
    }

    #[test]
    fn health_is_named_by_success_rate() {
        assert_eq!(health(None), "idle");
        assert_eq!(health(Some(1.0)), "healthy");
        assert_eq!(health(Some(0.97)), "degraded");
        assert_eq!(health(Some(0.5)), "failing");
    }

    #[test]
    fn resources_about_a_service_are_named_after_it_or_name_it() {
        let stated = |name: &str, warning: &str| crate::store::Stated {
            resource: config::Resource {
                kind: "VirtualService".into(),
                api_version: "networking.istio.io/v1".into(),
                namespace: "shop".into(),
                name: name.into(),
                file: "routes.yaml".into(),
                first_line: 1,
                text: String::new(),
            },
            state: crate::store::State::Applied,
            reasons: Vec::new(),
            warnings: vec![warning.to_string()],
        };
        assert!(about(&stated("order", ""), "shop", "order"));
        assert!(about(
            &stated("x", "routes.yaml:3:1: host order.shop overridden"),
            "shop",
            "order"
        ));
        assert!(about(
            &stated("x", "host order.shop.svc.cluster.local"),
            "shop",
            "order"
        ));
        assert!(about(
            &stated("x", "service order has no port 81"),
            "shop",
            "order"
        ));
        assert!(!about(
            &stated("x", "service orders has none"),
            "shop",
            "order"
        ));
        assert!(!about(&stated("order", ""), "other", "order"));
    }

    #[test]
    fn the_session_cookie_is_not_the_token() {
        let s = session("secret");
        assert_eq!(s.len(), 64);
        assert!(!s.contains("secret"));
        assert_eq!(s, session("secret"));
        assert_ne!(s, session("other"));
    }

    #[test]
    fn every_asset_is_small_enough() {
        let total: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
        assert!(total < 500 * 1024, "the pages weigh {total} bytes");
    }
}
