use super::*;
use crate::client::{Client, Sidecar};
use crate::testing::{json, serve};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

async fn get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let client = Client::builder().sidecar(Sidecar::None).build();
    let r = client.get(&format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    let body = if path == "/healthz" {
        serde_json::Value::String(crate::testing::text(r).await)
    } else {
        json(r).await
    };
    (status, body)
}

#[tokio::test]
async fn readiness_reports_each_check_and_fails_when_one_does() {
    let cache_up = Arc::new(AtomicBool::new(true));
    let up = cache_up.clone();
    let health = Health::new()
        .check("database", Duration::from_secs(5), || async {
            Ok::<_, String>(())
        })
        .check("cache", Duration::from_secs(5), move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused")
                }
            }
        })
        .check("search", Duration::from_millis(50), || {
            std::future::pending::<Result<(), String>>()
        });
    let addr = serve(health.router()).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok".into()));

    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert_eq!(body["checks"]["cache"]["ok"], true);
    assert_eq!(body["checks"]["search"]["ok"], false);
    assert_eq!(body["checks"]["search"]["error"], "timed out after 50ms");

    cache_up.store(false, Ordering::SeqCst);
    let (_, body) = get(addr, "/readyz").await;
    assert_eq!(body["checks"]["cache"]["error"], "connection refused");
}

#[tokio::test]
async fn not_ready_when_marked_so_and_alive_all_the_same() {
    let health = Health::new().check("database", Duration::from_secs(1), || async {
        Ok::<_, String>(())
    });
    let addr = serve(health.router()).await;
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!((status, body["ready"].clone()), (200, true.into()));
    assert_eq!(body["checks"]["database"]["ok"], true);

    health.clone().set_ready(false);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        serde_json::json!({"ready": false, "reason": "marked not ready", "checks": {}})
    );
    assert_eq!(get(addr, "/healthz").await.0, 200);
}
