//! Starting the control plane: the gRPC push server (TLS in a mesh with a CA, see
//! [`crate::listener`]) and the JSON API on listeners bound up front, so a taken port is
//! reported before anything runs.

use crate::http_api::{self, Api};
use crate::push::{DiscoveryRoutes, Push};
use crate::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
}

/// How often the control plane pings each proxy's stream, and how long it waits for the answer:
/// a proxy whose host vanished (powered off, cut from the network: no FIN, no RST) is
/// deregistered, and its endpoints leave every snapshot, within about their sum (10–30 s). Not
/// shorter: a proxy paused for a while (a stopped process, a frozen VM) keeps its
/// registration, and with it what it holds (a root rotation waits for its certificate).
pub const PROXY_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
pub const PROXY_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Where the control plane listens: proxies' gRPC stream and the JSON API.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    pub grpc: SocketAddr,
    pub api: SocketAddr,
}

/// A running control plane.
pub struct ControlPlane {
    pub registry: Arc<Registry>,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub shutdown: CancellationToken,
    api_state: Arc<Api>,
    /// The mesh's CA, when it runs one.
    pub ca: Option<Arc<crate::ca::Ca>>,
}

impl ControlPlane {
    /// Serves the dashboard (and the API behind it) on one more listener, `addr`: `/` there
    /// leads to `/dashboard/`. Returns the address bound.
    pub async fn serve_dashboard(&self, addr: SocketAddr) -> Result<SocketAddr, ControlError> {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ControlError::Bind {
                addr,
                what: "dashboard",
                source,
            })?;
        let bound = l.local_addr().unwrap_or(addr);
        self.registry
            .set_dashboard(Some(format!("http://{bound}/dashboard/")));
        tokio::spawn(http_api::serve(
            l,
            self.api_state.clone(),
            self.shutdown.clone(),
        ));
        Ok(bound)
    }

    /// Binds both listeners and starts serving on the current runtime, with the resources
    /// `store` in force, kept in memory.
    pub async fn start(
        registry: Arc<Registry>,
        store: config::Store,
        grpc: SocketAddr,
        api: SocketAddr,
        ca: Option<Arc<crate::ca::Ca>>,
    ) -> Result<ControlPlane, ControlError> {
        let backend = Arc::new(crate::store::Memory::new(store));
        Self::start_with(registry, backend, Listen { grpc, api }, ca, None).await
    }

    /// [`ControlPlane::start`] with the resources in force kept by `backend`; with
    /// `admin_token`, every API call but `/healthz` must carry it (`Authorization: Bearer`).
    pub async fn start_with(
        registry: Arc<Registry>,
        backend: Arc<dyn crate::store::Backend>,
        listen: Listen,
        ca: Option<Arc<crate::ca::Ca>>,
        admin_token: Option<String>,
    ) -> Result<ControlPlane, ControlError> {
        let hosts = Arc::new(crate::hosts::Hosts::in_memory());
        Self::start_shared(registry, backend, listen, ca, admin_token, hosts, None).await
    }

    /// [`ControlPlane::start_with`] for a replica sharing `store` with others: joined hosts
    /// kept in `hosts`, and the other replicas listed from the store.
    pub async fn start_shared(
        registry: Arc<Registry>,
        backend: Arc<dyn crate::store::Backend>,
        listen: Listen,
        ca: Option<Arc<crate::ca::Ca>>,
        admin_token: Option<String>,
        hosts: Arc<crate::hosts::Hosts>,
        store: Option<crate::etcd::Etcd>,
    ) -> Result<ControlPlane, ControlError> {
        let Listen { grpc, api } = listen;
        let bind = |addr, what| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ControlError::Bind { addr, what, source })
        };
        let grpc_l = bind(grpc, "control plane gRPC").await?;
        let api_l = bind(api, "control plane API").await?;
        let grpc = grpc_l.local_addr().unwrap_or(grpc);
        let api = api_l.local_addr().unwrap_or(api);
        let shutdown = CancellationToken::new();
        if let Some(ca) = &ca {
            registry.set_trust_domain(&ca.config().trust_domain);
        }

        let push = DiscoveryRoutes::new(Push::new(registry.clone(), ca.clone()));
        let stop = shutdown.clone();
        // With a CA the listener speaks TLS with the control plane's own certificate.
        let tls = ca
            .clone()
            .map(|ca| Arc::new(crate::listener::ServerTls::new(ca)));
        let incoming = crate::listener::incoming(grpc_l, tls, shutdown.clone());
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(PROXY_PING_INTERVAL))
                .http2_keepalive_timeout(Some(PROXY_PING_TIMEOUT))
                .add_service(push)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "control plane gRPC server failed");
            }
        });
        let api_state = Arc::new(Api {
            registry: registry.clone(),
            control: grpc,
            api,
            resources: crate::store::Resources::new(backend, registry.clone()),
            admin_token,
            ca: ca.clone(),
            hosts,
            store,
            dashboard: Default::default(),
        });
        tokio::spawn(http_api::serve(api_l, api_state.clone(), shutdown.clone()));
        tokio::spawn(crate::canary::run(api_state.clone(), shutdown.clone()));
        Ok(ControlPlane {
            registry,
            grpc,
            api,
            shutdown,
            api_state,
            ca,
        })
    }

    /// Watches `paths` (the files and directories the mesh came from) and applies what
    /// changes in them, until the control plane stops.
    pub fn watch(&self, paths: Vec<std::path::PathBuf>) {
        tokio::spawn(crate::watch::run(
            self.api_state.clone(),
            paths,
            self.shutdown.clone(),
        ));
    }
}
