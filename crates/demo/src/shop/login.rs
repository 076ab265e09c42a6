//! The shop's auth service (`weft demo shop auth`): logs users in against the user service and
//! issues their JWTs (ES256, the key kept under the data directory so tokens outlive a restart),
//! and publishes the key as a JWKS for the mesh's RequestAuthentication and the order service.
//!
//! - `POST /login {name, password}`: 200 `{access_token, token_type, expires_in, user}`, 401
//!   for an unknown user or a wrong password.
//! - `POST /signup {name, password, display_name}`: the account made by the user service, then
//!   logged in (201; 200 when the same name and password already exist, 409 for a taken name).
//! - `GET /.well-known/jwks.json`.
//!
//! Unlike `weft demo auth` it signs nothing for whoever asks: a token names a user whose password
//! the user service checked.

use super::http::Remote;
use crate::auth::{Issuer, TokenRequest, JWKS_PATH};
use axum::extract::State as Shared;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone)]
struct Login {
    issuer: Arc<Issuer>,
    remote: Remote,
}

#[derive(serde::Deserialize)]
struct Credentials {
    name: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

/// The auth service's routes.
pub fn router(issuer: Arc<Issuer>, remote: Remote) -> Router {
    Router::new()
        .route(
            JWKS_PATH,
            get(|Shared(l): Shared<Login>| async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "max-age=300"),
                    ],
                    l.issuer.jwks().to_vec(),
                )
            }),
        )
        .route("/login", post(login))
        .route("/signup", post(signup))
        .with_state(Login { issuer, remote })
}

async fn login(Shared(l): Shared<Login>, Json(c): Json<Credentials>) -> Response {
    let url = format!("{}/verify", l.remote.peers.user);
    let body = json!({"name": c.name, "password": c.password});
    match l.remote.post_plain(&url, body).await {
        Ok((200, user)) => token(&l.issuer, user, StatusCode::OK),
        Ok((401, _)) => error(StatusCode::UNAUTHORIZED, "unknown user or wrong password"),
        Ok((s, v)) => error(StatusCode::BAD_GATEWAY, &format!("user: {s}: {v}")),
        Err(e) => error(StatusCode::BAD_GATEWAY, &format!("user: {e}")),
    }
}

async fn signup(Shared(l): Shared<Login>, Json(c): Json<Credentials>) -> Response {
    let url = format!("{}/users", l.remote.peers.user);
    let display = c.display_name.clone().unwrap_or_else(|| c.name.clone());
    let body = json!({"name": c.name, "password": c.password, "display_name": display});
    match l.remote.post_plain(&url, body).await {
        Ok((201, user)) => token(&l.issuer, user, StatusCode::CREATED),
        Ok((200, user)) => token(&l.issuer, user, StatusCode::OK),
        Ok((s @ (400 | 409), v)) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
            Json(v),
        )
            .into_response(),
        Ok((s, v)) => error(StatusCode::BAD_GATEWAY, &format!("user: {s}: {v}")),
        Err(e) => error(StatusCode::BAD_GATEWAY, &format!("user: {e}")),
    }
}

/// A token for the user the user service answered with.
fn token(issuer: &Issuer, user: Value, status: StatusCode) -> Response {
    let Some(name) = user["name"].as_str() else {
        return error(StatusCode::BAD_GATEWAY, "user: an answer without a name");
    };
    let ask = TokenRequest {
        sub: name.to_string(),
        ..TokenRequest::default()
    };
    match issuer.issue(&ask, crate::auth::now()) {
        Ok(t) => {
            tracing::info!(sub = %t.claims.sub, "logged in");
            (
                status,
                Json(json!({
                    "access_token": t.token,
                    "token_type": "Bearer",
                    "expires_in": t.expires_in,
                    "user": user,
                })),
            )
                .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({"error": why}))).into_response()
}
