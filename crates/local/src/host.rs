//! A host of a mesh (`weft host join`): joins through the control plane's API with a one-time
//! bootstrap token (or the credential an earlier join saved), reads which replicas the mesh
//! places on it, and runs each with its sidecar as `weft up` does — the app on 127.0.0.1, the
//! sidecar's inbound on the host's address (other hosts' sidecars reach it there, over mTLS),
//! every sidecar knowing every control-plane replica. Optionally an ingress gateway too. Runs
//! until told to stop, then drains sidecars and stops apps.
//!
//! Each sidecar start gets a fresh join token from the API (`POST /hosts/NAME/join-token`),
//! which the control plane only mints for identities of services placed on this host.
//!
//! The API is spoken to over TLS, the control plane verified against the mesh's trust bundle.
//! The first time, the host has no bundle: the bootstrap token carries the SHA-256 of the
//! mesh's root (`SECRET.PIN`, as `weft host token` prints it), the host reads the public bundle
//! and checks it holds that root before it sends the secret (as `kubeadm join`'s CA hash). The
//! bundle is saved with the credential and read again every placement poll, so a root rotated
//! in while the host runs is trusted before it signs the API's certificate.

use crate::api_call::{call_once, TlsFor};
use crate::launch::{app_port, AppLaunch, Credentials, Launch, ProxyLaunch, ProxyMode};
use crate::supervise::Stage;
use crate::UpError;
use bytes::Bytes;
use control::hosts::{Joined, Placed};
use http_body_util::Full;
use model::{Identity, Labels};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct HostOptions {
    /// The control plane's API, one address per replica (tried in turn).
    pub api: Vec<SocketAddr>,
    /// A one-time bootstrap token (`weft host token NAME`); `None`: the credential an earlier
    /// join of this host saved in `state`.
    pub token: Option<String>,
    pub name: String,
    /// Where other hosts reach this one.
    pub address: IpAddr,
    pub labels: Labels,
    /// Where this host keeps its credential (mode 0600).
    pub state: PathBuf,
    pub exe: PathBuf,
    pub drain_timeout: Duration,
    /// Run an ingress gateway listening here.
    pub ingress: Option<SocketAddr>,
    /// The SHA-256 (hex, `sha256:` optional) of a root of the mesh's trust bundle, when the
    /// token does not carry it.
    pub ca_pin: Option<String>,
    /// Makes the TLS config the API is spoken to with.
    pub tls_for: TlsFor,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the control plane ({api}): {why}")]
    Api { api: String, why: String },
    #[error("no bootstrap token (--token) and no saved credential for host {0} in {1}")]
    NoToken(String, String),
    #[error("{0}: {1}")]
    State(String, std::io::Error),
    #[error(transparent)]
    Up(#[from] UpError),
}

/// What a joined host keeps between its runs.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Saved {
    joined: Joined,
    api: Vec<SocketAddr>,
}

/// The control plane's API as this host reaches it: every replica's address, and the TLS it
/// speaks to them, verifying the control plane against the mesh's trust bundle (plaintext only
/// when every address is this machine's loopback and nothing pins the mesh's root).
struct Api {
    addrs: Vec<SocketAddr>,
    tls_for: TlsFor,
    /// The trust bundle the TLS config verifies with, and the config.
    tls: std::sync::RwLock<Option<(String, Arc<rustls::ClientConfig>)>>,
}

impl Api {
    fn new(addrs: Vec<SocketAddr>, tls_for: TlsFor) -> Api {
        Api {
            addrs,
            tls_for,
            tls: std::sync::RwLock::new(None),
        }
    }

