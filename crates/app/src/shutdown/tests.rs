use super::*;
use crate::client::{Client, Sidecar};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// An app whose `/slow` holds each request until `release` has a permit for it, served by
/// [`serve`] in a task.
async fn app(
    grace: Duration,
) -> (
    SocketAddr,
    Health,
    Shutdown,
    Arc<Semaphore>,
    Arc<Semaphore>,
    tokio::task::JoinHandle<io::Result<Drained>>,
) {
    let (entered, release) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let (e, r) = (entered.clone(), release.clone());
    let health = Health::new();
    let router = Router::new()
        .route(
            "/slow",
            get(move || {
                let (e, r) = (e.clone(), r.clone());
                async move {
                    e.add_permits(1);
                    r.acquire().await.unwrap().forget();
                    "finished"
                }
            }),
        )
        .merge(health.router());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let served = tokio::spawn(serve(
        listener,
        router,
        health.clone(),
        shutdown.clone(),
        grace,
    ));
    (addr, health, shutdown, entered, release, served)
}

fn client() -> Client {
    Client::builder().sidecar(Sidecar::None).build()
}

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let (addr, health, shutdown, entered, release, served) = app(Duration::from_secs(30)).await;
    let slow = tokio::spawn(async move { client().get(&format!("http://{addr}/slow")).await });
    entered.acquire().await.unwrap().forget();

    shutdown.trigger();
    // Not ready at once; the listener closes once the server has seen the signal.
    while health.is_ready() {
        tokio::task::yield_now().await;
    }
    let refused = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) => break e,
            Ok(_) => tokio::task::yield_now().await,
        }
    };
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert!(!served.is_finished());

    release.add_permits(1);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(crate::testing::text(r).await, "finished");
    assert_eq!(served.await.unwrap().unwrap(), Drained::Complete);
}

#[tokio::test]
async fn the_deadline_ends_requests_that_take_too_long() {
    let grace = Duration::from_millis(200);
    let (addr, _health, shutdown, entered, _release, served) = app(grace).await;
    let stuck = tokio::spawn(async move { client().get(&format!("http://{addr}/slow")).await });
    entered.acquire().await.unwrap().forget();
    let started = tokio::time::Instant::now();
    shutdown.trigger();
    assert_eq!(served.await.unwrap().unwrap(), Drained::DeadlineExceeded);
    assert!(started.elapsed() >= grace);
    assert!(!stuck.is_finished());
    stuck.abort();
}

#[tokio::test]
async fn sigterm_triggers_shutdown() {
    let shutdown = Shutdown::on_signals().unwrap();
    // The handler is installed, so the signal reaches it rather than ending the test process.
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(10), shutdown.triggered())
        .await
        .expect("SIGTERM triggers shutdown");
}
