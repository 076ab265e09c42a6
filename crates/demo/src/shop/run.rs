//! Running one of the shop's services (`weft demo shop SERVICE`): its state opened under the
//! data directory (or in memory), its API served until SIGTERM/SIGINT, then drained.

use super::catalog::Catalog;
use super::http::{self, Peers, Remote};
use super::inventory::Inventory;
use super::orders::Orders;
use super::payment::{Payment, Switches};
use super::users::Users;
use app::health::Health;
use app::shutdown::{self, Shutdown};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

/// The shop's services that keep state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Frontend,
    Auth,
    Inventory,
    Payment,
    Product,
    User,
    Order,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Frontend => "frontend",
            Service::Auth => "auth",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Product => "product",
            Service::User => "user",
            Service::Order => "order",
        }
    }
}

/// How a service runs.
#[derive(Clone, Debug)]
pub struct ShopOptions {
    pub service: Service,
    /// Where its SQLite file lives (`SERVICE.db`); `None`: in memory.
    pub data: Option<PathBuf>,
    /// payment's switches.
    pub switches: Switches,
    /// order's peers.
    pub peers: Peers,
    /// This replica's name (order: in the leases it takes).
    pub instance: String,
    /// order: check end users' tokens against this JWKS (through the sidecar) and take the
    /// user from the token's subject; `None`: from the `x-weft-end-user` header.
    pub jwks: Option<String>,
    /// With `jwks`: the tokens' issuer; auth: the issuer it signs as.
    pub issuer: String,
    /// auth: the `aud` of the tokens it signs.
    pub audience: Option<String>,
    /// inventory: the stock of every product at the first start, in place of the catalog's.
    pub stock: Option<u32>,
}

/// How long an order coordinator holds an order before another may take it over.
pub const ORDER_LEASE: Duration = Duration::from_secs(15);
/// How often the order service looks for orders to take over.
pub const RECOVERY_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Db(#[from] super::db::DbError),
    #[error(transparent)]
    Key(#[from] crate::auth::AuthError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Serves `opts.service` on `listener` until a signal (or `stop`), then drains.
pub async fn run(opts: ShopOptions, listener: TcpListener, stop: Shutdown) -> Result<(), RunError> {
    let file = |name: &str| -> Result<Option<PathBuf>, RunError> {
        match &opts.data {
            None => Ok(None),
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| RunError::Io(dir.display().to_string(), e))?;
                Ok(Some(dir.join(format!("{name}.db"))))
            }
        }
    };
    let path = file(opts.service.name())?;
    let path = path.as_deref();
    let health = Health::new();
    let mut background = None;
    let remote = || Remote {
        client: app::client::Client::new(),
        peers: opts.peers.clone(),
    };
    let router = match opts.service {
        Service::Frontend => super::frontend::router(remote()),
        Service::Auth => {
            let issue = crate::auth::AuthOptions {
                issuer: opts.issuer.clone(),
                audience: opts.audience.clone(),
                ..crate::auth::AuthOptions::default()
            };
            // The key beside the databases (tokens outlive a restart), or made for this run.
            let issuer = match &opts.data {
                Some(dir) => crate::auth::Issuer::open(issue, &dir.join("auth-key.der"))?,
                None => crate::auth::Issuer::generate(issue)?,
            };
            tracing::info!(issuer = %issuer.issuer(), kid = %issuer.kid(), "signing tokens");
            super::login::router(std::sync::Arc::new(issuer), remote())
        }
        Service::Inventory => {
            let seed: Vec<(&str, u32)> = super::catalog::SEED
                .iter()
                .map(|(id, _, _, _, stock)| (*id, opts.stock.unwrap_or(*stock)))
                .collect();
            http::inventory(Inventory::open(path, &seed).await?)
        }
        Service::Payment => http::payment(Payment::open(path, opts.switches)?),
        Service::Product => http::product(Catalog::open(path).await?),
        Service::User => http::user(Users::open(path).await?),
        Service::Order => {
            let orders = Orders::open(path, &opts.instance, ORDER_LEASE)?;
            let remote = remote();
            background = Some(tokio::spawn(super::saga::recover(
                orders.clone(),
                remote.clone(),
                RECOVERY_EVERY,
                stop.token(),
            )));
            let router = http::order(orders, remote.clone());
            match &opts.jwks {
                Some(url) => {
                    let jwks = app::auth::Jwks::remote(
                        url.clone(),
                        remote.client.clone(),
                        app::auth::DEFAULT_REFRESH,
                    );
                    router.layer(app::auth::JwtLayer::new(jwks).issuer(&opts.issuer))
                }
                None => router,
            }
        }
    };
    let app = http::wrap(router, &health);
    let served = shutdown::serve(listener, app, health, stop, shutdown::DEFAULT_GRACE).await;
    if let Some(task) = background {
        let _ = task.await;
    }
    served
        .map(|_| ())
        .map_err(|e| RunError::Io(opts.service.name().into(), e))
}
