//! Graceful shutdown: on SIGTERM or SIGINT (or [`Shutdown::trigger`]) the app is marked not
//! ready, stops accepting connections, and finishes the requests in flight — up to a deadline,
//! after which they are abandoned — then [`serve`] returns and the app exits (returning from
//! `main` stops the runtime and ends whatever still runs). It is axum's own
//! graceful shutdown (`axum::serve(..).with_graceful_shutdown`) with the readiness flag and the
//! deadline added.
//!
//! In the mesh the sidecar drains too: it stops sending new requests to a replica that is
//! leaving and finishes its own in-flight ones, so the app's deadline should be at least the
//! longest request it serves.

#[cfg(test)]
mod tests;

use std::io;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// How long in-flight requests get by default (Kubernetes' default grace period is 30 s, and
/// the process must be gone before it ends).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(25);

/// The shutdown signal every long-lived task of the app can listen to. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// Fires only when triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Fires on the first SIGTERM or SIGINT; the handlers are installed before this returns
    /// (inside the tokio runtime).
    pub fn on_signals() -> io::Result<Shutdown> {
        let shutdown = Shutdown::new();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                () = token.cancelled() => return,
            };
            tracing::info!(signal = name, "shutting down");
            token.cancel();
        });
        Ok(shutdown)
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown has begun.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// The token, for tasks that take one (such as [`crate::batch::Batcher::spawn`]).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// How [`serve`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished.
    Complete,
    /// The deadline passed first. Requests still in flight run in axum's connection tasks
    /// until the runtime stops: return from `main` to end them.
    DeadlineExceeded,
}

/// Serves `app` on `listener` until `shutdown`; then marks `health` (a clone of the app's) not ready, stops accepting,
/// and waits for the requests in flight at most `grace`.
///
/// ```no_run
/// use app::health::Health;
/// use app::shutdown::{serve, Shutdown, DEFAULT_GRACE};
/// use axum::{routing::get, Router};
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     let health = Health::new();
///     let app = Router::new().route("/", get(|| async { "hi" })).merge(health.router());
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
///     serve(listener, app, health, Shutdown::on_signals()?, DEFAULT_GRACE).await?;
///     Ok(())
/// }
/// ```
pub async fn serve(
    listener: TcpListener,
    app: Router,
    health: Health,
    shutdown: Shutdown,
    grace: Duration,
) -> io::Result<Drained> {
    let stop = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop.triggered().await;
        health.set_ready(false);
    });
    let deadline = async {
        shutdown.triggered().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map(|()| Drained::Complete),
        () = deadline => Ok(Drained::DeadlineExceeded),
    }
}
