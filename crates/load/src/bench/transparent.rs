//! The transparent path of `weft bench`: the same two hops as the explicit `weft` path, but
//! with each side in a pod of a `weft up` mesh with `interception: transparent`. The load
//! generator runs inside the client pod's network namespace and calls the service's virtual IP
//! with no proxy: the pod's capture rules send each connection to its sidecar, which routes it
//! by its original destination over mTLS to the server pod's sidecar, which hands it to the app
//! there. Needs root (network namespaces, iptables). Beside it, `weft-proxy-env` runs the
//! explicit path in a `weft up` mesh too, so that only the interception differs.

use super::procs::{spawn, Proc};
use super::{BenchError, BenchSpec, Path};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The mesh `weft up` runs for this path.
fn mesh_yaml() -> &'static str {
    "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: weft-bench-pods}\nspec:\n  ingress: 127.0.0.1:0\n  interception: transparent\n  services:\n  - name: bench\n    port: 80\n    workloads:\n    - {name: bench-v1, replicas: 1, command: [weft, demo, echo, --service, bench]}\n  - name: loadgen\n    port: 80\n    workloads:\n    - {name: loadgen, replicas: 1, command: [weft, demo, echo, --service, loadgen]}\n  - name: plain\n    port: 80\n    workloads:\n    - {name: plain-v1, replicas: 1, sidecar: false, command: [weft, demo, echo, --service, bench, --address, 0.0.0.0]}\n  - name: plainload\n    port: 80\n    workloads:\n    - {name: plainload, replicas: 1, sidecar: false, command: [weft, demo, echo, --service, plainload]}\n"
}

/// Starts the mesh and waits until it is ready and its paths answer: `pods-direct` (the load
/// generator in a pod without a sidecar calling the app in another such pod: the pods' network
/// with no mesh in it, the baseline the other two paths' added latency is counted from),
/// `weft-transparent`, and `weft-pods-explicit` (the same pods, the load generator calling its
/// sidecar's explicit outbound listener inside the client pod, as a client configured with a
/// proxy does), which tells what capture itself costs; and first `weft-proxy-env`, the same
/// services in a `weft up` mesh without pods ([`start_proxy_env`]).
pub(super) fn start(spec: &BenchSpec, cpu: Option<usize>) -> Result<Vec<Path>, BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::Setup(
            "the transparent path needs root (network namespaces, iptables)".into(),
        ));
    }
    let proxy_env = start_proxy_env(spec, cpu)?;
    let (up, status) = run_up(spec, "pods", mesh_yaml(), cpu)?;
    let find = |instance: &str| row(&status, instance, "transparent");
    let (client, server) = (find("loadgen-0")?, find("bench-v1-0")?);
    let pod = client["pod"].as_str().unwrap_or_default().to_string();
    // Pods without a sidecar are not replicas of the mesh (`weft status` lists none): their
    // namespaces are named like the others', and their hosts files give their addresses.
    let unmeshed = |instance: &str| -> Result<String, BenchError> {
        pod.strip_suffix("loadgen-0")
            .map(|prefix| format!("{prefix}{instance}"))
            .ok_or_else(|| BenchError::Setup(format!("unexpected pod name {pod}")))
    };
    let plain_pod = unmeshed("plainload-0")?;
    let plain_app = SocketAddr::from((addr_in(&unmeshed("plain-v1-0")?, "plain-v1-0")?, 80));
    super::wait_path_in(plain_app, "the app between pods", Some(&plain_pod))?;
    let vip = vip_in(&pod, "bench.default")?;
    let target = SocketAddr::from((vip, 80));
    super::wait_path_in(target, "weft (transparent)", Some(&pod))?;
    // The explicit outbound listener weft up gives every sidecar in a pod.
    let explicit = SocketAddr::from(([127, 0, 0, 1], EXPLICIT_PORT));
    super::wait_path_in(explicit, "weft (explicit, in pods)", Some(&pod))?;
    let proxies = vec![pid(&client), pid(&server)];
    Ok(vec![
        proxy_env,
        Path {
            name: "pods-direct",
            description: "client in a pod → app in another pod (no sidecars, no capture)",
            target: plain_app,
            proxies: vec![],
            app: vec![],
            netns: Some(plain_pod),
            base: None,
            _procs: vec![],
        },
        Path {
            name: "weft-transparent",
            description: if spec.mtls {
                "client in a pod → captured → weft sidecar → mTLS HTTP/2 → weft sidecar in a pod → app"
            } else {
                "client in a pod → captured → weft sidecar → HTTP/2 → weft sidecar in a pod → app"
            },
            target,
            proxies: proxies.clone(),
            app: vec![],
            netns: Some(pod.clone()),
            base: Some("pods-direct"),
            _procs: vec![up],
        },
        Path {
            name: "weft-pods-explicit",
            description: "client in a pod → its weft sidecar's outbound listener → the same hops",
            target: explicit,
            proxies,
            app: vec![],
            netns: Some(pod),
            base: Some("pods-direct"),
            _procs: vec![],
        },
    ])
}

/// The same two services in a `weft up` mesh with `interception: proxy-env` (the default): every
/// process on 127.0.0.1, the client calling its sidecar's outbound listener as its `HTTP_PROXY`.
fn proxy_env_yaml() -> &'static str {
    "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: weft-bench-proxy-env}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n  - name: bench\n    port: 80\n    workloads:\n    - {name: bench-v1, replicas: 1, command: [weft, demo, echo, --service, bench]}\n  - name: loadgen\n    port: 80\n    workloads:\n    - {name: loadgen, replicas: 1, command: [weft, demo, echo, --service, loadgen]}\n"
}

