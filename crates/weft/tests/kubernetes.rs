//! Kubernetes manifests: `weft inject` on manifests in the shapes of Istio's bookinfo and
//! Linkerd's emojivoto and on every kind of workload (testdata/kubernetes), checked against
//! golden files (`WEFT_UPDATE_GOLDEN=1` rewrites them), injected twice without change, and
//! validated offline: against the Kubernetes OpenAPI schemas of the cluster version weft
//! targets (PyPI `kubernetes-validate --strict`) and by `kubectl apply --dry-run=client`
//! against testdata/kubernetes/apiserver.py, which answers kubectl's discovery requests in the
//! API's own shapes (there is no API server here). `weft install --kubernetes` validated the
//! same way, and its RBAC rules compared with the table in docs/kubernetes.md. And `weft
//! capture`, the injected init container's command, installing its rules in a real network
//! namespace (as root).
//!
//! The control plane on a cluster (`weft control --kubernetes`) against the same stand-in
//! serving list and watch over objects recorded in the API's shapes
//! (testdata/kubernetes/cluster): the snapshot a real proxy applies after each watch event,
//! bookmark, dropped watch and 410; two replicas sharing one root and electing the one that
//! writes routes' status; a rollout whose moves are written to the cluster; readiness only
//! once the cluster is listed; and the installed Deployment's own arguments.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are validated for: native sidecars (init containers
/// with `restartPolicy: Always`) are on by default from 1.29 and GA in 1.33, the version weft's API types are for.
const KUBERNETES: &str = "1.33.0";

const INPUTS: [&str; 3] = ["bookinfo", "emojivoto", "workloads"];

/// A child process killed (and reaped) when dropped, so that a failing test leaves nothing
/// running that holds the test's output open.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kubernetes")
}

/// `weft ARGS` with `stdin`: (status, stdout, stderr).
fn weft_with(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(WEFT)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn inject(file: &Path) -> (String, String) {
    let (code, out, err) = weft_with(
        &[
            "inject",
            "-f",
            file.to_str().unwrap(),
            "--image",
            "weft:test",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    (out, err)
}

#[test]
fn injected_manifests_match_their_golden_files_and_injecting_again_changes_nothing() {
    for name in INPUTS {
        let input = testdata().join(format!("{name}.yaml"));
        let (out, report) = inject(&input);
        let golden = testdata().join(format!("{name}.injected.yaml"));
        if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &out).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!("{}: {e} (WEFT_UPDATE_GOLDEN=1 writes it)", golden.display())
        });
        assert!(
            out == want,
            "{name}: the output differs from {}:\n{out}",
            golden.display()
        );
        // Again, from stdin: nothing changes, and every workload says so.
        let (code, again, again_report) =
            weft_with(&["inject", "-f", "-", "--image", "weft:test"], Some(&out));
        assert_eq!(code, 0, "{again_report}");
        assert_eq!(again, out, "{name}: injecting twice changed it");
        assert!(!again_report.contains(": injected"), "{again_report}");
        eprintln!("{name}:\n{report}");
    }
}

#[test]
fn what_is_injected_and_what_is_left_alone() {
    let (_, report) = inject(&testdata().join("workloads.yaml"));
    for line in [
        "StatefulSet cache/redis: injected",
        "Job default/migrate: injected",
        "CronJob default/report: injected",
        "DaemonSet default/node-agent: skipped: it uses the host's network",
        "Deployment default/legacy: skipped: opted out: labels sidecar.istio.io/inject: false",
        "Pod default/debug: injected",
        "Deployment default/listed: injected",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "{line:?} not in:\n{report}"
        );
    }
    // emojivoto's Namespace opts in; with --opt-in, only what opts in is injected.
    let (code, _, report) = weft_with(
        &[
            "inject",
            "--opt-in",
            "-f",
            testdata().join("emojivoto.yaml").to_str().unwrap(),
            "-f",
            testdata().join("bookinfo.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("Deployment emojivoto/web: injected"),
        "{report}"
    );
    assert!(
        report.contains(
            "Deployment default/productpage-v1: skipped: neither it nor namespace default opts in"
        ),
        "{report}"
    );
}

#[test]
fn a_bad_annotation_is_an_error_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(testdata().join("bookinfo.yaml"))
        .unwrap()
        .replace("proxyMemoryLimit: 512Mi", "proxyMemoryLimit: plenty");
    std::fs::write(&bad, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("proxyMemoryLimit"))
        .unwrap()
        + 1;
    let (code, out, err) = weft_with(&["inject", "-f", bad.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "nothing printed on an error: {out}");
    assert!(
        err.contains(&format!("bad.yaml:{line}:")) && err.contains("`plenty`"),
        "{err}"
    );
}

/// `kubernetes-validate` (PyPI), as `python3 -m kubernetes_validate`.
fn validator() -> Option<Command> {
    let ok = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES]);
        c
    })
}

#[test]
fn injected_manifests_pass_the_kubernetes_schemas_and_kubectl() {
    let mut validate = validator().expect(
        "kubernetes-validate is not installed (pip install kubernetes-validate; scripts/test does)",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in INPUTS {
        let (out, _) = inject(&testdata().join(format!("{name}.yaml")));
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, out).unwrap();
        files.push(f);
    }
    let out = validate.args(&files).output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate:\n{said}");
    assert!(!said.contains("ERROR"), "{said}");
    kubectl_dry_run(&files);
}

