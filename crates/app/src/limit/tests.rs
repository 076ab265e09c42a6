use super::*;
use crate::client::{Client, Sidecar};
use crate::testing::serve;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;

/// A service whose handler holds every request until `release` has a permit for it.
async fn held(layer: LimitLayer) -> (SocketAddr, Arc<Semaphore>) {
    let release = Arc::new(Semaphore::new(0));
    let wait = release.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let wait = wait.clone();
                async move {
                    wait.acquire().await.unwrap().forget();
                    "done"
                }
            }),
        )
        .layer(layer);
    (serve(app).await, release)
}

async fn until(f: impl Fn() -> bool) {
    while !f() {
        tokio::task::yield_now().await;
    }
}

fn spawn_get(addr: SocketAddr) -> tokio::task::JoinHandle<(u16, Option<String>)> {
    tokio::spawn(async move {
        let client = Client::builder().sidecar(Sidecar::None).build();
        let r = client.get(&format!("http://{addr}/")).await.unwrap();
        let retry = r
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), retry)
    })
}

#[tokio::test]
async fn beyond_the_limit_and_the_queue_requests_are_shed_at_once() {
    let layer = LimitLayer::new(2)
        .queue(1)
        .retry_after(Duration::from_millis(1500));
    let (addr, release) = held(layer.clone()).await;
    let first = [spawn_get(addr), spawn_get(addr)];
    until(|| layer.in_flight() == 2).await;
    let queued = spawn_get(addr);
    until(|| layer.queued() == 1).await;
    // Full: answered now, while the others are still held.
    assert_eq!(spawn_get(addr).await.unwrap(), (503, Some("2".to_string())));
    assert_eq!(layer.in_flight(), 2);

    release.add_permits(2);
    for r in first {
        assert_eq!(r.await.unwrap(), (200, None));
    }
    // The queued one got a slot the first two left.
    until(|| layer.queued() == 0).await;
    release.add_permits(1);
    assert_eq!(queued.await.unwrap(), (200, None));
    until(|| layer.in_flight() == 0).await;
}

#[tokio::test]
async fn a_request_waits_in_the_queue_no_longer_than_the_timeout() {
    let layer = LimitLayer::new(1)
        .queue(5)
        .queue_timeout(Duration::from_millis(100));
    let (addr, release) = held(layer.clone()).await;
    let first = spawn_get(addr);
    until(|| layer.in_flight() == 1).await;
    let started = tokio::time::Instant::now();
    assert_eq!(spawn_get(addr).await.unwrap(), (503, Some("1".to_string())));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(layer.queued(), 0);
    release.add_permits(1);
    assert_eq!(first.await.unwrap().0, 200);
}
