//! `weft up` and `weft control`.

use super::{load_mesh, on_signal, parse_duration, runtime};
use local::prometheus::PrometheusOptions;
use local::UpOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Mesh files or directories (multi-document YAML); none: the shop (examples/shop)
    files: Vec<PathBuf>,
    /// Where the ingress listens, in place of the Mesh's `spec.ingress` (port 0: a free one)
    #[arg(long, value_name = "ADDR")]
    ingress: Option<SocketAddr>,
    /// Give up if the mesh is not ready after this long [default: 60s]
    #[arg(long, value_parser = parse_duration)]
    ready_timeout: Option<Duration>,
    /// On shutdown, how long each proxy may take to finish in-flight requests [default: 10s]
    #[arg(long, value_parser = parse_duration)]
    drain_timeout: Option<Duration>,
    /// Watch the files and directories given and apply changes made to them: routing and
    /// security resources, and the Mesh document (replicas, services and workloads start, stop
    /// or roll one replica at a time; its name and ingress still need a restart)
    #[arg(long)]
    watch: bool,
    /// Also run Prometheus (the `prometheus` executable on PATH, Debian package `prometheus`),
    /// scraping every proxy's admin /metrics; it listens on ADDR (port 0: a free one) [default
    /// ADDR: 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = local::prometheus::DEFAULT_LISTEN)]
    prometheus: Option<String>,
    /// How often Prometheus scrapes each proxy (with --prometheus) [default: 1s]
    #[arg(long, value_parser = parse_duration, requires = "prometheus")]
    scrape_interval: Option<Duration>,
    /// Spans (every proxy exports to the OTLP collector given) and access logs (every proxy's,
    /// on `weft up`'s stderr; a service annotated `weft.dev/access-log: json|apache` or
    /// `config.linkerd.io/access-log` gets its own)
    #[command(flatten)]
    exports: super::proxy_cmd::ExportArgs,
    #[command(flatten)]
    limits: super::proxy_cmd::LimitArgs,
    /// Serve the web dashboard on ADDR as well (port 0: a free one) [default ADDR:
    /// 127.0.0.1:20001]; it is always under the API's /dashboard/, and `weft dashboard` prints
    /// its URL
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_DASHBOARD)]
    dashboard: Option<SocketAddr>,
    #[command(flatten)]
    ca: CaArgs,
}

/// Where `--dashboard` alone serves the dashboard (Kiali's port).
const DEFAULT_DASHBOARD: &str = "127.0.0.1:20001";

impl UpArgs {
    /// What `--prometheus [ADDR]` and `--scrape-interval` ask for. A value that is not HOST:PORT
    /// but names an existing file or directory is a mesh file that followed a bare
    /// `--prometheus` (`weft up --prometheus mesh.yaml`): it joins the files and Prometheus gets
    /// the default address.
    fn prometheus(&mut self) -> anyhow::Result<Option<PrometheusOptions>> {
        let Some(value) = &self.prometheus else {
            return Ok(None);
        };
        let mut opts = PrometheusOptions::default();
        match value.parse::<SocketAddr>() {
            Ok(addr) => opts.listen = addr,
            Err(_) if std::path::Path::new(value).exists() => {
                self.files.insert(0, PathBuf::from(value));
            }
            Err(_) => {
                anyhow::bail!("--prometheus: {value:?} is not HOST:PORT (e.g. 127.0.0.1:9090)")
            }
        }
        if let Some(i) = self.scrape_interval {
            opts.scrape_interval = i;
        }
        Ok(Some(opts))
    }
}

/// The mesh CA: where its root lives and how it issues.
#[derive(clap::Args)]
pub struct CaArgs {
    /// Keep the CA's root here (generated on first start); meshes given the same directory
    /// share a root and trust each other's certificates [default: $WEFT_HOME/ca/MESH, one root
    /// per mesh]
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Use this root certificate (PEM) instead of a generated one (with --ca-key)
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The private key (PEM) of --ca-cert
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Sign proxies' certificates with an intermediate issuer, as Linkerd does
    #[arg(long)]
    intermediate: bool,
    /// Lifetime of proxies' certificates; they renew at ~70% of it [default: 24h]
    #[arg(long, value_parser = parse_duration)]
    cert_ttl: Option<Duration>,
    /// SPIFFE trust domain [default: cluster.local]
    #[arg(long)]
    trust_domain: Option<String>,
    /// No CA, no certificates: proxies talk plaintext (for comparisons and debugging)
    #[arg(long, conflicts_with_all = ["ca_dir", "ca_cert", "intermediate", "cert_ttl"])]
    no_mtls: bool,
}

