//! The control plane's JSON API, read by the CLI: `GET /status`, `GET /snapshot`, `GET /healthz`,
//! `GET /resources`, and `POST /apply` / `POST /delete` with `{file, yaml}` (as `kubectl apply` /
//! `delete`: by kind, namespace and name; the whole set is validated, and the snapshot it would
//! produce decoded as the proxies decode it, before it replaces the one in force, so a bad
//! document changes nothing: an applied resource that would be rejected, or that the proxies
//! would refuse, gets 422 with its errors; rejections of other resources are only reported). The
//! answer waits for every proxy's answer to the new snapshot: 200 once all of them run it, 202
//! when some refused it (named, with their error) or had not answered within 5 s.

use crate::registry::Registry;
use crate::status;
use crate::store::Changed;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use model::credential::Presented;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Api {
    pub registry: Arc<Registry>,
    pub control: SocketAddr,
    pub api: SocketAddr,
    /// The resources in force, and the one way they change.
    pub resources: crate::store::Resources,
    /// Mints join tokens for `POST /join` (local CLI tools that run a proxy, like `weft exec`).
    pub ca: Option<Arc<crate::ca::Ca>>,
    /// The operator's credential: every call but `/healthz` must carry it
    /// (`Authorization: Bearer TOKEN`); `None`: the API is open (embedded, tests).
    pub admin_token: Option<String>,
    /// Joined hosts (`/hosts/…`).
    pub hosts: Arc<crate::hosts::Hosts>,
    /// The store shared with other replicas, if any (their addresses, for hosts).
    pub store: Option<crate::etcd::Etcd>,
    /// The web dashboard's history, tap feed and recent refusals.
    pub dashboard: crate::dashboard::Dashboard,
}

/// What `POST /apply` and `POST /delete` carry: YAML documents and the file they came from.
#[derive(serde::Deserialize)]
struct ChangeBody {
    #[serde(default = "stdin")]
    file: String,
    yaml: String,
}

fn stdin() -> String {
    "<stdin>".into()
}

impl Api {
    /// Refuses a call without the operator's credential (401), with another one (403), or a
    /// mutating call whose body is not JSON (415: what a web page may send across origins
    /// without asking first is text or a form, never JSON).
    ///
    /// With a CA, a plaintext call from anywhere but this machine's loopback is refused (426):
    /// other machines speak TLS, and an operator's client certificate ([`Identity::operator`])
    /// stands for the credential. The trust bundle (`GET /ca/bundle`, what a host checks against
    /// its token's pin before it trusts the API) and `/healthz` are open to all.
    ///
    /// [`Identity::operator`]: model::Identity::operator
    fn refusal<B>(
        &self,
        req: &Request<B>,
        peer: &crate::listener::Peer,
    ) -> Option<Response<Full<Bytes>>> {
        let path = req.uri().path();
        // A host authenticates with its bootstrap token (join) or its own credential.
        let host_call = path.starts_with("/hosts/") && path != "/hosts/tokens";
        if path == "/healthz" || (req.method() == Method::GET && path == "/ca/bundle") {
            return None;
        }
        let local = peer.remote.is_some_and(|a| a.ip().is_loopback());
        if self.ca.is_some() && !peer.tls && !local {
            return Some(text(
                StatusCode::UPGRADE_REQUIRED,
                format!(
                    "this API speaks HTTPS to other machines (TLS with the control plane's certificate of the mesh CA); plain HTTP only from this machine's loopback: https://{}{path}\n",
                    self.api
                ),
            ));
        }
        // The dashboard signs browsers in with a cookie (or takes the credential as here).
        let dashboard = crate::dashboard::owns(path);
        if dashboard {
            if let Some(refused) = crate::dashboard::refusal(self, req) {
                return Some(refused);
            }
        }
        let operator = match (&self.ca, &peer.identity) {
            (Some(ca), Some(id)) => id.operator_name(&ca.config().trust_domain).is_some(),
            _ => false,
        };
        if let (Some(token), false, false, false) =
            (&self.admin_token, host_call, operator, dashboard)
        {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match model::credential::check(given, token) {
                Presented::Nothing => {
                    let mut rsp = text(
                        StatusCode::UNAUTHORIZED,
                        "this API needs the mesh's admin credential: Authorization: Bearer TOKEN (the CLI reads it from $WEFT_HOME)\n".into(),
                    );
                    rsp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"weft\""),
                    );
                    return Some(rsp);
                }
                Presented::Wrong => {
                    return Some(text(
                        StatusCode::FORBIDDEN,
                        "wrong credential for this mesh's API\n".into(),
                    ))
                }
                Presented::Right => {}
            }
        }
        if req.method() == Method::POST {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("application/json"));
            if !json {
                return Some(text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "POST bodies are JSON: Content-Type: application/json\n".into(),
                ));
            }
        }
        None
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp
}