/// The API stand-in (testdata/kubernetes/apiserver.py) with `args`, its files in `dir`:
/// the process (killed when dropped) and its base URL.
fn api_stand_in(dir: &Path, args: &[&std::ffi::OsStr]) -> (Reaped, String) {
    let port_file = dir.join("port");
    let server = Reaped(
        Command::new("python3")
            .stdout(std::process::Stdio::null())
            .arg(testdata().join("apiserver.py"))
            .arg(&port_file)
            .args(args)
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !port_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "apiserver.py did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let port = std::fs::read_to_string(&port_file).unwrap();
    (server, format!("http://127.0.0.1:{port}"))
}

/// `weft control ARGS testdata/kubernetes/webhook-mesh.yaml` in `home`, once it says it is
/// ready: the process and the word after each of `markers` in its ready line.
fn weft_control(home: &Path, args: &[&str], markers: &[&str]) -> (Reaped, Vec<String>) {
    let mesh = testdata().join("webhook-mesh.yaml");
    weft_control_of(home, args, Some(&mesh), markers)
}

/// [`weft_control`] with the mesh file `mesh` (none: none given).
fn weft_control_of(
    home: &Path,
    args: &[&str],
    mesh: Option<&Path>,
    markers: &[&str],
) -> (Reaped, Vec<String>) {
    let mut cmd = Command::new(WEFT);
    cmd.args(["control", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .args(args)
        .args(mesh)
        .env("WEFT_HOME", home);
    let (control, ready) = until_ready(cmd);
    let words = markers.iter().map(|m| word_after(&ready, m)).collect();
    (control, words)
}

/// `cmd` (a `weft control`) started, once it has printed its ready line: the process and the
/// line.
fn until_ready(mut cmd: Command) -> (Reaped, String) {
    use std::io::{BufRead, BufReader};
    let mut control = Reaped(
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ready = String::new();
    let mut out = BufReader::new(control.stdout.take().unwrap());
    while !ready.contains("ready") {
        ready.clear();
        assert!(out.read_line(&mut ready).unwrap() > 0, "weft control ended");
    }
    (control, ready)
}

/// The word after `marker` in `line` (up to a space or a comma).
fn word_after(line: &str, marker: &str) -> String {
    let at = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {line}"))
        + marker.len();
    line[at..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .unwrap()
        .to_string()
}

/// The mesh's roots from the control plane's API at `api`, written to `file`.
fn fetch_bundle(api: &str, file: &Path) {
    let got = Command::new("curl")
        .args(["-sf", &format!("http://{api}/ca/bundle"), "-o"])
        .arg(file)
        .status()
        .unwrap();
    assert!(got.success());
}

/// `kubectl apply --dry-run=client` of `files` against the discovery stand-in: every object is
/// mapped to its resource and "created (dry run)".
pub fn kubectl_dry_run(files: &[PathBuf]) {
    assert!(
        Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_ok(),
        "kubectl is not installed (Debian kubectl; scripts/test installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = api_stand_in(dir.path(), &[]);
    for f in files {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", dir.path().join("none"))
            .args(["--server", &url])
            .args(["apply", "--dry-run=client", "--validate=false", "-f"])
            .arg(f)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=client -f {}: {}{said}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("kind:") && !l.contains("List"))
            .count();
        let created = said.lines().filter(|l| l.ends_with("(dry run)")).count();
        assert!(
            created >= docs,
            "{}: {created} of {docs} objects:\n{said}",
            f.display()
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_capture_rules_the_init_container_installs() {
    let (code, rules, err) = weft_with(
        &[
            "capture",
            "--dry-run",
            "--exclude-outbound-ports",
            "5432",
            "--include-outbound-cidrs",
            "10.96.0.0/12",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    for rule in [
        "-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A WEFT_OUTPUT -p tcp --dport 5432 -j RETURN",
        "-A WEFT_OUTPUT -d 10.96.0.0/12 -p tcp -j REDIRECT --to-ports 15001",
        "-A WEFT_INBOUND -p tcp -j REDIRECT --to-ports 15006",
        "-A WEFT_INBOUND -p tcp --dport 15020 -j RETURN",
    ] {
        assert!(
            rules.lines().any(|l| l == rule),
            "{rule:?} not in:\n{rules}"
        );
    }
    let (code, _, err) = weft_with(&["capture", "--include-outbound-cidrs", "10.96/12"], None);
    assert_eq!(code, 1);
    assert!(err.contains("10.96/12"), "{err}");
}

/// As root: `weft capture` in a network namespace of its own, then the namespace's `nat`
/// table holds the rules.
#[test]
fn capture_installs_its_rules_in_a_network_namespace() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating a network namespace needs root (CI runs as root)");
        return;
    }
    let ns = format!("weft-test-capture-{}", std::process::id());
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["ip", "netns", "add", &ns]);
    let installed = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            WEFT,
            "capture",
            "--exclude-inbound-ports",
            "16379",
        ])
        .output()
        .unwrap();
    let saved = Command::new("ip")
        .args(["netns", "exec", &ns, "iptables-save", "-t", "nat"])
        .output()
        .unwrap();
    run(&["ip", "netns", "delete", &ns]);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let saved = String::from_utf8_lossy(&saved.stdout);
    for rule in [
        "-A PREROUTING -p tcp -j WEFT_INBOUND",
        "-A OUTPUT -p tcp -j WEFT_OUTPUT",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 16379 -j RETURN",
        "-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
    ] {
        assert!(
            saved.lines().any(|l| l == rule),
            "{rule:?} not in:\n{saved}"
        );
    }
}

#[test]
fn the_install_manifests_pass_the_kubernetes_schemas_and_kubectl() {
    let (code, out, err) = weft_with(
        &[
            "install",
            "--kubernetes",
            "--image",
            "registry.example/weft:1.0",
            "--set",
            "replicas=3",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("install.yaml");
    std::fs::write(&f, &out).unwrap();
    let mut validate = validator().expect("kubernetes-validate is not installed");
    let checked = validate.arg(&f).output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.status.success() && !said.contains("ERROR"),
        "{said}"
    );
    kubectl_dry_run(&[f]);
    let kinds: Vec<String> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| {
            let v = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d).unwrap();
            v["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "MutatingWebhookConfiguration"
        ]
    );
    assert!(out.contains("replicas: 3"));
    let (code, _, err) = weft_with(&["install", "--kubernetes", "--set", "replicas=none"], None);
    assert_eq!(code, 1);
    assert!(err.contains("replicas"), "{err}");
}

/// (API group, resource, verb) of every rule of the ClusterRole and Role `weft install`
/// prints.
fn installed_rules() -> std::collections::BTreeSet<(String, String, String)> {
    let (_, out, _) = weft_with(&["install", "--kubernetes"], None);
    let mut rules = std::collections::BTreeSet::new();
    for d in serde_yaml_ng::Deserializer::from_str(&out) {
        let v = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d).unwrap();
        if !matches!(v["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for r in v["rules"].as_sequence().unwrap() {
            let strs = |k: &str| -> Vec<String> {
                r[k].as_sequence()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect()
            };
            for g in strs("apiGroups") {
                for res in strs("resources") {
                    for verb in strs("verbs") {
                        rules.insert((g.clone(), res.clone(), verb));
                    }
                }
            }
        }
    }
    rules
}

#[test]
fn the_rbac_rules_in_the_docs_are_the_installed_ones() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kubernetes.md"),
    )
    .unwrap();
    let table = docs
        .split("<!-- rbac -->")
        .nth(1)
        .expect("docs/kubernetes.md: the RBAC table between <!-- rbac --> markers");
    let mut documented = std::collections::BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let group = cells[1].trim_end_matches(" (core)").trim_matches('`');
        let group = if group == "\"\"" { "" } else { group };
        for res in cells[2].split(',').map(str::trim) {
            for verb in cells[3].split(',').map(str::trim) {
                documented.insert((group.to_string(), res.to_string(), verb.to_string()));
            }
        }
    }
    assert_eq!(documented, installed_rules());
}

/// What an injected pod's rewritten probes reach: the proxy's admin `/app-health/…` asks the
/// app as the original probe said (here an HTTP GET that passes and a TCP connect to a closed
/// port), and a proxy given probes it cannot ask does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_the_apps_rewritten_probes() {
    use std::io::{BufRead, BufReader};
    let app_port = free_port();
    let mut app = Reaped(
        Command::new(WEFT)
            .args([
                "demo",
                "echo",
                "--service",
                "app",
                "--port",
                &app_port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    until(
        "the app listens",
        std::time::Duration::from_secs(20),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", app_port))
                .await
                .is_ok()
        },
    )
    .await;
    let closed = free_port();
    let probers = serde_json::json!({
        "/app-health/app/readyz": {"httpGet": {"path": "/healthz", "port": app_port}, "timeoutSeconds": 2},
        "/app-health/app/livez": {"tcpSocket": {"port": closed}},
    });
    let proxy = |probers: &str| {
        Command::new(WEFT)
            .args(["proxy", "--mode", "sidecar", "--control", "127.0.0.1:9"])
            .args([
                "--service",
                "app",
                "--admin",
                "127.0.0.1:0",
                "--inbound",
                "127.0.0.1:0",
            ])
            .args(["--app", &format!("127.0.0.1:{app_port}")])
            .env("WEFT_APP_PROBERS", probers)
            .env_remove("WEFT_JOIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut sidecar = Reaped(proxy(&probers.to_string()));
    let mut first = String::new();
    BufReader::new(sidecar.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let bound: serde_json::Value = serde_json::from_str(&first).unwrap();
    let admin: std::net::SocketAddr = bound["admin"].as_str().unwrap().parse().unwrap();
    let c = client();
    let ready = get(&c, admin, "admin", "/app-health/app/readyz")
        .await
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text);
    let live = get(&c, admin, "admin", "/app-health/app/livez")
        .await
        .unwrap();
    assert_eq!(live.status, 503, "{}", live.text);
    assert!(live.text.contains(&closed.to_string()), "{}", live.text);
    let other = get(&c, admin, "admin", "/app-health/other/readyz")
        .await
        .unwrap();
    assert_eq!(other.status, 404);
    let _ = sidecar.kill();
    let _ = sidecar.wait();
    // Probes it cannot ask: it says so and does not start.
    let bad = proxy(r#"{"/app-health/app/readyz": {"httpGet": {"port": 1, "scheme": "HTTPS"}}}"#)
        .wait_with_output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("plain HTTP"));
    let _ = app.kill();
    let _ = app.wait();
}

/// The admission webhook of `weft control --webhook`, over real TLS checked by name (curl with
/// the mesh's roots, as the API server with the webhook's caBundle): a pod of an opted-in
/// namespace comes back with a JSON patch that makes it what `weft inject` makes of it; the
/// opt-in-only path leaves it alone; a pod with a bad annotation is refused with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_webhook_injects_pods_as_weft_inject_does() {
    let home = tempfile::tempdir().unwrap();
    // The webhook's configuration as `weft install` makes it, in the API stand-in.
    let (_, install, _) = weft_with(&["install", "--kubernetes"], None);
    let hooks: serde_json::Value = serde_yaml_ng::Deserializer::from_str(&install)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|v| v["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let object = home.path().join("hooks.json");
    std::fs::write(&object, hooks.to_string()).unwrap();
    let log = home.path().join("api.log");
    let (mut apiserver, url) = api_stand_in(
        home.path(),
        &[
            "--object".as_ref(),
            object.as_os_str(),
            "--log".as_ref(),
            log.as_os_str(),
        ],
    );
    let (mut control, words) = weft_control(
        home.path(),
        &[
            "--webhook",
            "127.0.0.1:0",
            "--inject-image",
            "weft:test",
            "--webhook-configuration",
            "weft-sidecar-injector",
            "--kubernetes-api",
            &url,
        ],
        &["API on http://", "injection webhook on https://"],
    );
    let webhook: std::net::SocketAddr = words[1].parse().unwrap();
    let bundle = home.path().join("bundle.pem");
    fetch_bundle(&words[0], &bundle);

    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "productpage-v1-5f8d9b-",
            "namespace": "default",
            "labels": {"app": "productpage", "version": "v1", "pod-template-hash": "5f8d9b"},
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "productpage-v1-5f8d9b", "uid": "d3b07384", "controller": true}]
        },
        "spec": {
            "serviceAccountName": "bookinfo-productpage",
            "containers": [{
                "name": "productpage",
                "image": "docker.io/istio/examples-bookinfo-productpage-v1:1.20.2",
                "ports": [{"containerPort": 9080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}}
            }]
        }
    });
    let review = |pod: &serde_json::Value| {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        })
    };
    let name = "weft-control.weft-system.svc";
    let post = |path: &str, body: &serde_json::Value, by_name: bool| {
        let file = home.path().join("review.json");
        std::fs::write(&file, body.to_string()).unwrap();
        let host = if by_name {
            name.to_string()
        } else {
            "127.0.0.1".to_string()
        };
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&bundle)
            .args(["--resolve", &format!("{name}:{}:127.0.0.1", webhook.port())])
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("https://{host}:{}{path}", webhook.port()))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The certificate is for the Service's names, not for an address.
    let (ok, _, err) = post("/inject/namespace", &review(&pod), false);
    assert!(!ok, "TLS to 127.0.0.1 should not verify: {err}");

    let (ok, body, err) = post("/inject/namespace", &review(&pod), true);
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rsp = &answer["response"];
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(rsp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(rsp["allowed"], true);
    assert_eq!(rsp["patchType"], "JSONPatch");
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(rsp["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    // What `weft inject` makes of the same pod, as its Deployment would name it.
    let mut named = pod.clone();
    named["metadata"]["name"] = "productpage-v1".into();
    let (code, injected, err) = weft_with(
        &["inject", "-f", "-", "--image", "weft:test"],
        Some(&named.to_string()),
    );
    assert_eq!(code, 0, "{err}");
    let injected: serde_json::Value = serde_yaml_ng::from_str(&injected).unwrap();
    assert_eq!(patched["spec"], injected["spec"]);
    assert_eq!(
        patched["metadata"]["annotations"]["weft.dev/injected"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        patched["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        patched["metadata"]["generateName"],
        "productpage-v1-5f8d9b-"
    );

    // Only pods that opt in on the other path.
    let (ok, body, _) = post("/inject", &review(&pod), true);
    assert!(ok);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none(), "{answer}");

    let mut bad = pod.clone();
    bad["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"] = "fast".into();
    let (ok, body, _) = post("/inject/namespace", &review(&bad), true);
    assert!(ok);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("proxyCPU") && message.contains("`fast`"),
        "{message}"
    );
    // Before it said it was ready, it made the hooks trust the mesh's roots.
    let put: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let roots = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&bundle).unwrap());
    let written: Vec<&serde_json::Value> = put["object"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["clientConfig"]["caBundle"])
        .collect();
    assert_eq!(written.len(), 2);
    assert!(written.iter().all(|b| **b == roots), "{written:?}");
    let _ = control.kill();
    let _ = control.wait();
    let _ = apiserver.kill();
    let _ = apiserver.wait();
}

