//! A circuit breaker around calls to a dependency: closed, it opens after
//! [`BreakerConfig::failures`] consecutive failures; open, it fails calls at once with
//! [`BreakerError::Open`] for [`BreakerConfig::reset_timeout`]; then half-open, it lets
//! [`BreakerConfig::probes`] calls through at a time, and the first success closes it (a failed
//! probe opens it again). What is a failure is a [`Classify`] (default [`ServerErrors`]: errors
//! and 5xx responses).
//!
//! The mesh's outlier detection ejects one bad *replica* of a service; this is for when the
//! whole dependency is down or slow and the app would rather degrade (a cached answer, a
//! feature off) than wait on it. Each service the layer wraps has its own breaker.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use tokio::time::Instant;

/// Consecutive failures that open the circuit (Linkerd's failure accrual default is 7; an app
/// calling one dependency sees its failures sooner).
pub const DEFAULT_FAILURES: u32 = 5;
/// How long an open circuit rejects before probing.
pub const DEFAULT_RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// Probes let through at a time when half-open: one answer says whether the dependency is back.
pub const DEFAULT_PROBES: u32 = 1;

#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    pub failures: u32,
    pub reset_timeout: Duration,
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: DEFAULT_FAILURES,
            reset_timeout: DEFAULT_RESET_TIMEOUT,
            probes: DEFAULT_PROBES,
        }
    }
}

/// Decides whether an outcome is a failure.
pub trait Classify<R, E> {
    fn is_failure(&self, outcome: &Result<R, E>) -> bool;
}

/// Errors and 5xx responses are failures.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerErrors;

impl<B, E> Classify<Response<B>, E> for ServerErrors {
    fn is_failure(&self, outcome: &Result<Response<B>, E>) -> bool {
        outcome
            .as_ref()
            .map_or(true, |r| r.status().is_server_error())
    }
}

impl<R, E, F: Fn(&Result<R, E>) -> bool> Classify<R, E> for F {
    fn is_failure(&self, outcome: &Result<R, E>) -> bool {
        self(outcome)
    }
}

/// A call that was not made, or one that failed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The circuit is open: not called. `retry_in` is the time until it probes again (zero while
    /// it is half-open and its probes are out).
    #[error("circuit open, next probe in {retry_in:?}")]
    Open { retry_in: Duration },
    #[error(transparent)]
    Inner(E),
}

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: u32 },
}

#[derive(Debug)]
struct Shared {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Shared {
    /// Whether a call may go, and as a probe or not.
    fn admit(&self) -> Result<bool, Duration> {
        let mut state = self.state.lock().expect("breaker lock");
        match &mut *state {
            State::Closed { .. } => Ok(false),
            State::Open { until } => {
                let now = Instant::now();
                if now < *until {
                    return Err(*until - now);
                }
                *state = State::HalfOpen { probing: 1 };
                Ok(true)
            }
            State::HalfOpen { probing } if *probing < self.config.probes => {
                *probing += 1;
                Ok(true)
            }
            State::HalfOpen { .. } => Err(Duration::ZERO),
        }
    }

    /// What a finished call says; `None` for a probe abandoned before it finished.
    fn record(&self, probe: bool, failed: Option<bool>) {
        let mut state = self.state.lock().expect("breaker lock");
        let open = State::Open {
            until: Instant::now() + self.config.reset_timeout,
        };
        match (&mut *state, failed) {
            (State::Closed { failures }, Some(true)) => {
                *failures += 1;
                if *failures >= self.config.failures {
                    *state = open;
                }
            }
            (State::Closed { failures }, Some(false)) => *failures = 0,
            (State::HalfOpen { .. }, Some(false)) if probe => {
                *state = State::Closed { failures: 0 }
            }
            (State::HalfOpen { .. }, Some(true)) if probe => *state = open,
            (State::HalfOpen { probing }, None) if probe => *probing -= 1,
            // Calls let through before the circuit opened say nothing about it now.
            _ => {}
        }
    }

    fn state(&self) -> BreakerState {
        match *self.state.lock().expect("breaker lock") {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Wraps a service in a circuit breaker (one per service wrapped).
///
/// ```
/// use app::breaker::{BreakerConfig, BreakerError, CircuitBreakerLayer};
/// use app::client::Client;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt};
///
/// # async fn call() {
/// let inventory = CircuitBreakerLayer::new(BreakerConfig {
///     failures: 5,
///     reset_timeout: Duration::from_secs(10),
///     probes: 1,
/// })
/// .layer(Client::new());
/// let req = http::Request::get("http://inventory/stock/42").body(Default::default()).unwrap();
/// match inventory.oneshot(req).await {
///     Ok(response) => { /* ... */ }
///     Err(BreakerError::Open { .. }) => { /* degrade: no stock shown */ }
///     Err(BreakerError::Inner(e)) => { /* the call failed */ }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = ServerErrors> {
    config: BreakerConfig,
    classify: C,
}

impl CircuitBreakerLayer {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreakerLayer {
            config,
            classify: ServerErrors,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// What counts as a failure: a [`Classify`], such as a `Fn(&Result<R, E>) -> bool`.
    pub fn classify<D>(self, classify: D) -> CircuitBreakerLayer<D> {
        CircuitBreakerLayer {
            config: self.config,
            classify,
        }
    }
}

impl<S, C: Clone> tower::Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> CircuitBreaker<S, C> {
        CircuitBreaker {
            inner,
            classify: self.classify.clone(),
            shared: Arc::new(Shared {
                config: self.config,
                state: Mutex::new(State::Closed { failures: 0 }),
            }),
        }
    }
}

/// The service [`CircuitBreakerLayer`] makes; clones share the breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S, C = ServerErrors> {
    inner: S,
    classify: C,
    shared: Arc<Shared>,
}

impl<S, C> CircuitBreaker<S, C> {
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }
}

/// Releases a probe's slot if its call is dropped before it ends.
struct Admitted {
    shared: Arc<Shared>,
    probe: bool,
    done: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.done {
            self.shared.record(self.probe, None);
        }
    }
}

impl<S, C, Req> tower::Service<Req> for CircuitBreaker<S, C>
where
    S: tower::Service<Req>,
    S::Future: Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    /// Admission is decided here rather than in `poll_ready`, so that a readiness check never
    /// holds a probe slot.
    fn call(&mut self, req: Req) -> Self::Future {
        let probe = match self.shared.admit() {
            Ok(probe) => probe,
            Err(retry_in) => return Box::pin(async move { Err(BreakerError::Open { retry_in }) }),
        };
        let mut admitted = Admitted {
            shared: self.shared.clone(),
            probe,
            done: false,
        };
        let classify = self.classify.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let outcome = call.await;
            admitted.done = true;
            admitted
                .shared
                .record(probe, Some(classify.is_failure(&outcome)));
            outcome.map_err(BreakerError::Inner)
        })
    }
}
