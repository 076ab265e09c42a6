//! `weft host`: hosts of a mesh beyond the control plane's machine. `weft host token NAME`
//! mints a one-time bootstrap token for host NAME (operator, admin credential); `weft host join`
//! runs on the host itself and runs the replicas the mesh places there; `weft host list` shows
//! the joined hosts. `weft context add|list`: meshes whose control plane runs elsewhere, for
//! `weft --context NAME`.

use super::get::{get, post};
use super::{on_signal, parse_duration, runtime};
use clap::Subcommand;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub enum HostCmd {
    /// Mint a one-time bootstrap token for host NAME (it joins with it once, before it expires)
    Token(TokenArgs),
    /// Join this machine to a mesh as host NAME and run the replicas the mesh places here
    Join(JoinArgs),
    /// The hosts that joined the running mesh
    List(ListArgs),
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The host's name, as the Mesh file's `workloads[].hosts` names it
    name: String,
    /// How long the token may wait to be used
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    ttl: Duration,
    /// The running mesh whose control plane mints it [default: the only one running]
    #[arg(long)]
    mesh: Option<String>,
    /// The host may also run an ingress gateway (`weft host join --ingress`)
    #[arg(long)]
    ingress: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    mesh: Option<String>,
}

#[derive(clap::Args)]
pub struct JoinArgs {
    /// The control plane's API (HTTP), one ADDRESS:PORT per replica: tried in turn
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    control: Vec<SocketAddr>,
    /// The bootstrap token (`weft host token NAME`); without it, the credential an earlier
    /// join of this host saved in $WEFT_HOME/hosts
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// The bootstrap token, from a file
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// This host's name [default: the machine's hostname]
    #[arg(long)]
    name: Option<String>,
    /// The address other hosts reach this one at (its sidecars listen there)
    #[arg(long)]
    address: IpAddr,
    /// A label of this host (for `hostSelector`), KEY=VALUE; repeatable
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Also run an ingress gateway here, listening on this address
    #[arg(long, value_name = "ADDRESS")]
    ingress: Option<SocketAddr>,
    /// How long proxies drain on stop
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    drain_timeout: Duration,
    /// The SHA-256 of the mesh's root (`sha256:HEX`), checked before the token is sent, when
    /// the token does not carry it (`weft host token` prints one that does)
    #[arg(long, value_name = "sha256:HEX")]
    ca_hash: Option<String>,
}

#[derive(Subcommand)]
pub enum ContextCmd {
    /// Save context NAME: a control plane's API (one address per replica) and its admin
    /// credential (copied into $WEFT_HOME/contexts, mode 0600); then `weft --context NAME …`
    Add(ContextAddArgs),
    /// The saved contexts
    List,
}

#[derive(clap::Args)]
pub struct ContextAddArgs {
    name: String,
    /// The control plane's API, ADDRESS:PORT per replica
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    api: Vec<SocketAddr>,
    /// A file holding the admin credential (a replica's $WEFT_HOME/meshes/MESH.token)
    #[arg(long, value_name = "PATH", required_unless_present = "cert_file")]
    token_file: Option<PathBuf>,
    /// The mesh's trust bundle (PEM; `weft ca operator` writes it, a replica keeps it as
    /// $WEFT_HOME/meshes/MESH.ca.pem): the API is then spoken to over TLS, as it must be from
    /// another machine
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// An operator's certificate (`weft ca operator NAME`), presented over TLS in place of
    /// the admin credential
    #[arg(long, value_name = "PATH", requires_all = ["key_file", "ca_file"])]
    cert_file: Option<PathBuf>,
    /// The operator certificate's private key
    #[arg(long, value_name = "PATH", requires = "cert_file")]
    key_file: Option<PathBuf>,
}

pub fn context(cmd: ContextCmd) -> anyhow::Result<i32> {
    match cmd {
        ContextCmd::Add(a) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            let files = local::meshes::ContextFiles {
                token: a.token_file.as_ref().map(read).transpose()?,
                ca: a.ca_file.as_ref().map(read).transpose()?,
                cert: match (&a.cert_file, &a.key_file) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    _ => None,
                },
            };
            if let Some(ca) = &files.ca {
                // Refused now rather than at the first call.
                let cert = files.cert.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
                proxy::tls::api_client_config(ca, cert)
                    .map_err(|e| anyhow::anyhow!("the trust bundle or certificate: {e}"))?;
            }
            let api: Vec<String> = a.api.iter().map(|a| a.to_string()).collect();
            let path = local::meshes::add_context(&a.name, &api, &files)?;
            println!("context {} saved in {}", a.name, path.display());
        }
        ContextCmd::List => {
            for c in local::meshes::contexts() {
                println!("{:<20} {}", c.name, c.api.join(","));
            }
        }
    }
    Ok(0)
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

pub fn run(cmd: HostCmd) -> anyhow::Result<i32> {
    match cmd {
        HostCmd::Token(a) => token(a),
        HostCmd::List(a) => list(a),
        HostCmd::Join(a) => join(a),
    }
}

fn token(a: TokenArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    runtime()?.block_on(async {
        let body = serde_json::json!({
            "host": a.name,
            "ttl_seconds": a.ttl.as_secs(),
            "ingress": a.ingress,
        });
        let (status, body) = post(&format!("http://{}/hosts/tokens", mesh.api), &body).await?;
        let text = String::from_utf8_lossy(&body);
        if status != 200 {
            anyhow::bail!("the control plane refused ({status}): {}", text.trim());
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        // The token with the mesh root's pin, which the host checks before it sends it.
        let token = v["join_token"].as_str().or(v["token"].as_str());
        println!("{}", token.unwrap_or_default());
        Ok(0)
    })
}

fn list(a: ListArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    runtime()?.block_on(async {
        let (status, body) = get(&format!("http://{}/hosts", mesh.api)).await?;
        if status != 200 {
            anyhow::bail!(
                "the control plane refused ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        let hosts: Vec<control::hosts::HostRecord> = serde_json::from_slice(&body)?;
        println!("{:<20} {:<16} LABELS", "HOST", "ADDRESS");
        for h in hosts {
            let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<20} {:<16} {}", h.name, h.address, labels.join(","));
        }
        Ok(0)
    })
}

fn join(a: JoinArgs) -> anyhow::Result<i32> {
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let name = match a.name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| anyhow::anyhow!("this machine's hostname (give --name): {e}"))?
            .trim()
            .to_string(),
    };
    anyhow::ensure!(
        control::hosts::valid_name(&name),
        "{name:?} is not a host name (letters, digits, '-', '.'; at most 63)"
    );
    local::meshes::ensure_home()?;
    let opts = local::host::HostOptions {
        api: a.control,
        token,
        name,
        address: a.address,
        labels: a.labels.into_iter().collect(),
        state: local::meshes::home().join("hosts"),
        exe: std::env::current_exe()?,
        drain_timeout: a.drain_timeout,
        ingress: a.ingress,
        ca_pin: a.ca_hash,
        tls_for: super::get::api_tls_for(),
    };
    runtime()?.block_on(async move {
        let stop = CancellationToken::new();
        tokio::spawn(on_signal(stop.clone()));
        local::host::run(opts, stop, |line| println!("{line}")).await?;
        eprintln!("weft: host stopped");
        Ok(0)
    })
}
