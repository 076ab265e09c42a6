//! The shop's services over HTTP (axum on the app SDK): each service's JSON API on its domain
//! state, wrapped the same way — the mesh's headers and deadline passed on, a server span, RED
//! metrics on `/metrics`, `/healthz` and `/readyz`, graceful shutdown — and the order service's
//! saga steps as calls to the inventory and payment services ([`Remote`]).
//!
//! Mutating calls need an `Idempotency-Key` header (400 without): the same key with the same
//! body replays the first answer, so a retry by the mesh or by the client never charges or
//! reserves twice.

use super::catalog::Catalog;
use super::db::{Answer, DbError};
use super::inventory::Inventory;
use super::orders::{Order, Orders, State};
use super::payment::Payment;
use super::saga::{self, Outcome, Steps};
use super::users::Users;
use super::Item;
use app::client::Client;
use app::health::Health;
use app::metrics::Metrics;
use app::propagate::PropagateLayer;
use app::trace::TraceLayer;
use axum::extract::{Path, Query, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// What one request may take in a shop service, calls to others included.
pub const BUDGET: Duration = Duration::from_secs(10);
/// The header naming the end user, which the ingress sets from the verified JWT.
pub const END_USER: &str = "x-weft-end-user";

/// `router` with what every shop service has: propagation, a span, RED metrics, health, and
/// `/metrics`.
pub fn wrap(router: Router, health: &Health) -> Router {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry);
    router
        .layer(
            tower::ServiceBuilder::new()
                .layer(PropagateLayer::new().timeout(BUDGET))
                .layer(TraceLayer::global())
                .layer(metrics.layer()),
        )
        .merge(health.router())
        .merge(app::metrics::router(Arc::new(registry)))
}

fn answer(a: Answer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        a.body,
    )
        .into_response()
}

fn failed(e: DbError) -> Response {
    tracing::error!(error = %e, "the service's database");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

fn key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(str::to_string)
}

fn no_key() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "mutating calls need an Idempotency-Key header"})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ItemsBody {
    items: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct ReserveBody {
    order: String,
    items: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct OrderRef {
    order: String,
}

/// The inventory service: `GET /stock`, `POST /check {items}`, `POST /reservations {order,
/// items}`, `POST /releases {order}`, `GET /reservations/{order}`.
pub fn inventory(inv: Inventory) -> Router {
    Router::new()
        .route(
            "/stock",
            get(|Shared(inv): Shared<Inventory>| async move {
                inv.stock().await.map(|s| Json(json!(s)).into_response()).unwrap_or_else(failed)
            }),
        )
        .route(
            "/check",
            post(|Shared(inv): Shared<Inventory>, Json(b): Json<ItemsBody>| async move {
                inv.check(b.items)
                    .await
                    .map(|short| Json(json!({"short": short})).into_response())
                    .unwrap_or_else(failed)
            }),
        )
        .route(
            "/reservations",
            post(
                |Shared(inv): Shared<Inventory>, h: HeaderMap, Json(b): Json<ReserveBody>| async move {
                    let Some(key) = key(&h) else {
                    return no_key();
                };
                    inv.reserve(&key, &b.order, b.items).await.map(answer).unwrap_or_else(failed)
                },
            ),
        )
        .route(
            "/releases",
            post(|Shared(inv): Shared<Inventory>, h: HeaderMap, Json(b): Json<OrderRef>| async move {
                let Some(key) = key(&h) else {
                    return no_key();
                };
                inv.release(&key, &b.order).await.map(answer).unwrap_or_else(failed)
            }),
        )
        .route(
            "/reservations/{order}",
            get(|Shared(inv): Shared<Inventory>, Path(order): Path<String>| async move {
                inv.reservation(&order)
                    .await
                    .map(|items| Json(json!({"order": order, "items": items})).into_response())
                    .unwrap_or_else(failed)
            }),
        )
        .with_state(inv)
}

#[derive(serde::Deserialize)]
struct ChargeBody {
    order: String,
    amount_cents: i64,
}

/// The payment service: `POST /charges {order, amount_cents}`, `POST /refunds {order}`, `GET
/// /charges/{order}`, `GET /total`.
pub fn payment(pay: Payment) -> Router {
    Router::new()
        .route(
            "/charges",
            post(
                |Shared(pay): Shared<Payment>, h: HeaderMap, Json(b): Json<ChargeBody>| async move {
                    let Some(key) = key(&h) else {
                        return no_key();
                    };
                    pay.charge(&key, &b.order, b.amount_cents)
                        .await
                        .map(answer)
                        .unwrap_or_else(failed)
                },
            ),
        )
        .route(
            "/refunds",
            post(
                |Shared(pay): Shared<Payment>, h: HeaderMap, Json(b): Json<OrderRef>| async move {
                    let Some(key) = key(&h) else {
                        return no_key();
                    };
                    pay.refund(&key, &b.order)
                        .await
                        .map(answer)
                        .unwrap_or_else(failed)
                },
            ),
        )
        .route(
            "/charges/{order}",
            get(
                |Shared(pay): Shared<Payment>, Path(order): Path<String>| async move {
                    match pay.charge_for(&order).await {
                        Ok(Some(c)) => Json(json!(c)).into_response(),
                        Ok(None) => {
                            (StatusCode::NOT_FOUND, Json(json!({"order": order}))).into_response()
                        }
                        Err(e) => failed(e),
                    }
                },
            ),
        )
        .route(
            "/total",
            get(|Shared(pay): Shared<Payment>| async move {
                pay.total_charged()
                    .await
                    .map(|t| Json(json!({"charged_cents": t})).into_response())
                    .unwrap_or_else(failed)
            }),
        )
        .with_state(pay)
}

/// The product service: `GET /products`, `GET /products/{id}`.
pub fn product(catalog: Catalog) -> Router {
    Router::new()
        .route(
            "/products",
            get(|Shared(c): Shared<Catalog>| async move {
                c.all()
                    .await
                    .map(|p| Json(json!(p)).into_response())
                    .unwrap_or_else(failed)
            }),
        )
        .route(
            "/products/{id}",
            get(
                |Shared(c): Shared<Catalog>, Path(id): Path<String>| async move {
                    match c.get(&id).await {
                        Ok(Some(p)) => Json(json!(p)).into_response(),
                        Ok(None) => {
                            (StatusCode::NOT_FOUND, Json(json!({"product": id}))).into_response()
                        }
                        Err(e) => failed(e),
                    }
                },
            ),
        )
        .with_state(catalog)
}

#[derive(serde::Deserialize)]
struct Login {
    name: String,
    password: String,
}

#[derive(serde::Deserialize)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    display_name: String,
}

/// Why `u` cannot be an account, if it cannot.
fn invalid_user(u: &NewUser) -> Option<&'static str> {
    let name_ok = (1..=64).contains(&u.name.len())
        && u.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Some("name: 1 to 64 of a-z, 0-9, - and _");
    }
    if !(8..=200).contains(&u.password.len()) {
        return Some("password: 8 to 200 bytes");
    }
    if u.display_name.len() > 100 {
        return Some("display_name: at most 100 bytes");
    }
    None
}