/// A proxy in a pod joins with its projected ServiceAccount token: `weft control
/// --service-account-tokens` asks the API server (the stand-in's TokenReview, in the API's
/// shapes) whose token it is, with audience `weft`, and signs a certificate for that account's
/// SPIFFE identity only; a token for another account, or one the API server does not
/// authenticate, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_joins_with_its_service_account_token() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (good, stranger) = (
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwcCJ9.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    );
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        serde_json::json!({good: "system:serviceaccount:default:bookinfo-productpage", stranger: null}).to_string(),
    )
    .unwrap();
    let log = dir.path().join("reviews.log");
    let (mut apiserver, url) = api_stand_in(
        dir.path(),
        &[
            "--tokens".as_ref(),
            tokens.as_os_str(),
            "--log".as_ref(),
            log.as_os_str(),
        ],
    );
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (mut control, words) = weft_control(
        &home,
        &["--service-account-tokens", "--kubernetes-api", &url],
        &["proxies connect to ", "API on http://"],
    );
    let grpc = words[0].clone();
    let bundle = dir.path().join("bundle.pem");
    fetch_bundle(&words[1], &bundle);

    let td = "spiffe://cluster.local/ns/default/sa";
    let proxy = |token: &str, account: &str| {
        let file = dir
            .path()
            .join(format!("token-{account}-{}", token.len() + account.len()));
        std::fs::write(&file, token).unwrap();
        let mut child = Reaped(
            Command::new(WEFT)
                .args([
                    "proxy",
                    "--mode",
                    "sidecar",
                    "--control",
                    &grpc,
                    "--service",
                    "productpage",
                ])
                .args([
                    "--identity",
                    &format!("{td}/{account}"),
                    "--admin",
                    "127.0.0.1:0",
                ])
                .args(["--inbound", "127.0.0.1:0", "--app", "127.0.0.1:9"])
                .arg("--join-token-file")
                .arg(&file)
                .arg("--trust-anchors-file")
                .arg(&bundle)
                .env_remove("WEFT_JOIN_TOKEN")
                .env("WEFT_LOG", "info")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let bound: serde_json::Value = serde_json::from_str(&first).unwrap();
        let admin: std::net::SocketAddr = bound["admin"].as_str().unwrap().parse().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (child, admin, rx)
    };
    let c = client();
    let (mut joined, admin, _) = proxy(good, "bookinfo-productpage");
    until(
        "the proxy holds its certificate",
        std::time::Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                get(&c, admin, "admin", "/identity")
                    .await
                    .is_ok_and(|r| r.status == 200)
            }
        },
    )
    .await;
    let id = get(&c, admin, "admin", "/identity").await.unwrap();
    assert_eq!(id.body["identity"], format!("{td}/bookinfo-productpage"));
    let _ = joined.kill();
    let _ = joined.wait();
    // The API server was asked, for the audience the injected token is minted for.
    let asked = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(asked.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "TokenReview");
    assert_eq!(first["spec"]["audiences"], serde_json::json!(["weft"]));

    // Another account's identity with that token, and a token the API server refuses.
    for (token, account, why) in [
        (good, "reviews", "bookinfo-productpage"),
        (stranger, "bookinfo-productpage", "invalid bearer token"),
    ] {
        let (mut refused, admin, said) = proxy(token, account);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut lines = Vec::new();
        while !lines
            .iter()
            .any(|l: &String| l.contains("the CA refused our join token"))
        {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match said.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("{account}: not refused: {lines:?}"),
            }
        }
        assert!(
            lines.iter().any(|l| l.contains(why)),
            "{why} not in {lines:?}"
        );
        let id = get(&c, admin, "admin", "/identity").await.unwrap();
        assert_eq!(id.status, 503, "no certificate: {}", id.text);
        let _ = refused.kill();
        let _ = refused.wait();
    }
    let _ = control.kill();
    let _ = control.wait();
    let _ = apiserver.kill();
    let _ = apiserver.wait();
}

