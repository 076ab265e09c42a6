//! The admin listener: `/ready`, `/live`, `/config` (JSON), `/identity` (the certificate the
//! proxy holds, JSON), `/metrics` (Prometheus text), the app's own probes (`/app-health/…`,
//! see [`crate::app_health`]) and
//! `POST /shutdown` (drain and exit, as Linkerd's). Served off the data-plane threads, on
//! loopback. What acts or reveals requests (`POST /shutdown`, `GET /tap`) needs the mesh's
//! admin credential.

use crate::body::{self, Body};
use crate::readiness::Readiness;
use crate::server::Handler;
use crate::settings::Settings;
use crate::state::StateHandle;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use model::credential::Presented;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the admin listener reads, and the one thing it can do (ask for shutdown).
pub struct Admin {
    /// Who the proxy is.
    pub settings: Arc<Settings>,
    pub readiness: Arc<Readiness>,
    pub state: StateHandle,
    /// The proxy's mTLS credentials, once the CA has signed them.
    pub tls: Arc<crate::identity::Slot>,
    /// The proxy speaks mTLS (and so waits for a certificate before it serves).
    pub mtls: bool,
    pub edges: Arc<crate::edges::Edges>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub observe: Arc<crate::observe::Observe>,
    /// Cancelled by `POST /shutdown`.
    pub shutdown: CancellationToken,
}

fn text(status: StatusCode, s: impl Into<String>) -> Response<Body> {
    let mut rsp = Response::new(body::full(s.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

fn json(doc: &impl serde::Serialize) -> Response<Body> {
    let mut rsp = Response::new(body::full(
        serde_json::to_vec_pretty(doc).unwrap_or_default(),
    ));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

impl Admin {
    /// Why a call that acts or reveals requests (`POST /shutdown`, `GET /tap`) is refused: no
    /// credential (401), another one (403), or this proxy has none configured (403). Read-only
    /// endpoints stay open on loopback.
    fn refusal<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        let Some(token) = &self.settings.admin_token else {
            return Some(text(
                StatusCode::FORBIDDEN,
                format!(
                    "this proxy was started without an admin credential ({}); /tap and /shutdown are off\n",
                    model::names::ADMIN_TOKEN_ENV
                ),
            ));
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match model::credential::check(given, token) {
            Presented::Nothing => {
                let mut rsp = text(
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs the mesh's admin credential: Authorization: Bearer TOKEN\n",
                );
                rsp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"weft\""),
                );
                Some(rsp)
            }
            Presented::Wrong => Some(text(
                StatusCode::FORBIDDEN,
                "wrong credential for this proxy\n",
            )),
            Presented::Right => None,
        }
    }

    fn serve<B>(&self, req: &Request<B>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/ready") => match self.readiness.not_ready_reason() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            (&Method::GET, "/config") => {
                let state = self.state.load();
                let s = &self.settings;
                let doc = serde_json::json!({
                    "mode": s.mode.as_str(),
                    "service": s.service,
                    "namespace": s.namespace,
                    "workload": s.workload,
                    "instance": s.instance,
                    "identity": s.identity,
                    "labels": s.labels,
                    "ready": self.readiness.not_ready_reason().is_none(),
                    // The access log's format, `null` while it is off.
                    "access_log": self.observe.access_log.as_ref().map(|l| l.format().as_str()),
                    "version": state.version(),
                    // Where the snapshot in force came from: `control` (pushed on the stream),
                    // `persisted` (kept from the last run), `null` before the first.
                    "snapshot_source": state.source.map(|s| s.as_str()),
                    "snapshot": &*state.routes.snapshot,
                });
                json(&doc)
            }
            (&Method::GET, "/identity") => match self.tls.get() {
                Some(creds) => json(&crate::identity::describe(creds)),
                None if self.mtls => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no certificate from the mesh CA yet\n",
                ),
                None => text(
                    StatusCode::NOT_FOUND,
                    "this proxy runs without mTLS (the mesh has no CA)\n",
                ),
            },
            (&Method::GET, "/tap") => match self.refusal(req) {
                Some(refused) => refused,
                None => tap_stream(self, req.uri().query()),
            },
            (&Method::GET, "/routes") => {
                let doc = serde_json::json!({
                    "instance": self.settings.instance,
                    "services": self.state.load().routes.route_stats(),
                });
                json(&doc)
            }
            (&Method::GET, "/edges") => {
                let doc = serde_json::json!({
                    "instance": self.settings.instance,
                    "identity": self.settings.identity,
                    "edges": self.edges.list(),
                });
                json(&doc)
            }
            (&Method::GET, "/metrics") => {
                let mut rsp = text(StatusCode::OK, self.metrics.encode());
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                rsp
            }
            (&Method::POST, "/shutdown") => match self.refusal(req) {
                Some(refused) => refused,
                None => {
                    tracing::info!("shutdown requested through the admin endpoint");
                    self.shutdown.cancel();
                    text(StatusCode::ACCEPTED, "shutting down\n")
                }
            },
            (
                _,
                "/live" | "/ready" | "/config" | "/identity" | "/edges" | "/tap" | "/routes"
                | "/metrics"
                | "/shutdown",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /ready /live /config /identity /edges /tap /routes /metrics or POST /shutdown\n",
            ),
        }
    }
}

impl Handler for Admin {
    fn handle(
        self: Arc<Self>,
        req: Request<crate::body::RequestBody>,
        _peer: Arc<crate::server::PeerInfo>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        // The app's own probes are asked of the app; everything else is answered at once.
        let prober = (req.method() == Method::GET)
            .then(|| self.settings.app_probers.get(req.uri().path()).cloned())
            .flatten();
        let rsp = prober.is_none().then(|| self.serve(&req));
        async move {
            match (prober, rsp) {
                (Some(p), _) => match crate::app_health::probe(&p).await {
                    Ok(what) => text(StatusCode::OK, format!("{what}\n")),
                    Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                },
                (None, Some(rsp)) => rsp,
                (None, None) => text(StatusCode::INTERNAL_SERVER_ERROR, ""),
            }
        }
    }
}

/// Longest a `/tap` stream may run (`?seconds=`, default 30).
const MAX_TAP_SECONDS: u64 = 600;

/// `GET /tap?path=&method=&to=&direction=&seconds=`: the requests this proxy handles from now
/// on, one JSON object per line, for `seconds`. A watcher that falls behind gets a
/// `{"lost": N}` line instead of slowing anything down.
fn tap_stream(admin: &Admin, query: Option<&str>) -> Response<Body> {
    use http_body_util::BodyExt;
    let filter = crate::tap::Filter::from_query(query);
    let seconds = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "seconds")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(30)
        .min(MAX_TAP_SECONDS);
    let mut watch = admin.observe.tap.watch();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(seconds));
        tokio::pin!(deadline);
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                e = watch.rx.recv() => match e {
                    Ok(e) if filter.wants(&e) => serde_json::to_vec(&*e).unwrap_or_default(),
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        format!("{{\"lost\":{n}}}").into_bytes()
                    }
                    Err(_) => return,
                },
            };
            let mut line = line;
            line.push(b'\n');
            if tx.send(line.into()).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = http_body_util::StreamBody::new(futures::StreamExt::map(stream, |b| {
        Ok::<_, crate::body::BoxError>(hyper::body::Frame::data(b))
    }));
    let mut rsp = Response::new(body.boxed());
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    rsp
}
