//! The app's own probes, answered on the admin listener: an injected Kubernetes pod's
//! liveness, readiness and startup probes are rewritten to `/app-health/CONTAINER/livez`
//! (`readyz`, `startupz`) on the proxy's admin port, which the capture rules and mTLS leave
//! alone, and the proxy asks the app as the original probe said: an HTTP GET (a status from
//! 200 to 399 passes, as the kubelet counts it) or a TCP connect, on loopback, within the
//! probe's `timeoutSeconds` (default 1 s, the kubelet's). The original probes come from the
//! environment variable `WEFT_APP_PROBERS` (JSON, keyed by admin path), as injection writes it.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The environment variable injection writes the app's probes into.
pub const ENV: &str = "WEFT_APP_PROBERS";

/// One of the app's probes, as Kubernetes writes it (named ports already resolved).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prober {
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    #[serde(default)]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default)]
    pub path: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<Header>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct TcpSocket {
    pub port: u16,
}

/// The app's probes by admin path (`/app-health/CONTAINER/readyz`).
pub type Probers = HashMap<String, Prober>;

/// The probers in `json` (`WEFT_APP_PROBERS`); each must be an HTTP GET (plain HTTP) or a TCP
/// connect.
pub fn parse(json: &str) -> Result<Probers, String> {
    let probers: Probers =
        serde_json::from_str(json).map_err(|e| format!("{ENV} is not the probes' JSON: {e}"))?;
    for (path, p) in &probers {
        if !path.starts_with("/app-health/") {
            return Err(format!("{ENV}: {path:?} is not an /app-health/ path"));
        }
        match (&p.http_get, &p.tcp_socket) {
            (Some(h), None)
                if h.scheme
                    .as_deref()
                    .is_none_or(|s| s.eq_ignore_ascii_case("http")) => {}
            (Some(_), None) => {
                return Err(format!(
                    "{ENV}: {path}: only plain HTTP probes are asked through the proxy"
                ))
            }
            (None, Some(_)) => {}
            _ => return Err(format!("{ENV}: {path}: an httpGet or a tcpSocket probe")),
        }
    }
    Ok(probers)
}

/// What the probe found: `Ok` with what passed, `Err` with why it failed.
pub async fn probe(p: &Prober) -> Result<String, String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1));
    let asked = async {
        if let Some(t) = &p.tcp_socket {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, t.port));
            return tokio::net::TcpStream::connect(addr)
                .await
                .map(|_| format!("port {} accepts connections", t.port))
                .map_err(|e| format!("port {}: {e}", t.port));
        }
        let Some(h) = &p.http_get else {
            return Err("no probe".into());
        };
        http_get(h).await
    };
    tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn http_get(h: &HttpGet) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, h.port));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("port {}: {e}", h.port))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("port {}: {e}", h.port))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
    let mut req = http::Request::get(path)
        .header(
            http::header::HOST,
            h.host.clone().unwrap_or_else(|| addr.to_string()),
        )
        .header(http::header::USER_AGENT, "kube-probe (through weft)");
    for header in &h.http_headers {
        req = req.header(header.name.as_str(), header.value.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("the probe's request: {e}"))?;
    let rsp = send
        .send_request(req)
        .await
        .map_err(|e| format!("GET {path} on port {}: {e}", h.port))?;
    let status = rsp.status();
    if (200..400).contains(&status.as_u16()) {
        Ok(format!("GET {path} on port {}: {status}", h.port))
    } else {
        Err(format!("GET {path} on port {}: {status}", h.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app on loopback answering `status` to every request, for `n` connections.
    async fn app(status: u16) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let ok = req.uri().path() == "/healthz";
                        let code = if ok { status } else { 404 };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(code)
                                .body(http_body_util::Full::new(Bytes::from_static(b"")))
                                .unwrap(),
                        )
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc),
                );
            }
        });
        port
    }

    fn prober(json: &str) -> Prober {
        serde_json::from_str(json).unwrap()
    }

    #[tokio::test]
    async fn http_and_tcp_probes_ask_the_app() {
        let healthy = app(200).await;
        let sick = app(500).await;
        let get = |port: u16, path: &str| {
            prober(&format!(
                r#"{{"httpGet": {{"path": "{path}", "port": {port}}}}}"#
            ))
        };
        assert!(probe(&get(healthy, "/healthz")).await.is_ok());
        let why = probe(&get(sick, "/healthz")).await.unwrap_err();
        assert!(why.contains("500"), "{why}");
        assert!(probe(&get(healthy, "/missing"))
            .await
            .unwrap_err()
            .contains("404"));
        let tcp = |port: u16| prober(&format!(r#"{{"tcpSocket": {{"port": {port}}}}}"#));
        assert!(probe(&tcp(healthy)).await.is_ok());
        // A port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(probe(&tcp(closed)).await.is_err());
        assert!(probe(&get(closed, "/healthz")).await.is_err());
    }

    #[test]
    fn probers_are_checked() {
        let ok = parse(r#"{"/app-health/app/readyz": {"httpGet": {"path": "/h", "port": 8080}, "timeoutSeconds": 3}}"#)
            .unwrap();
        assert_eq!(ok["/app-health/app/readyz"].timeout_seconds, Some(3));
        assert!(parse("[").is_err());
        assert!(parse(r#"{"/x": {"tcpSocket": {"port": 1}}}"#).is_err());
        assert!(
            parse(r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "scheme": "HTTPS"}}}"#)
                .unwrap_err()
                .contains("plain HTTP")
        );
        assert!(parse(r#"{"/app-health/a/livez": {}}"#).is_err());
    }
}
