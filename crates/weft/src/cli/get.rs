//! A small HTTP client for the CLI (control-plane API, proxy admin endpoints). Calls to a
//! running mesh's API carry its admin credential (from `$WEFT_HOME`, or `WEFT_API_TOKEN`);
//! POST bodies are JSON.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;

/// The admin credential for the API at `url`'s authority: `WEFT_API_TOKEN`, or the one a
/// running mesh whose API that is keeps in `$WEFT_HOME`.
fn credential(url: &str) -> Option<String> {
    if let Some(t) = env_credential() {
        return Some(t);
    }
    let uri: hyper::Uri = url.parse().ok()?;
    let authority = uri.authority()?.as_str().to_string();
    // Looked up once per address: live views call the same API every second.
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Option<String>>>> =
        std::sync::OnceLock::new();
    let mut known = KNOWN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    known
        .entry(authority)
        .or_insert_with_key(|authority| {
            local::meshes::running()
                .into_iter()
                .find(|m| &m.api == authority)
                .and_then(|m| local::meshes::admin_token(&m))
                .or_else(|| {
                    // A saved context's API (`weft --context`).
                    let c = local::meshes::contexts()
                        .into_iter()
                        .find(|c| c.api.iter().any(|a| a == authority))?;
                    Some(
                        std::fs::read_to_string(c.token_file)
                            .ok()?
                            .trim()
                            .to_string(),
                    )
                })
        })
        .clone()
}

/// The credential `WEFT_API_TOKEN` gives, which wins over what `$WEFT_HOME` holds.
pub fn env_credential() -> Option<String> {
    std::env::var("WEFT_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

fn with_credential(
    mut req: hyper::http::request::Builder,
    url: &str,
) -> hyper::http::request::Builder {
    if let Some(t) = credential(url) {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req
}

pub async fn get(url: &str) -> anyhow::Result<(u16, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = with_credential(hyper::Request::get(url), url).body(Empty::new())?;
    let rsp = client
        .request(req)
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// POSTs the JSON `body`.
pub async fn post(url: &str, body: &serde_json::Value) -> anyhow::Result<(u16, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = with_credential(hyper::Request::post(url), url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let rsp = client
        .request(req)
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: {e}"))?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
