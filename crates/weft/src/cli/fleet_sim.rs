//! `weft fleet-sim`: a control plane under a simulated fleet. It starts an etcd member (or uses
//! the cluster `--store` names) and control-plane replicas over it, opens N discovery streams
//! that behave like proxies (spread across the replicas and across S services), waits until
//! every one has its first snapshot and the fleet is quiet, then applies K VirtualService weight
//! changes one after the other through the API, as `weft apply` does, and measures for each how
//! long until every simulated proxy has received the snapshot carrying it. It also reports each
//! replica's CPU time and peak RSS (from /proc), the bytes of snapshot each proxy receives (and
//! the whole mesh's, what it would receive without scoping), and etcd's operation counters
//! (its /metrics). Every wait is bounded by `--timeout`.

mod procs;
mod report;
mod streams;

use super::{parse_duration, Output};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use report::{ms, secs, ReplicaUse, Report, Spread};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streams::{Fleet, COMMON};
use tokio_util::sync::CancellationToken;

/// The mesh's name in the store.
const MESH: &str = "fleet";
/// The fleet is settled once no snapshot has arrived for this long.
const QUIET: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scoping {
    /// A mesh-default Sidecar (`./*`, `shared/*`): each proxy sees its namespace and `shared`
    Namespace,
    /// No Sidecar: every proxy gets the whole mesh
    None,
    /// `spec.scope: declared`: each service declares `dependsOn` `common` and the two
    /// services after it, and its proxies see those (and their own)
    Declared,
}

#[derive(clap::Args)]
pub struct FleetSimArgs {
    /// Simulated proxies (discovery streams, one connection each)
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// Services they are spread across; the first, `common.shared`, is in every proxy's scope
    /// and is what the changes touch
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    services: u32,
    /// Namespaces the other services are spread across
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    namespaces: u32,
    /// Control-plane replicas to start; proxies are spread across them in turn
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    replicas: u32,
    /// Changes applied one after the other (each a new weight of `common`'s subsets)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=99))]
    changes: u32,
    /// Which services each proxy is told about
    #[arg(long, value_enum, default_value = "namespace")]
    scope: Scoping,
    /// An etcd cluster to use (etcd://HOST:PORT[,…]; its first member's /metrics is read)
    /// [default: one member started on loopback]
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The etcd server binary [default: etcd on PATH]
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// The longest wait for any one step: every proxy's first snapshot, the fleet to settle,
    /// every proxy to get one change
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    timeout: Duration,
    /// Streams opening at once
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Use control-plane replicas already running over `--store` (started with the mesh
    /// `--print-mesh` writes and `--no-mtls`) instead of starting them: their gRPC addresses,
    /// comma-separated
    #[arg(long = "control", value_name = "ADDR", value_delimiter = ',', requires_all = ["api", "token_file", "store"])]
    control: Vec<std::net::SocketAddr>,
    /// With --control: the API of one of them, where the changes are applied
    #[arg(long, value_name = "ADDR")]
    api: Option<std::net::SocketAddr>,
    /// With --control: the file holding the API's admin credential
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// With --control: their PIDs, in the same order, for their CPU time and memory
    #[arg(long = "control-pid", value_name = "PID", value_delimiter = ',')]
    control_pid: Vec<u32>,
    /// Print the mesh file the simulation serves (services, `common`'s routes, the Sidecar)
    /// and exit
    #[arg(long)]
    print_mesh: bool,
    /// Keep the scratch directory (etcd's and the replicas' logs) and print where it is
    #[arg(long)]
    keep_logs: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

/// A control-plane replica the fleet connects to: one this run started, or one given.
struct Control {
    grpc: std::net::SocketAddr,
    pid: Option<u32>,
    _started: Option<procs::Replica>,
}

/// The mesh file: the services (no workloads: the simulated proxies register for them),
/// `common`'s subsets and its VirtualService at weight 0 for v2, and with namespace scoping
/// the mesh-default Sidecar; with declared scoping, each service's `dependsOn`.
fn mesh_yaml(a: &FleetSimArgs) -> String {
    let declared = a.scope == Scoping::Declared;
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {MESH}}}\nspec:\n  ingress: 127.0.0.1:0\n{}  services:\n  - {{name: {}, namespace: {}, port: 80{}}}\n",
        if declared { "  scope: declared\n" } else { "" },
        COMMON.0,
        COMMON.1,
        depends_on(a, 0),
    );
    for s in 1..a.services {
        let (name, ns) = service_of(a, s);
        y.push_str(&format!(
            "  - {{name: {name}, namespace: {ns}, port: 80{}}}\n",
            depends_on(a, s)
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {0}, namespace: {1}}}\nspec:\n  host: {0}.{1}.svc.cluster.local\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n",
        COMMON.0, COMMON.1
    ));
    y.push_str(&format!("---\n{}", change_yaml(0)));
    if a.scope == Scoping::Namespace {
        y.push_str("---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  egress:\n  - hosts: [\"./*\", \"shared/*\"]\n");
    }
    y
}