impl CaArgs {
    /// The CA these flags describe for the mesh `mesh`; `None` with `--no-mtls`.
    pub fn open(&self, mesh: &str) -> anyhow::Result<Option<std::sync::Arc<control::ca::Ca>>> {
        use control::ca::Ca;
        if self.no_mtls {
            return Ok(None);
        }
        let config = self.config();
        let ca = match (&self.ca_cert, &self.ca_key) {
            (Some(cert), Some(key)) => Ca::from_files(cert, key, config),
            _ => {
                let dir = self
                    .ca_dir
                    .clone()
                    .unwrap_or_else(|| local::meshes::home().join("ca").join(mesh));
                Ca::open(&dir, config)
            }
        }
        .map_err(|e| anyhow::anyhow!("CA: {e}"))?;
        Ok(Some(std::sync::Arc::new(ca)))
    }

    /// Whether the CA's root is to be kept in the cluster (no root given, mTLS on).
    fn in_secret(&self) -> bool {
        !self.no_mtls && self.ca_dir.is_none() && self.ca_cert.is_none()
    }

    /// The CA's settings these flags give (lifetimes, trust domain, intermediate).
    fn config(&self) -> control::ca::CaConfig {
        let mut config = control::ca::CaConfig {
            intermediate: self.intermediate,
            ..control::ca::CaConfig::default()
        };
        if let Some(t) = self.cert_ttl {
            config.leaf_lifetime = t;
        }
        if let Some(td) = &self.trust_domain {
            config.trust_domain = td.clone();
        }
        config
    }
}

#[derive(clap::Args)]
pub struct ControlArgs {
    /// Mesh files or directories; none: the built-in shop (examples/shop)
    files: Vec<PathBuf>,
    /// Where proxies connect (gRPC)
    #[arg(long, default_value = "127.0.0.1:15010")]
    listen: SocketAddr,
    /// Where the CLI reads status (HTTP/JSON)
    #[arg(long, default_value = "127.0.0.1:15014")]
    api: SocketAddr,
    /// Watch the files and directories given and apply routing changes made to them
    #[arg(long)]
    watch: bool,
    /// Keep the resources, the proxies' registrations and the CA root in etcd
    /// (etcd://HOST:PORT[,HOST:PORT…]), shared by every replica started with the same store:
    /// any replica serves any proxy. Default: in this process's memory
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The key sealing the CA root (and the admin credential) in the store: a file with 64 hex
    /// digits, mode 0600, the same on every replica [default: $WEFT_STORE_KEY]
    #[arg(long, requires = "store", value_name = "PATH")]
    store_key_file: Option<PathBuf>,
    /// With --store and no files: the mesh in the store to serve [default: the only one]
    #[arg(long, requires = "store", conflicts_with = "files")]
    mesh: Option<String>,
    /// Serve the web dashboard on ADDR as well [default ADDR: 127.0.0.1:20001]; it is always
    /// under the API's /dashboard/
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_DASHBOARD)]
    dashboard: Option<SocketAddr>,
    /// Serve the Kubernetes admission webhook that injects pods (HTTPS, a certificate of the
    /// mesh CA for --webhook-dns; POST /inject, /inject/namespace)
    #[arg(long, value_name = "ADDR")]
    webhook: Option<SocketAddr>,
    /// The DNS names of the webhook's certificate (repeatable) [default: the Service
    /// weft-control.weft-system.svc and its cluster.local form]
    #[arg(long, value_name = "NAME", requires = "webhook")]
    webhook_dns: Vec<String>,
    /// The image injected pods run
    #[arg(long, value_name = "IMAGE", default_value_t = super::inject::default_image())]
    inject_image: String,
    /// Accept Kubernetes ServiceAccount tokens (audience weft) as proxies' join credentials,
    /// each checked by a TokenReview: a certificate only for that account's SPIFFE identity
    #[arg(long, conflicts_with = "store")]
    service_account_tokens: bool,
    /// Keep this MutatingWebhookConfiguration's caBundle the mesh's roots, through the
    /// Kubernetes API (`weft install --kubernetes` names it weft-sidecar-injector)
    #[arg(long, value_name = "NAME", requires = "webhook")]
    webhook_configuration: Option<String>,
    /// Keep the mesh's roots in the ConfigMap weft-ca-root of every namespace, which injected
    /// pods mount (through the Kubernetes API)
    #[arg(long)]
    ca_root_configmaps: bool,
    /// The mesh is a Kubernetes cluster's: its Services, EndpointSlices, Pods and Namespaces
    /// and the Istio, Gateway API, Linkerd, SMI and Canary resources installed, watched through
    /// the Kubernetes API (files given add the mesh-wide settings of their Mesh document)
    #[arg(long, conflicts_with = "store")]
    kubernetes: bool,
    /// With --kubernetes: how long the leader's Lease lasts unrenewed before another replica
    /// takes over the writes (routes' status, the roots' ConfigMaps, the webhook's caBundle)
    #[arg(long, value_parser = parse_duration, default_value = "15s", requires = "kubernetes")]
    leader_lease: Duration,
    /// The Kubernetes API server to ask (the cluster's objects, TokenReviews, the webhook's
    /// caBundle, the roots' ConfigMaps) [default: the cluster weft runs in, or $KUBECONFIG's]
    #[arg(long, value_name = "URL")]
    kubernetes_api: Option<String>,
    /// Where injected pods' proxies reach the control plane (HOST:PORT)
    #[arg(long, value_name = "HOST:PORT", default_value_t = super::inject::default_control())]
    inject_control: String,
    #[command(flatten)]
    ca: CaArgs,
}

