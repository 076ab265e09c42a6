//! The shop's frontend (`weft demo shop frontend`): server-rendered HTML pages — products, cart,
//! checkout, order status, login — and the JSON API behind them, calling the product, auth and
//! order services through its sidecar. It keeps no state of its own: the cart and the session
//! token live in cookies, so any replica serves any request.
//!
//! Pages: `GET /` (products), `GET|POST /login`, `POST /logout`, `GET|POST /cart`, `POST
//! /checkout`, `GET /orders`, `GET /orders/{id}`.
//!
//! JSON API: `GET /api/products`, `POST /api/login {name, password}` and `POST /api/signup
//! {name, password, display_name}` (the auth service's token), `POST /api/orders {items}`, `GET
//! /api/orders`, `GET /api/orders/{id}` — with `Authorization: Bearer TOKEN` (or the session
//! cookie), passed on to the order service, whose sidecar checks it. `POST /api/orders` passes
//! on the request's `Idempotency-Key`, or makes one when there is none (then a client's own
//! resend is a new order; the mesh's retries of the call to the order service are not).

use super::http::Remote;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State as Shared};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::fmt::Write;

/// The cookie holding the session's token.
pub const TOKEN_COOKIE: &str = "shop_token";
/// The cookie holding the logged-in user's name, for the pages' header.
const USER_COOKIE: &str = "shop_user";
/// The cookie holding the cart: `product:qty,…`.
const CART_COOKIE: &str = "shop_cart";
/// The most lines a cart holds, and of one product.
const MAX_LINES: usize = 20;
const MAX_QTY: u32 = 99;

/// The frontend's routes.
pub fn router(remote: Remote) -> Router {
    Router::new()
        .route("/", get(products_page))
        .route("/login", get(login_page).post(login_form))
        .route("/logout", post(logout))
        .route("/cart", get(cart_page).post(cart_form))
        .route("/checkout", post(checkout))
        .route("/orders", get(orders_page))
        .route("/orders/{id}", get(order_page))
        .route("/api/products", get(api_products))
        .route("/api/login", post(api_login))
        .route("/api/signup", post(api_signup))
        .route("/api/orders", post(api_place).get(api_orders))
        .route("/api/orders/{id}", get(api_order))
        .with_state(remote)
}

// ---- calls to the other services ----

/// What a service answered: status, content type and body, as received.
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Passed on to the caller as it came.
    fn relay(self) -> Response {
        let mut rsp = (self.status, self.body).into_response();
        if let Some(ct) = self.content_type {
            rsp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        rsp
    }
}