/// `weft control --ca-root-configmaps` puts the mesh's roots, which injected pods mount, in
/// the ConfigMap weft-ca-root of every namespace before it says it is ready: created where it
/// is missing, rewritten where it is stale.
#[test]
fn the_roots_are_in_every_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for (i, obj) in [
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "weft-ca-root", "namespace": "shop"}, "data": {"root-cert.pem": "stale"}}),
    ]
    .iter()
    .enumerate()
    {
        let f = dir.path().join(format!("object-{i}.json"));
        std::fs::write(&f, obj.to_string()).unwrap();
        args.push("--object".into());
        args.push(f.into());
    }
    let log = dir.path().join("api.log");
    args.push("--log".into());
    args.push(log.clone().into());
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (_apiserver, url) = api_stand_in(dir.path(), &refs);
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (_control, words) = weft_control(
        &home,
        &["--ca-root-configmaps", "--kubernetes-api", &url],
        &["API on http://"],
    );
    let bundle = dir.path().join("bundle.pem");
    fetch_bundle(&words[0], &bundle);
    let roots = std::fs::read_to_string(&bundle).unwrap();
    let writes: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let written = |verb: &str, ns: &str| {
        let path = format!("/api/v1/namespaces/{ns}/configmaps/weft-ca-root");
        writes
            .iter()
            .find(|w| w[verb] == path.as_str())
            .unwrap_or_else(|| panic!("no {verb} of {path}: {writes:?}"))["object"]["data"]
            ["root-cert.pem"]
            .clone()
    };
    assert_eq!(
        written("post", "default"),
        roots.as_str(),
        "created where missing"
    );
    assert_eq!(
        written("put", "shop"),
        roots.as_str(),
        "rewritten where stale"
    );
}