pub fn up(mut a: UpArgs) -> anyhow::Result<i32> {
    let prometheus = a.prometheus()?;
    let (mut spec, store) = load_mesh(&a.files)?;
    if let Some(addr) = a.ingress {
        spec.ingress = addr;
    }
    let built_in = a.files.is_empty();
    // Before anything starts: a WEFT_HOME others may write could hold their CA key.
    local::meshes::ensure_home()?;
    let exe = std::env::current_exe()?;
    let opts = UpOptions {
        exe,
        ready_timeout: a.ready_timeout.unwrap_or(local::DEFAULT_READY_TIMEOUT),
        drain_timeout: a
            .drain_timeout
            .unwrap_or(proxy::settings::DEFAULT_DRAIN_TIMEOUT),
        watch: if a.watch { a.files.clone() } else { Vec::new() },
        ca: a.ca.open(&spec.name)?,
        prometheus,
        proxy_flags: [a.exports.tracing_flags(), a.limits.flags()].concat(),
        app_env: a.exports.app_env(),
        access_log: a.exports.access_log.map(|f| f.as_str().to_string()),
        dashboard: a.dashboard,
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        let name = spec.name.clone();
        local::up(spec, store, opts, shutdown, |st| {
            let replicas = st.workloads.len();
            let services: std::collections::BTreeSet<_> =
                st.workloads.iter().map(|w| &w.service).collect();
            let mut prometheus = if st.prometheus.is_empty() {
                String::new()
            } else {
                format!(" · prometheus {}", st.prometheus)
            };
            if !st.dashboard.is_empty() {
                // The URL to sign in with carries the credential: `weft dashboard` prints it.
                prometheus.push_str(&format!(
                    " · dashboard {} (`weft dashboard` prints the URL to open)",
                    st.dashboard
                ));
            }
            println!(
                "weft: mesh {name} is ready: ingress http://{} · control {} · {replicas} replicas of {} services{prometheus}",
                st.ingress,
                st.control,
                services.len()
            );
            if built_in {
                println!("{}", welcome(&st.ingress));
            }
        })
        .await?;
        eprintln!("weft: mesh stopped");
        Ok(0)
    })
}

/// What a new user of the built-in shop reads once it is up: where it is, how to log in, what
/// to try.
fn welcome(ingress: &str) -> String {
    let (name, password, _) = demo::shop::users::DEMO_USER;
    // The command as this user can type it: `target/release/weft` from a checkout.
    let weft = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let cwd = std::env::current_dir().ok()?;
            exe.strip_prefix(&cwd).ok().map(|p| p.display().to_string())
        })
        .unwrap_or_else(|| "weft".into());
    format!(
        "
The shop is open at http://{ingress}/  (log in as {name} / {password})
Seven services, two replicas of the frontend and of order, STRICT mTLS, only the calls that
must happen allowed, end users' JWTs on orders, payment retried (examples/shop, docs/shop.md).

Try, in another terminal:
  {weft} status                  every replica, its proxy and its identity
  {weft} stat                    success rate, RPS and latency per service
  {weft} tap order               live requests to the order service
  {weft} top frontend            the frontend's busiest paths
  {weft} edges                   who calls whom, and over mTLS
  {weft} dashboard               the web dashboard's URL: the graph, metrics per version, tap
  {weft} load --rate 50 --duration 30s http://{ingress}/         the product page under load
  {weft} apply -f examples/shop/steps/resilience-faults.yaml   the mesh fails 30% of payments
  {weft} apply -f examples/shop/steps/resilience-canary.yaml   10% of payments to payment-v2
  {weft} canary start payment --from v1 --to v2 --interval 20s --min-requests 10 --follow
                                 payment-v2 rolled out step by step as orders come in
  {weft} apply -f examples/shop/resilience.yaml                back to normal
"
    )
}