    fn describe(&self) -> String {
        self.addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn error(&self, why: impl Into<String>) -> HostError {
        HostError::Api {
            api: self.describe(),
            why: why.into(),
        }
    }

    /// Verifies the control plane with `bundle` from now on (no change if it is the one in use).
    fn trust(&self, bundle: &str) -> Result<(), HostError> {
        let mut tls = self.tls.write().unwrap_or_else(|p| p.into_inner());
        if tls.as_ref().is_some_and(|(b, _)| b == bundle) {
            return Ok(());
        }
        let config = (self.tls_for)(bundle)
            .map_err(|e| self.error(format!("the mesh's trust bundle: {e}")))?;
        *tls = Some((bundle.to_string(), config));
        Ok(())
    }

    fn bundle(&self) -> Option<String> {
        let tls = self.tls.read().unwrap_or_else(|p| p.into_inner());
        tls.as_ref().map(|(b, _)| b.clone())
    }

    /// Calls the API, trying each address in turn.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), HostError> {
        let tls = {
            let tls = self.tls.read().unwrap_or_else(|p| p.into_inner());
            tls.as_ref().map(|(_, c)| c.clone())
        };
        if tls.is_none() && !self.addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(self.error(
                "no trust bundle to verify the control plane with: join with the token `weft host token` prints (it pins the mesh's root), or give --ca-hash",
            ));
        }
        let mut last = String::from("no address");
        for addr in &self.addrs {
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(path.to_string());
            if let Some(b) = bearer {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {b}"));
            }
            let payload = match &body {
                Some(b) => {
                    req = req.header(http::header::CONTENT_TYPE, "application/json");
                    Bytes::from(serde_json::to_vec(b).expect("JSON serializes"))
                }
                None => Bytes::new(),
            };
            let req = req.body(Full::new(payload)).expect("a valid request");
            match call_once(*addr, tls.as_ref(), req).await {
                Ok((status, body)) => return Ok((status, body.to_vec())),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(self.error(last))
    }

    /// Fetches the mesh's trust bundle in plaintext (it is public) and trusts it if it holds
    /// the root `pin` names: the check that makes the TLS that follows safe to send a secret
    /// over.
    async fn pin(&self, pin: &str) -> Result<(), HostError> {
        let pin = pin
            .trim()
            .trim_start_matches("sha256:")
            .to_ascii_lowercase();
        let mut last = String::from("no address");
        for addr in &self.addrs {
            let req = http::Request::get("/ca/bundle")
                .body(Full::new(Bytes::new()))
                .expect("a valid request");
            match call_once(*addr, None, req).await {
                Ok((200, body)) => {
                    let bundle = String::from_utf8_lossy(&body).into_owned();
                    if !control::hosts::bundle_pins(&bundle).contains(&pin) {
                        return Err(self.error(format!(
                            "{addr}: its trust bundle holds no root of SHA-256 {pin} (the token's pin): not the mesh the token is for, or someone in between; nothing was sent"
                        )));
                    }
                    return self.trust(&bundle);
                }
                Ok((status, body)) => {
                    last = format!(
                        "{addr}: GET /ca/bundle: {status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    )
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(self.error(last))
    }
}

fn refused(api: &Api, status: u16, body: &[u8]) -> HostError {
    api.error(format!(
        "{status}: {}",
        String::from_utf8_lossy(body).trim()
    ))
}

/// Sidecars' join tokens, from the API with the host's credential.
struct HostCredentials {
    api: Arc<Api>,
    host: String,
    credential: String,
    bundle: String,
    /// The last token given for each identity: when no replica answers, a sidecar restarts
    /// with it (spent, but it says the mesh runs mTLS) and serves from the certificate and
    /// snapshot its state directory kept.
    last: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Credentials for HostCredentials {
    fn join_token(&self, identity: &Identity) -> Result<String, String> {
        let body = serde_json::json!({ "identity": identity.0 });
        let path = format!("/hosts/{}/join-token", self.host);
        let answer = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.api.call(
                http::Method::POST,
                &path,
                Some(&self.credential),
                Some(body),
            ))
        });
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok((200, token)) => {
                let token = String::from_utf8_lossy(&token).into_owned();
                last.insert(identity.0.clone(), token.clone());
                Ok(token)
            }
            Ok((status, body)) => Err(refused(&self.api, status, &body).to_string()),
            Err(e) => match last.get(&identity.0) {
                Some(t) => {
                    tracing::warn!(%identity, error = %e, "no control-plane replica answers; the sidecar starts from what it kept");
                    Ok(t.clone())
                }
                None => Err(e.to_string()),
            },
        }
    }

    fn bundle_pem(&self) -> String {
        self.bundle.clone()
    }
}

/// Joins (or reuses the saved credential) and returns what the control plane answered. With a
/// pin (the token's, or `--ca-hash`), the API's trust bundle is checked against it before the
/// token is sent, and the API is spoken to over TLS from then on; a saved join trusts the
/// bundle it saved.
async fn join(opts: &HostOptions, api: &Api) -> Result<Saved, HostError> {
    let path = opts.state.join(format!("{}.json", opts.name));
    let Some(token) = &opts.token else {
        let text = std::fs::read(&path)
            .map_err(|_| HostError::NoToken(opts.name.clone(), opts.state.display().to_string()))?;
        let saved: Saved = serde_json::from_slice(&text)
            .map_err(|e| HostError::State(path.display().to_string(), std::io::Error::other(e)))?;
        if !saved.joined.trust_bundle.is_empty() {
            api.trust(&saved.joined.trust_bundle)?;
        }
        return Ok(saved);
    };
    let (_, token_pin) = control::hosts::split_bootstrap(token);
    if let Some(pin) = opts.ca_pin.as_deref().or(token_pin) {
        api.pin(pin).await?;
    }
    let body = serde_json::json!({
        "host": opts.name,
        "token": token,
        "address": opts.address,
        "labels": opts.labels,
    });
    let (status, answer) = api
        .call(http::Method::POST, "/hosts/join", None, Some(body))
        .await?;
    if status != 200 {
        return Err(refused(api, status, &answer));
    }
    let joined: Joined =
        serde_json::from_slice(&answer).map_err(|e| api.error(format!("the join answer: {e}")))?;
    if !joined.trust_bundle.is_empty() {
        api.trust(&joined.trust_bundle)?;
    }
    let saved = Saved {
        joined,
        api: opts.api.clone(),
    };
    save(&path, &saved)?;
    Ok(saved)
}

fn save(path: &std::path::Path, saved: &Saved) -> Result<(), HostError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |e| HostError::State(path.display().to_string(), e);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&serde_json::to_vec_pretty(saved).expect("JSON serializes"))
        .map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// How often a host reads its placement again (a changed Mesh file, another host joining).
const PLACEMENT_POLL: Duration = Duration::from_secs(2);

#[derive(serde::Deserialize)]
struct Placement {
    replicas: Vec<Placed>,
}

/// The replicas the mesh places on this host now.
async fn placement(api: &Api, saved: &Saved, host: &str) -> Result<Vec<Placed>, HostError> {
    let (status, body) = api
        .call(
            http::Method::GET,
            &format!("/hosts/{host}/placement"),
            Some(&saved.joined.credential),
            None,
        )
        .await?;
    if status != 200 {
        return Err(refused(api, status, &body));
    }
    let p: Placement =
        serde_json::from_slice(&body).map_err(|e| api.error(format!("the placement: {e}")))?;
    Ok(p.replicas)
}

/// Reads the mesh's trust bundle again over the verified API and trusts it from now on if it
/// changed (a root being rotated in: the next root signs the API's certificate once
/// activated), keeping it in the saved state for the next start.
async fn refresh_bundle(api: &Api, saved: &mut Saved, path: &std::path::Path) {
    if api.bundle().is_none() {
        return;
    }
    let Ok((200, body)) = api.call(http::Method::GET, "/ca/bundle", None, None).await else {
        return;
    };
    let bundle = String::from_utf8_lossy(&body).into_owned();
    if bundle == saved.joined.trust_bundle || bundle.trim().is_empty() {
        return;
    }
    if api.trust(&bundle).is_ok() {
        tracing::info!("the mesh's trust bundle changed; trusting the new one");
        saved.joined.trust_bundle = bundle;
        if let Err(e) = save(path, saved) {
            tracing::warn!(error = %e, "keeping the new trust bundle");
        }
    }
}

/// One replica running here: what it was started as, and its processes.
struct Running {
    placed: Placed,
    sidecar: Option<crate::supervise::Proc>,
    app: crate::supervise::Proc,
    /// Its app's port, leased while it runs.
    _port: crate::launch::PortLease,
}

/// Starts replicas with their sidecars, as the mesh places them.
struct Runner {
    opts: HostOptions,
    credentials: Option<Arc<dyn Credentials>>,
    admin_token: Arc<str>,
    control: SocketAddr,
    control_more: Vec<SocketAddr>,
    sidecars: Stage,
    apps: Stage,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Runner {
    fn proxy_launch(&self, proxy: ProxyLaunch) -> Launch {
        Launch::Proxy {
            proxy: Box::new(proxy),
            exe: self.opts.exe.clone(),
            ca: self.credentials.clone(),
            admin_token: self.admin_token.clone(),
            netns: None,
        }
    }

    /// Starts `p`: its sidecar (inbound on the host's address), then its app.
    async fn start(&mut self, p: &Placed) -> Result<Running, HostError> {
        let opts = &self.opts;
        let lease = app_port().map_err(|e| UpError::Spawn {
            what: p.instance.clone(),
            program: "port allocation".into(),
            source: e,
        })?;
        let port = lease.port;
        let mut app = AppLaunch {
            command: p.command.clone(),
            port,
            named_ports: Vec::new(),
            service: p.service.clone(),
            namespace: p.namespace.clone(),
            workload: p.workload.clone(),
            instance: p.instance.clone(),
            proxy: None,
            env: p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            pid_file: p.sidecar.then(|| {
                opts.state
                    .join(&opts.name)
                    .join("apps")
                    .join(format!("{}.{}.pid", p.instance, p.namespace))
            }),
        };
        let mut sidecar = None;
        if p.sidecar {
            let mut proxy = ProxyLaunch {
                mode: ProxyMode::Sidecar,
                control: self.control,
                control_more: self.control_more.clone(),
                service: p.service.clone(),
                namespace: p.namespace.clone(),
                workload: p.workload.clone(),
                instance: p.instance.clone(),
                labels: p.labels.clone(),
                identity: Identity(p.identity.clone()),
                app: Some(local(port)),
                // Other hosts' sidecars reach this one at the host's address.
                inbound: Some(SocketAddr::new(opts.address, 0)),
                outbound: Some(local(0)),
                admin: None,
                drain_timeout: opts.drain_timeout,
                access_log: None,
                app_protocol: model::Protocol::parse(&p.protocol).unwrap_or_default(),
                extra_flags: vec!["--app-port".into(), format!("{}={}", p.port, local(port))],
                // Kept across restarts of the sidecar and of the host: a sidecar restarted
                // while no control-plane replica answers serves from its last snapshot and
                // certificate.
                state_dir: Some(
                    opts.state
                        .join(&opts.name)
                        .join(format!("{}.{}", p.instance, p.namespace)),
                ),
                app_pid_file: app.pid_file.clone(),
            };
            let launch = self.proxy_launch(proxy.clone());
            let (child, bound) = launch.start_proxy().await?;
            proxy.keep_addresses(&bound);
            let launch = self.proxy_launch(proxy);
            sidecar = Some(self.sidecars.supervise(launch, child));
            app.proxy = bound.outbound;
        }
        let launch = Launch::App {
            app,
            exe: opts.exe.clone(),
            netns: None,
        };
        let app = self.apps.start(launch)?;
        Ok(Running {
            placed: p.clone(),
            sidecar,
            app,
            _port: lease,
        })
    }

    /// Stops one replica: its sidecar drains first, then its app stops.
    async fn stop(r: Running) {
        if let Some(s) = &r.sidecar {
            s.stop().await;
        }
        r.app.stop().await;
    }
}

/// Runs the host until `shutdown`; `on_ready` is told what it started. Reads its placement
/// again every 2 s and starts, stops or replaces replicas until what runs matches it; while no
/// replica of the control plane answers, what runs keeps running.
pub async fn run(
    opts: HostOptions,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&str),
) -> Result<(), HostError> {
    let api = Arc::new(Api::new(opts.api.clone(), opts.tls_for.clone()));
    let mut saved = join(&opts, &api).await?;
    let saved_path = opts.state.join(format!("{}.json", opts.name));
    let joined = saved.joined.clone();
    let placed = placement(&api, &saved, &opts.name).await?;
    let credentials: Option<Arc<dyn Credentials>> = (!joined.trust_bundle.is_empty()).then(|| {
        Arc::new(HostCredentials {
            api: api.clone(),
            host: opts.name.clone(),
            credential: joined.credential.clone(),
            bundle: joined.trust_bundle.clone(),
            last: Default::default(),
        }) as Arc<dyn Credentials>
    });
    let (control, control_more) = match joined.controls.split_first() {
        Some((c, more)) => (*c, more.to_vec()),
        None => return Err(api.error("it named no control-plane replica")),
    };
    let mut runner = Runner {
        opts: opts.clone(),
        credentials,
        admin_token: Arc::from(joined.credential.as_str()),
        control,
        control_more: control_more.clone(),
        sidecars: Stage::new(opts.drain_timeout),
        apps: Stage::new(opts.drain_timeout),
    };
    let mut ingress_stage = Stage::new(opts.drain_timeout);
    let mut started = Vec::new();
    if let Some(ingress) = opts.ingress {
        let proxy = ProxyLaunch {
            mode: ProxyMode::Ingress,
            control,
            control_more,
            service: crate::up::INGRESS_NAME.into(),
            namespace: crate::up::INGRESS_NAMESPACE.into(),
            workload: crate::up::INGRESS_NAME.into(),
            instance: format!("ingress-{}", opts.name),
            labels: [
                ("istio".to_string(), "ingressgateway".to_string()),
                ("app".to_string(), crate::up::INGRESS_NAME.to_string()),
            ]
            .into(),
            identity: Identity::spiffe_in(
                &joined.trust_domain,
                crate::up::INGRESS_NAMESPACE,
                crate::up::INGRESS_NAME,
            ),
            app: None,
            inbound: None,
            outbound: Some(ingress),
            admin: None,
            drain_timeout: opts.drain_timeout,
            access_log: None,
            app_protocol: model::Protocol::Http,
            extra_flags: Vec::new(),
            state_dir: None,
            app_pid_file: None,
        };
        let launch = runner.proxy_launch(proxy);
        let (child, _) = launch.start_proxy().await?;
        ingress_stage.supervise(launch, child);
        started.push(format!("ingress on {ingress}"));
    }
    let mut running: Vec<Running> = Vec::new();
    for p in &placed {
        running.push(runner.start(p).await?);
        started.push(p.instance.clone());
    }
    on_ready(&format!(
        "weft: host {} joined mesh {} at {}: running {}",
        opts.name,
        joined.mesh,
        opts.address,
        if started.is_empty() {
            "nothing placed here".to_string()
        } else {
            started.join(", ")
        }
    ));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PLACEMENT_POLL) => {}
        }
        refresh_bundle(&api, &mut saved, &saved_path).await;
        let Ok(placed) = placement(&api, &saved, &opts.name).await else {
            // No replica answers: keep what runs.
            continue;
        };
        // Gone or changed: stopped (a changed one is started again below).
        let (keep, gone): (Vec<Running>, Vec<Running>) = std::mem::take(&mut running)
            .into_iter()
            .partition(|r| placed.contains(&r.placed));
        running = keep;
        for r in gone {
            crate::output::line(format!(
                "weft: host {}: stopping {}",
                opts.name, r.placed.instance
            ));
            Runner::stop(r).await;
        }
        let new: Vec<Placed> = placed
            .into_iter()
            .filter(|p| !running.iter().any(|r| &r.placed == p))
            .collect();
        for p in &new {
            crate::output::line(format!("weft: host {}: starting {}", opts.name, p.instance));
            match runner.start(p).await {
                Ok(r) => running.push(r),
                Err(e) => crate::output::line(format!(
                    "weft: host {}: cannot start {}: {e}",
                    opts.name, p.instance
                )),
            }
        }
    }
    ingress_stage.stop().await;
    runner.sidecars.stop().await;
    runner.apps.stop().await;
    Ok(())
}
