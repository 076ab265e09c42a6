//! `weft exec`: run a command as a short-lived client of the running mesh, under a service's
//! identity, through its own client proxy (what `kubectl exec` into Istio's `sleep` pod is for).
//! In a mesh with transparent interception the command runs inside a pod of the service
//! instead (`ip netns exec`), where that pod's capture rules and sidecar carry its traffic.

use super::{get::get, runtime};
use model::Identity;
use proxy::{Mode, Settings};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the client proxy may take to get its first snapshot.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Run as this service (its identity and namespace)
    #[arg(long)]
    service: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(long)]
    mesh: Option<String>,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(a: ExecArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let status = runtime()?.block_on(async {
        match get(&format!("http://{}/status", mesh.api)).await? {
            (200, body) => Ok(serde_json::from_slice::<control::status::Status>(&body)?),
            (status, body) => anyhow::bail!(
                "the control plane answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    })?;
    if status.network.is_some() {
        return in_pod(&a, &status);
    }
    let control: SocketAddr = mesh.control.parse()?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    // A join token for the mesh CA, when the mesh runs one, and the mesh's roots to verify the
    // control plane with: the client proxy then speaks mTLS, as the service's identity in the
    // mesh's trust domain.
    let (identity, join_token, trust_anchors) = runtime()?.block_on(async {
        let trust_domain = &status.trust_domain;
        let identity = Identity::spiffe_in(trust_domain, &a.namespace, &a.service);
        let url = format!("http://{}/join", mesh.api);
        let body = serde_json::json!({ "identity": identity.0 });
        let token = match super::get::post(&url, &body).await? {
            (200, body) => String::from_utf8_lossy(&body).into_owned(),
            (404, _) => return Ok((identity, None, None)),
            (status, body) => anyhow::bail!(
                "the control plane refused a join token ({status}): {}",
                String::from_utf8_lossy(&body)
            ),
        };
        let anchors = match get(&format!("http://{}/ca/bundle", mesh.api)).await? {
            (200, body) => String::from_utf8_lossy(&body).into_owned(),
            (status, body) => anyhow::bail!(
                "the control plane did not give its trust bundle ({status}): {}",
                String::from_utf8_lossy(&body)
            ),
        };
        Ok((identity, Some(token), Some(anchors)))
    })?;
    let settings = Settings {
        mode: Mode::Client,
        identity,
        service: a.service.clone(),
        namespace: a.namespace.clone(),
        default_namespace: a.namespace.clone(),
        workload: format!("{}-exec", a.service),
        instance: format!("{}-exec-{}", a.service, std::process::id()),
        labels: Default::default(),
        control,
        control_more: Vec::new(),
        outbound: Some(any),
        inbound: None,
        admin: any,
        app: None,
        app_pid_file: None,
        app_protocol: model::Protocol::Http,
        tcp_ports: Vec::new(),
        app_ports: Vec::new(),
        capture_outbound: None,
        socket_mark: None,
        advertise: None,
        drain_timeout: Duration::from_secs(2),
        drain_grace: Duration::ZERO,
        probe_interval: Duration::from_secs(1),
        workers: 1,
        join_token,
        trust_anchors,
        limits: Default::default(),
        // Its own process is its only user: nothing to tap or shut down from outside.
        admin_token: None,
        // Short-lived: it starts from the control plane every time.
        state_dir: None,
        app_probers: Default::default(),
    };
    let stop = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let proxy_stop = stop.clone();
    let proxy = std::thread::spawn(move || {
        proxy::run(settings, proxy_stop, false, move |b| {
            let _ = tx.send(b.clone());
        })
    });
    let bound = match rx.recv() {
        Ok(b) => b,
        Err(_) => {
            return match proxy.join() {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(anyhow::anyhow!("the client proxy did not start")),
            }
        }
    };
    let outbound = bound
        .outbound
        .ok_or_else(|| anyhow::anyhow!("no outbound listener"))?;
    let rt = runtime()?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = get(&format!("http://{}/ready", bound.admin)).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the client proxy got no snapshot from the control plane at {control} within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })?;
    let url = format!("http://{outbound}");
    let status = std::process::Command::new(&a.command[0])
        .args(&a.command[1..])
        .env("HTTP_PROXY", &url)
        .env("http_proxy", &url)
        .env("NO_PROXY", "localhost,127.0.0.1,::1")
        .env("no_proxy", "localhost,127.0.0.1,::1")
        .env("WEFT_SERVICE", &a.service)
        .env("WEFT_NAMESPACE", &a.namespace)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {:?}: {e}", a.command[0]))?;
    stop.cancel();
    let _ = proxy.join();
    Ok(exit_code(status))
}

/// The exit code a shell would report for `status`.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    })
}

/// Runs the command inside a pod of the service (a ready replica's, else any with a pod),
/// unaware of the mesh as the service's own app is: no proxy variables.
fn in_pod(a: &ExecArgs, status: &control::status::Status) -> anyhow::Result<i32> {
    let mut candidates: Vec<_> = status
        .workloads
        .iter()
        .filter(|w| w.service == a.service && w.namespace == a.namespace && !w.pod.is_empty())
        .collect();
    candidates.sort_by_key(|w| !w.ready);
    let Some(w) = candidates.first() else {
        anyhow::bail!(
            "mesh {}: service {}.{} has no pod to run in (is it declared, with a sidecar?)",
            status.mesh,
            a.service,
            a.namespace
        );
    };
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &w.pod])
        .args(&a.command)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env("WEFT_SERVICE", &a.service)
        .env("WEFT_NAMESPACE", &a.namespace)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run `ip netns exec {}`: {e}", w.pod))?;
    Ok(exit_code(status))
}
