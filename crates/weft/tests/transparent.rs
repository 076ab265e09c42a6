//! `weft up` with `spec.interception: transparent`: a pod (network namespace) per replica with
//! its capture rules and hosts file, its `eth0` a macvlan on the mesh's bridge, reachable from
//! the host and from the other pods, also on a host whose FORWARD chain drops; `weft
//! exec` inside a pod; and nothing of the mesh left on the host after Ctrl-C, or after a
//! SIGKILL once the next `weft up` has started. Real namespaces: these tests need root (CI runs
//! as root) and skip, saying why, without it.

mod common;

use common::pods::{can_run_pods, pod_rules, sh};
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// beta's port: inside its pod the app listens on it (each pod has its own network, so a fixed
/// port cannot collide with anything on the host).
const BETA_PORT: u16 = 8080;

/// A transparent mesh: alpha (one replica, port 80, capture annotations), beta (two replicas,
/// port [`BETA_PORT`]) and gamma (one replica outside the mesh, `sidecar: false`).
fn transparent_yaml(name: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
  interception: transparent
  services:
  - name: alpha
    port: 80
    annotations:
      traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"
      config.linkerd.io/skip-inbound-ports: \"9901\"
      traffic.sidecar.istio.io/excludeOutboundIPRanges: \"192.168.0.0/16\"
    workloads:
    - name: alpha-v1
      replicas: 1
      command: [weft, demo, echo, --service, alpha]
  - name: beta
    port: {BETA_PORT}
    workloads:
    - name: beta-v1
      replicas: 2
      command: [weft, demo, echo, --service, beta]
  - name: gamma
    port: 80
    workloads:
    - name: gamma-v1
      sidecar: false
      replicas: 1
      command: [weft, demo, echo, --service, gamma]
"
    )
}

fn namespaces() -> Vec<String> {
    sh(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether process `pid` runs (a zombie, which nobody may have reaped yet, does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with(|c| c != 'Z')))
        .unwrap_or(false)
}

