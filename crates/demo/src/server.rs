//! The accept loop: one task per connection, HTTP/1.1 keep-alive and h2c, graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::handler::{self, State};
use crate::EchoOptions;

/// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests finish, and returns.
///
/// Once `shutdown` is cancelled `/readyz` answers 503 to requests still being handled.
pub async fn serve_echo(
    listener: TcpListener,
    opts: EchoOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, service = %opts.service, instance = %opts.instance, "echo listening");
    }
    let state = Arc::new(State::new(opts, shutdown.clone()));
    serve(listener, shutdown, "echo", move |req| {
        let state = state.clone();
        async move { handler::handle(&state, req).await }
    })
    .await
}

/// The accept loop of the demo servers: every connection on its own task, answered by
/// `handle`, until `shutdown` is cancelled; then stops accepting, lets in-flight requests
/// finish, and returns. `what` names the server in the logs.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    what: &'static str,
    handle: F,
) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually transient (e.g. out of file descriptors): back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let service = service_fn(move |req| {
            let answer = handle(req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    info!("{what} draining in-flight requests");
    graceful.shutdown().await;
    Ok(())
}