/// `weft-proxy-env`: the explicit path as a `weft up` mesh runs it (sidecars started, joined and
/// configured by `weft up`, as the pods' are), so that the transparent path can also be set
/// against the same mesh with only the interception changed, not only against the `weft`
/// path's two proxies started by the benchmark itself.
fn start_proxy_env(spec: &BenchSpec, cpu: Option<usize>) -> Result<Path, BenchError> {
    let (up, status) = run_up(spec, "proxy-env", proxy_env_yaml(), cpu)?;
    let find = |instance: &str| row(&status, instance, "proxy-env");
    let (client, server) = (find("loadgen-0")?, find("bench-v1-0")?);
    let target: SocketAddr = client["outbound"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            BenchError::Setup(format!("loadgen-0 has no outbound listener: {client}"))
        })?;
    super::wait_path(target, "weft (proxy-env mesh)")?;
    Ok(Path {
        name: "weft-proxy-env",
        description: if spec.mtls {
            "client → its weft sidecar (HTTP_PROXY) → mTLS HTTP/2 → weft sidecar → app, a weft up mesh on 127.0.0.1"
        } else {
            "client → its weft sidecar (HTTP_PROXY) → HTTP/2 → weft sidecar → app, a weft up mesh on 127.0.0.1"
        },
        target,
        proxies: vec![pid(&client), pid(&server)],
        app: vec![],
        netns: None,
        base: Some("direct"),
        _procs: vec![up],
    })
}

/// Runs `weft up` on the mesh `yaml` (in its own WEFT_HOME, `NAME-home`), waits until it is
/// ready, and returns it with its `weft status -o json`.
fn run_up(
    spec: &BenchSpec,
    name: &str,
    yaml: &str,
    cpu: Option<usize>,
) -> Result<(Proc, serde_json::Value), BenchError> {
    let home = spec.workdir.join(format!("{name}-home"));
    std::fs::create_dir_all(&home)?;
    let mesh = spec.workdir.join(format!("bench-{name}.yaml"));
    std::fs::write(&mesh, yaml)?;
    let env = [
        ("WEFT_LOG", "warn".to_string()),
        ("WEFT_HOME", home.display().to_string()),
    ];
    let mut args = vec!["up".to_string(), mesh.display().to_string()];
    if !spec.mtls {
        args.push("--no-mtls".into());
    }
    let mut up = spawn(
        &format!("weft up ({name})"),
        &spec.weft,
        &args,
        &env,
        cpu,
        true,
    )?;
    up.graceful = true;
    wait_ready(&mut up)?;
    let status = std::process::Command::new(&spec.weft)
        .args(["status", "-o", "json"])
        .env("WEFT_HOME", &home)
        .output()?;
    let status = serde_json::from_slice(&status.stdout)
        .map_err(|e| BenchError::Setup(format!("weft status of the {name} mesh: {e}")))?;
    Ok((up, status))
}

/// The process id of a row of `weft status -o json` (its proxy's).
fn pid(row: &serde_json::Value) -> u32 {
    row["pid"].as_u64().unwrap_or(0) as u32
}

/// `instance`'s row in a mesh's `weft status -o json`.
fn row(
    status: &serde_json::Value,
    instance: &str,
    mesh: &str,
) -> Result<serde_json::Value, BenchError> {
    status["workloads"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["instance"] == instance))
        .cloned()
        .ok_or_else(|| BenchError::Setup(format!("no {instance} in the {mesh} mesh")))
}

/// The port of a pod's sidecar's explicit outbound listener (`weft up` binds 127.0.0.1:15080
/// in every pod).
const EXPLICIT_PORT: u16 = 15080;

/// Waits for `weft up`'s line saying the mesh is ready.
fn wait_ready(up: &mut Proc) -> Result<(), BenchError> {
    let out = up
        .child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("weft up: no stdout".into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        let mut said = false;
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if !said && line.contains("ready") {
                let _ = tx.send(());
                said = true;
            }
            line.clear();
        }
    });
    rx.recv_timeout(Duration::from_secs(90))
        .map_err(|_| BenchError::Setup("a weft up mesh was not ready within 90 s".into()))
}

/// The virtual IP the pod `pod`'s hosts file gives `name`.
fn vip_in(pod: &str, name: &str) -> Result<std::net::Ipv4Addr, BenchError> {
    addr_in(pod, name)
}

/// The address the pod `pod`'s hosts file gives `name`.
fn addr_in(pod: &str, name: &str) -> Result<std::net::Ipv4Addr, BenchError> {
    let hosts = std::fs::read_to_string(format!("/etc/netns/{pod}/hosts"))?;
    hosts
        .lines()
        .find(|l| l.split_whitespace().skip(1).any(|n| n == name))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| BenchError::Setup(format!("{pod}'s hosts file does not name {name}")))
}

/// Runs `work` on a thread inside the network namespace `netns` (every thread it starts is
/// there too).
pub(super) fn in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BenchError> {
    let file = std::fs::File::open(format!("/run/netns/{netns}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| BenchError::Setup(format!("cannot enter the pod's network: {e}")))?;
        Ok(work())
    })
    .join()
    .map_err(|_| BenchError::Setup("the load thread panicked".into()))?
}

/// Sends SIGINT to `weft up` and waits for it to take its pods down.
pub(super) fn stop_gracefully(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