/// `weft ARGS` (a proxy), once it has printed its bound addresses: the process and them.
fn started(args: &[&str]) -> (Reaped, serde_json::Value) {
    use std::io::{BufRead, BufReader};
    let mut p = Reaped(
        Command::new(WEFT)
            .args(args)
            .env_remove("WEFT_JOIN_TOKEN")
            .env_remove("WEFT_POD_IP")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(p.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (p, serde_json::from_str(&first).unwrap())
}

/// A client proxy of productpage in bookinfo, connected to the control plane at `grpc`.
fn productpage_client(grpc: &str) -> (Reaped, serde_json::Value) {
    started(&[
        "proxy",
        "--mode",
        "client",
        "--control",
        grpc,
        "--service",
        "productpage",
        "--namespace",
        "bookinfo",
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
}

/// The address of the stand-in at `api` (`http://ADDR`).
fn api_addr(api: &str) -> std::net::SocketAddr {
    api.trim_start_matches("http://").parse().unwrap()
}

/// What the stand-in's `/_test/…` endpoints are asked to do.
async fn stand_in(api: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let addr = api_addr(api);
    let (status, answer) = post_json(addr, path, &[], &body).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// The stand-in's list and watch requests so far.
async fn watch_requests(api: &str) -> Vec<serde_json::Value> {
    let addr = api_addr(api);
    let reply = get(&client(), addr, "apiserver", "/_test/requests")
        .await
        .unwrap();
    reply.body.as_array().unwrap().clone()
}

/// One object of testdata/kubernetes/cluster/bookinfo.json, by kind and name.
fn recorded(kind: &str, name: &str) -> serde_json::Value {
    let list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("cluster/bookinfo.json")).unwrap(),
    )
    .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in cluster/bookinfo.json"))
        .clone()
}

/// A service of a proxy's snapshot (its `/config`), if it is there.
fn snapshot_service<'a>(
    config: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    config["snapshot"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"]["name"] == name)
}

/// A service's endpoints in a proxy's snapshot: `INSTANCE ADDRESS IDENTITY version=V`, sorted.
fn snapshot_endpoints(config: &serde_json::Value, name: &str) -> Vec<String> {
    let mut out: Vec<String> = snapshot_service(config, name)
        .map(|s| s["endpoints"].as_array().unwrap().clone())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} version={}",
                e["instance"].as_str().unwrap(),
                e["address"].as_str().unwrap(),
                e["identity"].as_str().unwrap(),
                e["labels"]["version"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.sort();
    out
}

/// A service's route weights in a proxy's snapshot: `SUBSET=WEIGHT` of each destination of
/// each route.
fn snapshot_weights(config: &serde_json::Value, name: &str) -> Vec<String> {
    snapshot_service(config, name)
        .map(|s| s["routes"].as_array().unwrap().clone())
        .unwrap_or_default()
        .iter()
        .flat_map(|r| r["destinations"].as_array().unwrap().clone())
        .map(|d| format!("{}={}", d["subset"].as_str().unwrap_or("-"), d["weight"]))
        .collect()
}

/// `weft control --kubernetes` against the API stand-in serving the objects recorded in
/// testdata/kubernetes/cluster/bookinfo.json (in the API's JSON shapes), and a proxy connected
/// to it: after each step of the watch (the initial list; MODIFIED, ADDED and DELETED events;
/// a BOOKMARK then a dropped watch; a 410 Gone forcing a relist) the snapshot the proxy has
/// applied is the cluster's.
#[tokio::test(flavor = "multi_thread")]
async fn the_clusters_objects_watched_become_the_snapshot_proxies_get() {
    let dir = tempfile::tempdir().unwrap();
    let (_api_server, api) = api_stand_in(
        dir.path(),
        &[
            "--cluster".as_ref(),
            testdata().join("cluster/bookinfo.json").as_os_str(),
        ],
    );
    let (_control, words) = weft_control_of(
        dir.path(),
        &["--kubernetes", "--kubernetes-api", &api, "--no-mtls"],
        None,
        &["connect to ", "API on http://"],
    );
    let grpc = &words[0];
    // Ready means the cluster was listed: every kind the control plane follows was.
    let listed: std::collections::BTreeSet<String> = watch_requests(&api)
        .await
        .iter()
        .filter(|r| r["watch"] == false)
        .map(|r| r["collection"].as_str().unwrap().to_string())
        .collect();
    for collection in [
        "/api/v1/namespaces",
        "/api/v1/services",
        "/api/v1/pods",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/apis/networking.istio.io/v1/virtualservices",
        "/apis/networking.istio.io/v1/destinationrules",
    ] {
        assert!(
            listed.contains(collection),
            "{collection} listed: {listed:?}"
        );
    }
    let (_proxy, bound) = productpage_client(grpc);
    let admin: std::net::SocketAddr = bound["admin"].as_str().unwrap().parse().unwrap();
    let c = client();
    // The proxy's snapshot, once `holds` holds for it (the step's readiness signal: the
    // snapshot changes when the control plane has taken the step in).
    let config = |what: &'static str, holds: Box<dyn Fn(&serde_json::Value) -> bool + Send>| {
        let c = c.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let got = get(&c, admin, "admin", "/config").await;
                if let Ok(reply) = got {
                    if reply.body["snapshot"]["services"].is_array() && holds(&reply.body) {
                        return reply.body;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{what}: the proxy's snapshot is {}",
                        serde_json::to_string_pretty(&reply.body["snapshot"]["services"]).unwrap()
                    );
                }
                assert!(std::time::Instant::now() < deadline, "{what}: no /config");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let td = "spiffe://cluster.local/ns/bookinfo/sa";
    let v1 =
        format!("reviews-v1-6f8d8c9d7b-q8wzt 10.244.1.11:15006 {td}/bookinfo-reviews version=v1");
    let v2 =
        format!("reviews-v2-5c7b7f6d9-lm4cx 10.244.1.12:15006 {td}/bookinfo-reviews version=v2");
    let v3 =
        format!("reviews-v3-84779c7bbc-9zq6d 10.244.1.14:15006 {td}/bookinfo-reviews version=v3");

    // 1. The initial list.
    let (a, b) = (v1.clone(), v2.clone());
    let snap = config(
        "the initial list",
        Box::new(move |s| snapshot_endpoints(s, "reviews") == [a.clone(), b.clone()]),
    )
    .await;
    let reviews = snapshot_service(&snap, "reviews").unwrap();
    assert_eq!(reviews["vip"], "10.96.44.3");
    assert_eq!(reviews["port"], 9080);
    assert_eq!(snapshot_weights(&snap, "reviews"), ["v1=80", "v2=20"]);
    assert_eq!(
        snapshot_endpoints(&snap, "productpage"),
        [format!(
            "productpage-v1-7d9c4b8b5-x2x7k 10.244.1.10:15006 {td}/bookinfo-productpage version=v1"
        )]
    );
    // ratings: in a namespace that opts into injection, but its pod opted out: a service of
    // the mesh without endpoints. mysqldb: neither, so not the mesh's.
    assert_eq!(snapshot_endpoints(&snap, "ratings"), Vec::<String>::new());
    assert!(snapshot_service(&snap, "ratings").is_some());
    assert!(snapshot_service(&snap, "mysqldb").is_none());

    // 2. MODIFIED: reviews-v2 stops being ready.
    let mut slice = recorded("EndpointSlice", "reviews-7qz9m");
    slice["endpoints"][1]["conditions"]["ready"] = false.into();
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [{"type": "MODIFIED", "object": slice}]}),
    )
    .await;
    let a = v1.clone();
    config(
        "v2 not ready",
        Box::new(move |s| snapshot_endpoints(s, "reviews") == [a.clone()]),
    )
    .await;

    // 3. ADDED: a reviews-v3 pod, and the slice lists it ready.
    let mut pod = recorded("Pod", "reviews-v2-5c7b7f6d9-lm4cx");
    pod["metadata"]["name"] = "reviews-v3-84779c7bbc-9zq6d".into();
    pod["metadata"]["labels"]["version"] = "v3".into();
    pod["status"]["podIP"] = "10.244.1.14".into();
    let mut endpoint = slice["endpoints"][0].clone();
    endpoint["addresses"] = serde_json::json!(["10.244.1.14"]);
    endpoint["targetRef"]["name"] = "reviews-v3-84779c7bbc-9zq6d".into();
    slice["endpoints"].as_array_mut().unwrap().push(endpoint);
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [{"type": "ADDED", "object": pod}, {"type": "MODIFIED", "object": slice}]}),
    )
    .await;
    let (a, b) = (v1.clone(), v3.clone());
    config(
        "v3 added",
        Box::new(move |s| snapshot_endpoints(s, "reviews") == [a.clone(), b.clone()]),
    )
    .await;

    // 4. A BOOKMARK, then every watch connection dropped, and a change made meanwhile: the
    // watches resume from the bookmark's resourceVersion (no relist) and get the change.
    let lists_before = watch_requests(&api)
        .await
        .iter()
        .filter(|r| r["watch"] == false)
        .count();
    let bookmark = stand_in(&api, "/_test/bookmark", serde_json::json!({})).await;
    let bookmark: u64 = bookmark["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Taken in when the watch of VirtualServices asks from it; until then the drop could come
    // before the bookmark reached the control plane.
    let delivered = std::time::Instant::now();
    loop {
        stand_in(&api, "/_test/drop", serde_json::json!({})).await;
        let resumed = watch_requests(&api).await.iter().any(|r| {
            r["watch"] == true
                && r["collection"] == "/apis/networking.istio.io/v1/virtualservices"
                && r["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= bookmark
        });
        if resumed {
            break;
        }
        assert!(
            delivered.elapsed() < std::time::Duration::from_secs(20),
            "no watch resumed from the bookmark"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut vs = recorded("VirtualService", "reviews");
    vs["spec"]["http"][0]["route"][0]["weight"] = 50.into();
    vs["spec"]["http"][0]["route"][1]["weight"] = 50.into();
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [{"type": "MODIFIED", "object": vs}]}),
    )
    .await;
    config(
        "weights after the dropped watch",
        Box::new(|s| snapshot_weights(s, "reviews") == ["v1=50", "v2=50"]),
    )
    .await;
    let lists_after = watch_requests(&api)
        .await
        .iter()
        .filter(|r| r["watch"] == false)
        .count();
    assert_eq!(
        lists_before, lists_after,
        "a dropped watch resumes without a list"
    );

    // 5. 410 Gone: ratings deleted without an event a watch could see, then every
    // resourceVersion expires: the watches relist, and the list is the truth.
    let ratings = recorded("Service", "ratings");
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"silent": true, "events": [{"type": "DELETED", "object": ratings}]}),
    )
    .await;
    stand_in(&api, "/_test/expire", serde_json::json!({})).await;
    config(
        "ratings gone after the relist",
        Box::new(|s| snapshot_service(s, "ratings").is_none()),
    )
    .await;
    let relisted = watch_requests(&api)
        .await
        .iter()
        .filter(|r| r["watch"] == false && r["collection"] == "/api/v1/services")
        .count();
    assert!(
        relisted >= 2,
        "services listed again after the 410: {relisted}"
    );
    // What was known stays: the relist replaced each kind as a whole, with the same objects.
    let snap = config(
        "reviews kept",
        Box::new(|s| snapshot_service(s, "reviews").is_some()),
    )
    .await;
    assert_eq!(
        snapshot_endpoints(&snap, "reviews"),
        [v1.clone(), v3.clone()]
    );
    assert_eq!(snapshot_weights(&snap, "reviews"), ["v1=50", "v2=50"]);

    // 6. DELETED: the VirtualService goes, and with it the weights.
    let vs = recorded("VirtualService", "reviews");
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [{"type": "DELETED", "object": vs}]}),
    )
    .await;
    config(
        "the VirtualService deleted",
        Box::new(|s| {
            snapshot_weights(s, "reviews")
                .iter()
                .all(|w| w.starts_with("-="))
        }),
    )
    .await;

    // 7. One that does not validate is left out; the rest keeps serving.
    let mut bad = recorded("VirtualService", "reviews");
    bad["metadata"]["name"] = "broken".into();
    bad["spec"]["http"][0]["route"][0]["weight"] = "eighty".into();
    let mut good = recorded("VirtualService", "reviews");
    good["spec"]["http"][0]["route"][0]["weight"] = 10.into();
    good["spec"]["http"][0]["route"][1]["weight"] = 90.into();
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [{"type": "ADDED", "object": bad}, {"type": "ADDED", "object": good}]}),
    )
    .await;
    config(
        "the valid one applied",
        Box::new(|s| snapshot_weights(s, "reviews") == ["v1=10", "v2=90"]),
    )
    .await;
}