/// A GET from inside namespace `ns` (Python's urllib, no proxy): the body.
fn get_in_pod(ns: &str, url: &str) -> String {
    let out = try_get_in_pod(ns, url);
    assert!(
        out.status.success(),
        "GET {url} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`get_in_pod`], whatever it gives.
fn try_get_in_pod(ns: &str, url: &str) -> std::process::Output {
    let script = format!(
        "import urllib.request as u; print(u.build_opener(u.ProxyHandler({{}})).open('{url}', timeout=5).read().decode())"
    );
    common::pods::in_pod(ns, &["python3", "-c", &script])
}

/// The pods of the mesh's replicas with sidecars, from `weft status`: (instance, pod, address).
fn pods(status: &Value) -> Vec<(String, String, String)> {
    status["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let s = |k: &str| w[k].as_str().unwrap_or_default().to_string();
            (s("instance"), s("pod"), s("pod_address"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_have_their_address_capture_rules_and_service_names() {
    if !can_run_pods() {
        return;
    }
    let mesh = Mesh::up(&transparent_yaml("tp-pods"));
    let st = &mesh.status;
    let network = &st["network"];
    let (bridge, gateway) = (
        network["bridge"].as_str().unwrap(),
        network["gateway"].as_str().unwrap(),
    );
    assert!(bridge.starts_with("wft") && bridge.len() <= 15, "{network}");
    assert!(link_exists(bridge));
    let subnet = network["subnet"].as_str().unwrap();
    let prefix = subnet.trim_end_matches("0/24");
    assert_eq!(gateway, format!("{prefix}1"));
    // The control plane listens on the bridge, where pods reach it.
    assert!(st["control"].as_str().unwrap().starts_with(gateway), "{st}");

    let listed = namespaces();
    let pods = pods(st);
    assert_eq!(pods.len(), 3, "{st}");
    let c = client();
    for (instance, pod, address) in &pods {
        assert_eq!(*pod, format!("weft-tp-pods-{instance}"));
        assert!(listed.contains(pod), "{pod} not in {listed:?}");
        assert!(address.starts_with(prefix), "{address} not in {subnet}");
        // The sidecar's admin, from the host over the bridge.
        let admin: SocketAddr = format!("{address}:15020").parse().unwrap();
        let ready = get(&c, admin, "admin", "/ready")
            .await
            .expect("admin /ready");
        assert_eq!(ready.status, 200, "{instance}: {}", ready.text);
        // The app, inside its pod, on the service's own port.
        let port = if instance.starts_with("alpha") {
            80
        } else {
            BETA_PORT
        };
        let body = get_in_pod(pod, &format!("http://127.0.0.1:{port}/"));
        assert!(
            body.contains(&format!("\"instance\":\"{instance}\"")),
            "{body}"
        );
    }
    // One pod per replica, the one outside the mesh included (it has no capture rules).
    assert!(listed.contains(&"weft-tp-pods-gamma-v1-0".to_string()));
    let plain = sh(&[
        "ip",
        "netns",
        "exec",
        "weft-tp-pods-gamma-v1-0",
        "nft",
        "list",
        "ruleset",
    ]);
    assert!(plain.trim().is_empty(), "{plain}");

    // A port the app serves itself (skip-inbound-ports) is reached straight from outside the
    // pod, and so are its replies (without conntrack, the rules tell them by their port).
    let alpha_addr = &pods
        .iter()
        .find(|p| p.1 == "weft-tp-pods-alpha-v1-0")
        .unwrap()
        .2;
    let mut own_server = Command::new("ip")
        .args([
            "netns",
            "exec",
            "weft-tp-pods-alpha-v1-0",
            "python3",
            "-m",
            "http.server",
            "9901",
        ])
        .args(["--bind", "0.0.0.0", "--directory", "/proc/self"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{alpha_addr}:9901/");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listing = loop {
        let out = try_get_in_pod("weft-tp-pods-gamma-v1-0", &url);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "GET {url} from gamma's pod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = own_server.kill();
    let _ = own_server.wait();
    assert!(listing.contains("Directory listing"), "{listing}");

    // The capture rules: nftables `tproxy`, no `nat` table (so no connection tracking).
    let alpha = "weft-tp-pods-alpha-v1-0";
    let rules = pod_rules(alpha);
    for rule in [
        &format!(
            "iif \"lo\" meta mark 0x0000053a meta l4proto tcp tproxy to 127.0.0.1:{} accept",
            model::names::POD_CAPTURE_PORT
        ),
        "tcp dport { 9901, 15006, 15020 } return",
        "meta l4proto tcp tproxy to :15006 meta mark set 0x0000053a accept",
        "meta mark 0x00000539 return",
        "oif \"lo\" return",
        &format!("ip daddr {gateway} return"),
        "tcp dport 5432 return",
        "ip daddr 192.168.0.0/16 return",
        "tcp sport { 9901, 15006, 15020 } return",
        "meta mark set 0x0000053a",
    ] {
        assert!(
            rules.contains(&format!("\t{rule}\n")),
            "{rule} not in\n{rules}"
        );
    }
    let nat = sh(&["ip", "netns", "exec", alpha, "iptables-save", "-t", "nat"]);
    assert!(!nat.contains("WEFT_"), "{nat}");
    let routing = sh(&["ip", "-n", alpha, "rule", "list"]);
    assert!(routing.contains("fwmark 0x53a lookup 133"), "{routing}");
    let table = sh(&["ip", "-n", alpha, "route", "show", "table", "133"]);
    assert!(table.contains("local default dev lo"), "{table}");

    // Names: each service at the VIP the snapshot carries.
    let alpha_admin: SocketAddr = format!("{}:15020", pods[0].2).parse().unwrap();
    let config = get(&c, alpha_admin, "admin", "/config").await.unwrap().body;
    let vip = |name: &str| {
        config["snapshot"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"]["name"] == name)
            .and_then(|s| s["vip"].as_str())
            .unwrap_or_else(|| panic!("no vip for {name} in {config}"))
            .to_string()
    };
    let hosts = sh(&[
        "ip",
        "netns",
        "exec",
        "weft-tp-pods-alpha-v1-0",
        "cat",
        "/etc/hosts",
    ]);
    for name in ["alpha", "beta"] {
        let line = format!(
            "{}\t{name}.default {name}.default.svc {name}.default.svc.cluster.local {name}\n",
            vip(name)
        );
        assert!(hosts.contains(&line), "{line} not in\n{hosts}");
    }

    // `weft exec` runs inside a pod of the service, told nothing about a proxy.
    let out = mesh.weft(&[
        "exec",
        "--service",
        "beta",
        "--",
        "python3",
        "-c",
        &format!("import os, urllib.request as u; print(os.environ.get('HTTP_PROXY')); print(u.build_opener(u.ProxyHandler({{}})).open('http://127.0.0.1:{BETA_PORT}/').read().decode())"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("None\n"), "{text}");
    assert!(text.contains("\"instance\":\"beta-v1-"), "{text}");

    // What `weft up` made, in one line; `weft status` shows the pods.
    let made = format!(
        "weft: mesh tp-pods: created on this host: bridge {bridge} ({subnet}, host {gateway}), 4 network namespaces (weft-tp-pods-*)"
    );
    assert!(
        mesh.stderr().contains(&made),
        "{made} not in\n{}",
        mesh.stderr()
    );
    let table = String::from_utf8_lossy(&mesh.weft(&["status"]).stdout).into_owned();
    assert!(
        table.contains(&format!(
            "pods: bridge {bridge}   subnet {subnet}   host {gateway}"
        )),
        "{table}"
    );
    let (_, pod, address) = &pods[1];
    assert!(table.contains(&format!("{pod} {address}")), "{table}");

    // The ingress, on the host, reaches the pods over the bridge.
    let r = get(&c, mesh.ingress, "beta", "/")
        .await
        .expect("via ingress");
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Everything of the mesh on the host: its namespaces, the links on its bridge, the processes
/// in its pods.
struct Footprint {
    namespaces: Vec<String>,
    links: Vec<String>,
    pids: Vec<i32>,
}

fn footprint(mesh: &str, bridge: &str) -> Footprint {
    let namespaces: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("weft-{mesh}-")))
        .collect();
    let mut links = vec![bridge.to_string()];
    if let Ok(d) = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif")) {
        links.extend(
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    // The host's links stacked on the bridge (`upper_NAME`): its macvlan in the mesh.
    if let Ok(d) = std::fs::read_dir(format!("/sys/class/net/{bridge}")) {
        links.extend(d.flatten().filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("upper_")
                .map(str::to_string)
        }));
    }
    let pids = namespaces
        .iter()
        .flat_map(|n| {
            sh(&["ip", "netns", "pids", n])
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    Footprint {
        namespaces,
        links,
        pids,
    }
}

fn assert_gone(f: &Footprint) {
    let listed = namespaces();
    for ns in &f.namespaces {
        assert!(!listed.contains(ns), "namespace {ns} is left");
        assert!(
            !Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} is left"
        );
    }
    for link in &f.links {
        assert!(!link_exists(link), "link {link} is left");
    }
    for pid in &f.pids {
        assert!(!alive(*pid), "process {pid} of a pod is still running");
    }
    // Capture rules live only in the pods: none on the host, before or after.
    let nft = sh(&["nft", "list", "ruleset"]);
    assert!(!nft.contains("table ip weft"), "{nft}");
    let iptables = sh(&["iptables-save"]);
    assert!(!iptables.contains("WEFT_"), "{iptables}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_no_pod_link_or_process() {
    if !can_run_pods() {
        return;
    }
    let mut mesh = Mesh::up(&transparent_yaml("tp-stop"));
    let bridge = mesh.status["network"]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    let f = footprint("tp-stop", &bridge);
    assert_eq!(f.namespaces.len(), 4);
    // On the host, the bridge and the host's macvlan on it; each pod's eth0 is a macvlan on
    // the bridge, in the pod's namespace.
    assert_eq!(f.links.len(), 2, "{:?}", f.links);
    for ns in &f.namespaces {
        let eth0 = sh(&["ip", "-n", ns, "-d", "link", "show", "eth0"]);
        assert!(eth0.contains("macvlan mode bridge"), "{ns}: {eth0}");
    }
    // A sidecar and an app per pod, the one outside the mesh has no sidecar.
    assert_eq!(f.pids.len(), 7, "{:?}", f.pids);
    nix::sys::signal::kill(mesh.pid(), nix::sys::signal::Signal::SIGINT).unwrap();
    let exit = wait_timeout(&mut mesh.child, Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "{}", mesh.stderr());
    assert_gone(&f);
    assert!(
        mesh.stderr().contains(&format!(
            "removed its bridge {bridge} and its network namespaces"
        )),
        "{}",
        mesh.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_weft_up_removes_what_a_killed_one_left() {
    if !can_run_pods() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let yaml = transparent_yaml("tp-kill");
    let mut first = Mesh::up_in(&yaml, home.path());
    let bridge = first.status["network"]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    let before = footprint("tp-kill", &bridge);
    assert_eq!(before.namespaces.len(), 4);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // What a killed `weft up` leaves: its pods and its bridge.
    let listed = namespaces();
    assert!(before.namespaces.iter().all(|n| listed.contains(n)));
    assert!(link_exists(&bridge));

    let second = Mesh::up_in(&yaml, home.path());
    let log = second.stderr();
    let cleaned = log
        .lines()
        .find(|l| l.starts_with("weft: removed leftovers of mesh tp-kill"))
        .unwrap_or_else(|| panic!("no cleanup line in\n{log}"));
    for ns in &before.namespaces {
        assert!(cleaned.contains(&format!("namespace {ns}")), "{cleaned}");
    }
    assert!(cleaned.contains(&format!("bridge {bridge}")), "{cleaned}");
    for pid in &before.pids {
        assert!(
            !alive(*pid),
            "process {pid} of the killed mesh is still running"
        );
    }
    // The new mesh has pods of its own, and serves.
    assert_eq!(footprint("tp-kill", &bridge).namespaces.len(), 4);
    let c = client();
    let r = get(&c, second.ingress, "alpha", "/")
        .await
        .expect("via ingress");
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_doctor_lists_and_cleans_what_a_killed_weft_up_left() {
    if !can_run_pods() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut mesh = Mesh::up_in(&transparent_yaml("tp-doctor"), home.path());
    let bridge = mesh.status["network"]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    let f = footprint("tp-doctor", &bridge);
    mesh.child.kill().unwrap();
    mesh.child.wait().unwrap();

    let out = weft_in(home.path(), &["doctor", "--mesh", "tp-doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for ns in &f.namespaces {
        assert!(
            text.contains(&format!(
                "leftover: namespace {ns} (of mesh tp-doctor, whose weft up is gone"
            )),
            "{ns} not listed:\n{text}"
        );
    }
    assert!(
        text.contains(&format!("leftover: bridge {bridge}")),
        "{text}"
    );
    // Listing removes nothing.
    assert!(link_exists(&bridge));

    let out = weft_in(home.path(), &["doctor", "--clean", "--mesh", "tp-doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("removed: bridge {bridge}")),
        "{text}"
    );
    assert_gone(&f);
    assert!(!home.path().join("meshes/tp-doctor.pods.json").exists());
    let out = weft_in(home.path(), &["doctor", "--mesh", "tp-doctor"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing left over"));
}

#[test]
fn without_cap_net_admin_weft_up_refuses_a_transparent_mesh() {
    if !can_run_pods() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: `setpriv` (util-linux) is not installed");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut up = Command::new("setpriv");
    up.args([
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
        WEFT,
        "up",
    ]);
    assert_up_refused(
        up,
        home.path(),
        "tp-unprivileged",
        "interception: transparent needs root or CAP_NET_ADMIN (to create network namespaces and iptables rules): run weft up as root, or use interception: proxy-env",
    );
}

/// Runs `up` (a command ending in `weft up`) on a transparent mesh named `mesh` in `home`, and
/// checks that it exits 1 saying `message` and makes no pod.
fn assert_up_refused(mut up: Command, home: &Path, mesh: &str, message: &str) {
    let file = home.join("mesh.yaml");
    std::fs::write(&file, transparent_yaml(mesh)).unwrap();
    let out = up
        .arg(&file)
        .env("WEFT_HOME", home.join("home"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(message), "{err}");
    let prefix = format!("weft-{mesh}-");
    assert!(!namespaces().iter().any(|n| n.starts_with(&prefix)));
}

#[test]
fn without_nft_weft_up_says_which_package_it_needs() {
    if !can_run_pods() {
        return;
    }
    // A PATH with `ip` but no `nft`.
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ip = sh(&["sh", "-c", "command -v ip"]);
    std::os::unix::fs::symlink(ip.trim(), bin.join("ip")).unwrap();
    let mut up = Command::new(WEFT);
    up.arg("up").env("PATH", &bin);
    assert_up_refused(
        up,
        home.path(),
        "tp-no-nft",
        "interception: transparent needs the `nft` command (Debian package nftables): install it, or use interception: proxy-env",
    );
}

#[test]
fn a_sidecar_not_ready_in_time_fails_its_replica_before_the_app_starts() {
    if !can_run_pods() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("mesh.yaml");
    std::fs::write(&file, transparent_yaml("tp-late")).unwrap();
    let out = Command::new(WEFT)
        .args(["up", "--ready-timeout", "1ms"])
        .arg(&file)
        .env("WEFT_HOME", home.path().join("home"))
        .env("WEFT_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("alpha-v1-0: its sidecar was not ready within 1ms (it did not register with the control plane); the app was not started"),
        "{err}"
    );
    // Its app never ran; the pod and the bridge are gone.
    assert!(!err.contains("[alpha-v1-0] "), "{err}");
    assert!(!namespaces().iter().any(|n| n.starts_with("weft-tp-late-")));
    assert!(
        err.contains("weft: mesh tp-late: removed its bridge"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_change_of_services_rewrites_hosts_in_place_and_capture_makes_new_pods() {
    if !can_run_pods() {
        return;
    }
    let yaml = transparent_yaml("tp-watch");
    let mesh = Mesh::up_watching(&yaml, &[]);
    let pod = "weft-tp-watch-beta-v1-0";
    let hosts = Path::new("/etc/netns").join(pod).join("hosts");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&hosts);
    // The app's view: the hosts file `ip netns exec` bind-mounted over its /etc/hosts when it
    // started.
    let app = sh(&["ip", "netns", "pids", pod])
        .split_whitespace()
        .map(|p| p.to_string())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("demo\0echo"))
        })
        .expect("the app runs in its pod");
    let seen_by_app = format!("/proc/{app}/root/etc/hosts");
    assert!(!std::fs::read_to_string(&seen_by_app)
        .unwrap()
        .contains("delta"));

    // A service more, and alpha excludes another outbound port.
    let more = "  - name: delta\n    port: 80\n    workloads:\n    - name: delta-v1\n      replicas: 1\n      command: [weft, demo, echo, --service, delta]\n";
    let edited = format!("{yaml}{more}").replace(
        "excludeOutboundPorts: \"5432\"",
        "excludeOutboundPorts: \"5433\"",
    );
    std::fs::write(mesh.files.path().join("mesh.yaml"), edited).unwrap();
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    while !std::fs::read_to_string(&seen_by_app)
        .unwrap()
        .contains("delta.default.svc.cluster.local delta\n")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the app's /etc/hosts never named delta:\n{}\n{}",
            std::fs::read_to_string(&seen_by_app).unwrap(),
            mesh.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        inode(&hosts),
        before,
        "the hosts file was replaced, not rewritten"
    );

    // The new service's replica gets a pod of its own; alpha's replica is replaced by one in a
    // new pod with the new rules, and the old pod is removed.
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let log = "mesh: alpha-v1 capture annotations changed: replaced alpha-v1-0";
    while !(namespaces().contains(&"weft-tp-watch-delta-v1-0".to_string())
        && mesh.stderr().contains(log))
    {
        assert!(std::time::Instant::now() < deadline, "{}", mesh.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = mesh.status_json(Some("tp-watch"));
    let alpha = st["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["instance"] == "alpha-v1-0")
        .unwrap();
    let new_pod = alpha["pod"].as_str().unwrap();
    assert_ne!(new_pod, "weft-tp-watch-alpha-v1-0", "{st}");
    assert!(!namespaces().contains(&"weft-tp-watch-alpha-v1-0".to_string()));
    let rules = pod_rules(new_pod);
    assert!(rules.contains("\ttcp dport 5433 return\n"), "{rules}");
    assert!(!rules.contains("5432"), "{rules}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_dies_is_restarted_in_its_pod() {
    if !can_run_pods() {
        return;
    }
    let mesh = Mesh::up(&transparent_yaml("tp-restart"));
    let pod = "weft-tp-restart-alpha-v1-0";
    let row = |st: &Value| {
        st["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["instance"] == "alpha-v1-0")
            .cloned()
            .unwrap()
    };
    let first = row(&mesh.status)["pid"].as_i64().unwrap() as i32;
    assert!(sh(&["ip", "netns", "pids", pod])
        .split_whitespace()
        .any(|p| p == first.to_string()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // It registers again, ready, from inside the same pod, at the same addresses.
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let again = loop {
        let w = row(&mesh.status_json(Some("tp-restart")));
        let pid = w["pid"].as_i64().unwrap_or(0) as i32;
        if pid != first && w["ready"] == true {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{w}\n{}",
            mesh.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pid = again["pid"].as_i64().unwrap().to_string();
    assert!(
        sh(&["ip", "netns", "pids", pod])
            .split_whitespace()
            .any(|p| p == pid),
        "{again}"
    );
    assert_eq!(again["pod"], pod);
    assert_eq!(again["admin"], row(&mesh.status)["admin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_doctor_cleans_pods_of_a_lost_weft_home() {
    if !can_run_pods() {
        return;
    }
    let lost = tempfile::tempdir().unwrap();
    let mut mesh = Mesh::up_in(&transparent_yaml("tp-lost"), lost.path());
    let bridge = mesh.status["network"]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    let f = footprint("tp-lost", &bridge);
    // While it runs, another WEFT_HOME's doctor takes nothing of it for a leftover: its pods
    // hold processes, and its bridge holds their macvlans.
    let other = tempfile::tempdir().unwrap();
    let out = weft_in(other.path(), &["doctor", "--mesh", "tp-lost"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("leftover"), "{text}");
    mesh.child.kill().unwrap();
    mesh.child.wait().unwrap();
    // Its record goes with its WEFT_HOME; its children exit on their own (SIGTERM when weft up
    // dies), leaving empty pods on the bridge.
    drop(mesh);
    drop(lost);
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    while f.pids.iter().any(|p| alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pods' processes did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = weft_in(other.path(), &["doctor", "--mesh", "tp-lost"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for ns in &f.namespaces {
        assert!(
            text.contains(&format!(
                "leftover: namespace {ns} (recorded by no mesh in this WEFT_HOME; 0 processes in it)"
            )),
            "{ns} not listed:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "leftover: bridge {bridge} (recorded by no mesh in this WEFT_HOME; no running pod on it)"
        )),
        "{text}"
    );
    let out = weft_in(other.path(), &["doctor", "--clean", "--mesh", "tp-lost"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_gone(&f);
}

/// A network namespace the test stands in for a host with, removed when dropped.
struct HostNs(String);

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// On a host whose FORWARD chain drops what it does not know, with bridged frames sent through
/// iptables (`br_netfilter`, `bridge-nf-call-iptables=1`), as Docker leaves a machine, pods still
/// reach each other: their macvlans never take the bridge's forwarding path. The host is a
/// network namespace of the test's own, where `weft up` runs (through `nsenter --net`, so that
/// it makes the pods' namespaces as it does on a host).
#[test]
fn pods_reach_each_other_on_a_host_whose_forward_chain_drops() {
    if !can_run_pods() {
        return;
    }
    let host = HostNs(format!("wfthost-{}", std::process::id()));
    sh(&["ip", "netns", "add", &host.0]);
    sh(&["ip", "-n", &host.0, "link", "set", "lo", "up"]);
    let in_host = |argv: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", &host.0];
        all.extend_from_slice(argv);
        sh(&all)
    };
    in_host(&["iptables", "-P", "FORWARD", "DROP"]);
    // Where the kernel has br_netfilter, bridged frames go through that chain.
    if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        in_host(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]);
    }
    let mesh = "tp-fwd";
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mesh.yaml");
    std::fs::write(&file, transparent_yaml(mesh)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut up = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", host.0))
        .arg(WEFT)
        .arg("up")
        .arg(&file)
        .env("WEFT_HOME", home.path())
        .env("WEFT_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(up.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let out = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(" is ready: ingress http://") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(90));
    // Not asserted yet: weft up is stopped first, whatever the answer.
    let answer = ready.is_ok().then(|| {
        let out = try_get_in_pod(
            &format!("weft-{mesh}-alpha-v1-0"),
            &format!("http://beta:{BETA_PORT}/"),
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let dropped = in_host(&["iptables", "-L", "FORWARD", "-v", "-n"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let exit = wait_timeout(&mut up, Duration::from_secs(30));
    let log = stderr.lock().unwrap().clone();
    assert!(ready.is_ok(), "weft up was not ready:\n{log}");
    let answer = answer.unwrap();
    assert!(answer.contains("\"instance\":\"beta-v1-"), "{answer}");
    assert!(exit.is_some_and(|s| s.success()), "{log}");
    assert!(
        !namespaces()
            .iter()
            .any(|n| n.starts_with(&format!("weft-{mesh}-"))),
        "pods left behind"
    );
    // The chain was there and dropping: what the pods sent never went through it.
    assert!(dropped.contains("policy DROP 0 packets"), "{dropped}");
}

/// Namespaces a test makes by hand, deleted (with what runs in them) when it ends.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            for pid in sh(&["ip", "netns", "pids", ns]).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A TCP connection from inside `ns` to `addr`: what the server sent, or the error's class name
/// (`ConnectionRefusedError`, `TimeoutError`).
fn connect_in(ns: &str, addr: &str) -> String {
    connect_from(ns, addr, "0.0.0.0")
}

/// [`connect_in`] from source address `source`.
fn connect_from(ns: &str, addr: &str, source: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "import socket\ntry:\n    s = socket.create_connection(('{host}', {port}), timeout=1, source_address=('{source}', 0))\n    print(s.recv(100).decode())\nexcept OSError as e:\n    print(type(e).__name__)"
    );
    common::pods::in_pod_ok(ns, &["python3", "-c", &script])
        .trim()
        .to_string()
}

/// The pods' capture rules on their own, in two namespaces the test makes: a connection from the
/// app and one from outside go, destinations intact, to whatever holds the sidecar's capture
/// ports; while nothing does (a sidecar starting or restarting), the app's is refused and the
/// outside one's dropped: neither is delivered past the missing sidecar to the app's own port.
#[test]
fn capture_rules_never_let_a_connection_past_a_missing_sidecar() {
    if !can_run_pods() {
        return;
    }
    let (pod, outside) = (
        format!("wftcap-{}", std::process::id()),
        format!("wftout-{}", std::process::id()),
    );
    let _cleanup = Netns(vec![pod.clone(), outside.clone()]);
    for ns in [&pod, &outside] {
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    sh(&[
        "ip", "-n", &pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        &outside,
    ]);
    // Outside: .2 stands for the host, .3 for another pod.
    for (ns, addr) in [
        (&pod, "10.233.252.1/24"),
        (&outside, "10.233.252.2/24"),
        (&outside, "10.233.252.3/24"),
    ] {
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    }
    sh(&["ip", "-n", &pod, "route", "add", "default", "dev", "eth0"]);
    // The outside namespace stands for the host, which the rules exempt (the control plane
    // there): the app's replies to it are not captured.
    let exempt = local::pods::Exempt {
        mark: Some(local::pods::SOCKET_MARK),
        hosts: vec![std::net::Ipv4Addr::new(10, 233, 252, 2)],
        ..Default::default()
    };
    local::pods::tproxy::install(&pod, &exempt, &model::Capture::default()).unwrap();
    // Servers that answer each connection with a name and the address it was accepted on. Their
    // ports are fixed: they are inside the namespace this test made (nothing else binds there),
    // and the sidecar's are the capture ports the rules hand connections to.
    let serve = |name: &str, listen: &[(&str, u16)], transparent: bool| {
        let listeners: Vec<String> = listen
            .iter()
            .map(|(h, p)| format!("('{h}', {p})"))
            .collect();
        let script = format!(
            "import socket, threading\n\
             def serve(l):\n    while True:\n        c, _ = l.accept()\n        h, p = c.getsockname()\n        c.sendall(f'{name} {{h}}:{{p}}'.encode())\n        c.close()\n\
             for addr in [{}]:\n    l = socket.socket()\n    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    if {}:\n        l.setsockopt(socket.SOL_IP, 19, 1)\n        l.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 1337)\n    l.bind(addr)\n    l.listen(16)\n    threading.Thread(target=serve, args=(l,), daemon=True).start()\n\
             print('ready', flush=True)\n\
             threading.Event().wait()\n",
            listeners.join(", "),
            if transparent { "True" } else { "False" },
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &pod, "python3", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    };
    // The app, on a port of its own, and no sidecar yet.
    let mut app = serve("app", &[("0.0.0.0", 8080)], false);
    assert_eq!(
        connect_in(&pod, "10.235.0.9:8080"),
        "ConnectionRefusedError"
    );
    assert_eq!(connect_in(&outside, "10.233.252.1:8080"), "TimeoutError");
    let peer = "10.233.252.3";
    assert_eq!(
        connect_from(&outside, "10.233.252.1:8080", peer),
        "TimeoutError"
    );
    // A peer's sidecar calling this pod's sidecar learns at once that it is down.
    assert_eq!(
        connect_from(&outside, "10.233.252.1:15006", peer),
        "ConnectionRefusedError"
    );
    // What is not captured still reaches the app: the pod's own loopback.
    assert_eq!(connect_in(&pod, "127.0.0.1:8080"), "app 127.0.0.1:8080");

    // A stand-in sidecar on the capture ports: both connections reach it, their destination
    // being the address it accepted them on.
    let mut sidecar = serve(
        "sidecar",
        &[
            ("127.0.0.1", model::names::POD_CAPTURE_PORT),
            ("0.0.0.0", model::names::POD_INBOUND_PORT),
        ],
        true,
    );
    assert_eq!(
        connect_in(&pod, "10.235.0.9:8080"),
        "sidecar 10.235.0.9:8080"
    );
    assert_eq!(
        connect_in(&outside, "10.233.252.1:8080"),
        "sidecar 10.233.252.1:8080"
    );
    assert_eq!(
        connect_from(&outside, "10.233.252.1:8080", peer),
        "sidecar 10.233.252.1:8080"
    );
    for child in [&mut app, &mut sidecar] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
