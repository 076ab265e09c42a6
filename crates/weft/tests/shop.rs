//! The shop on the mesh, end to end (`weft up examples/shop`): an end user signed up or logged
//! in through the frontend (the token from `auth`), an order placed through the ingress and
//! confirmed, the books (stock, order, charge) agreeing in the services' own databases; no
//! token, no order; payment, inventory and accounts unreachable from the frontend; the pages in
//! a real browser; a payment that always fails cancels every order and leaves nothing reserved or
//! charged; a payment failing 30% of the time behind the mesh's retry policy lets the orders
//! through, each charged once; an order replica SIGKILLed mid-stream loses no order, charges
//! none twice and leaves none pending; one order is one trace across proxies and apps, seen by
//! a real OTLP receiver.

mod common;

use common::*;
use demo::shop::inventory::Inventory;
use demo::shop::orders::Orders;
use demo::shop::payment::{Payment, Switches};
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
        if !path.is_file() {
            continue; // steps/: applied by hand
        }
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

/// POSTs JSON `body` to `path` through the ingress (every host goes to the frontend): the
/// status and the JSON answer (or, not JSON — a proxy's own answer — what it said).
async fn post(
    mesh: &Mesh,
    path: &str,
    bearer: Option<&str>,
    key: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("host", "shop.example")];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    post_json(mesh.ingress, path, &headers, &body).await
}