pub(crate) fn text_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    text(status, body)
}

pub(crate) fn json_response<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    json(v)
}

/// How long `apply` waits for every proxy to run the new snapshot before answering anyway.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest configuration document set one request may carry.
const MAX_APPLY_BYTES: usize = 8 << 20;

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

impl Api {
    async fn change(&self, req: Request<Incoming>, delete: bool) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let body = match http_body_util::Limited::new(req.into_body(), MAX_APPLY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}\n"),
                )
            }
        };
        let ChangeBody { file, yaml } = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"file\": ..., \"yaml\": ...}}: {e}\n"),
                )
            }
        };
        let body = yaml.as_str();
        let new = config::resources(std::path::Path::new(&file), body);
        // Over a shared store the Mesh document is how an operator scales and places replicas
        // (joined hosts follow it); the mesh's name stays. Elsewhere `weft up` owns it.
        let mesh_name = self.registry.spec().name;
        let changeable =
            |m: &config::Resource| self.store.is_some() && !delete && m.name == mesh_name;
        if let Some(m) = new.iter().find(|r| r.kind == "Mesh" && !changeable(r)) {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{}:{}: kind Mesh ({}) cannot be changed in a running mesh; restart `weft up` with the new file\n",
                    m.file.display(),
                    m.first_line,
                    m.name
                ),
            );
        }
        let started = std::time::Instant::now();
        let changed = if delete {
            self.resources.change(&new, Vec::new()).await
        } else {
            self.resources.change(&[], new.clone()).await
        };
        match changed {
            Err(refused) => {
                let error = refused.to_string();
                self.dashboard.refused(&file, error.clone());
                text(StatusCode::UNPROCESSABLE_ENTITY, format!("{error}\n"))
            }
            Ok(Changed { loaded, version }) => {
                // Answer once every proxy has answered the new snapshot, so scripts can rely on
                // a 200 meaning every proxy runs it.
                let answers = self.registry.wait_applied(version, APPLY_WAIT).await;
                let verb = if delete { "deleted" } else { "configured" };
                let mut out: String = new
                    .iter()
                    .map(|r| format!("{} {}/{} {verb}\n", r.kind, r.namespace, r.name))
                    .collect();
                out.push_str(&applied_lines(version, &answers, started.elapsed()));
                for w in &loaded.unsupported {
                    out.push_str(&format!("warning: {w}\n"));
                }
                for d in &loaded.rejected {
                    out.push_str(&format!("error: {d} (rejected: not in force)\n"));
                }
                let status = if answers.all_applied() {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                };
                text(status, out)
            }
        }
    }

    /// `POST /canaries/NAMESPACE/NAME/ACTION` (pause, resume, abort, promote): the rollout's
    /// state once the action is in force.
    pub(crate) async fn canary_action(&self, path: &str) -> Response<Full<Bytes>> {
        use crate::canary::{act, Action, ActionError};
        let parts: Vec<&str> = path["/canaries/".len()..].split('/').collect();
        let [ns, name, action] = parts.as_slice() else {
            return text(
                StatusCode::NOT_FOUND,
                "POST /canaries/NAMESPACE/NAME/pause|resume|abort|promote\n".into(),
            );
        };
        let Some(action) = Action::parse(action) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("no action {action:?}: pause, resume, abort or promote\n"),
            );
        };
        match act(self, ns, name, action).await {
            Ok(state) => json(&state),
            Err(e @ ActionError::NoSuch(_)) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
            Err(e) => text(StatusCode::CONFLICT, format!("{e}\n")),
        }
    }

    /// `GET /status`, with the shared store's replicas and members' health when there is one.
    async fn status(&self) -> Response<Full<Bytes>> {
        let mut st = status::build(&self.registry, self.control, self.api);
        if let Some(store) = &self.store {
            st.store = Some(status::StoreStatus {
                kind: "etcd".into(),
                replica: store.replica.clone(),
                replicas: store.replicas().await.unwrap_or_default(),
                members: store.health().await,
            });
        }
        json(&st)
    }

    fn serve(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/status") => {
                json(&status::build(&self.registry, self.control, self.api))
            }
            (&Method::GET, "/snapshot") => json(&*self.registry.snapshot()),
            (&Method::GET, "/resources") => json(&self.resources.stated()),
            (&Method::GET, "/prometheus/targets") => json(&crate::scrape_targets::targets(
                &self.registry.spec().name,
                &self.registry.proxies(),
            )),
            (&Method::GET, "/canaries") => json(&crate::canary::views(&self.resources.current())),
            (&Method::GET, "/healthz") => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
            // The mesh's trust anchors, for a proxy started by hand (`--trust-anchors-file`).
            (&Method::GET, "/ca/bundle") => match &self.ca {
                Some(ca) => text(StatusCode::OK, ca.bundle_pem()),
                None => text(StatusCode::NOT_FOUND, "this mesh runs no CA\n".into()),
            },
            _ => {
                let mut rsp = Response::new(Full::new(Bytes::from_static(
                    b"not found; try GET /status or /snapshot\n",
                )));
                *rsp.status_mut() = StatusCode::NOT_FOUND;
                rsp
            }
        }
    }
}

