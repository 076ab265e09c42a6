//! The echo demo service behind `weft demo echo`: a small HTTP app that reports what it received,
//! with knobs for latency, failures and calls to other services, so a mesh has something to route.
//!
//! Layout:
//! - [`serve_echo`] (`server`): the accept loop — HTTP/1.1 keep-alive and h2c, graceful drain.
//! - `handler`: routing (`/status/{code}`, `/delay/{ms}`, `/bytes/{n}`, `/healthz`, `/readyz`, `/fetch`,
//!   everything else echoes), the query knobs (`?delay=`, `?status=`, `?fail_times=N`: the
//!   first N attempts of one `x-request-id` fail) and the JSON response.
//! - `fetch`: `/fetch`, one downstream call through the sidecar, propagating trace headers.
//! - [`parse_duration`], [`proxy_from_env`] (`parse`): small parsers the CLI shares.
//! - [`auth`]: the token issuer behind `weft demo auth` (JWKS + signed JWTs).
//! - [`serve_tcp_echo`] (`tcp_echo`): `weft demo tcp-echo`, a TCP service that sends every byte
//!   back and closes after the client's half-close.
//! - [`shop`]: the shop's domain — inventory, payment and orders in SQLite, and the order saga
//!   with its compensation and recovery.
//!
//! The service does not depend on any other weft crate: it is an ordinary app the mesh carries.

pub mod auth;
mod fetch;
mod handler;
mod parse;
mod server;
pub mod shop;
mod tcp_echo;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

pub use handler::MAX_BYTES;
pub use parse::{parse_duration, proxy_from_env};
pub use server::serve_echo;
pub use tcp_echo::serve_tcp_echo;

/// How one echo instance identifies itself and misbehaves.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    pub service: String,
    pub version: String,
    pub instance: String,
    /// Added to every response (health endpoints excepted).
    pub delay: Duration,
    /// Fraction (0..=1) of requests answered with `fail_status` instead (health endpoints excepted).
    pub fail_rate: f64,
    pub fail_status: u16,
    /// Where `/fetch` sends requests: the sidecar's outbound listener. `None` connects directly.
    pub proxy: Option<SocketAddr>,
}

impl Default for EchoOptions {
    fn default() -> Self {
        EchoOptions {
            service: "echo".into(),
            version: "v1".into(),
            instance: "echo-0".into(),
            delay: Duration::ZERO,
            fail_rate: 0.0,
            fail_status: 500,
            proxy: None,
        }
    }
}