/// The mesh the etcd cluster at `url` holds (`mesh`, or the only one): its `kind: Mesh` and
/// everything applied to it, as the replicas that wrote it left it; `None` when it holds none.
async fn mesh_in_store(url: &str, mesh: Option<&str>) -> anyhow::Result<Option<model::MeshSpec>> {
    use control::etcd::{Etcd, EtcdResources};
    let names = Etcd::meshes(url).await?;
    let name = match (mesh, names.as_slice()) {
        (Some(m), _) => m.to_string(),
        (None, []) => return Ok(None),
        (None, [one]) => one.clone(),
        (None, many) => anyhow::bail!(
            "{url} holds several meshes ({}): say which with --mesh NAME",
            many.join(", ")
        ),
    };
    let etcd = Etcd::connect(url, &name).await?;
    let resources = EtcdResources::open(etcd, &config::Store::default()).await?;
    let loaded = control::store::Backend::load(&*resources)
        .load()
        .map_err(|e| anyhow::anyhow!("the resources of mesh {name} in etcd: {e}"))?;
    match loaded.mesh {
        Some(m) => Ok(Some(m)),
        None => anyhow::bail!("mesh {name} in {url} has no `kind: Mesh` document"),
    }
}

/// A control-plane replica over the etcd cluster at `url`: the CA root and the admin
/// credential sealed there (the first replica creates them), the files given applied over the
/// resources there, the registrations shared with every other replica.
async fn control_over_etcd(
    a: &ControlArgs,
    url: &str,
    spec: model::MeshSpec,
    files: config::Store,
    listen: control::Listen,
) -> anyhow::Result<(control::ControlPlane, String, control::etcd::Etcd)> {
    use control::etcd::{Etcd, EtcdRegistrations, EtcdResources, EtcdTokens, SealKey};
    let key = SealKey::from_file_or_env(a.store_key_file.as_deref())?;
    let etcd = Etcd::connect(url, &spec.name).await?;
    // A token one replica minted is spent at whichever replica the proxy (or host) reaches.
    let tokens = std::sync::Arc::new(EtcdTokens::new(etcd.clone()));
    let ca = if a.ca.no_mtls {
        None
    } else {
        let ca = etcd.ca(&key, a.ca.config()).await?;
        ca.share_tokens(tokens.clone());
        Some(std::sync::Arc::new(ca))
    };
    let hosts = std::sync::Arc::new(control::hosts::Hosts::in_etcd(etcd.clone(), tokens));
    let token = etcd
        .admin_token(&key, local::meshes::new_admin_token())
        .await?;
    let resources = EtcdResources::open(etcd.clone(), &files).await?;
    let loaded = control::store::Backend::load(&*resources)
        .load()
        .map_err(|e| anyhow::anyhow!("the resources in etcd: {e}"))?;
    let (registrations, follower) = EtcdRegistrations::open(etcd.clone()).await?;
    let registry = control::Registry::with_registrations(spec, Box::new(registrations));
    // Snapshots numbered by the resources revision they carry, alike on every replica.
    registry.number_by_revision(resources.revision());
    // What is in force is what etcd holds (the files applied over it); the mesh's name and
    // ingress are the files'.
    registry.set_traffic_at(loaded.mesh, resources.revision());
    follower.follow(registry.clone());
    resources.follow(registry.clone());
    let cp = control::ControlPlane::start_shared(
        registry,
        resources,
        listen,
        ca,
        Some(token.clone()),
        hosts,
        Some(etcd.clone()),
    )
    .await?;
    Ok((cp, token, etcd))
}

