//! The web dashboard (`weft up --dashboard`, `weft dashboard`) in a real browser (headless
//! Chromium over the DevTools protocol, testdata/browser/dashboard.py), on the shop under
//! load: the graph shows every service and every edge that carries traffic with its numbers,
//! checked against `weft edges -o json` and the load's rates; a service page opened from the
//! graph with the keyboard agrees with `weft stat`; the tap page shows live requests with
//! identities within 2 s; a refused `weft apply` shows its error with file and line; the
//! graph by workload shows both versions of a rollout in progress, and the rollouts page its
//! weights; the identities page every proxy's certificate. Without the credential the
//! dashboard answers nothing. Screenshots of every page land in target/screenshots.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The shop with stock for every order the load places.
fn shop() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example_dir("shop")).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "[weft, demo, shop, inventory]",
            "[weft, demo, shop, inventory, --stock, \"1000000\"]",
        );
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let mesh = Mesh::up_dir_with(dir.path(), &["--dashboard", "127.0.0.1:0"]);
    mesh.weft_ok(&["status", "--wait", "--timeout", "60s"]);
    mesh
}

/// `weft load` at `rate` per second through the ingress, in the background (killed on drop).
fn load(mesh: &Mesh, rate: u32, extra: &[&str], path: &str) -> tokio::process::Child {
    tokio::process::Command::new(WEFT)
        .env("WEFT_HOME", mesh.home().unwrap())
        .args(["load", "--rate", &rate.to_string(), "--duration", "240s"])
        .args(["--timeout", "10s", "-H", "Host: shop.example"])
        .args(extra)
        .arg(format!("http://{}{path}", mesh.ingress))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn near(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance * want,
        "{what}: {got:.2}, not within {:.0}% of {want:.2}",
        tolerance * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_shop_under_load_in_a_browser() {
    const ORDERS: u32 = 8;
    const PAGES: u32 = 12;
    let mesh = shop();
    let status = mesh.status_json(None);
    let dashboard = status["dashboard"].as_str().unwrap().to_string();
    let addr: std::net::SocketAddr = dashboard
        .trim_start_matches("http://")
        .trim_end_matches("/dashboard/")
        .parse()
        .unwrap();

    // The URL to open carries the credential once; without it nothing is served.
    let url = mesh.weft_ok(&["dashboard"]).trim().to_string();
    assert!(
        url.starts_with(&format!("{dashboard}?token=")),
        "{url} vs {dashboard}"
    );
    let c = client();
    let host = addr.to_string();
    let plain = get(&c, addr, &host, "/dashboard/api/overview")
        .await
        .unwrap();
    assert_eq!(plain.status, 401, "{}", plain.text);
    let wrong = get(&c, addr, &host, "/dashboard/?token=nope")
        .await
        .unwrap();
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    let token = url.split_once("?token=").unwrap().1;
    let rebound = get_with(
        &c,
        addr,
        "dashboard.evil.example",
        "/dashboard/api/overview",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    assert_eq!(
        rebound.status, 403,
        "a name other than an address: {}",
        rebound.text
    );

    // Orders (ingress → frontend → order → product, inventory, payment) and product pages
    // (frontend → product) at fixed rates.
    let (st, v) = post_json(
        mesh.ingress,
        "/api/login",
        &[("host", "shop.example")],
        &json!({"name": "alice", "password": "wonderland"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let bearer = format!(
        "Authorization: Bearer {}",
        v["access_token"].as_str().unwrap()
    );
    let body = json!({"items": [{"product": "tea", "qty": 1}]}).to_string();
    let _orders = load(
        &mesh,
        ORDERS,
        &[
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "--body",
            &body,
        ],
        "/api/orders",
    );
    let _pages = load(&mesh, PAGES, &[], "/api/products");
    // Both loads flowing before the dashboard is first asked for numbers, so that its first
    // window is all under load.
    let admins: Vec<(String, std::net::SocketAddr)> = status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["service"].as_str().unwrap().to_string(),
                w["admin"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let inbound = |svc: &'static str| {
        let (c, admins) = (c.clone(), admins.clone());
        async move {
            let mut n = 0.0;
            for (_, admin) in admins.iter().filter(|(s, _)| s == svc) {
                n += metric_sum(&c, *admin, "weft_requests_total{direction=\"inbound\"").await;
            }
            n
        }
    };
    until(
        "orders reach payment and pages product",
        std::time::Duration::from_secs(30),
        || async { inbound("payment").await > 0.0 && inbound("product").await > 0.0 },
    )
    .await;
    // A rollout of payment v2, held at half the traffic.
    mesh.weft_ok(&[
        "canary",
        "start",
        "payment",
        "--from",
        "v1",
        "--to",
        "v2",
        "--steps",
        "50,100",
        "--interval",
        "600s",
    ]);

    // A change the control plane refuses: a weight over 100, on line 10.
    let bad = mesh.files.path().join("bad-weights.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bad-weights\nspec:\n  hosts: [order]\n  http:\n  - route:\n    - destination: {host: order}\n      weight: 150\n",
    )
    .unwrap();
    let refused = mesh.weft(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!refused.status.success());

    let shots = screenshots_dir();
    let seen = browser(
        &mesh,
        "dashboard.py",
        &[
            url.as_str(),
            shots.to_str().unwrap(),
            "default/order",
            "bad-weights.yaml",
            "default/payment",
        ],
    )
    .await;
    // `weft stat` over the same kind of window, right after the page was read.
    let stat: Value =
        serde_json::from_str(&mesh.weft_ok(&["stat", "order", "-o", "json", "--window", "10s"]))
            .unwrap();
    let edges: Value = serde_json::from_str(&mesh.weft_ok(&["edges", "-o", "json"])).unwrap();

    // Signed in by the cookie: the token is gone from the address.
    assert!(
        !seen["signed_in_url"].as_str().unwrap().contains("token"),
        "{seen}"
    );

    // Every service is a node, with health as text.
    let nodes = seen["graph"]["nodes"].as_array().unwrap();
    let ids: BTreeSet<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    for svc in [
        "auth",
        "frontend",
        "inventory",
        "order",
        "payment",
        "product",
        "user",
    ] {
        assert!(
            ids.contains(format!("default/{svc}").as_str()),
            "{svc} missing: {ids:?}"
        );
    }
    for n in nodes {
        let health = n["health"].as_str().unwrap();
        let text = n["text"].as_array().unwrap();
        assert!(
            text.iter().any(|t| t.as_str().unwrap().ends_with(health)),
            "health {health} not written on {n}"
        );
        if n["kind"] == "service" {
            assert!(n["link"].as_str().unwrap().starts_with("#/service/"), "{n}");
        }
    }

    // The edges drawn are the mesh's edges that carry traffic, with their mTLS, and the
    // numbers are the load's.
    let drawn: Vec<&Value> = seen["graph"]["edges"].as_array().unwrap().iter().collect();
    let td = "spiffe://cluster.local/ns";
    let sa = |s: &str| format!("{td}/default/sa/{s}");
    let ingress = format!("{td}/istio-system/sa/istio-ingressgateway");
    let known: Vec<(String, String, bool)> = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["src"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap().to_string(),
                e["mtls"].as_bool().unwrap(),
            )
        })
        .collect();
    for e in &drawn {
        let (src, dst) = (
            e["src_principal"].as_str().unwrap(),
            e["dst_principal"].as_str().unwrap(),
        );
        assert!(
            known
                .iter()
                .any(|(s, d, m)| s == src && d == dst && *m == e["mtls"].as_bool().unwrap()),
            "drawn edge {src} → {dst} (mtls {}) is not among weft edges' {known:?}",
            e["mtls"]
        );
        assert!(e["rps"].as_f64().unwrap() > 0.0, "{e}");
        let label = e["label"].as_str().unwrap();
        assert!(
            label.contains("rps") && label.contains("p99") && label.contains("mTLS"),
            "{label}"
        );
    }
    // What the load drives, every edge of it: the callers' proxies saw each one.
    let loaded: BTreeSet<String> = ["frontend", "order", "product", "inventory", "payment"]
        .iter()
        .map(|s| sa(s))
        .collect();
    let want: BTreeSet<(&str, &str)> = known
        .iter()
        .filter(|(s, d, _)| loaded.contains(d) && (s == &ingress || loaded.contains(s)))
        .map(|(s, d, _)| (s.as_str(), d.as_str()))
        .collect();
    let got: BTreeSet<(&str, &str)> = drawn
        .iter()
        .map(|e| {
            (
                e["src_principal"].as_str().unwrap(),
                e["dst_principal"].as_str().unwrap(),
            )
        })
        .collect();
    for pair in &want {
        assert!(
            got.contains(pair),
            "edge {pair:?} carries traffic but is not drawn: {got:?}"
        );
    }
    assert!(want.len() >= 5, "{want:?}");
    let rps = |src: &str, dst: &str| {
        drawn
            .iter()
            .find(|e| e["src_principal"] == src && e["dst_principal"] == dst)
            .map(|e| e["rps"].as_f64().unwrap())
            .unwrap_or_else(|| panic!("no edge {src} → {dst}"))
    };
    near(
        "ingress → frontend",
        rps(&ingress, &sa("frontend")),
        (ORDERS + PAGES) as f64,
        0.10,
    );
    near(
        "frontend → order",
        rps(&sa("frontend"), &sa("order")),
        ORDERS as f64,
        0.10,
    );
    for e in &drawn {
        assert_eq!(e["mtls"], true, "STRICT mTLS everywhere: {e}");
    }

    // Opened with Enter from the graph; its RPS is `weft stat`'s.
    assert_eq!(seen["focused"], "#/service/default/order");
    let page = seen["service"]["rps"].as_f64().unwrap();
    let row = &stat["rows"][0];
    assert_eq!(row["name"], "order", "{stat}");
    near(
        "order's RPS, dashboard vs weft stat",
        page,
        row["rps"].as_f64().unwrap(),
        0.10,
    );
    assert_eq!(
        seen["service"]["charts"],
        json!(["Requests/s", "Success rate", "Latency (ms)"])
    );
    // The resources about order, as the configuration page states them.
    let about = seen["service"]["resources"].to_string();
    assert!(
        about.contains("AuthorizationPolicy") && about.contains("default/order"),
        "{about}"
    );
    assert!(
        seen["service"]["routes"]
            .as_str()
            .unwrap()
            .starts_with("order.default"),
        "{}",
        seen["service"]["routes"]
    );

    // Live requests with identities, fresh.
    let tap = &seen["tap"];
    assert!(tap["lag_ms"].as_f64().unwrap() <= 2000.0, "{tap}");
    assert!(tap["first_after_s"].as_f64().unwrap() <= 5.0, "{tap}");
    let pairs: Vec<&str> = tap["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        pairs
            .iter()
            .any(|p| p.starts_with(td) && p.contains(" -> spiffe://")),
        "{pairs:?}"
    );

    // The refused change, located.
    let refused = seen["config"]["refused"].to_string();
    assert!(refused.contains("bad-weights.yaml:10"), "{refused}");
    assert!(refused.contains("weight 150"), "{refused}");
    assert!(
        seen["config"]["problems"]
            .as_str()
            .unwrap()
            .starts_with('1'),
        "{seen}"
    );

    // Every proxy's certificate.
    let ids = seen["identities"].as_array().unwrap();
    assert!(ids.len() >= 11, "{ids:?}");
    assert!(
        ids.iter().any(|r| r.to_string().contains(&sa("order"))),
        "{ids:?}"
    );
    // The rollout's progress, and both versions in the graph by workload.
    let rollout = seen["canaries"].as_str().unwrap();
    assert!(rollout.contains("payment.default: v1 → v2"), "{rollout}");
    assert!(
        rollout.contains("v1 50%") && rollout.contains("v2 50%"),
        "{rollout}"
    );
    let wg = &seen["workload_graph"];
    assert_eq!(wg["title"], "Workload graph");
    for v in [
        "default/payment-v1",
        "default/payment-v2",
        "default/order",
        "default/frontend",
    ] {
        assert!(
            wg["nodes"].to_string().contains(&format!("\"{v}\"")),
            "{v}: {wg}"
        );
    }
    let to = |w: &str| -> f64 {
        wg["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e[0] == "default/order" && e[1] == w)
            .map(|e| e[2].as_f64().unwrap())
            .sum()
    };
    let (v1, v2) = (to("default/payment-v1"), to("default/payment-v2"));
    near("payment v1 + v2", v1 + v2, ORDERS as f64, 0.10);
    assert!(v1 > 0.0 && v2 > 0.0, "{wg}");

    // The same pages are under the control-plane API's /dashboard/ too.
    let api: std::net::SocketAddr = status["api"].as_str().unwrap().parse().unwrap();
    let bearer_header = format!("Bearer {token}");
    let on_api = get_with(
        &c,
        api,
        &api.to_string(),
        "/dashboard/api/overview",
        &[("authorization", &bearer_header)],
    )
    .await
    .unwrap();
    assert_eq!(on_api.status, 200, "{}", on_api.text);
    assert_eq!(on_api.body["mesh"], "shop");

    assert_screenshots(&[
        "dashboard-graph.png",
        "dashboard-service.png",
        "dashboard-workloads.png",
        "dashboard-tap.png",
        "dashboard-config.png",
        "dashboard-identities.png",
        "dashboard-rollouts.png",
    ]);
}
