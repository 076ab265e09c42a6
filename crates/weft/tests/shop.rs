//! The shop on the mesh, end to end (`weft up examples/shop`): an end user's token from `auth`,
//! an order placed through the ingress and confirmed, the books (stock, order, charge) agreeing
//! in the services' own databases; no token, no order; payment unreachable but for the order
//! service; a payment that always fails cancels every order and leaves nothing reserved or
//! charged; a payment failing 30% of the time behind the mesh's retry policy lets the orders
//! through, each charged once; an order replica SIGKILLed mid-stream loses no order, charges
//! none twice and leaves none pending; one order is one trace across proxies and apps, seen by
//! a real OTLP receiver.

mod common;

use common::*;
use demo::shop::inventory::Inventory;
use demo::shop::orders::Orders;
use demo::shop::payment::{Payment, Switches};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// `examples/shop` with payment's command given `payment_flags`.
fn shop(payment_flags: &str) -> Mesh {
    shop_with(payment_flags, &[])
}

/// [`shop`] with `weft up ARGS…`.
fn shop_with(payment_flags: &str, args: &[&str]) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example_dir("shop")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "[weft, demo, shop, payment]",
            &format!("[weft, demo, shop, payment{payment_flags}]"),
        );
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let mesh = Mesh::up_dir_with(dir.path(), args);
    // Every replica routable (the order service needs auth, product, inventory and payment).
    mesh.weft_ok(&["status", "--wait", "--timeout", "60s"]);
    mesh
}