/// A replica's name in the Lease (`HOST-PID`, as outside a pod).
fn replica_identity(pid: u32) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    format!("{}-{pid}", host.trim())
}

/// The Lease the replicas elect their writer with, from the stand-in: its holder.
async fn lease_holder(api: &str) -> Option<String> {
    let addr = api_addr(api);
    let path = "/apis/coordination.k8s.io/v1/namespaces/weft-system/leases/weft-control";
    let reply = get(&client(), addr, "apiserver", path).await.ok()?;
    reply.body["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

/// This mesh's conditions on each HTTPRoute, from the stand-in: `NAME: TYPE=STATUS/REASON, …`.
async fn route_conditions(api: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let addr = api_addr(api);
    let list = get(
        &client(),
        addr,
        "apiserver",
        "/apis/gateway.networking.k8s.io/v1/httproutes",
    )
    .await
    .unwrap()
    .body;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let conditions = r["status"]["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["controllerName"] == "weft.dev/control-plane")
                .flat_map(|p| p["conditions"].as_array().unwrap().clone())
                .map(|c| {
                    format!(
                        "{}={}/{}",
                        c["type"].as_str().unwrap(),
                        c["status"].as_str().unwrap(),
                        c["reason"].as_str().unwrap()
                    )
                })
                .collect();
            (
                r["metadata"]["name"].as_str().unwrap().to_string(),
                conditions,
            )
        })
        .collect()
}

/// The field managers of the status writes the stand-in logged.
fn status_writers(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["patch"].as_str().is_some_and(|p| p.ends_with("/status")))
        .map(|l| l["fieldManager"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Two `weft control --kubernetes` replicas: one CA root between them (the Secret the first
/// creates), one leader by the Lease, and only the leader writes the Accepted / ResolvedRefs
/// conditions Gateway API expects on HTTPRoutes; when it is killed the other takes the Lease
/// over and writes the next change's status.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_one_root_and_only_the_leader_writes_route_status() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("api.log");
    let (_api_server, api) = api_stand_in(
        dir.path(),
        &[
            "--cluster".as_ref(),
            testdata().join("cluster/bookinfo.json").as_os_str(),
            "--log".as_ref(),
            log.as_os_str(),
        ],
    );
    let args = [
        "--kubernetes",
        "--kubernetes-api",
        &api,
        "--leader-lease",
        "2s",
    ];
    let markers = ["API on http://"];
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&home_a).unwrap();
    std::fs::create_dir_all(&home_b).unwrap();
    let (first, first_words) = weft_control_of(&home_a, &args, None, &markers);
    let (second, second_words) = weft_control_of(&home_b, &args, None, &markers);

    // One root: the first replica created the Secret, the second read it.
    let (bundle_a, bundle_b) = (dir.path().join("a.pem"), dir.path().join("b.pem"));
    fetch_bundle(&first_words[0], &bundle_a);
    fetch_bundle(&second_words[0], &bundle_b);
    assert_eq!(
        std::fs::read_to_string(&bundle_a).unwrap(),
        std::fs::read_to_string(&bundle_b).unwrap(),
        "both replicas sign with one root"
    );
    let secrets_created = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"post\": \"/api/v1/namespaces/weft-system/secrets/weft-ca\""))
        .count();
    assert_eq!(secrets_created, 1);

    // One leader: the first, which found no Lease.
    let (id_first, id_second) = (replica_identity(first.id()), replica_identity(second.id()));
    assert_eq!(lease_holder(&api).await.as_deref(), Some(id_first.as_str()));

    // Routes: one whose backend is a service of the mesh, one whose is not.
    let route = |name: &str, parent: &str, backend: &str| {
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "bookinfo", "generation": 1,
                         "uid": format!("5b2c{name}"), "creationTimestamp": "2026-11-30T09:20:00Z"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": 9080}],
                     "rules": [{"backendRefs": [{"name": backend, "port": 9080}]}]},
        })
    };
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [
            {"type": "ADDED", "object": route("productpage", "productpage", "productpage")},
            {"type": "ADDED", "object": route("to-nowhere", "reviews", "details")},
        ]}),
    )
    .await;
    let want = |productpage: [&str; 2], nowhere: [&str; 2]| {
        std::collections::BTreeMap::from([
            (
                "productpage".to_string(),
                productpage.map(String::from).to_vec(),
            ),
            ("to-nowhere".to_string(), nowhere.map(String::from).to_vec()),
        ])
    };
    let accepted = ["Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"];
    let not_found = [
        "Accepted=False/UnsupportedValue",
        "ResolvedRefs=False/BackendNotFound",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = route_conditions(&api).await;
    while got != want(accepted, not_found) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        got = route_conditions(&api).await;
    }
    assert_eq!(got, want(accepted, not_found));
    let writers = status_writers(&log);
    assert!(
        !writers.is_empty() && writers.iter().all(|w| *w == id_first),
        "{writers:?}"
    );

    // The leader dies without letting go: the other takes the Lease over once it has seen it
    // unrenewed for the lease's 2 s, and writes the next change's status.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lease_holder(&api).await.as_deref() != Some(id_second.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the second replica did not take over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut changed = route("productpage", "productpage", "details");
    changed["metadata"]["generation"] = 2.into();
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [{"type": "MODIFIED", "object": changed}]}),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = route_conditions(&api).await;
    while got != want(not_found, not_found) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        got = route_conditions(&api).await;
    }
    assert_eq!(got, want(not_found, not_found));
    let later: Vec<String> = status_writers(&log).split_off(writers.len());
    assert!(
        !later.is_empty() && later.iter().all(|w| *w == id_second),
        "{later:?}"
    );
    drop(second);
}