/// A token for a new account `user`, signed up through the frontend (the auth service checks
/// it with the user service and signs it).
async fn token(mesh: &Mesh, user: &str) -> String {
    let (status, v) = post(
        mesh,
        "/api/signup",
        None,
        None,
        json!({"name": user, "password": format!("{user}-secret"), "display_name": user}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["user"]["name"], user, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

/// Places an order of `items` through the frontend's API.
async fn order(mesh: &Mesh, bearer: Option<&str>, key: &str, items: Value) -> (u16, Value) {
    post(
        mesh,
        "/api/orders",
        bearer,
        Some(key),
        json!({ "items": items }),
    )
    .await
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
    // The demo account logs in; a wrong password does not.
    let (status, v) = post(
        &mesh,
        "/api/login",
        None,
        None,
        json!({"name": "alice", "password": "wonderland"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let alice = v["access_token"].as_str().unwrap().to_string();
    let (status, v) = post(
        &mesh,
        "/api/login",
        None,
        None,
        json!({"name": "alice", "password": "wrong"}),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    // A taken name cannot be signed up again with another password.
    let (status, v) = post(
        &mesh,
        "/api/signup",
        None,
        None,
        json!({"name": "alice", "password": "not-alices"}),
    )
    .await;
    assert_eq!(status, 409, "{v}");

    let items = json!([{"product": "pot", "qty": 2}, {"product": "tea", "qty": 1}]);
    let (status, o) = order(&mesh, Some(&alice), "alice-1", items.clone()).await;
    assert_eq!(status, 201, "{o}");
    assert_eq!(o["state"], "confirmed");
    assert_eq!(o["user"], "alice", "the user is the token's subject");
    assert_eq!(o["total_cents"], 2 * 4_900 + 850);
    // Sent again with the same key: the same order, nothing more charged or reserved.
    let (status, again) = order(&mesh, Some(&alice), "alice-1", items).await;
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

    // Another user sees only their own orders.
    let dan = token(&mesh, "dan").await;
    let c = client();
    let mine = get_bearer(&c, &mesh, "/api/orders", &alice).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    let theirs = get_bearer(&c, &mesh, "/api/orders", &dan).await;
    assert_eq!(theirs, json!([]));

    // No token: no order (the order service's sidecar refuses it, before the app).
    let (status, v) = order(&mesh, None, "anon-1", json!([{"product": "tea", "qty": 1}])).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(b.payment.total_charged().await.unwrap(), 10_650);
}

/// A GET of the frontend's JSON API with a token: the JSON answer (200 asserted).
async fn get_bearer(c: &HttpClient, mesh: &Mesh, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    let r = get_with(
        c,
        mesh.ingress,
        "shop.example",
        path,
        &[("authorization", auth.as_str())],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    serde_json::from_str(&r.text).unwrap()
}

/// Each service answers only those that must call it: the frontend — the service facing the
/// internet — reaching payment, inventory or the accounts directly gets 403 from their
/// sidecars, while what it must call answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_cannot_reach_payment_inventory_or_accounts() {
    let mesh = shop("");
    let as_frontend = |url: &str| {
        let out = mesh.weft_ok(&[
            "exec",
            "--service",
            "frontend",
            "--",
            "curl",
            "-s",
            "-i",
            "-X",
            "GET",
            url,
        ]);
        let status: u16 = out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, out)
    };
    for url in [
        "http://payment/total",
        "http://inventory/stock",
        "http://user/users/alice",
    ] {
        let (status, out) = as_frontend(url);
        assert_eq!(status, 403, "{url}: {out}");
        assert!(
            out.to_ascii_lowercase().contains("x-weft-flag: rbac"),
            "{url}: {out}"
        );
    }
    let (status, out) = as_frontend("http://product/products");
    assert_eq!(status, 200, "{out}");
    // From the ingress, every host is the frontend's: payment's own name does not reach it.
    let c = client();
    let r = get(&c, mesh.ingress, "payment", "/total").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text);
    let b = books(&mesh).await;
    assert_eq!(b.payment.total_charged().await.unwrap(), 0);
}

/// The shop's pages in a real browser (headless Chromium over the DevTools protocol): the
/// product page, the demo login, a product added to the cart, the order placed and its page
/// showing CONFIRMED — and the order's books agreeing. Screenshots of each step land in
/// target/screenshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_and_places_an_order() {
    let mesh = shop("");
    let (base, shots) = (format!("http://{}", mesh.ingress), screenshots_dir());
    let seen = browser(&mesh, "shop.py", &[&base, shots.to_str().unwrap()]).await;
    assert_eq!(seen["state"], "CONFIRMED", "{seen}");
    assert_eq!(seen["cart"], "Cart (0)", "the cart is spent: {seen}");
    assert_screenshots(&["shop-products.png", "shop-cart.png", "shop-order.png"]);
    // What the page said is what the books say.
    let id = seen["order"].as_str().unwrap();
    let b = books(&mesh).await;
    let o = b.orders.get(id).await.unwrap().unwrap();
    assert_eq!(
        (format!("{:?}", o.state), o.user.as_str()),
        ("Confirmed".into(), "alice")
    );
    assert_eq!(
        b.payment
            .charge_for(id)
            .await
            .unwrap()
            .unwrap()
            .charged_cents,
        850
    );
    assert_eq!(b.inventory.stock().await.unwrap()["tea"], 499);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_always_fails_cancels_orders_and_leaves_nothing_behind() {
    let mesh = shop(", --fail-rate, \"1\"");
    let bob = token(&mesh, "bob").await;
    for i in 0..3 {
        let (status, o) = order(
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
    let carol = token(&mesh, "carol").await;
    let n = 40;
    let mut confirmed = 0;
    for i in 0..n {
        let (status, o) = order(
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
    let erin = token(&mesh, "erin").await;
    let victim = app_pid(mesh.home().unwrap(), "order-0");
    let n: i64 = 60;
    let customers = 4;
    let done = std::sync::atomic::AtomicI64::new(0);
    let resent = std::sync::atomic::AtomicI64::new(0);
    // Four customers ordering at once, so orders are in flight in the replica when it dies.
    let customer = |who: i64| {
        let (mesh, erin, done, resent) = (&mesh, &erin, &done, &resent);
        async move {
            let mut ids = Vec::new();
            for i in (who..n).step_by(customers as usize) {
                let key = format!("erin-{i}");
                let items = json!([{"product": "tea", "qty": 1}]);
                let mut tries = 0;
                let o = loop {
                    tries += 1;
                    assert!(tries <= 50, "order {i} never got a final answer");
                    match order(mesh, Some(erin), &key, items.clone()).await {
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

/// One order is one trace: the ingress's span, the frontend's, the order service's (their
/// sidecars' and their apps', made with the SDK), and under it the calls to product, inventory and payment, each
/// seen by its sidecar and its app — exported by proxies and apps alike to one OTLP receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_from_the_ingress_through_the_frontend_to_inventory_and_payment() {
    let (collector, collected) = common::otlp::grpc_receiver().await;
    let endpoint = format!("http://{collector}");
    let mesh = shop_with("", &["--otlp-endpoint", &endpoint]);
    let frank = token(&mesh, "frank").await;
    let (status, o) = order(
        &mesh,
        Some(&frank),
        "frank-1",
        json!([{"product": "cup", "qty": 1}]),
    )
    .await;
    assert_eq!(status, 201, "{o}");
    let trace = collected.trace_of("/api/orders").await;
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
        let apps = has("frontend", "POST /api/orders")
            && has("order", "POST /orders")
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
