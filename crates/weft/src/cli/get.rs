//! A small HTTP GET for the CLI (control-plane API, proxy admin endpoints).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub async fn get(url: &str) -> anyhow::Result<(u16, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let rsp = client
        .get(url.parse()?)
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

pub async fn post(url: &str, body: String) -> anyhow::Result<(u16, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::post(url).body(Full::new(Bytes::from(body)))?;
    let rsp = client
        .request(req)
        .await
        .map_err(|e| anyhow::anyhow!("POST {url}: {e}"))?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