/// Service `s`'s `dependsOn` field, with declared scoping (else nothing): `common` and the two
/// services after it (wrapping around; fewer when there are fewer services).
fn depends_on(a: &FleetSimArgs, s: u32) -> String {
    if a.scope != Scoping::Declared {
        return String::new();
    }
    let mut named = Vec::new();
    if s != 0 {
        named.push(format!("{}.{}", COMMON.0, COMMON.1));
    }
    for k in 1..=2 {
        let t = (s + k) % a.services;
        if t != 0 && t != s {
            let (name, ns) = service_of(a, t);
            named.push(format!("{name}.{ns}"));
        }
    }
    named.dedup();
    format!(", dependsOn: [{}]", named.join(", "))
}

/// Change `k`: `common`'s VirtualService sending k% to subset v2 (0: all to v1).
fn change_yaml(k: u32) -> String {
    let (name, ns) = COMMON;
    let host = format!("{name}.{ns}.svc.cluster.local");
    let mut routes = format!(
        "    - destination: {{host: {host}, subset: v1}}\n      weight: {}\n",
        100 - k
    );
    if k > 0 {
        routes.push_str(&format!(
            "    - destination: {{host: {host}, subset: v2}}\n      weight: {k}\n"
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{host}]\n  http:\n  - route:\n{routes}"
    )
}

/// Service `s` (1..S; 0 is `common`): its name and namespace.
fn service_of(a: &FleetSimArgs, s: u32) -> (String, String) {
    (format!("svc-{s}"), format!("ns-{}", (s - 1) % a.namespaces))
}

/// Who simulated proxy `i` is: a replica of service `i mod S`.
fn identity_of(a: &FleetSimArgs, i: usize) -> streams::Identity {
    let s = (i % a.services as usize) as u32;
    if s == 0 {
        let version = if (i / a.services as usize).is_multiple_of(2) {
            "v1"
        } else {
            "v2"
        };
        return streams::Identity {
            service: COMMON.0.into(),
            namespace: COMMON.1.into(),
            version,
        };
    }
    let (service, namespace) = service_of(a, s);
    streams::Identity {
        service,
        namespace,
        version: "v1",
    }
}

/// GET `url`: the status and body.
async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let rsp = client.get(url.parse()?).await?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A call to the control plane's API with its admin credential.
async fn api_call(
    method: hyper::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, Bytes)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))?;
    let rsp = client.request(req).await?;
    let status = rsp.status().as_u16();
    Ok((status, rsp.into_body().collect().await?.to_bytes()))
}

/// Waits until `done` holds, waking on the fleet's progress, for at most `within`; `what` names
/// it in the error.
async fn wait_for(
    fleet: &Fleet,
    within: Duration,
    what: &str,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let woken = fleet.progress.notified();
        if done() {
            return Ok(());
        }
        let failed = fleet.failed.load(Ordering::SeqCst);
        if failed > 0 {
            let first = (0..fleet.seen.len())
                .find_map(|i| fleet.seen(i).failed)
                .unwrap_or_default();
            anyhow::bail!("{what}: {failed} simulated proxies' streams failed; the first: {first}");
        }
        tokio::select! {
            _ = woken => {}
            // Also re-checked now and then: a notification between the check and the wait is
            // not lost (`notified` was created first), but the deadline must be seen.
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not done within {within:?}"
        );
    }
}

/// Replicas' CPU time now.
fn cpu(replicas: &[Control]) -> Vec<Duration> {
    replicas
        .iter()
        .map(|r| r.pid.and_then(procs::cpu_time).unwrap_or_default())
        .collect()
}

/// How much etcd's counters grew from `before` to `after`; gauges (the watchers) as they are
/// at `after`.
fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            let grew = if procs::ETCD_GAUGES.contains(&k.as_str()) {
                *v
            } else {
                v - before.get(k).copied().unwrap_or(0.0)
            };
            (k.clone(), grew)
        })
        .collect()
}

pub fn run(a: FleetSimArgs) -> anyhow::Result<i32> {
    if a.print_mesh {
        print!("{}", mesh_yaml(&a));
        return Ok(0);
    }
    // One connection per simulated proxy: allow as many descriptors as the system lets us
    // (the replicas started next inherit the limit).
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let rt = super::runtime()?;
    let output = a.output;
    let report = rt.block_on(simulate(a))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report.table()),
    }
    Ok(if report.failed == 0 { 0 } else { 1 })
}

