//! The shop's services over real HTTP on 127.0.0.1:0 (no mesh: the order service calls the
//! others directly): an order placed, replayed and refused as a customer would see it.

use super::catalog::Catalog;
use super::http::{self, Peers, Remote};
use super::inventory::Inventory;
use super::orders::Orders;
use super::payment::{Payment, Switches};
use app::client::{Client, Sidecar};
use app::health::Health;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = http::wrap(router, &Health::new());
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Shop {
    order: SocketAddr,
    inventory: SocketAddr,
    payment: SocketAddr,
    client: Client,
}

async fn shop(switches: Switches) -> Shop {
    let inventory = serve(http::inventory(
        Inventory::open(None, &[("tea", 10), ("cup", 1)])
            .await
            .unwrap(),
    ))
    .await;
    let payment = serve(http::payment(Payment::open(None, switches).unwrap())).await;
    let product = serve(http::product(Catalog::open(None).await.unwrap())).await;
    let client = Client::builder()
        .sidecar(Sidecar::None)
        .timeout(Duration::from_secs(5))
        .build();
    let remote = Remote {
        client: client.clone(),
        peers: Peers {
            inventory: format!("http://{inventory}"),
            payment: format!("http://{payment}"),
            product: format!("http://{product}"),
            ..Peers::default()
        },
    };
    let orders = Orders::open(None, "test", Duration::from_secs(10)).unwrap();
    let order = serve(http::order(orders, remote)).await;
    Shop {
        order,
        inventory,
        payment,
        client,
    }
}

impl Shop {
    async fn call(
        &self,
        method: &str,
        url: String,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        use http_body_util::BodyExt;
        let mut req = ::http::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .header("x-weft-end-user", "alice");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let rsp = self
            .client
            .request(req.body(app::client::Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = rsp.status().as_u16();
        let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn place(&self, key: &str, items: Value) -> (u16, Value) {
        let url = format!("http://{}/orders", self.order);
        self.call("POST", url, Some(key), json!({ "items": items }))
            .await
    }

    async fn stock(&self) -> Value {
        self.call(
            "GET",
            format!("http://{}/stock", self.inventory),
            None,
            json!({}),
        )
        .await
        .1
    }

    async fn charged(&self) -> i64 {
        let url = format!("http://{}/total", self.payment);
        self.call("GET", url, None, json!({})).await.1["charged_cents"]
            .as_i64()
            .unwrap()
    }
}

#[tokio::test]
async fn an_order_over_http_is_confirmed_once_however_often_it_is_sent() {
    let s = shop(Switches::default()).await;
    let items = json!([{"product": "tea", "qty": 2}, {"product": "cup", "qty": 1}]);
    let (status, o) = s.place("order-1", items.clone()).await;
    assert_eq!(status, 201, "{o}");
    assert_eq!(o["state"], "confirmed");
    assert_eq!(o["user"], "alice");
    // Priced by the catalog: 2 × 8.50 + 14.50.
    assert_eq!(o["total_cents"], 3_150);
    // The same request again (a client retry): the same order, nothing charged twice.
    let (status, again) = s.place("order-1", items).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["id"], o["id"]);
    assert_eq!(s.charged().await, 3_150);
    assert_eq!(s.stock().await, json!({"tea": 8, "cup": 0}));
    // The cup is gone: refused before anything is created or charged.
    let (status, short) = s
        .place("order-2", json!([{"product": "cup", "qty": 1}]))
        .await;
    assert_eq!(status, 409, "{short}");
    assert_eq!(s.charged().await, 3_150);
    // No Idempotency-Key: 400.
    let url = format!("http://{}/orders", s.order);
    let (status, _) = s
        .call(
            "POST",
            url,
            None,
            json!({"items": [{"product": "tea", "qty": 1}]}),
        )
        .await;
    assert_eq!(status, 400);
    // The order as the customer reads it back.
    let url = format!("http://{}/orders/{}", s.order, o["id"].as_str().unwrap());
    let (status, read) = s.call("GET", url, None, json!({})).await;
    assert_eq!((status, &read["state"]), (200, &json!("confirmed")));
}

#[tokio::test]
async fn a_payment_that_always_fails_cancels_the_order_and_keeps_the_books_straight() {
    let s = shop(Switches {
        fail_rate: 1.0,
        ..Switches::default()
    })
    .await;
    let (status, o) = s
        .place("order-1", json!([{"product": "tea", "qty": 3}]))
        .await;
    assert_eq!(status, 409, "{o}");
    assert_eq!(o["state"], "cancelled");
    assert!(o["reason"].as_str().unwrap().starts_with("payment:"), "{o}");
    assert_eq!(s.stock().await, json!({"tea": 10, "cup": 1}));
    assert_eq!(s.charged().await, 0);
}
