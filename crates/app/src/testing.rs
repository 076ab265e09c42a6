//! Test support: servers on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::Router;

/// Serves `app` on a fresh port until the test's runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A handler answering with the request's headers as a JSON object.
pub async fn echo_headers(h: HeaderMap) -> axum::Json<BTreeMap<String, String>> {
    axum::Json(
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
    )
}

/// A response body as JSON.
pub async fn json<B>(r: http::Response<B>) -> serde_json::Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// A response body as text.
pub async fn text<B>(r: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}