/// A token for `user` from the shop's issuer, through the ingress.
async fn token(c: &HttpClient, mesh: &Mesh, user: &str) -> String {
    let r = get(
        c,
        mesh.ingress,
        "auth",
        &format!("/token?sub={user}&aud=shop&format=raw"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    r.text.trim().to_string()
}

/// POSTs an order of `items` through the ingress.
async fn order(
    c: &HttpClient,
    mesh: &Mesh,
    bearer: Option<&str>,
    key: &str,
    items: Value,
) -> (u16, Value) {
    let mut req = http::Request::post(format!("http://{}/orders", mesh.ingress))
        .header("host", "order")
        .header("content-type", "application/json")
        .header("idempotency-key", key);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = json!({ "items": items }).to_string();
    let _ = c;
    let posts = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let rsp = posts
        .request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let said = |h: &str| {
        rsp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (flag, challenge) = (said("x-weft-flag"), said("www-authenticate"));
    let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
    // Not JSON (a proxy's own answer): what it said, for the assertion's message.
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        json!({"text": String::from_utf8_lossy(&bytes), "flag": flag, "www-authenticate": challenge})
    });
    (status, body)
}

/// The services' own books, read from their databases.
struct Books {
    inventory: Inventory,
    payment: Payment,
    orders: Orders,
}

async fn books(mesh: &Mesh) -> Books {
    let data = mesh.home().unwrap().join("shop-data");
    let file = |n: &str| data.join(format!("{n}.db"));
    let exists = |p: &Path| assert!(p.exists(), "{} missing", p.display());
    for n in ["inventory", "payment", "order"] {
        exists(&file(n));
    }
    Books {
        inventory: Inventory::open(Some(&file("inventory")), &[])
            .await
            .unwrap(),
        payment: Payment::open(Some(&file("payment")), Switches::default()).unwrap(),
        orders: Orders::open(
            Some(&file("order")),
            "test-reader",
            Duration::from_secs(600),
        )
        .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_through_the_ingress_is_confirmed_and_the_books_agree() {
    let mesh = shop("");
    let c = client();
    let alice = token(&c, &mesh, "alice").await;
    let items = json!([{"product": "pot", "qty": 2}, {"product": "tea", "qty": 1}]);
    let (status, o) = order(&c, &mesh, Some(&alice), "alice-1", items.clone()).await;
    assert_eq!(status, 201, "{o}");
    assert_eq!(o["state"], "confirmed");
    assert_eq!(o["user"], "alice", "the user is the token's subject");
    assert_eq!(o["total_cents"], 2 * 4_900 + 850);
    // Sent again with the same key: the same order, nothing more charged or reserved.
    let (status, again) = order(&c, &mesh, Some(&alice), "alice-1", items).await;
    assert_eq!((status, &again["id"]), (201, &o["id"]));

    let b = books(&mesh).await;
    let id = o["id"].as_str().unwrap();
    let stock = b.inventory.stock().await.unwrap();
    assert_eq!((stock["pot"], stock["tea"]), (48, 499));
    let reserved = b.inventory.reservation(id).await.unwrap();
    assert_eq!(reserved.len(), 2, "{reserved:?}");
    let charge = b.payment.charge_for(id).await.unwrap().unwrap();
    assert_eq!(
        (charge.state.as_str(), charge.charged_cents),
        ("charged", 10_650)
    );
    assert_eq!(b.payment.total_charged().await.unwrap(), 10_650);
    let kept = b.orders.get(id).await.unwrap().unwrap();
    assert_eq!(format!("{:?}", kept.state), "Confirmed");

    // No token: no order (the sidecar's authorization, before the app).
    let (status, _) = order(
        &c,
        &mesh,
        None,
        "anon-1",
        json!([{"product": "tea", "qty": 1}]),
    )
    .await;
    assert_eq!(status, 403);
    // Payment and inventory answer the order service only: from the ingress, 403.
    for (host, path) in [("payment", "/total"), ("inventory", "/stock")] {
        let r = get(&c, mesh.ingress, host, path).await.unwrap();
        assert_eq!(r.status, 403, "{host}{path}: {}", r.text);
    }
    assert_eq!(b.payment.total_charged().await.unwrap(), 10_650);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_always_fails_cancels_orders_and_leaves_nothing_behind() {
    let mesh = shop(", --fail-rate, \"1\"");
    let c = client();
    let bob = token(&c, &mesh, "bob").await;
    for i in 0..3 {
        let (status, o) = order(
            &c,
            &mesh,
            Some(&bob),
            &format!("bob-{i}"),
            json!([{"product": "kettle", "qty": 1}]),
        )
        .await;
        assert_eq!(status, 409, "{o}");
        assert_eq!(o["state"], "cancelled");
        assert!(o["reason"].as_str().unwrap().starts_with("payment:"), "{o}");
    }
    let b = books(&mesh).await;
    assert_eq!(b.inventory.stock().await.unwrap()["kettle"], 20);
    assert_eq!(b.payment.total_charged().await.unwrap(), 0);
    let counts = b.orders.counts().await.unwrap();
    assert_eq!(counts.get("cancelled"), Some(&3), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_failing_thirty_percent_behind_retries_charges_each_order_once() {
    let mesh = shop(", --fail-rate, \"0.3\"");
    let c = client();
    let carol = token(&c, &mesh, "carol").await;
    let n = 40;
    let mut confirmed = 0;
    for i in 0..n {
        let (status, o) = order(
            &c,
            &mesh,
            Some(&carol),
            &format!("carol-{i}"),
            json!([{"product": "honey", "qty": 1}]),
        )
        .await;
        // Five attempts (resilience.yaml): an order fails only when all five are declined,
        // 0.3^5 = 0.24% of the time; then it is cancelled with nothing charged.
        match status {
            201 => confirmed += 1,
            409 => assert_eq!(o["state"], "cancelled", "order {i}: {o}"),
            _ => panic!("order {i}: {status} {o}"),
        }
    }
    // Expected failures 0.1 in 40: more than 2 has odds under 1 in 5,000.
    assert!(
        confirmed >= n - 2,
        "only {confirmed} of {n} orders went through"
    );
    let b = books(&mesh).await;
    // Declines charge nothing; the charge that went through is the only one: 6.90 per
    // confirmed order, whatever the retries.
    assert_eq!(b.payment.total_charged().await.unwrap(), confirmed * 690);
    assert_eq!(b.inventory.stock().await.unwrap()["honey"], 300 - confirmed);
    let counts = b.orders.counts().await.unwrap();
    assert_eq!(counts.get("confirmed"), Some(&confirmed), "{counts:?}");
}

/// The PID of the app of replica `instance` of the mesh running in `home` (its environment
/// names both).
fn app_pid(home: &Path, instance: &str) -> nix::unistd::Pid {
    let want = [
        format!("WEFT_INSTANCE={instance}"),
        format!("WEFT_HOME={}", home.display()),
    ];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_app = String::from_utf8_lossy(&cmdline).contains("shop\0order");
        if is_app && want.iter().all(|w| vars.contains(w)) {
            return nix::unistd::Pid::from_raw(pid);
        }
    }
    panic!("no process of {instance} under {}", home.display());
}

/// One order replica SIGKILLed during a steady stream of orders. Each customer sends its order
/// again with the same Idempotency-Key until it gets a final answer, as a client should: every
/// order ends confirmed exactly once, none is charged twice, and none is left pending once the
/// dead replica's leases have run out and recovery has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_replica_killed_mid_stream_loses_nothing_and_charges_nothing_twice() {
    let mesh = shop("");
    let c = client();
    let erin = token(&c, &mesh, "erin").await;
    let victim = app_pid(mesh.home().unwrap(), "order-0");
    let n: i64 = 60;
    let customers = 4;
    let done = std::sync::atomic::AtomicI64::new(0);
    let resent = std::sync::atomic::AtomicI64::new(0);
    // Four customers ordering at once, so orders are in flight in the replica when it dies.
    let customer = |who: i64| {
        let (c, mesh, erin, done, resent) = (&c, &mesh, &erin, &done, &resent);
        async move {
            let mut ids = Vec::new();
            for i in (who..n).step_by(customers as usize) {
                let key = format!("erin-{i}");
                let items = json!([{"product": "tea", "qty": 1}]);
                let mut tries = 0;
                let o = loop {
                    tries += 1;
                    assert!(tries <= 50, "order {i} never got a final answer");
                    match order(c, mesh, Some(erin), &key, items.clone()).await {
                        (201, o) => break o,
                        (status, o) => {
                            // The replica died under it (or its route is still going away):
                            // again, with the same key.
                            assert!(status >= 500, "order {i}: {status} {o}");
                            resent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                assert_eq!(o["state"], "confirmed", "order {i}: {o}");
                ids.push(o["id"].as_str().unwrap().to_string());
                if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n / 3 {
                    nix::sys::signal::kill(victim, nix::sys::signal::Signal::SIGKILL).unwrap();
                }
            }
            ids
        }
    };
    let (a, b, c3, d) = tokio::join!(customer(0), customer(1), customer(2), customer(3));
    let ids: std::collections::BTreeSet<String> = [a, b, c3, d].into_iter().flatten().collect();
    let resent = resent.into_inner();
    eprintln!("{n} orders, {resent} sent again after the kill");
    assert_eq!(ids.len(), n as usize, "a key gave two orders");
    let b = books(&mesh).await;
    // Nothing left open: orders the dead replica held are finished by the other once their
    // lease runs out (15 s), or by it once restarted.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let counts = b.orders.counts().await.unwrap();
        let open = counts.get("pending").copied().unwrap_or(0)
            + counts.get("compensating").copied().unwrap_or(0);
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orders still open: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = b.orders.counts().await.unwrap();
    let confirmed = counts.get("confirmed").copied().unwrap_or(0);
    assert_eq!(confirmed, n, "{counts:?}");
    assert_eq!(b.payment.total_charged().await.unwrap(), n * 850);
    assert_eq!(b.inventory.stock().await.unwrap()["tea"], 500 - n);
    for id in &ids {
        let charge = b.payment.charge_for(id).await.unwrap().unwrap();
        assert_eq!(charge.charged_cents, 850, "{id}");
    }
}

/// One order is one trace: the ingress's span, the order service's (its sidecar's and its
/// app's, made with the SDK), and under it the calls to product, inventory and payment, each
/// seen by its sidecar and its app — exported by proxies and apps alike to one OTLP receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_from_the_ingress_to_inventory_and_payment() {
    let (collector, collected) = common::otlp::grpc_receiver().await;
    let endpoint = format!("http://{collector}");
    let mesh = shop_with("", &["--otlp-endpoint", &endpoint]);
    let c = client();
    let frank = token(&c, &mesh, "frank").await;
    let (status, o) = order(
        &c,
        &mesh,
        Some(&frank),
        "frank-1",
        json!([{"product": "cup", "qty": 1}]),
    )
    .await;
    assert_eq!(status, 201, "{o}");
    let trace = collected.trace_of("/orders").await;
    // The apps' spans, named by their service (the SDK's TraceLayer: `METHOD /route`), and one
    // tree: every span but the ingress's first has its parent in the trace. Spans arrive in
    // batches from a dozen processes: wait until both hold.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<common::otlp::Received> = collected
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.span.trace_id == trace)
            .cloned()
            .collect();
        let has = |service: &str, name: &str| {
            spans
                .iter()
                .any(|r| r.service == service && r.span.name == name)
        };
        let apps = has("order", "POST /orders")
            && has("product", "GET /products/{id}")
            && has("inventory", "POST /check")
            && has("inventory", "POST /reservations")
            && has("payment", "POST /charges");
        let ids: std::collections::BTreeSet<&[u8]> =
            spans.iter().map(|r| r.span.span_id.as_slice()).collect();
        let roots: Vec<_> = spans
            .iter()
            .filter(|r| !ids.contains(r.span.parent_span_id.as_slice()))
            .map(|r| (r.service.as_str(), r.span.name.as_str()))
            .collect();
        if apps && roots.len() == 1 && roots[0].0 == "istio-ingressgateway" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "trace {}: apps' spans all there: {apps}; roots {roots:?}; spans {:?}",
            common::otlp::hex(&trace),
            spans
                .iter()
                .map(|r| (&r.service, &r.span.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