/// Sends a request to another service: `GET` without a body, else `POST` with `body` as JSON.
async fn call(
    remote: &Remote,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
    key: Option<&str>,
) -> Result<Answer, Response> {
    let mut req = match body {
        Some(_) => http::Request::post(url).header("content-type", "application/json"),
        None => http::Request::get(url),
    };
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let unavailable = |why: String| {
        tracing::warn!(url, error = %why, "call failed");
        (
            StatusCode::BAD_GATEWAY,
            axum::Json(json!({"error": format!("{url}: {why}")})),
        )
            .into_response()
    };
    let req = req
        .body(app::client::Body::from(body))
        .map_err(|e| unavailable(e.to_string()))?;
    let (status, content_type, body) = remote.exchange(req).await.map_err(unavailable)?;
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

// ---- the session ----

fn cookies(h: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookies(h).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The request's token: `Authorization: Bearer`, else the session cookie.
fn token(h: &HeaderMap) -> Option<String> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| cookie(h, TOKEN_COOKIE))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> (header::HeaderName, String) {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    (
        header::SET_COOKIE,
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{age}"),
    )
}

/// The cart in the request's cookie (unknown or malformed lines dropped).
fn cart(h: &HeaderMap) -> Vec<(String, u32)> {
    let mut lines: Vec<(String, u32)> = Vec::new();
    for part in cookie(h, CART_COOKIE).unwrap_or_default().split(',') {
        let Some((p, q)) = part.split_once(':') else {
            continue;
        };
        let valid = !p.is_empty()
            && p.len() <= 64
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        match q.parse::<u32>() {
            Ok(q) if valid && (1..=MAX_QTY).contains(&q) && lines.len() < MAX_LINES => {
                lines.push((p.to_string(), q))
            }
            _ => {}
        }
    }
    lines
}

fn cart_value(lines: &[(String, u32)]) -> String {
    lines
        .iter()
        .map(|(p, q)| format!("{p}:{q}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn new_key() -> String {
    let n: u128 = rand::random();
    format!("web-{n:032x}")
}

// ---- HTML ----

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:52rem;margin:0 auto;padding:1rem;color:#222}\
header{display:flex;gap:1rem;align-items:center;border-bottom:1px solid #ccc;padding-bottom:.5rem}\
header .who{margin-left:auto}\
.products{display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:1rem;margin-top:1rem}\
.product{border:1px solid #ddd;border-radius:6px;padding:.75rem}\
.price{font-weight:bold}.error{color:#a00;font-weight:bold}\
table{border-collapse:collapse;margin:1rem 0}td,th{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left}\
.state-CONFIRMED{color:#060}.state-CANCELLED{color:#a00}\
button{padding:.3rem .8rem}input{margin:.2rem}";

/// A whole page: the header (links, who is logged in) and `body`.
fn page(h: &HeaderMap, title: &str, body: &str, refresh: bool) -> Html<String> {
    let n: u32 = cart(h).iter().map(|(_, q)| q).sum();
    let who = match (token(h), cookie(h, USER_COOKIE)) {
        (Some(_), Some(user)) => format!(
            "<span>Signed in as <strong id=\"user\">{}</strong></span> \
             <form method=\"post\" action=\"/logout\" style=\"display:inline\">\
             <button id=\"logout\">Log out</button></form>",
            esc(user)
        ),
        _ => "<a id=\"login\" href=\"/login\">Log in</a>".into(),
    };
    let meta = if refresh {
        "<meta http-equiv=\"refresh\" content=\"1\">"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">{meta}\
         <title>{title} · weft shop</title><style>{STYLE}</style></head><body>\
         <header><strong>weft shop</strong><a href=\"/\">Products</a>\
         <a id=\"cart-link\" href=\"/cart\">Cart ({n})</a><a href=\"/orders\">Orders</a>\
         <span class=\"who\">{who}</span></header><main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title)
    ))
}

fn error_page(h: &HeaderMap, status: StatusCode, what: &str) -> Response {
    let body = format!("<p class=\"error\" role=\"alert\">{}</p>", esc(what));
    (status, page(h, "Something went wrong", &body, false)).into_response()
}

/// The catalog, as the product service has it.
async fn catalog(r: &Remote) -> Result<Vec<Value>, String> {
    match call(
        r,
        &format!("{}/products", r.peers.product),
        None,
        None,
        None,
    )
    .await
    {
        Ok(a) if a.status.is_success() => Ok(a.json().as_array().cloned().unwrap_or_default()),
        Ok(a) => Err(format!("the catalog answered {}", a.status)),
        Err(_) => Err("the catalog cannot be reached".into()),
    }
}

async fn products_page(Shared(r): Shared<Remote>, h: HeaderMap) -> Response {
    let products = match catalog(&r).await {
        Ok(p) => p,
        Err(e) => return error_page(&h, StatusCode::BAD_GATEWAY, &e),
    };
    let mut body = String::from("<div class=\"products\">");
    for p in &products {
        let id = esc(p["id"].as_str().unwrap_or_default());
        let _ = write!(
            body,
            "<div class=\"product\" id=\"product-{id}\"><h2>{}</h2><p>{}</p>\
             <p class=\"price\">{}</p><form method=\"post\" action=\"/cart\">\
             <input type=\"hidden\" name=\"product\" value=\"{id}\">\
             <label>Quantity <input type=\"number\" name=\"qty\" value=\"1\" min=\"1\" max=\"{MAX_QTY}\"></label>\
             <button id=\"add-{id}\">Add to cart</button></form></div>",
            esc(p["name"].as_str().unwrap_or_default()),
            esc(p["description"].as_str().unwrap_or_default()),
            money(p["price_cents"].as_i64().unwrap_or(0)),
        );
    }
    body.push_str("</div>");
    page(&h, "Products", &body, false).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
}

#[derive(serde::Deserialize, Default)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Only a path on this site is followed after logging in.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

fn login_form_html(next: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{error}<form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><label>Name <input id=\"name\" name=\"name\" autocomplete=\"username\" required></label></p>\
         <p><label>Password <input id=\"password\" type=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required></label></p>\
         <p><button id=\"submit\">Log in</button></p></form>",
        esc(next)
    )
}

async fn login_page(h: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    page(
        &h,
        "Log in",
        &login_form_html(safe_next(&q.next), None),
        false,
    )
    .into_response()
}

async fn login_form(Shared(r): Shared<Remote>, h: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(&f.next).to_string();
    let body = json!({"name": f.name, "password": f.password});
    let url = format!("{}/login", r.peers.auth);
    let a = match call(&r, &url, Some(&body), None, None).await {
        Ok(a) => a,
        Err(_) => {
            return error_page(
                &h,
                StatusCode::BAD_GATEWAY,
                "the login service cannot be reached",
            )
        }
    };
    let v = a.json();
    match (a.status, v["access_token"].as_str()) {
        (s, Some(t)) if s.is_success() => {
            let user = v["user"]["name"].as_str().unwrap_or(&f.name);
            let age = v["expires_in"].as_u64();
            let mut rsp = Redirect::to(&next).into_response();
            for (n, value) in [
                set_cookie(TOKEN_COOKIE, t, age),
                set_cookie(USER_COOKIE, user, age),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    rsp.headers_mut().append(n, v);
                }
            }
            rsp
        }
        (StatusCode::UNAUTHORIZED, _) => (
            StatusCode::UNAUTHORIZED,
            page(
                &h,
                "Log in",
                &login_form_html(&next, Some("Unknown user or wrong password.")),
                false,
            ),
        )
            .into_response(),
        (s, _) => error_page(
            &h,
            StatusCode::BAD_GATEWAY,
            &format!("the login service answered {s}"),
        ),
    }
}

async fn logout() -> Response {
    let mut rsp = Redirect::to("/").into_response();
    for name in [TOKEN_COOKIE, USER_COOKIE] {
        let (n, v) = set_cookie(name, "", Some(0));
        if let Ok(v) = HeaderValue::from_str(&v) {
            rsp.headers_mut().append(n, v);
        }
    }
    rsp
}

#[derive(serde::Deserialize)]
struct CartForm {
    product: String,
    #[serde(default)]
    qty: Option<String>,
    /// `add` (the default) or `remove`.
    #[serde(default)]
    op: Option<String>,
}

async fn cart_form(h: HeaderMap, Form(f): Form<CartForm>) -> Response {
    let mut lines = cart(&h);
    let qty = f
        .qty
        .as_deref()
        .and_then(|q| q.trim().parse::<u32>().ok())
        .unwrap_or(1);
    match f.op.as_deref() {
        Some("remove") => lines.retain(|(p, _)| *p != f.product),
        _ => {
            let valid = !f.product.is_empty()
                && f.product.len() <= 64
                && f.product
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid || qty == 0 {
                return error_page(&h, StatusCode::BAD_REQUEST, "no such product or quantity");
            }
            match lines.iter().position(|(p, _)| *p == f.product) {
                Some(i) => lines[i].1 = (lines[i].1 + qty).min(MAX_QTY),
                None if lines.len() < MAX_LINES => lines.push((f.product, qty.min(MAX_QTY))),
                None => return error_page(&h, StatusCode::BAD_REQUEST, "the cart is full"),
            }
        }
    }
    let mut rsp = Redirect::to("/cart").into_response();
    let (n, v) = set_cookie(CART_COOKIE, &cart_value(&lines), None);
    if let Ok(v) = HeaderValue::from_str(&v) {
        rsp.headers_mut().append(n, v);
    }
    rsp
}

async fn cart_page(Shared(r): Shared<Remote>, h: HeaderMap) -> Response {
    cart_view(&r, &h, None).await
}

/// The cart page, with `error` above it.
async fn cart_view(r: &Remote, h: &HeaderMap, error: Option<&str>) -> Response {
    let lines = cart(h);
    let mut body = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    if lines.is_empty() {
        body.push_str("<p>Your cart is empty. <a href=\"/\">See the products</a>.</p>");
        return page(h, "Cart", &body, false).into_response();
    }
    let products = match catalog(r).await {
        Ok(p) => p,
        Err(e) => return error_page(h, StatusCode::BAD_GATEWAY, &e),
    };
    body.push_str("<table><thead><tr><th>Product</th><th>Quantity</th><th>Price</th><th></th></tr></thead><tbody>");
    let mut total = 0i64;
    for (id, qty) in &lines {
        let p = products.iter().find(|p| p["id"] == id.as_str());
        let name = p.and_then(|p| p["name"].as_str()).unwrap_or(id);
        let price = p.and_then(|p| p["price_cents"].as_i64()).unwrap_or(0) * i64::from(*qty);
        total += price;
        let _ = write!(
            body,
            "<tr id=\"line-{id}\"><td>{}</td><td>{qty}</td><td>{}</td><td>\
             <form method=\"post\" action=\"/cart\"><input type=\"hidden\" name=\"product\" value=\"{id}\">\
             <input type=\"hidden\" name=\"op\" value=\"remove\"><button>Remove</button></form></td></tr>",
            esc(name),
            money(price),
            id = esc(id),
        );
    }
    let _ = write!(
        body,
        "</tbody><tfoot><tr><th>Total</th><td></td><td id=\"total\">{}</td><td></td></tr></tfoot></table>",
        money(total)
    );
    if token(h).is_some() {
        // The key makes a double-submitted checkout one order.
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/checkout\"><input type=\"hidden\" name=\"key\" value=\"{}\">\
             <button id=\"checkout\">Place order</button></form>",
            new_key()
        );
    } else {
        body.push_str("<p><a id=\"login-to-order\" href=\"/login?next=/cart\">Log in</a> to place the order.</p>");
    }
    page(h, "Cart", &body, false).into_response()
}

#[derive(serde::Deserialize)]
struct CheckoutForm {
    #[serde(default)]
    key: String,
}

async fn checkout(
    Shared(r): Shared<Remote>,
    h: HeaderMap,
    Form(f): Form<CheckoutForm>,
) -> Response {
    let Some(t) = token(&h) else {
        return Redirect::to("/login?next=/cart").into_response();
    };
    let lines = cart(&h);
    if lines.is_empty() {
        return Redirect::to("/cart").into_response();
    }
    let items: Vec<Value> = lines
        .iter()
        .map(|(p, q)| json!({"product": p, "qty": q}))
        .collect();
    let key = if (8..=100).contains(&f.key.len()) {
        f.key
    } else {
        new_key()
    };
    let url = format!("{}/orders", r.peers.order);
    let a = match call(
        &r,
        &url,
        Some(&json!({"items": items})),
        Some(&t),
        Some(&key),
    )
    .await
    {
        Ok(a) => a,
        Err(_) => {
            return cart_view(
                &r,
                &h,
                Some("The order service cannot be reached; try again."),
            )
            .await
        }
    };
    let v = a.json();
    match (a.status.as_u16(), v["id"].as_str()) {
        (201 | 202 | 409, Some(id)) => {
            // Placed (confirmed, cancelled or still going): the cart is spent.
            let mut rsp = Redirect::to(&format!("/orders/{id}")).into_response();
            let (n, c) = set_cookie(CART_COOKIE, "", Some(0));
            if let Ok(c) = HeaderValue::from_str(&c) {
                rsp.headers_mut().append(n, c);
            }
            rsp
        }
        (401 | 403, _) => Redirect::to("/login?next=/cart").into_response(),
        (409, None) => cart_view(&r, &h, Some("Some of it is out of stock.")).await,
        (s, _) => {
            let why = v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("status {s}"));
            cart_view(&r, &h, Some(&format!("The order was not placed: {why}"))).await
        }
    }
}

fn state_of(o: &Value) -> String {
    o["state"]
        .as_str()
        .unwrap_or("unknown")
        .to_ascii_uppercase()
}

async fn orders_page(Shared(r): Shared<Remote>, h: HeaderMap) -> Response {
    let Some(t) = token(&h) else {
        return Redirect::to("/login?next=/orders").into_response();
    };
    let url = format!("{}/orders", r.peers.order);
    let a = match call(&r, &url, None, Some(&t), None).await {
        Ok(a) if a.status.is_success() => a,
        Ok(a) if matches!(a.status.as_u16(), 401 | 403) => {
            return Redirect::to("/login?next=/orders").into_response()
        }
        Ok(a) => {
            return error_page(
                &h,
                StatusCode::BAD_GATEWAY,
                &format!("the order service answered {}", a.status),
            )
        }
        Err(_) => {
            return error_page(
                &h,
                StatusCode::BAD_GATEWAY,
                "the order service cannot be reached",
            )
        }
    };
    let orders = a.json().as_array().cloned().unwrap_or_default();
    if orders.is_empty() {
        return page(&h, "Orders", "<p>No orders yet.</p>", false).into_response();
    }
    let mut body = String::from(
        "<table><thead><tr><th>Order</th><th>State</th><th>Total</th></tr></thead><tbody>",
    );
    for o in &orders {
        let id = esc(o["id"].as_str().unwrap_or_default());
        let state = state_of(o);
        let _ = write!(
            body,
            "<tr><td><a href=\"/orders/{id}\">{id}</a></td><td class=\"state-{state}\">{state}</td><td>{}</td></tr>",
            money(o["total_cents"].as_i64().unwrap_or(0))
        );
    }
    body.push_str("</tbody></table>");
    page(&h, "Orders", &body, false).into_response()
}

async fn order_page(Shared(r): Shared<Remote>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(t) = token(&h) else {
        return Redirect::to(&format!("/login?next=/orders/{}", esc(&id))).into_response();
    };
    let url = format!(
        "{}/orders/{}",
        r.peers.order,
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    let o = match call(&r, &url, None, Some(&t), None).await {
        Ok(a) if a.status.is_success() => a.json(),
        Ok(a) if a.status == StatusCode::NOT_FOUND => {
            return error_page(&h, StatusCode::NOT_FOUND, "no such order")
        }
        Ok(a) => {
            return error_page(
                &h,
                StatusCode::BAD_GATEWAY,
                &format!("the order service answered {}", a.status),
            )
        }
        Err(_) => {
            return error_page(
                &h,
                StatusCode::BAD_GATEWAY,
                "the order service cannot be reached",
            )
        }
    };
    let state = state_of(&o);
    let open = matches!(state.as_str(), "PENDING" | "COMPENSATING");
    let mut body = format!(
        "<p>Order <code id=\"order-id\">{}</code> is <strong id=\"state\" class=\"state-{state}\">{state}</strong>.</p>",
        esc(o["id"].as_str().unwrap_or_default())
    );
    if let Some(reason) = o["reason"].as_str().filter(|r| !r.is_empty()) {
        let _ = write!(body, "<p id=\"reason\">{}</p>", esc(reason));
    }
    body.push_str("<table><thead><tr><th>Product</th><th>Quantity</th></tr></thead><tbody>");
    for i in o["items"].as_array().into_iter().flatten() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(i["product"].as_str().unwrap_or_default()),
            i["qty"].as_u64().unwrap_or(0)
        );
    }
    let _ = write!(
        body,
        "</tbody></table><p>Total: <span id=\"total\">{}</span></p>",
        money(o["total_cents"].as_i64().unwrap_or(0))
    );
    if open {
        body.push_str("<p>This page refreshes until the order is settled.</p>");
    }
    page(&h, "Order", &body, open).into_response()
}

// ---- the JSON API ----

/// Passes a call on to another service and its answer back as it came.
async fn pass(
    r: &Remote,
    url: String,
    body: Option<&Value>,
    token: Option<&str>,
    key: Option<&str>,
) -> Response {
    match call(r, &url, body, token, key).await {
        Ok(a) => a.relay(),
        Err(rsp) => rsp,
    }
}

async fn api_products(Shared(r): Shared<Remote>) -> Response {
    pass(
        &r,
        format!("{}/products", r.peers.product),
        None,
        None,
        None,
    )
    .await
}

async fn api_login(Shared(r): Shared<Remote>, body: axum::Json<Value>) -> Response {
    pass(
        &r,
        format!("{}/login", r.peers.auth),
        Some(&body.0),
        None,
        None,
    )
    .await
}

async fn api_signup(Shared(r): Shared<Remote>, body: axum::Json<Value>) -> Response {
    pass(
        &r,
        format!("{}/signup", r.peers.auth),
        Some(&body.0),
        None,
        None,
    )
    .await
}

async fn api_place(Shared(r): Shared<Remote>, h: HeaderMap, body: axum::Json<Value>) -> Response {
    let key = h
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(new_key);
    let url = format!("{}/orders", r.peers.order);
    pass(&r, url, Some(&body.0), token(&h).as_deref(), Some(&key)).await
}

async fn api_orders(Shared(r): Shared<Remote>, h: HeaderMap) -> Response {
    let url = format!("{}/orders", r.peers.order);
    pass(&r, url, None, token(&h).as_deref(), None).await
}

async fn api_order(Shared(r): Shared<Remote>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let url = format!("{}/orders/{id}", r.peers.order);
    pass(&r, url, None, token(&h).as_deref(), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    #[test]
    fn the_cart_cookie_round_trips_and_drops_what_is_malformed() {
        let h = headers("a=b; shop_cart=tea:2,cup:1,bad,pot:0,x y:3,kettle:100,honey:5");
        assert_eq!(
            cart(&h),
            vec![("tea".into(), 2), ("cup".into(), 1), ("honey".into(), 5)]
        );
        assert_eq!(cart_value(&cart(&h)), "tea:2,cup:1,honey:5");
    }

    #[test]
    fn the_token_comes_from_the_header_before_the_cookie() {
        let mut h = headers("shop_token=fromcookie");
        assert_eq!(token(&h).as_deref(), Some("fromcookie"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer fromheader"),
        );
        assert_eq!(token(&h).as_deref(), Some("fromheader"));
        assert_eq!(token(&headers("shop_token=")), None);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/cart"), "/cart");
        for bad in ["https://evil.example/", "//evil.example/", "/\\evil", ""] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(money(123_456), "$1234.56");
    }
}