/// What the proxies made of snapshot `version`: one line when every one runs it, else a line
/// per proxy that refused it (with its error) or had not answered within [`APPLY_WAIT`].
pub fn applied_lines(
    version: u64,
    answers: &crate::registry::Answers,
    took: std::time::Duration,
) -> String {
    if answers.all_applied() {
        return format!(
            "snapshot {version} applied by all {} proxies in {} ms\n",
            answers.proxies,
            took.as_millis()
        );
    }
    let mut out = String::new();
    for r in &answers.refused {
        out.push_str(&format!("error: {r}\n"));
    }
    for (proxy, runs) in &answers.silent {
        out.push_str(&format!(
            "error: {proxy} has not applied snapshot {version} after {APPLY_WAIT:?} (it runs snapshot {runs})\n"
        ));
    }
    let ran = answers.proxies - answers.refused.len() - answers.silent.len();
    out.push_str(&format!(
        "error: snapshot {version} is in force at the control plane, but only {ran} of {} proxies run it\n",
        answers.proxies
    ));
    out
}

/// Whether `r`'s own errors reject it. (Kinds that several API groups share, like Linkerd's
/// `HTTPRoute`, are labelled `KIND.GROUP`.)
pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    use tokio_stream::StreamExt;
    // With a CA the API speaks TLS too (the control plane's certificate; an operator may
    // present one of theirs); plaintext is for this machine's loopback alone.
    let tls = api
        .ca
        .clone()
        .map(|ca| Arc::new(crate::listener::ServerTls::for_api(ca)));
    let mut incoming = crate::listener::incoming(listener, tls, shutdown.clone());
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = incoming.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let peer = Arc::new(stream.peer().clone());
        let api = api.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let api = api.clone();
                let peer = peer.clone();
                async move {
                    if let Some(refused) = api.refusal(&req, &peer) {
                        return Ok::<_, Infallible>(refused);
                    }
                    let rsp = match (req.method(), req.uri().path()) {
                        (_, path) if crate::dashboard::owns(path) => {
                            crate::dashboard::serve(&api, req).await
                        }
                        (&Method::POST, "/apply") => api.change(req, false).await,
                        (&Method::POST, "/delete") => api.change(req, true).await,
                        (&Method::POST, "/join") => api.join(req).await,
                        (&Method::GET, "/status") => api.status().await,
                        (&Method::POST, path) if path.starts_with("/canaries/") => {
                            let path = path.to_string();
                            api.canary_action(&path).await
                        }
                        (_, path) if path == "/hosts" || path.starts_with("/hosts/") => {
                            api.hosts_request(req).await
                        }
                        (&Method::POST, "/ca/operator") => api.operator_request(req).await,
                        (&Method::POST, path) if path.starts_with("/ca/") => {
                            let step = path["/ca/".len()..].to_string();
                            api.ca_request(&step, req).await
                        }
                        _ => api.serve(&req),
                    };
                    Ok::<_, Infallible>(rsp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
