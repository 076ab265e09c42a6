use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::{Layer, Service, ServiceExt};

/// A dependency answering each call with the status it is given, counting calls.
fn dependency(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<u16, Response = Response<()>, Error = &'static str, Future: Send> + Clone {
    tower::service_fn(move |status: u16| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match status {
                0 => Err("connection refused"),
                s => Ok(Response::builder().status(s).body(()).unwrap()),
            }
        }
    })
}

const CONFIG: BreakerConfig = BreakerConfig {
    failures: 3,
    reset_timeout: Duration::from_secs(10),
    probes: 1,
};

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_rejects_without_calling() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CircuitBreakerLayer::new(CONFIG).layer(dependency(calls.clone()));
    // A success in between starts the count again.
    for status in [500, 0, 200, 500, 503] {
        svc.ready().await.unwrap().call(status).await.ok();
    }
    assert_eq!(svc.state(), BreakerState::Closed);
    svc.ready().await.unwrap().call(502).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    tokio::time::advance(Duration::from_secs(4)).await;
    let err = svc.ready().await.unwrap().call(200).await.unwrap_err();
    assert!(matches!(err, BreakerError::Open { retry_in } if retry_in == Duration::from_secs(6)));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_probes_through_and_a_success_closes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CircuitBreakerLayer::new(CONFIG).layer(dependency(calls.clone()));
    for _ in 0..3 {
        svc.clone().oneshot(500).await.unwrap();
    }
    tokio::time::advance(CONFIG.reset_timeout).await;
    assert_eq!(svc.state(), BreakerState::HalfOpen);

    // A failed probe opens it again for the whole reset timeout.
    svc.clone().oneshot(503).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Open);
    tokio::time::advance(CONFIG.reset_timeout).await;

    // One probe at a time: a second call while it is out is rejected.
    let release = Arc::new(tokio::sync::Notify::new());
    let wait = release.clone();
    let slow = tower::service_fn(move |_: u16| {
        let wait = wait.clone();
        async move {
            wait.notified().await;
            Ok::<_, &'static str>(Response::new(()))
        }
    });
    let shared = svc.shared.clone();
    let mut slow = CircuitBreaker {
        inner: slow,
        classify: ServerErrors,
        shared,
    };
    let probe = tokio::spawn(slow.call(200));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(200).await.unwrap_err();
    assert!(matches!(err, BreakerError::Open { retry_in } if retry_in.is_zero()));
    release.notify_one();
    probe.await.unwrap().unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
    svc.clone().oneshot(200).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_frees_its_slot() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CircuitBreakerLayer::new(CONFIG).layer(dependency(calls.clone()));
    for _ in 0..3 {
        svc.clone().oneshot(0).await.unwrap_err();
    }
    tokio::time::advance(CONFIG.reset_timeout).await;
    let abandoned = svc.clone().call(200);
    drop(abandoned);
    assert_eq!(svc.state(), BreakerState::HalfOpen);
    svc.clone().oneshot(200).await.unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn what_fails_is_up_to_the_predicate() {
    let calls = Arc::new(AtomicUsize::new(0));
    // Only errors count: an overloaded dependency answering 503 keeps the circuit closed.
    let errors_only = |r: &Result<Response<()>, &'static str>| r.is_err();
    let svc = CircuitBreakerLayer::new(CONFIG)
        .classify(errors_only)
        .layer(dependency(calls.clone()));
    for _ in 0..5 {
        svc.clone().oneshot(503).await.unwrap();
    }
    assert_eq!(svc.state(), BreakerState::Closed);
    for _ in 0..3 {
        svc.clone().oneshot(0).await.unwrap_err();
    }
    assert_eq!(svc.state(), BreakerState::Open);
}
