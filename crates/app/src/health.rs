//! Liveness and readiness: `GET /healthz` answers 200 while the process can serve at all;
//! `GET /readyz` runs the registered dependency checks (concurrently, each within its timeout)
//! and answers 200 when all pass, 503 when one fails or the app was marked not ready (while
//! warming up, or shutting down: [`crate::shutdown`] does it), with each check's result in JSON.
//!
//! Keep the checks to what makes this replica unable to serve (its database, its cache): a
//! check on another service of the mesh would take every replica out when that one is down, and
//! the mesh's outlier detection already routes around a bad peer.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;
use tokio::time::Instant;

type CheckFn = dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync;

#[derive(Clone)]
struct Check {
    name: String,
    timeout: Duration,
    run: Arc<CheckFn>,
}

/// The app's health: a readiness flag and the dependency checks. Clones share the flag.
///
/// ```
/// use app::health::Health;
/// use axum::Router;
/// use std::time::Duration;
///
/// let health = Health::new().check("database", Duration::from_secs(1), || async {
///     // e.g. `SELECT 1`
///     Ok::<(), std::io::Error>(())
/// });
/// let app: Router = Router::new().merge(health.router());
/// // At shutdown (done by app::shutdown::serve): health.set_ready(false);
/// ```
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    checks: Vec<Check>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .field(
                "checks",
                &self.checks.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

/// What `/readyz` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when the app was marked not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub checks: BTreeMap<String, CheckResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub ok: bool,
    pub elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Health {
    /// Ready, with no checks.
    pub fn new() -> Health {
        Health {
            ready: Arc::new(AtomicBool::new(true)),
            checks: Vec::new(),
        }
    }

    /// Adds a check: ready only while `f` succeeds within `timeout`.
    pub fn check<F, Fut, E>(mut self, name: &str, timeout: Duration, f: F) -> Health
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let run = move || {
            let check = f();
            Box::pin(async move { check.await.map_err(|e| e.to_string()) })
                as Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        };
        self.checks.push(Check {
            name: name.to_string(),
            timeout,
            run: Arc::new(run),
        });
        self
    }

    /// Marks the app ready or not (the checks still decide when it is marked ready).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Runs the checks (none when marked not ready).
    pub async fn readiness(&self) -> Readiness {
        if !self.is_ready() {
            return Readiness {
                ready: false,
                reason: Some("marked not ready"),
                checks: BTreeMap::new(),
            };
        }
        let results = futures::future::join_all(self.checks.iter().map(|c| async move {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(c.timeout, (c.run)()).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {:?}", c.timeout)),
            };
            let result = CheckResult {
                ok: outcome.is_ok(),
                elapsed_ms: started.elapsed().as_millis() as u64,
                error: outcome.err(),
            };
            (c.name.clone(), result)
        }))
        .await;
        Readiness {
            ready: results.iter().all(|(_, r)| r.ok),
            reason: None,
            checks: results.into_iter().collect(),
        }
    }

    /// `GET /healthz` and `GET /readyz`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let health = self.clone();
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || async move {
                    let r = health.readiness().await;
                    let status = if r.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, Json(r))
                }),
            )
    }
}