pub fn control(a: ControlArgs) -> anyhow::Result<i32> {
    let rt = runtime()?;
    // Over a store with no files given: the mesh the store holds.
    let from_store = match &a.store {
        Some(url) if a.files.is_empty() => {
            Some(rt.block_on(mesh_in_store(url, a.mesh.as_deref()))?)
        }
        _ => None,
    };
    let (spec, store) = match from_store {
        Some(Some(spec)) => (spec, config::Store::default()),
        // On a cluster with no files: a mesh of the cluster's services alone.
        _ if a.kubernetes && a.files.is_empty() => {
            let store = control::kubernetes::cluster::default_mesh();
            let spec = store
                .load()
                .ok()
                .and_then(|l| l.mesh)
                .ok_or_else(|| anyhow::anyhow!("the default mesh does not load"))?;
            (spec, store)
        }
        _ => load_mesh(&a.files)?,
    };
    local::meshes::ensure_home()?;
    rt.block_on(async move {
        let listen = control::Listen {
            grpc: a.listen,
            api: a.api,
        };
        let kube_api = control::kubernetes::ApiClient::new(a.kubernetes_api.clone());
        // On a cluster: its API, which replica writes to it, and the CA's root shared by the
        // replicas (in a Secret, unless a root is given).
        let cluster = if a.kubernetes {
            let client = kube_api.get().await
                .map_err(|e| anyhow::anyhow!(e))?;
            let namespace = std::env::var("WEFT_POD_NAMESPACE")
                .unwrap_or_else(|_| model::names::CONTROL_NAMESPACE.to_string());
            let identity = control::kubernetes::lease::identity();
            let leader = control::kubernetes::lease::elect(
                client.clone(),
                &namespace,
                control::kubernetes::LEASE_NAME,
                identity.clone(),
                a.leader_lease,
                CancellationToken::new(),
            )
            .await;
            Some((client, namespace, identity, leader))
        } else {
            None
        };
        let leader = cluster
            .as_ref()
            .map_or_else(control::kubernetes::lease::Leader::alone, |c| c.3.clone());
        let (cp, token, etcd) = match &a.store {
            None => {
                let ca = match &cluster {
                    Some((client, namespace, ..)) if a.ca.in_secret() => Some(std::sync::Arc::new(
                        control::kubernetes::ca_secret::open(client, namespace, a.ca.config())
                            .await
                            .map_err(|e| anyhow::anyhow!("CA: {e}"))?,
                    )),
                    _ => a.ca.open(&spec.name)?,
                };
                if a.service_account_tokens {
                    let Some(ca) = &ca else {
                        anyhow::bail!("--service-account-tokens needs the mesh CA");
                    };
                    let client = kube_api.get().await
                        .map_err(|e| anyhow::anyhow!(e))?;
                    ca.share_tokens(std::sync::Arc::new(
                        control::kubernetes::tokens::ServiceAccountTokens::new(
                            client,
                            &ca.config().trust_domain,
                        ),
                    ));
                }
                let registry = control::Registry::new(spec.clone());
                // The operator's credential for the API, in WEFT_HOME for the CLI.
                let token = local::meshes::new_admin_token();
                let backend: std::sync::Arc<dyn control::store::Backend> = if let Some((
                    client,
                    _,
                    identity,
                    leader,
                )) = &cluster
                {
                    if let Some(ca) = &ca {
                        registry.set_trust_domain(&ca.config().trust_domain);
                    }
                    let cluster = control::kubernetes::cluster::Cluster::start(
                        client.clone(),
                        store,
                        registry.clone(),
                        leader.clone(),
                        identity.clone(),
                    )
                    .await;
                    // Ready once the cluster has been listed and compiled, so that the first
                    // snapshot proxies get is the cluster's: until then no proxy is served
                    // (they keep what they run; the readiness probe fails, so they go to
                    // another replica), rather than sent a mesh without the cluster in it.
                    while !cluster.synced(std::time::Duration::from_secs(30)).await {
                        eprintln!(
                            "weft: waiting for the Kubernetes API to list the cluster; no proxy is served until it has"
                        );
                    }
                    cluster.resources.clone()
                } else {
                    std::sync::Arc::new(control::store::Memory::new(store))
                };
                let cp = control::ControlPlane::start_with(
                    registry,
                    backend,
                    listen,
                    ca,
                    Some(token.clone()),
                )
                .await?;
                (cp, token, None)
            }
            Some(url) => {
                let (cp, token, etcd) =
                    control_over_etcd(&a, url, spec.clone(), store, listen).await?;
                (cp, token, Some(etcd))
            }
        };
        if a.watch {
            cp.watch(a.files.clone());
        }
        if let Some(etcd) = &etcd {
            etcd.announce(&control::etcd::Replica {
                name: etcd.replica.clone(),
                grpc: cp.grpc.to_string(),
                api: cp.api.to_string(),
                pid: std::process::id(),
            })
            .await?;
        }
        // The trust bundle beside the record: the CLI speaks TLS to an API that is not on
        // loopback, verifying the control plane with it (kept current as roots rotate).
        let ca_file = match &cp.ca {
            Some(ca) if !cp.api.ip().is_loopback() => {
                let path = local::meshes::write_bundle(&spec.name, &ca.bundle_pem())?;
                let (ca, name) = (ca.clone(), spec.name.clone());
                tokio::spawn(async move {
                    let mut written = ca.bundle_pem();
                    loop {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        let now = ca.bundle_pem();
                        if now != written && local::meshes::write_bundle(&name, &now).is_ok() {
                            written = now;
                        }
                    }
                });
                Some(path.display().to_string())
            }
            _ => None,
        };
        let dashboard = match a.dashboard {
            Some(addr) => Some(cp.serve_dashboard(addr).await?),
            None => None,
        };
        if a.ca_root_configmaps {
            let Some(ca) = &cp.ca else {
                anyhow::bail!("--ca-root-configmaps needs the mesh CA");
            };
            let client = kube_api.get().await
                .map_err(|e| anyhow::anyhow!(e))?;
            // Written once before the control plane says it is ready (by the leader).
            if leader.is_leader() {
                control::kubernetes::ca_roots::sync(&client, &ca.bundle_pem())
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
            }
            tokio::spawn(control::kubernetes::ca_roots::keep(
                client,
                ca.clone(),
                leader.clone(),
                cp.shutdown.clone(),
            ));
        }
        let webhook = match (a.webhook, &cp.ca) {
            (None, _) => String::new(),
            (Some(_), None) => anyhow::bail!("--webhook needs the mesh CA (its certificate is the CA's)"),
            (Some(addr), Some(ca)) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("--webhook {addr}: {e}"))?;
                let bound = l.local_addr()?;
                let dns = if a.webhook_dns.is_empty() {
                    control::webhook::dns_names(model::names::CONTROL_NAMESPACE)
                } else {
                    a.webhook_dns.clone()
                };
                let opts = config::inject::Options {
                    image: a.inject_image.clone(),
                    control: a.inject_control.clone(),
                    trust_domain: ca.config().trust_domain.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    by_default: false,
                    namespaces: Default::default(),
                };
                tokio::spawn(control::webhook::serve(
                    l,
                    ca.clone(),
                    dns,
                    opts,
                    cp.shutdown.clone(),
                ));
                if let Some(name) = &a.webhook_configuration {
                    let client = kube_api.get().await
                        .map_err(|e| anyhow::anyhow!(e))?;
                    // Written once before the control plane says it is ready (by the leader).
                    if leader.is_leader() {
                        control::kubernetes::ca_bundle::write(&client, name, &ca.bundle_pem())
                            .await
                            .map_err(|e| anyhow::anyhow!(e))?;
                    }
                    tokio::spawn(control::kubernetes::ca_bundle::keep(
                        client,
                        ca.clone(),
                        name.clone(),
                        leader.clone(),
                        cp.shutdown.clone(),
                    ));
                }
                format!(" · injection webhook on https://{bound}")
            }
        };
        let _record = local::meshes::record(
            &local::meshes::MeshRecord {
                name: spec.name.clone(),
                pid: std::process::id(),
                control: cp.grpc.to_string(),
                api: cp.api.to_string(),
                ingress: spec.ingress.to_string(),
                token_file: None,
                ca_file,
                dashboard: dashboard.map(|d| d.to_string()),
            },
            Some(&token),
        )?;
        let store = match (&etcd, &cluster) {
            (Some(e), _) => format!(" · store etcd ({}), replica {}", e.endpoints(), e.replica),
            (None, Some((_, namespace, identity, _))) => format!(
                " · the mesh is the Kubernetes cluster's, replica {identity} in {namespace}"
            ),
            (None, None) => String::new(),
        };
        // Other machines reach the API over TLS when there is a CA; plain HTTP is for loopback.
        let scheme = if cp.ca.is_some() && !cp.api.ip().is_loopback() {
            "https"
        } else {
            "http"
        };
        println!(
            "weft: control plane for mesh {} ready: proxies connect to {}, API on {scheme}://{}{store}{webhook}",
            spec.name, cp.grpc, cp.api
        );
        let stop = CancellationToken::new();
        on_signal(stop.clone()).await;
        cp.shutdown.cancel();
        Ok(0)
    })
}
