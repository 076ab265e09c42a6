//! A small HTTP client for the CLI (control-plane API, proxy admin endpoints). Calls to a
//! running mesh's API carry its admin credential (from `$WEFT_HOME`, or `WEFT_API_TOKEN`), and
//! go over TLS when the mesh's record or context holds its trust bundle (with an operator's
//! certificate when the context has one); POST bodies are JSON.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;

/// How to call the API at an authority: the admin credential to send, and the TLS to speak
/// (the mesh's trust bundle, and an operator's certificate) when the API needs it.
#[derive(Clone, Default)]
struct Profile {
    token: Option<String>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// The profile for the API at `url`'s authority: a running mesh's (`$WEFT_HOME/meshes`) or a
/// saved context's; `WEFT_API_TOKEN` wins over the credential either holds.
fn profile(url: &str) -> anyhow::Result<Profile> {
    let Some(authority) = url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
    else {
        return Ok(Profile {
            token: env_credential(),
            tls: None,
        });
    };
    // Looked up once per address: live views call the same API every second.
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Profile>>> =
        std::sync::OnceLock::new();
    let mut known = KNOWN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(p) = known.get(&authority) {
        return Ok(p.clone());
    }
    let read = |f: &str| std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{f}: {e}"));
    let mut p = Profile::default();
    if let Some(m) = local::meshes::running()
        .into_iter()
        .find(|m| m.api == authority)
    {
        p.token = local::meshes::admin_token(&m);
        if let Some(ca) = &m.ca_file {
            p.tls = Some(api_tls(&read(ca)?, None)?);
        }
    } else if let Some(c) = local::meshes::contexts()
        .into_iter()
        .find(|c| c.api.contains(&authority))
    {
        // A saved context's API (`weft --context`).
        if !c.token_file.is_empty() {
            p.token = Some(read(&c.token_file)?.trim().to_string());
        }
        if let Some(ca) = &c.ca_file {
            let cert = match (&c.cert_file, &c.key_file) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            };
            p.tls = Some(api_tls(&read(ca)?, cert)?);
        }
    }
    if let Some(t) = env_credential() {
        p.token = Some(t);
    }
    known.insert(authority, p.clone());
    Ok(p)
}

/// The TLS config for an API whose control plane chains to `bundle`, presenting `cert` (chain,
/// key) when given.
fn api_tls(
    bundle: &str,
    cert: Option<(String, String)>,
) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let cert = cert.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
    proxy::tls::api_client_config(bundle, cert)
        .map_err(|e| anyhow::anyhow!("the mesh's trust bundle or operator certificate: {e}"))
}

/// How a host makes the TLS config for its control plane's API from the mesh's trust bundle.
pub fn api_tls_for() -> local::api_call::TlsFor {
    std::sync::Arc::new(|bundle: &str| {
        proxy::tls::api_client_config(bundle, None).map_err(|e| e.to_string())
    })
}

/// The credential `WEFT_API_TOKEN` gives, which wins over what `$WEFT_HOME` holds.
pub fn env_credential() -> Option<String> {
    std::env::var("WEFT_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// Sends `req` to `url` as its profile says: with its credential, over TLS when it has one.
async fn send(
    url: &str,
    req: hyper::http::request::Builder,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let p = profile(url)?;
    let mut req = req;
    if let Some(t) = &p.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Full::new(body))?;
    let method = req.method().clone();
    match &p.tls {
        Some(tls) => {
            let uri = req.uri().clone();
            let addr: std::net::SocketAddr = uri
                .authority()
                .map(|a| a.as_str())
                .unwrap_or_default()
                .parse()
                .map_err(|e| anyhow::anyhow!("{url}: the API's address: {e}"))?;
            local::api_call::call_once(addr, Some(tls), req)
                .await
                .map_err(|e| anyhow::anyhow!("{method} {url} (TLS): {e}"))
        }
        None => {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let rsp = client
                .request(req)
                .await
                .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
            let status = rsp.status().as_u16();
            let body = rsp.into_body().collect().await?.to_bytes();
            Ok((status, body))
        }
    }
}

pub async fn get(url: &str) -> anyhow::Result<(u16, Bytes)> {
    send(url, hyper::Request::get(url), Bytes::new()).await
}

/// POSTs the JSON `body`.
pub async fn post(url: &str, body: &serde_json::Value) -> anyhow::Result<(u16, Bytes)> {
    let req = hyper::Request::post(url).header(hyper::header::CONTENT_TYPE, "application/json");
    send(url, req, Bytes::from(body.to_string())).await
}