/// The user service: `POST /verify {name, password}` (200 with the user, 401), `POST /users
/// {name, password, display_name}` (201 made; 200 when that name already has that password, so
/// a retried sign-up succeeds; 409 a taken name; 400 an invalid one), `GET /users/{name}`.
pub fn user(users: Users) -> Router {
    Router::new()
        .route(
            "/users",
            post(
                |Shared(u): Shared<Users>, Json(n): Json<NewUser>| async move {
                    if let Some(why) = invalid_user(&n) {
                        return (StatusCode::BAD_REQUEST, Json(json!({"error": why})))
                            .into_response();
                    }
                    let display = if n.display_name.is_empty() {
                        &n.name
                    } else {
                        &n.display_name
                    };
                    match u.add(&n.name, &n.password, display).await {
                        Ok(true) => (
                            StatusCode::CREATED,
                            Json(json!({"name": n.name, "display_name": display})),
                        )
                            .into_response(),
                        Ok(false) => match u.verify(&n.name, &n.password).await {
                            Ok(Some(user)) => Json(json!(user)).into_response(),
                            Ok(None) => (
                                StatusCode::CONFLICT,
                                Json(json!({"error": format!("the name {:?} is taken", n.name)})),
                            )
                                .into_response(),
                            Err(e) => failed(e),
                        },
                        Err(e) => failed(e),
                    }
                },
            ),
        )
        .route(
            "/verify",
            post(
                |Shared(u): Shared<Users>, Json(l): Json<Login>| async move {
                    match u.verify(&l.name, &l.password).await {
                        Ok(Some(user)) => Json(json!(user)).into_response(),
                        Ok(None) => (
                            StatusCode::UNAUTHORIZED,
                            Json(json!({"error": "unknown user or wrong password"})),
                        )
                            .into_response(),
                        Err(e) => failed(e),
                    }
                },
            ),
        )
        .route(
            "/users/{name}",
            get(
                |Shared(u): Shared<Users>, Path(name): Path<String>| async move {
                    match u.get(&name).await {
                        Ok(Some(user)) => Json(json!(user)).into_response(),
                        Ok(None) => {
                            (StatusCode::NOT_FOUND, Json(json!({"user": name}))).into_response()
                        }
                        Err(e) => failed(e),
                    }
                },
            ),
        )
        .with_state(users)
}

