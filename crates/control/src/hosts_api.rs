//! The `/hosts/…` calls of the control plane's API:
//!
//! | call | credential | what |
//! |---|---|---|
//! | `POST /hosts/tokens` `{"host", "ttl_seconds"?, "ingress"?}` | admin | a one-time bootstrap token for that host (with `ingress`: it may run an ingress gateway) |
//! | `GET /hosts` | admin | the joined hosts |
//! | `POST /hosts/join` `{"host", "token", "address", "labels"?}` | the bootstrap token | joins: the host's credential, trust bundle, the replicas' gRPC addresses |
//! | `GET /hosts/NAME/placement` | the host's | the replicas the mesh places on it |
//! | `POST /hosts/NAME/join-token` `{"identity"}` | the host's | a proxy join token, for an identity of a service placed on it only |

use crate::hosts::{self, HostError, Joined, DEFAULT_BOOTSTRAP_TTL};
use crate::http_api::{json_response, text_response, Api};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::time::Duration;

fn status_of(e: &HostError) -> StatusCode {
    match e {
        HostError::BadToken(_) | HostError::WrongCredential(_) => StatusCode::FORBIDDEN,
        HostError::OutOfScope { .. } => StatusCode::FORBIDDEN,
        HostError::Unknown(_) => StatusCode::NOT_FOUND,
        HostError::BadName(_) => StatusCode::BAD_REQUEST,
        HostError::Store(_) | HostError::Ca(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn refused(e: HostError) -> Response<Full<Bytes>> {
    text_response(status_of(&e), format!("{e}\n"))
}

async fn body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let bytes = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| text_response(StatusCode::BAD_REQUEST, format!("the body: {e}\n")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| text_response(StatusCode::BAD_REQUEST, format!("the body: {e}\n")))
}

#[derive(serde::Deserialize)]
struct TokenRequest {
    host: String,
    ttl_seconds: Option<u64>,
    #[serde(default)]
    ingress: bool,
}

#[derive(serde::Deserialize)]
struct JoinRequest {
    host: String,
    token: String,
    address: std::net::IpAddr,
    #[serde(default)]
    labels: model::Labels,
}

#[derive(serde::Deserialize)]
struct ProxyTokenRequest {
    identity: String,
}

impl Api {
    pub(crate) async fn hosts_request(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::POST, "/hosts/tokens") => {
                let r: TokenRequest = match body(req).await {
                    Ok(r) => r,
                    Err(rsp) => return rsp,
                };
                let ttl = r
                    .ttl_seconds
                    .map_or(DEFAULT_BOOTSTRAP_TTL, Duration::from_secs);
                match self.hosts.mint(&r.host, ttl, r.ingress).await {
                    Ok(token) => {
                        // The token to give the host carries the signing root's pin, so the
                        // host can check whom it talks to before it sends the secret.
                        let pin = self.ca.as_ref().map(|ca| hosts::root_pin(&ca.root()));
                        let join_token = match &pin {
                            Some(p) => format!("{token}.{p}"),
                            None => token.clone(),
                        };
                        json_response(&serde_json::json!({
                            "host": r.host,
                            "token": token,
                            "join_token": join_token,
                            "ca_hash": pin.map(|p| format!("sha256:{p}")),
                            "expires_in_seconds": ttl.as_secs(),
                        }))
                    }
                    Err(e) => refused(e),
                }
            }
            (&Method::GET, "/hosts") => match self.hosts.all().await {
                Ok(all) => json_response(&all),
                Err(e) => refused(e),
            },
            (&Method::POST, "/hosts/join") => {
                let r: JoinRequest = match body(req).await {
                    Ok(r) => r,
                    Err(rsp) => return rsp,
                };
                let credential = match self
                    .hosts
                    .join(&r.host, &r.token, r.address, r.labels)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(host = %r.host, error = %e, "host join refused");
                        return refused(e);
                    }
                };
                tracing::info!(host = %r.host, address = %r.address, "host joined");
                json_response(&Joined {
                    mesh: self.registry.spec().name,
                    credential,
                    trust_bundle: self.ca.as_ref().map(|c| c.bundle_pem()).unwrap_or_default(),
                    trust_domain: self.registry.trust_domain(),
                    controls: self.controls().await,
                })
            }
            (_, p) => {
                let mut parts = p.trim_start_matches("/hosts/").splitn(2, '/');
                let (Some(name), Some(what)) = (parts.next(), parts.next()) else {
                    return text_response(StatusCode::NOT_FOUND, "no such hosts call\n".into());
                };
                let name = name.to_string();
                let auth = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let host = match self.hosts.authenticate(&name, auth.as_deref()).await {
                    Ok(h) => h,
                    Err(e) => return refused(e),
                };
                let joined = match self.hosts.all().await {
                    Ok(j) => j,
                    Err(e) => return refused(e),
                };
                let placed = hosts::placement(&self.registry, &host.name, &joined);
                match (&method, what) {
                    (&Method::GET, "placement") => json_response(&serde_json::json!({
                        "host": host.name,
                        "address": host.address,
                        "replicas": placed,
                    })),
                    (&Method::POST, "join-token") => {
                        let r: ProxyTokenRequest = match body(req).await {
                            Ok(r) => r,
                            Err(rsp) => return rsp,
                        };
                        let ingress = model::Identity::spiffe_in(
                            &self.registry.trust_domain(),
                            hosts::INGRESS_NAMESPACE,
                            hosts::INGRESS_NAME,
                        );
                        let allowed = placed.iter().any(|p| p.sidecar && p.identity == r.identity)
                            || (host.ingress && r.identity == ingress.0);
                        if !allowed {
                            tracing::warn!(host = %host.name, identity = %r.identity, "certificate outside the host's scope refused");
                            return refused(HostError::OutOfScope {
                                host: host.name,
                                identity: r.identity,
                            });
                        }
                        let Some(ca) = &self.ca else {
                            return text_response(
                                StatusCode::NOT_FOUND,
                                "this control plane runs no CA\n".into(),
                            );
                        };
                        match ca.mint_join_token(&model::Identity(r.identity)).await {
                            Ok(t) => text_response(StatusCode::OK, t),
                            Err(e) => refused(e.into()),
                        }
                    }
                    _ => text_response(StatusCode::NOT_FOUND, "no such hosts call\n".into()),
                }
            }
        }
    }

    /// Every replica's gRPC address: this one's, and those the store lists.
    async fn controls(&self) -> Vec<std::net::SocketAddr> {
        let mut out = vec![self.control];
        if let Some(store) = &self.store {
            if let Ok(replicas) = store.replicas().await {
                for r in replicas {
                    if let Ok(a) = r.grpc.parse() {
                        if !out.contains(&a) {
                            out.push(a);
                        }
                    }
                }
            }
        }
        out
    }
}