/// The control plane `weft install --kubernetes` deploys, started with its Deployment's own
/// arguments and environment (its listeners on loopback, the stand-in as its API server): it
/// becomes ready serving the cluster, holds the Lease under its pod's name, keeps the CA's
/// root in the Secret, and writes the webhook's caBundle and the roots' ConfigMaps.
#[test]
fn the_installed_deployment_starts_a_control_plane_that_serves_the_cluster() {
    let (code, out, err) = weft_with(&["install", "--kubernetes"], None);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect();
    let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap().clone();
    let container = of("Deployment")["spec"]["template"]["spec"]["containers"][0].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut stand_in_args: Vec<std::ffi::OsString> = vec![
        "--cluster".into(),
        testdata().join("cluster/bookinfo.json").into(),
    ];
    for kind in ["MutatingWebhookConfiguration", "Namespace"] {
        let f = dir.path().join(format!("{kind}.json"));
        std::fs::write(&f, of(kind).to_string()).unwrap();
        stand_in_args.push("--object".into());
        stand_in_args.push(f.into());
    }
    let log = dir.path().join("api.log");
    stand_in_args.push("--log".into());
    stand_in_args.push(log.clone().into());
    let refs: Vec<&std::ffi::OsStr> = stand_in_args.iter().map(|a| a.as_os_str()).collect();
    let (_api_server, api) = api_stand_in(dir.path(), &refs);
    // Its arguments as the Deployment gives them, listening on loopback ports of its own.
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a.starts_with("0.0.0.0:") {
                "127.0.0.1:0".to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    assert_eq!(args[..2], ["control", "--kubernetes"]);
    let mut cmd = Command::new(WEFT);
    cmd.args(&args).args(["--kubernetes-api", &api]);
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match name {
            "WEFT_POD_NAME" => "weft-control-7c9d8f6b5-x4k2p".to_string(),
            "WEFT_POD_NAMESPACE" => "weft-system".to_string(),
            "WEFT_HOME" => dir.path().join("home").display().to_string(),
            other => panic!("an environment variable the test does not know: {other}"),
        };
        cmd.env(name, value);
    }
    let (_control, line) = until_ready(cmd);
    assert!(line.contains("injection webhook on https://"), "{line}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(lease_holder(&api)).as_deref(),
        Some("weft-control-7c9d8f6b5-x4k2p")
    );
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let wrote = |key: &str, path: &str| logged.iter().any(|l| l[key] == path);
    assert!(wrote(
        "post",
        "/api/v1/namespaces/weft-system/secrets/weft-ca"
    ));
    assert!(wrote(
        "put",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-sidecar-injector"
    ));
    for ns in ["weft-system", "bookinfo", "legacy"] {
        assert!(
            wrote(
                "post",
                &format!("/api/v1/namespaces/{ns}/configmaps/weft-ca-root")
            ),
            "the roots' ConfigMap in {ns}"
        );
    }
}

