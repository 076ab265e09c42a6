//! The shop's domain: the state of its inventory, payment and order services and the order saga
//! that keeps them consistent, each service's state in its own SQLite database.
//!
//! Layout:
//! - [`catalog`]: the products and their prices; [`users`]: accounts, for the auth service's
//!   logins.
//! - [`db`]: one SQLite database per service (a WAL file under the data directory, or memory),
//!   and the idempotency records every mutating call goes through.
//! - [`inventory`]: stock, reservations per order, releases.
//! - [`payment`]: charges per order, refunds, and the switches (`fail_rate`, `delay`) that make
//!   the mesh's retries, timeouts and breakers visible.
//! - [`orders`]: orders and their states, with a lease held by the coordinator driving each.
//! - [`http`]: each service's JSON API (axum on the app SDK), and the saga's steps as calls
//!   between the services.
//! - [`frontend`]: the HTML pages and the public JSON API; [`login`]: the auth service, which
//!   logs users in against the user service and signs their tokens.
//! - [`run`]: one service run as `weft demo shop SERVICE`.
//! - [`saga`]: the order flow — charge, reserve, confirm — and its compensation (release,
//!   refund), replayable from any point: every step is idempotent, so a coordinator that died
//!   mid-flow is finished by any other ([`saga::recover`]).
//!
//! Every mutating call is idempotent twice over: by its `Idempotency-Key` (the same key and body
//! replays the first answer; the same key with another body is refused), and by the order it
//! is for (a second charge or reservation for an order answers what the first did; a charge or
//! reservation arriving after the order's refund or release is refused, so a request delayed in
//! the network cannot leave anything behind a cancelled order).

pub mod catalog;
pub mod db;
pub mod frontend;
pub mod http;
#[cfg(test)]
mod http_tests;
pub mod inventory;
pub mod login;
pub mod orders;
pub mod payment;
pub mod run;
pub mod saga;
#[cfg(test)]
mod tests;
pub mod users;

/// A line of an order: a product and how many.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    pub product: String,
    pub qty: u32,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}
