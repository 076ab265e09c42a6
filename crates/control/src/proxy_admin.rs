//! Reads from the proxies' admin endpoints (plain HTTP on their admin listeners), each bounded
//! in time: what the canary controller and the dashboard ask of every proxy.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Legacy};
use std::time::Duration;

/// A pooled client for the admin listeners.
pub type Client = Legacy<HttpConnector, Empty<Bytes>>;

pub fn client() -> Client {
    Legacy::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// `GET url` within `timeout`: the status and the whole body.
pub async fn get(
    client: &Client,
    url: &str,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let read = async {
        let rsp = client.get(uri).await.map_err(|e| e.to_string())?;
        let status = rsp.status();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("no answer in {timeout:?}"))?
}