/// Where a service finds the others (through its sidecar, by service name).
#[derive(Clone, Debug)]
pub struct Peers {
    pub inventory: String,
    pub payment: String,
    pub product: String,
    pub user: String,
    pub auth: String,
    pub order: String,
}

impl Default for Peers {
    fn default() -> Peers {
        Peers {
            inventory: "http://inventory".into(),
            payment: "http://payment".into(),
            product: "http://product".into(),
            user: "http://user".into(),
            auth: "http://auth".into(),
            order: "http://order".into(),
        }
    }
}

/// The saga's steps as calls to the inventory and payment services.
#[derive(Clone)]
pub struct Remote {
    pub client: Client,
    pub peers: Peers,
}

impl Remote {
    /// POSTs `body` to `url` with idempotency key `key`: the status and JSON body, or why
    /// there was none.
    async fn post(&self, url: &str, key: &str, body: Value) -> Result<(u16, Value), String> {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(app::client::Body::from(body.to_string()))
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    /// POSTs `body` to `url` (a call that changes nothing, or whose target is idempotent by
    /// itself).
    pub(crate) async fn post_plain(&self, url: &str, body: Value) -> Result<(u16, Value), String> {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .body(app::client::Body::from(body.to_string()))
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    pub(crate) async fn send(
        &self,
        req: http::Request<app::client::Body>,
    ) -> Result<(u16, Value), String> {
        let (status, _, bytes) = self.exchange(req).await?;
        Ok((
            status.as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Sends `req` and reads the whole answer: status, content type and body as received.
    pub(crate) async fn exchange(
        &self,
        req: http::Request<app::client::Body>,
    ) -> Result<(StatusCode, Option<http::HeaderValue>, bytes::Bytes), String> {
        use http_body_util::BodyExt;
        let rsp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = rsp.status();
        let content_type = rsp.headers().get(http::header::CONTENT_TYPE).cloned();
        let bytes = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, content_type, bytes))
    }

    pub(crate) async fn get(&self, url: &str) -> Result<(u16, Value), String> {
        let req = http::Request::get(url)
            .body(app::client::Body::default())
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    async fn step(&self, url: String, key: String, body: Value) -> Outcome {
        match self.post(&url, &key, body).await {
            Ok((200..=299, _)) => Outcome::Done,
            Ok((s @ 500.., b)) => Outcome::Unknown(format!("{s} from {url}: {b}")),
            Ok((s, b)) => Outcome::Refused(format!("{s} from {url}: {b}")),
            Err(e) => Outcome::Unknown(format!("{url}: {e}")),
        }
    }
}

impl Steps for Remote {
    async fn charge(&self, o: &Order) -> Outcome {
        let body = json!({"order": o.id, "amount_cents": o.total_cents});
        self.step(
            format!("{}/charges", self.peers.payment),
            format!("{}:charge", o.id),
            body,
        )
        .await
    }
    async fn refund(&self, o: &Order) -> Outcome {
        let body = json!({"order": o.id});
        self.step(
            format!("{}/refunds", self.peers.payment),
            format!("{}:refund", o.id),
            body,
        )
        .await
    }
    async fn reserve(&self, o: &Order) -> Outcome {
        let body = json!({"order": o.id, "items": o.items});
        let url = format!("{}/reservations", self.peers.inventory);
        self.step(url, format!("{}:reserve", o.id), body).await
    }
    async fn release(&self, o: &Order) -> Outcome {
        let body = json!({"order": o.id});
        self.step(
            format!("{}/releases", self.peers.inventory),
            format!("{}:release", o.id),
            body,
        )
        .await
    }
}

#[derive(Clone)]
struct OrderService {
    orders: Orders,
    remote: Remote,
}

#[derive(serde::Deserialize)]
struct ListQuery {
    user: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// The order service: `POST /orders {items}` (Idempotency-Key; the end user from
/// `x-weft-end-user`): checks the stock, prices the items, creates the order and drives the
/// saga — 201 with the order once confirmed, 409 with it when cancelled (its `reason` says
/// why), 202 while it is still being compensated; `GET /orders/{id}`, `GET /orders?user=`.
/// Orders left open by a coordinator that died are finished by [`saga::recover`], which
/// `run` starts beside it.
pub fn order(orders: Orders, remote: Remote) -> Router {
    Router::new()
        .route("/orders", post(place).get(list))
        .route(
            "/orders/{id}",
            get(
                |Shared(s): Shared<OrderService>,
                 ext: axum::http::Extensions,
                 Path(id): Path<String>| async move {
                    // With a verified token, a user sees only their own orders.
                    let me = subject(&ext);
                    match s.orders.get(&id).await {
                        Ok(Some(o)) if me.as_ref().is_none_or(|me| *me == o.user) => {
                            Json(json!(o)).into_response()
                        }
                        Ok(_) => {
                            (StatusCode::NOT_FOUND, Json(json!({"order": id}))).into_response()
                        }
                        Err(e) => failed(e),
                    }
                },
            ),
        )
        .with_state(OrderService { orders, remote })
}

/// The subject of the request's verified token, if the service checks tokens.
fn subject(ext: &axum::http::Extensions) -> Option<String> {
    ext.get::<app::auth::Claims>()
        .and_then(|c| c.subject().map(str::to_string))
}

async fn list(
    Shared(s): Shared<OrderService>,
    ext: axum::http::Extensions,
    Query(q): Query<ListQuery>,
) -> Response {
    // With a verified token: that user's orders, whatever `user=` says.
    let user = subject(&ext).or(q.user);
    s.orders
        .list(user.as_deref(), q.limit.unwrap_or(50).min(500))
        .await
        .map(|o| Json(json!(o)).into_response())
        .unwrap_or_else(failed)
}

async fn place(
    Shared(s): Shared<OrderService>,
    ext: axum::http::Extensions,
    h: HeaderMap,
    Json(b): Json<ItemsBody>,
) -> Response {
    let Some(key) = key(&h) else {
        return no_key();
    };
    let bad = |status: StatusCode, v: Value| (status, Json(v)).into_response();
    if b.items.is_empty() || b.items.iter().any(|i| i.qty == 0 || i.qty > 1_000) {
        return bad(
            StatusCode::BAD_REQUEST,
            json!({"error": "items: 1 to 1,000 of each product"}),
        );
    }
    // The verified token's subject (the service checks tokens itself when run with --jwks),
    // else what the mesh says the end user is.
    let user = subject(&ext)
        .or_else(|| {
            h.get(END_USER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "anonymous".into());
    // A retry of a request already taken: its order, taken further if still open.
    match s.orders.replay(&key, &user, &b.items).await {
        Ok(Some(Ok(o))) => return finish(&s, o).await,
        Ok(Some(Err(a))) => return answer(a),
        Ok(None) => {}
        Err(e) => return failed(e),
    }
    // Priced by the catalog, checked against the stock (the reservation decides for good).
    let mut total = 0i64;
    for i in &b.items {
        let url = format!("{}/products/{}", s.remote.peers.product, i.product);
        match s.remote.get(&url).await {
            Ok((200, p)) => total += p["price_cents"].as_i64().unwrap_or(0) * i64::from(i.qty),
            Ok((404, _)) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("no product {:?}", i.product)}),
                )
            }
            Ok((st, v)) => {
                return bad(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": format!("product: {st}: {v}")}),
                )
            }
            Err(e) => {
                return bad(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": format!("product: {e}")}),
                )
            }
        }
    }
    let check = format!("{}/check", s.remote.peers.inventory);
    let req = http::Request::post(&check)
        .header("content-type", "application/json")
        .body(app::client::Body::from(
            json!({"items": b.items}).to_string(),
        ));
    match req {
        Ok(req) => match s.remote.send(req).await {
            Ok((200, v)) if v["short"].as_array().is_some_and(|a| a.is_empty()) => {}
            Ok((200, v)) => {
                return bad(
                    StatusCode::CONFLICT,
                    json!({"error": "out of stock", "short": v["short"]}),
                )
            }
            Ok((st, v)) => {
                return bad(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": format!("inventory: {st}: {v}")}),
                )
            }
            Err(e) => {
                return bad(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": format!("inventory: {e}")}),
                )
            }
        },
        Err(e) => {
            return bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": e.to_string()}),
            )
        }
    }
    let order = match s.orders.create(&key, &user, b.items, total).await {
        Ok(Ok((o, _))) => o,
        Ok(Err(a)) => return answer(a),
        Err(e) => return failed(e),
    };
    finish(&s, order).await
}

/// Drives `order` as far as it goes now and answers with it: 201 confirmed, 409 cancelled, 202
/// still open.
async fn finish(s: &OrderService, order: Order) -> Response {
    match saga::drive(&s.orders, &s.remote, order).await {
        Ok(o) => {
            let status = match o.state {
                State::Confirmed => StatusCode::CREATED,
                State::Cancelled => StatusCode::CONFLICT,
                State::Pending | State::Compensating => StatusCode::ACCEPTED,
            };
            (status, Json(json!(o))).into_response()
        }
        Err(e) => failed(e),
    }
}
