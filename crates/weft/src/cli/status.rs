//! `weft status`: what runs where, and whether the mesh is ready (`--wait` waits until it is,
//! for scripts that start `weft up` in the background).

use super::{get::get, parse_duration, runtime, Output};
use control::status::Status;
use std::time::Duration;

/// How long `--wait` waits by default: as long as `weft up` itself does.
const DEFAULT_WAIT: Duration = local::DEFAULT_READY_TIMEOUT;
/// How often `--wait` asks the control plane again.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// `weft status --wait` gave up: the mesh is not ready (or not running).
const EXIT_NOT_READY: i32 = 3;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    /// Which mesh (when several run)
    #[arg(long)]
    mesh: Option<String>,
    /// Wait until the mesh runs and is ready (every replica receives traffic from every proxy
    /// that could send it, every proxy runs the latest snapshot), then print the status; exit
    /// 3 with what is pending if it is not ready within --timeout, or at once when a proxy
    /// refused the latest snapshot (it will not run it before the configuration changes)
    #[arg(long)]
    wait: bool,
    /// How long --wait waits [default: 60s]
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    timeout: Option<Duration>,
}

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let rt = runtime()?;
    let (st, code) = if a.wait {
        let within = a.timeout.unwrap_or(DEFAULT_WAIT);
        match rt.block_on(wait_ready(a.mesh.as_deref(), within)) {
            Ok(st) => (st, 0),
            Err(Waited::NotReady(st)) => {
                let st = *st;
                let why = if refuses_latest(&st) {
                    "cannot become ready: a proxy refused its snapshot".to_string()
                } else {
                    format!("is not ready after {within:?}")
                };
                eprintln!(
                    "weft: mesh {} {why}:\n  {}",
                    st.mesh,
                    st.pending.join("\n  ")
                );
                (st, EXIT_NOT_READY)
            }
            Err(Waited::NotRunning(e)) => {
                eprintln!("weft: no mesh ready after {within:?}: {e}");
                return Ok(EXIT_NOT_READY);
            }
        }
    } else {
        let mesh = local::meshes::find(a.mesh.as_deref())?;
        (rt.block_on(fetch(&mesh.api))?, 0)
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&st)?),
        Output::Table => print_table(&st),
    }
    Ok(code)
}

async fn fetch(api: &str) -> anyhow::Result<Status> {
    let (code, body) = get(&format!("http://{api}/status")).await?;
    if code != 200 {
        anyhow::bail!(
            "control plane answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

enum Waited {
    /// The last status read.
    NotReady(Box<Status>),
    /// Why no mesh could be asked.
    NotRunning(anyhow::Error),
}

/// Asks the mesh's control plane until it says the mesh is ready; a mesh that is still being
/// started (no record yet, control plane not answering) is waited for too.
async fn wait_ready(mesh: Option<&str>, within: Duration) -> Result<Status, Waited> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let asked = match local::meshes::find(mesh) {
            Ok(m) => fetch(&m.api).await,
            Err(e) => Err(e.into()),
        };
        let last = match asked {
            Ok(st) if st.ready => return Ok(st),
            // A refusal is final for that snapshot: waiting longer changes nothing.
            Ok(st) if refuses_latest(&st) => return Err(Waited::NotReady(Box::new(st))),
            Ok(st) => Waited::NotReady(Box::new(st)),
            Err(e) => Waited::NotRunning(e),
        };
        if tokio::time::Instant::now() + WAIT_POLL > deadline {
            return Err(last);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// A proxy refused the snapshot in force (it will not run it before the configuration
/// changes).
fn refuses_latest(st: &Status) -> bool {
    st.nacks.iter().any(|n| n.version >= st.version)
}

fn print_table(st: &Status) {
    println!(
        "mesh {}   control {}   ingress {}   snapshot {}   {}",
        st.mesh,
        st.control,
        st.ingress,
        st.version,
        if st.ready { "ready" } else { "not ready" }
    );
    if let Some(n) = &st.network {
        println!(
            "pods: bridge {}   subnet {}   host {}",
            n.bridge, n.subnet, n.gateway
        );
    }
    if let Some(s) = &st.store {
        let healthy = s.members.iter().filter(|m| m.healthy).count();
        let down: Vec<&str> = s
            .members
            .iter()
            .filter(|m| !m.healthy)
            .map(|m| m.name.as_str())
            .collect();
        println!(
            "store: {} {healthy}/{} members healthy{}",
            s.kind,
            s.members.len(),
            if down.is_empty() {
                String::new()
            } else {
                format!(" (down: {})", down.join(", "))
            }
        );
        for r in &s.replicas {
            let this = if r.name == s.replica {
                "  (this one)"
            } else {
                ""
            };
            println!(
                "control replica {}   grpc {}   api {}   pid {}{this}",
                r.name, r.grpc, r.api, r.pid
            );
        }
    }
    for p in &st.pending {
        println!("  pending: {p}");
    }
    for n in &st.nacks {
        println!(
            "  error: {} refused snapshot {}: {} (it keeps serving snapshot {})",
            n.proxy, n.version, n.error, n.config_version
        );
    }
    for u in &st.undeclared {
        println!(
            "  warning: a sidecar registered as {}.{} instance {} (identity {}, inbound {}, pid {}) that the mesh does not declare",
            u.service, u.namespace, u.instance, u.identity, u.inbound, u.pid
        );
    }
    // The POD column only in a mesh whose replicas run in pods.
    let pods = st.network.is_some();
    // Which control-plane replica each proxy uses, when several share a store.
    let replicas = st.store.is_some();
    let rows: Vec<Vec<String>> = st
        .workloads
        .iter()
        .map(|w| {
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut row = vec![
                format!("{}.{}", w.service, w.namespace),
                w.instance.clone(),
                if w.reason.is_empty() {
                    w.state.clone()
                } else {
                    format!("{} ({})", w.state, w.reason)
                },
                w.app.clone(),
                w.inbound.clone(),
                w.outbound.clone(),
                w.admin.clone(),
                labels.join(","),
            ];
            if pods {
                row.insert(2, format!("{} {}", w.pod, w.pod_address));
            }
            if replicas {
                row.push(w.control_replica.clone());
            }
            row
        })
        .collect();
    let mut head = vec![
        "SERVICE", "INSTANCE", "STATE", "APP", "INBOUND", "OUTBOUND", "ADMIN", "LABELS",
    ];
    if pods {
        head.insert(2, "POD");
    }
    if replicas {
        head.push("CONTROL REPLICA");
    }
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.clone());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