/// A rollout on a cluster: the recorded reviews pods at loopback addresses (127.0.0.2 and
/// 127.0.0.3, each with a real sidecar at port 15006 in front of an echo app), a client proxy
/// sending to reviews, and a `kind: Canary` added to the cluster: the control plane's canary
/// controller moves the weights by writing the VirtualService in the cluster (PUT with the
/// resourceVersion it saw), the watch brings each write back, and the rollout ends with every
/// request to v2.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_on_a_cluster_moves_the_weights_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    // The recorded cluster with the reviews pods and endpoints at loopback addresses.
    let mut list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("cluster/bookinfo.json")).unwrap(),
    )
    .unwrap();
    let loopback = [("10.244.1.11", "127.0.0.2"), ("10.244.1.12", "127.0.0.3")];
    let mut text = list.to_string();
    for (from, to) in loopback {
        text = text.replace(from, to);
    }
    list = serde_json::from_str(&text).unwrap();
    let cluster = dir.path().join("cluster.json");
    std::fs::write(&cluster, list.to_string()).unwrap();
    let log = dir.path().join("api.log");
    let (_api_server, api) = api_stand_in(
        dir.path(),
        &[
            "--cluster".as_ref(),
            cluster.as_os_str(),
            "--log".as_ref(),
            log.as_os_str(),
        ],
    );
    let (_control, words) = weft_control_of(
        dir.path(),
        &["--kubernetes", "--kubernetes-api", &api, "--no-mtls"],
        None,
        &["connect to ", "API on http://"],
    );
    let grpc = words[0].clone();
    let mut keep = Vec::new();
    for (version, pod, ip) in [
        ("v1", "reviews-v1-6f8d8c9d7b-q8wzt", "127.0.0.2"),
        ("v2", "reviews-v2-5c7b7f6d9-lm4cx", "127.0.0.3"),
    ] {
        let port = free_port();
        keep.push(Reaped(
            Command::new(WEFT)
                .args(["demo", "echo", "--service", "reviews", "--version", version])
                .args(["--port", &port.to_string()])
                .env("WEFT_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        ));
        let args = [
            "proxy",
            "--mode",
            "sidecar",
            "--control",
            &grpc,
            "--service",
            "reviews",
            "--namespace",
            "bookinfo",
            "--workload",
            &format!("reviews-{version}"),
            "--instance",
            pod,
            "--label",
            "app=reviews",
            "--label",
            &format!("version={version}"),
            "--inbound",
            &format!("{ip}:15006"),
            "--admin",
            "127.0.0.1:0",
            "--app",
            &format!("127.0.0.1:{port}"),
        ];
        keep.push(started(&args).0);
    }
    let (_client, bound) = productpage_client(&grpc);
    let outbound: std::net::SocketAddr = bound["outbound"].as_str().unwrap().parse().unwrap();
    let admin: std::net::SocketAddr = bound["admin"].as_str().unwrap().parse().unwrap();
    // The client proxy knows reviews' two endpoints before any request is sent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let config = get(&client(), admin, "admin", "/config")
            .await
            .unwrap()
            .body;
        if config["snapshot"]["services"].is_array()
            && snapshot_endpoints(&config, "reviews").len() == 2
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client proxy has no reviews endpoints"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Requests to reviews through the client proxy until the rollout is over (at most 60 s);
    // which version answered each, counted after the rollout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = client();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut answered = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                if let Ok(r) = get(&c, outbound, "reviews.bookinfo:9080", "/").await {
                    answered.push((
                        r.status,
                        r.body["version"].as_str().unwrap_or("").to_string(),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            answered
        })
    };
    let canary = serde_json::json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "uid": "9e1c0a4e-canary",
                     "creationTimestamp": "2026-11-30T10:00:00Z", "generation": 1},
        "spec": {"service": "reviews", "from": "v1", "to": "v2", "steps": [50, 100],
                 "interval": "1s", "analysis": {"minRequests": 5, "maxErrorRate": "5%", "maxP99": "0s"}},
    });
    stand_in(
        &api,
        "/_test/events",
        serde_json::json!({"events": [{"type": "ADDED", "object": canary}]}),
    )
    .await;
    // The VirtualService in the cluster, as the controller writes it.
    let addr = api_addr(&api);
    let vs_path = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/reviews";
    let weights = || async move {
        let vs = get(&client(), addr, "apiserver", vs_path)
            .await
            .unwrap()
            .body;
        vs["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["route"].as_array().cloned().unwrap_or_default())
            .map(|d| {
                format!(
                    "{}={}",
                    d["destination"]["subset"].as_str().unwrap_or("-"),
                    d["weight"]
                )
            })
            .collect::<Vec<String>>()
    };
    let mut seen: Vec<Vec<String>> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    loop {
        let w = weights().await;
        if seen.last() != Some(&w) {
            seen.push(w.clone());
        }
        if w.iter().any(|x| x.ends_with("=100"))
            && w.iter().any(|x| x.contains("v2"))
            && w.contains(&"v2=100".to_string())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout did not finish: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Through 50/50 to 100% v2, each move a write to the cluster by the control plane.
    assert!(
        seen.iter().any(|w| w.contains(&"v2=50".to_string())),
        "{seen:?}"
    );
    let puts = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("\"put\": \"{vs_path}\"")))
        .count();
    assert!(puts >= 2, "{puts} writes of the VirtualService");
    // The proxies run the last move: the client proxy's snapshot sends everything to v2.
    let c = client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let config = get(&c, admin, "admin", "/config").await.unwrap().body;
        let w = snapshot_weights(&config, "reviews");
        if w.contains(&"v2=100".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy's weights: {w:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = load.await.unwrap();
    assert!(
        answered.iter().all(|(status, _)| *status == 200),
        "a request failed during the rollout"
    );
    let v2 = answered.iter().filter(|(_, v)| v == "v2").count();
    assert!(
        v2 > 0 && answered.len() > 50,
        "{} answers, {v2} from v2",
        answered.len()
    );
    let status = weft_in(
        dir.path(),
        &[
            "canary",
            "status",
            "reviews",
            "--namespace",
            "bookinfo",
            "-o",
            "json",
        ],
    );
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(out.contains("succeeded"), "{out}");
}

/// A control plane whose Kubernetes API is not there yet serves no proxy (it is not ready, so
/// proxies keep what they run and go to another replica) rather than a mesh without the
/// cluster in it; once the API answers, it lists, compiles and becomes ready, and the first
/// snapshot a proxy gets is the cluster's.
#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_is_ready_only_once_the_cluster_is_listed() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let mut control = Reaped(
        Command::new(WEFT)
            .args(["control", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .args(["--kubernetes", "--kubernetes-api", &api, "--no-mtls"])
            .env("WEFT_HOME", dir.path())
            .env("WEFT_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (lines, said) = std::sync::mpsc::channel::<(bool, String)>();
    for (is_out, stream) in [
        (
            true,
            Box::new(control.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        ),
        (false, Box::new(control.stderr.take().unwrap())),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send((is_out, line));
            }
        });
    }
    // It tried the API and failed (its watches say so)…
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (is_out, line) = said
            .recv_timeout(left)
            .expect("no word from the control plane");
        before.push(line.clone());
        if !is_out && line.contains("watch failed") {
            break;
        }
    }
    // …and said nothing of being ready.
    assert!(!before.iter().any(|l| l.contains("ready")), "{before:?}");
    // The API server comes up on that port: the control plane lists, compiles, is ready.
    let (_api_server, _) = api_stand_in(
        dir.path(),
        &[
            "--cluster".as_ref(),
            testdata().join("cluster/bookinfo.json").as_os_str(),
            "--port".as_ref(),
            port.to_string().as_ref(),
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (is_out, line) = said
            .recv_timeout(left)
            .expect("not ready after the API came up");
        if is_out && line.contains("ready") {
            break line;
        }
    };
    let grpc = word_after(&ready, "connect to ");
    let (_proxy, bound) = productpage_client(&grpc);
    let admin: std::net::SocketAddr = bound["admin"].as_str().unwrap().parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let first = loop {
        let config = get(&client(), admin, "admin", "/config")
            .await
            .unwrap()
            .body;
        // The first snapshot from the control plane (before it, the proxy has none).
        if config["snapshot_source"] == "control" {
            break config;
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        snapshot_endpoints(&first, "reviews").len(),
        2,
        "the first snapshot is the cluster's: {}",
        first["snapshot"]
    );
    assert_eq!(snapshot_weights(&first, "reviews"), ["v1=80", "v2=20"]);
}
