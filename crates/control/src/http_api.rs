//! The control plane's JSON API, read by the CLI: `GET /status`, `GET /snapshot`, `GET /healthz`.

use crate::registry::Registry;
use crate::status;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Api {
    pub registry: Arc<Registry>,
    pub control: SocketAddr,
    pub api: SocketAddr,
}

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
    fn serve(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/status") => {
                json(&status::build(&self.registry, self.control, self.api))
            }
            (&Method::GET, "/snapshot") => json(&*self.registry.snapshot()),
            (&Method::GET, "/healthz") => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
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

pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let api = api.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let rsp = api.serve(&req);
                async move { Ok::<_, Infallible>(rsp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