async fn simulate(a: FleetSimArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut dir = tempfile::Builder::new()
        .prefix("weft-fleet-sim-")
        .tempdir()?;
    if a.keep_logs {
        dir.disable_cleanup(true);
        eprintln!("weft fleet-sim: logs kept in {}", dir.path().display());
    }
    let etcd = match &a.store {
        Some(_) => None,
        None => {
            let bin = procs::etcd_binary(a.etcd.as_deref())?;
            Some(procs::Etcd::start(&bin, dir.path()).await?)
        }
    };
    let (store, metrics) = match (&a.store, &etcd) {
        (Some(url), _) => {
            let first = control::etcd::endpoints(url)?
                .into_iter()
                .next()
                .and_then(|e| e.trim_start_matches("http://").parse().ok())
                .ok_or_else(|| anyhow::anyhow!("--store {url}: no HOST:PORT"))?;
            (url.clone(), first)
        }
        (None, Some(e)) => (format!("etcd://{}", e.client), e.client),
        (None, None) => unreachable!("an etcd member runs when no store is given"),
    };
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, mesh_yaml(&a))?;
    let (replicas, token, api) = if a.control.is_empty() {
        let store_key = local::meshes::new_admin_token();
        let mut replicas = Vec::new();
        for n in 0..a.replicas as usize {
            let (store, key, mesh, d) = (
                store.clone(),
                store_key.clone(),
                mesh.clone(),
                dir.path().to_path_buf(),
            );
            let r = tokio::task::spawn_blocking(move || {
                procs::Replica::start(n, &store, &key, &mesh, &d)
            })
            .await??;
            replicas.push(r);
        }
        let token = replicas[0].token(MESH)?;
        let api = replicas[0].api;
        let replicas: Vec<Control> = replicas
            .into_iter()
            .map(|r| Control {
                grpc: r.grpc,
                pid: Some(r.proc.pid()),
                _started: Some(r),
            })
            .collect();
        (replicas, token, api)
    } else {
        let file = a
            .token_file
            .as_ref()
            .expect("clap requires it with --control");
        let token = std::fs::read_to_string(file)?.trim().to_string();
        let replicas = a
            .control
            .iter()
            .enumerate()
            .map(|(i, grpc)| Control {
                grpc: *grpc,
                pid: a.control_pid.get(i).copied(),
                _started: None,
            })
            .collect();
        (
            replicas,
            token,
            a.api.expect("clap requires it with --control"),
        )
    };

    // The fleet connects.
    let etcd_before = procs::etcd_counters(metrics).await?;
    let cpu_before = cpu(&replicas);
    let etcd_cpu = || etcd.as_ref().and_then(|e| e.proc.cpu()).unwrap_or_default();
    let etcd_cpu_before = etcd_cpu();
    let changes = a.changes as usize;
    let fleet = Fleet::new(a.proxies, changes);
    let stop = CancellationToken::new();
    let connect_started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(a.connect_concurrency.max(1)));
    let mut per_replica = vec![0; replicas.len()];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.proxies {
        let r = i % replicas.len();
        per_replica[r] += 1;
        let permit = gate.clone().acquire_owned().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn(streams::run(
            i,
            identity_of(&a, i),
            replicas[r].grpc,
            fleet.clone(),
            stop.clone(),
            tx,
        ));
        tokio::spawn(async move {
            // Until its stream is open (or it gave up).
            let _ = rx.await;
            drop(permit);
        });
    }
    let n = a.proxies;
    wait_for(&fleet, a.timeout, "every proxy's first snapshot", || {
        fleet.reached[0].load(Ordering::SeqCst) >= n
    })
    .await?;
    let connect = connect_started.elapsed();
    let deadline = Instant::now() + a.timeout;
    while fleet.last_arrival().elapsed() < QUIET {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fleet did not settle (snapshots kept arriving) within {:?}",
            a.timeout
        );
        tokio::time::sleep(QUIET.saturating_sub(fleet.last_arrival().elapsed())).await;
    }
    let settle = connect_started.elapsed();
    let etcd_settled = procs::etcd_counters(metrics).await?;
    let cpu_settled = cpu(&replicas);
    let sim_cpu = || procs::cpu_time(std::process::id()).unwrap_or_default();
    let sim_cpu_settled = sim_cpu();
    let etcd_cpu_settled = etcd_cpu();

    // The changes, one after the other.
    let mut propagation = Vec::new();
    let mut all_reached = Vec::new();
    let mut applied = Vec::new();
    let mut not_ok: BTreeMap<u16, usize> = BTreeMap::new();
    for k in 1..=changes {
        let body = serde_json::json!({
            "file": format!("change-{k}.yaml"),
            "yaml": change_yaml(k as u32),
        });
        let t0 = Instant::now();
        let url = format!("http://{api}/apply");
        let token = token.clone();
        let call = tokio::spawn(async move {
            let r = api_call(hyper::Method::POST, &url, &token, Some(body)).await;
            (r, t0.elapsed())
        });
        wait_for(&fleet, a.timeout, &format!("change {k}"), || {
            fleet.reached[k].load(Ordering::SeqCst) >= n
        })
        .await?;
        let mut last = Duration::ZERO;
        for i in 0..n {
            if let Some(at) = fleet.seen(i).marks[k] {
                let d = at.saturating_duration_since(t0);
                last = last.max(d);
                propagation.push(ms(d));
            }
        }
        all_reached.push(ms(last));
        let (answer, took) = tokio::time::timeout(a.timeout, call).await??;
        let (status, text) = answer?;
        if status != 200 {
            *not_ok.entry(status).or_default() += 1;
            if status >= 400 {
                anyhow::bail!(
                    "change {k}: the API answered {status}: {}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        applied.push(ms(took));
    }
    let etcd_after = procs::etcd_counters(metrics).await?;
    let cpu_after = cpu(&replicas);
    let sim_cpu_after = sim_cpu();
    let etcd_cpu_after = etcd_cpu();
    let etcd_use = etcd.as_ref().map(|e| {
        let (peak, now) = e.proc.memory().unwrap_or_default();
        ReplicaUse {
            cpu_startup_s: secs(etcd_cpu_settled.saturating_sub(etcd_cpu_before)),
            cpu_changes_s: secs(etcd_cpu_after.saturating_sub(etcd_cpu_settled)),
            peak_rss_mb: peak as f64 / 1e6,
            rss_mb: now as f64 / 1e6,
            proxies: 0,
        }
    });
    let control = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (peak, now) = r.pid.and_then(procs::memory).unwrap_or_default();
            ReplicaUse {
                cpu_startup_s: secs(cpu_settled[i].saturating_sub(cpu_before[i])),
                cpu_changes_s: secs(cpu_after[i].saturating_sub(cpu_settled[i])),
                peak_rss_mb: peak as f64 / 1e6,
                rss_mb: now as f64 / 1e6,
                proxies: per_replica[i],
            }
        })
        .collect();
    // The whole mesh as the API shows it, encoded as a proxy without a Sidecar receives it.
    let (status, whole) = api_call(
        hyper::Method::GET,
        &format!("http://{api}/snapshot"),
        &token,
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "GET /snapshot answered {status}");
    let whole: model::Snapshot = serde_json::from_slice(&whole)?;
    let whole_bytes = prost::Message::encoded_len(&api::pb::Snapshot::from(&whole));

    stop.cancel();
    while tasks.join_next().await.is_some() {}
    let seen: Vec<streams::Seen> = (0..n).map(|i| fleet.seen(i)).collect();
    let failed = seen.iter().filter(|s| s.failed.is_some()).count();
    if let Some(why) = seen.iter().find_map(|s| s.failed.clone()) {
        eprintln!("weft fleet-sim: {failed} streams failed; the first: {why}");
    }
    let report = Report {
        proxies: n,
        services: a.services as usize,
        namespaces: a.namespaces as usize,
        replicas: replicas.len(),
        changes,
        scope: match a.scope {
            Scoping::Namespace => "namespace",
            Scoping::None => "none",
            Scoping::Declared => "declared",
        }
        .into(),
        connect_s: secs(connect),
        settle_s: secs(settle),
        propagation_ms: Spread::of(propagation),
        all_reached_ms: Spread::of(all_reached),
        apply_ms: Spread::of(applied),
        apply_not_ok: not_ok,
        control,
        snapshot_bytes: Spread::of(seen.iter().map(|s| s.last_bytes as f64).collect()),
        snapshot_services: Spread::of(seen.iter().map(|s| s.last_services as f64).collect()),
        whole_snapshot_bytes: whole_bytes,
        messages_per_proxy: Spread::of(seen.iter().map(|s| s.messages as f64).collect()),
        etcd_startup: delta(&etcd_settled, &etcd_before),
        etcd_changes: delta(&etcd_after, &etcd_settled),
        etcd_use,
        simulator_cpu_changes_s: secs(sim_cpu_after.saturating_sub(sim_cpu_settled)),
        failed,
        took_s: 0.0,
    };
    // Replicas first (their leases go with them), then etcd, each by its PID.
    tokio::task::spawn_blocking(move || {
        drop(replicas);
        drop(etcd);
    })
    .await?;
    Ok(Report {
        took_s: secs(started.elapsed()),
        ..report
    })
}

#[cfg(test)]
mod tests;
