//! The admin listener: `/ready`, `/live`, `/config` (JSON), `/identity` (the certificate the
//! proxy holds, JSON), `/metrics` (Prometheus text) and
//! `POST /shutdown` (drain and exit, as Linkerd's). Served off the data-plane threads.

use crate::body::{self, Body};
use crate::run::Shared;
use crate::server::Handler;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Admin {
    pub shared: Arc<Shared>,
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

impl Admin {
    fn serve(&self, req: &Request<Incoming>) -> Response<Body> {
        let shared = &self.shared;
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/ready") => match shared.not_ready_reason() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            (&Method::GET, "/config") => {
                let table = shared.table.load();
                let s = &shared.settings;
                let doc = serde_json::json!({
                    "mode": s.mode.as_str(),
                    "service": s.service,
                    "namespace": s.namespace,
                    "workload": s.workload,
                    "instance": s.instance,
                    "identity": s.identity,
                    "labels": s.labels,
                    "ready": shared.not_ready_reason().is_none(),
                    "version": table.version(),
                    "snapshot": &*table.snapshot,
                });
                let mut rsp = Response::new(body::full(
                    serde_json::to_vec_pretty(&doc).unwrap_or_default(),
                ));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                rsp
            }
            (&Method::GET, "/identity") => match shared.tls.get() {
                Some(creds) => {
                    let doc = crate::identity::describe(creds);
                    let mut rsp = Response::new(body::full(
                        serde_json::to_vec_pretty(&doc).unwrap_or_default(),
                    ));
                    rsp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    rsp
                }
                None if shared.settings.join_token.is_some() => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no certificate from the mesh CA yet\n",
                ),
                None => text(
                    StatusCode::NOT_FOUND,
                    "this proxy runs without mTLS (the mesh has no CA)\n",
                ),
            },
            (&Method::GET, "/edges") => {
                let doc = serde_json::json!({
                    "instance": shared.settings.instance,
                    "identity": shared.settings.identity,
                    "edges": shared.edges.list(),
                });
                let mut rsp = Response::new(body::full(
                    serde_json::to_vec_pretty(&doc).unwrap_or_default(),
                ));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                rsp
            }
            (&Method::GET, "/metrics") => {
                let mut rsp = text(StatusCode::OK, shared.metrics.encode());
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                rsp
            }
            (&Method::POST, "/shutdown") => {
                tracing::info!("shutdown requested through the admin endpoint");
                shared.shutdown.cancel();
                text(StatusCode::ACCEPTED, "shutting down\n")
            }
            (
                _,
                "/live" | "/ready" | "/config" | "/identity" | "/edges" | "/metrics" | "/shutdown",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /ready /live /config /identity /edges /metrics or POST /shutdown\n",
            ),
        }
    }
}

impl Handler for Admin {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        let rsp = self.serve(&req);
        async move { rsp }
    }
}
