//! The CLI as the README documents it, against one running mesh started the way a user starts
//! it (no `WEFT_HOME`: the default under `$XDG_RUNTIME_DIR`): `weft status` as a table, `apply
//! -f DIR` and `apply -f -`, `weft get` with and without a kind and a name, `weft routes
//! istio-ingressgateway` before and after an Istio Gateway, `exec --namespace`, the workload
//! environment (`WEFT_*`, `env:`), `lb: round-robin`, and `weft load`'s SLO exit codes.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// An app that answers every GET with the environment `weft up` gave it, as JSON.
const ENV_APP: &str = "import http.server,json,os\\nclass H(http.server.BaseHTTPRequestHandler):\\n  def do_GET(s):\\n    keys=['PORT','PORT_HTTP_WEB','PORT_METRICS','WEFT_SERVICE','WEFT_NAMESPACE','WEFT_WORKLOAD','WEFT_INSTANCE','GREETING','HTTP_PROXY']\\n    b=json.dumps({k:os.environ.get(k) for k in keys}).encode()\\n    s.send_response(200); s.send_header('content-type','application/json'); s.send_header('content-length',str(len(b))); s.end_headers(); s.wfile.write(b)\\n  def log_message(s,*a): pass\\nhttp.server.HTTPServer(('127.0.0.1',int(os.environ['PORT'])),H).serve_forever()";

fn mesh_file() -> String {
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: cli, namespace: default}}
spec:
  ingress: 127.0.0.1:0
  services:
  - name: hello
    port: 80
    lb: round-robin
    workloads:
    - name: hello-v1
      labels: {{app: hello, version: v1}}
      replicas: 2
      command: [weft, demo, echo, --service, hello, --version, v1]
  - name: envd
    namespace: shop
    ports:
    - {{port: 8080, name: http-web}}
    - {{port: 9000, name: metrics}}
    workloads:
    - name: envd-v1
      labels: {{app: envd}}
      env: {{GREETING: hi}}
      command: [python3, -c, "{ENV_APP}"]
"#
    )
}

const VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: default}
spec:
  hosts: [hello]
  http:
  - route: [{destination: {host: hello}}]
"#;

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["www.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: www, namespace: default}
spec:
  hosts: ["www.example.com"]
  gateways: [web]
  http:
  - route: [{destination: {host: hello}}]
"#;

/// `weft ARGS` with the user's environment: no `WEFT_HOME`, `XDG_RUNTIME_DIR` = `runtime`.
fn weft(runtime: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(WEFT)
        .args(args)
        .env_remove("WEFT_HOME")
        .env("XDG_RUNTIME_DIR", runtime)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weft");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops `weft up` (SIGTERM) when dropped.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if wait_timeout(&mut self.0, Duration::from_secs(30)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_as_documented() {
    let runtime = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mesh.yaml");
    std::fs::write(&file, mesh_file()).unwrap();
    let _up = Up(Command::new(WEFT)
        .args(["up", file.to_str().unwrap()])
        .env_remove("WEFT_HOME")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let run = |args: &[&str]| weft(runtime.path(), args, None);
    let status: Value = serde_json::from_str(&ok(tokio::task::block_in_place(|| {
        run(&["status", "--wait", "--timeout", "90s", "-o", "json"])
    })))
    .unwrap();
    // The default WEFT_HOME: the mesh is recorded under $XDG_RUNTIME_DIR/weft.
    assert!(
        runtime
            .path()
            .join("weft/meshes")
            .read_dir()
            .unwrap()
            .count()
            >= 1,
        "no record under {}",
        runtime.path().display()
    );
    let ingress: std::net::SocketAddr = status["ingress"].as_str().unwrap().parse().unwrap();
    let c = client();

    // `weft status` as a table: the mesh line, then one row per replica with its state.
    let table = ok(run(&["status"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("mesh cli ") && lines[0].ends_with(" ready"),
        "{table}"
    );
    let head = lines
        .iter()
        .position(|l| l.starts_with("SERVICE "))
        .unwrap_or_else(|| panic!("{table}"));
    let rows: Vec<Vec<&str>> = lines[head + 1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut instances: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    instances.sort();
    assert_eq!(
        instances,
        ["envd-v1-0", "hello-v1-0", "hello-v1-1"],
        "{table}"
    );
    assert!(rows.iter().all(|r| r[2] == "ready"), "{table}");

    // The workload's environment.
    let r = get(&c, ingress, "envd.shop:8080", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let port = workload(&status, "envd-v1-0")["app"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let outbound = workload(&status, "envd-v1-0")["outbound"]
        .as_str()
        .unwrap()
        .to_string();
    // Each named port as PORT_<NAME>: the first is PORT, the second a port of its own.
    let metrics_port = r.body["PORT_METRICS"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        metrics_port.parse::<u16>().is_ok() && metrics_port != port,
        "{}",
        r.body
    );
    assert_eq!(
        r.body,
        serde_json::json!({
            "PORT": port,
            "PORT_HTTP_WEB": port,
            "PORT_METRICS": metrics_port,
            "WEFT_SERVICE": "envd",
            "WEFT_NAMESPACE": "shop",
            "WEFT_WORKLOAD": "envd-v1",
            "WEFT_INSTANCE": "envd-v1-0",
            "GREETING": "hi",
            "HTTP_PROXY": format!("http://{outbound}"),
        })
    );

    // lb: round-robin: one client's requests alternate between the two replicas.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let r = get(&c, ingress, "hello", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        seen.push(r.body["instance"].as_str().unwrap().to_string());
    }
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");

    // apply -f DIR, and -f - from stdin; get lists both with their sources.
    let dir = files.path().join("routes");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("vs.yaml"), VS).unwrap();
    let out = ok(run(&["apply", "-f", dir.to_str().unwrap()]));
    assert!(
        out.contains("VirtualService default/hello configured") && out.contains("applied by all 4"),
        "{out}"
    );
    let piped = VS
        .replace(
            "{name: hello, namespace: default}",
            "{name: envd, namespace: shop}",
        )
        .replace("hosts: [hello]", "hosts: [envd]")
        .replace("host: hello}", "host: envd}");
    let out = ok(weft(runtime.path(), &["apply", "-f", "-"], Some(&piped)));
    assert!(out.contains("VirtualService shop/envd configured"), "{out}");
    let all = ok(run(&["get"]));
    let mut kinds: Vec<(String, String, String)> = all
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(c[3], "applied", "{l}");
            let source = c[4].rsplit('/').next().unwrap();
            (c[0].into(), c[1].into(), source.into())
        })
        .collect();
    kinds.sort();
    let want = [
        ("Mesh", "default/cli", "mesh.yaml:1"),
        ("VirtualService", "default/hello", "vs.yaml:1"),
        ("VirtualService", "shop/envd", "<stdin>:1"),
    ]
    .map(|(k, n, f)| (k.to_string(), n.to_string(), f.to_string()));
    assert_eq!(kinds, want, "{all}");
    let one = ok(run(&["get", "virtualservice", "envd"]));
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(one.lines().nth(1).unwrap().contains("shop/envd"), "{one}");
    let none = run(&["get", "virtualservice", "nope"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no resources found"));

    // The ingress's routes: by service name until a Gateway binds a host.
    let routes = ok(run(&["routes", "istio-ingressgateway"]));
    assert!(
        routes.contains("0 virtual hosts") && routes.contains("routed by service name"),
        "{routes}"
    );
    let out = ok(weft(runtime.path(), &["apply", "-f", "-"], Some(GATEWAY)));
    assert!(out.contains("Gateway default/web configured"), "{out}");
    let routes = ok(run(&["routes", "istio-ingressgateway"]));
    assert!(
        routes.contains("1 virtual host") && routes.contains("www.example.com"),
        "{routes}"
    );
    let r = get(&c, ingress, "www.example.com", "/x").await.unwrap();
    assert_eq!((r.status, &r.body["service"]), (200, &Value::from("hello")));

    // exec --namespace: a client in shop calls a service of default by its namespaced name.
    let script = "import json,urllib.request; b=json.load(urllib.request.urlopen('http://hello.default/')); print(b['headers']['x-weft-client'])";
    let out = ok(tokio::task::block_in_place(|| {
        run(&[
            "exec",
            "--service",
            "envd",
            "--namespace",
            "shop",
            "--",
            "python3",
            "-c",
            script,
        ])
    }));
    assert_eq!(out.trim(), "spiffe://cluster.local/ns/shop/sa/envd");

    // weft load's SLO gates: exit 0 when met, 3 when missed.
    let app = workload(&status, "hello-v1-0")["app"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{app}/");
    let load = |extra: &[&str]| {
        let mut args = vec!["load", url.as_str(), "--requests", "200"];
        args.extend_from_slice(extra);
        tokio::task::block_in_place(|| run(&args)).status.code()
    };
    assert_eq!(
        load(&["--max-p99", "10s", "--min-success", "100%"]),
        Some(0)
    );
    // Every answer takes 5 ms: a 1 ms p99 gate is missed.
    let slow = format!("http://{app}/?delay=5ms");
    let code = tokio::task::block_in_place(|| {
        run(&["load", &slow, "--requests", "100", "--max-p99", "1ms"])
    })
    .status
    .code();
    assert_eq!(code, Some(3));
    let failing = format!("http://{app}/?status=503");
    let code = tokio::task::block_in_place(|| {
        run(&[
            "load",
            &failing,
            "--requests",
            "200",
            "--min-success",
            "99%",
        ])
    })
    .status
    .code();
    assert_eq!(code, Some(3));
}

/// Ctrl-C (SIGINT to `weft up`) stops the mesh in order: the ingress drains and exits first,
/// then the sidecars, then the apps, each told in turn (their own logs' timestamps say when).
#[test]
fn ctrl_c_stops_the_ingress_then_the_sidecars_then_the_apps() {
    let mut mesh = Mesh::up_logging(&mesh_yaml("ctrlc", &[("a", 1, ""), ("b", 2, "")]), "info");
    nix::sys::signal::kill(mesh.pid(), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_timeout(&mut mesh.child, Duration::from_secs(60)).expect("weft up exited");
    assert!(status.success(), "{status}\n{}", mesh.stderr());
    let log = mesh.stderr();
    // When each process was told to stop: "[NAME] TIMESTAMP  INFO signal received; draining".
    let told = |name: &str| -> String {
        log.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(&format!("[{name}] "))?;
                rest.contains("signal received; draining")
                    .then(|| rest.split_whitespace().next().unwrap().to_string())
            })
            .unwrap_or_else(|| panic!("{name} was never told to stop:\n{log}"))
    };
    let ingress = told("ingress");
    let sidecars: Vec<String> = ["a-v1-0", "b-v1-0", "b-v1-1"]
        .iter()
        .map(|i| told(&format!("{i} proxy")))
        .collect();
    let apps: Vec<String> = ["a-v1-0", "b-v1-0", "b-v1-1"]
        .iter()
        .map(|i| told(i))
        .collect();
    // RFC 3339 with a fixed number of digits: the strings order as the times do.
    assert!(
        sidecars
            .iter()
            .all(|s| s.len() == ingress.len() && *s > ingress),
        "ingress {ingress}, sidecars {sidecars:?}"
    );
    let last_sidecar = sidecars.iter().max().unwrap();
    assert!(
        apps.iter().all(|a| a > last_sidecar),
        "sidecars {sidecars:?}, apps {apps:?}"
    );
    assert!(log.contains("weft: mesh stopped"), "{log}");
}

/// `weft bench`, one short round without Envoy: the JSON document scripts read (`weft.bench/v1`)
/// with both paths measured, nothing failed, the fixed rate achieved, and the proxies' CPU and
/// memory read; by default the TCP paths too, under their own fields (see
/// [`check_tcp_paths`]). (Speed itself is for the benchmark to report, not for a test to assert.)
#[test]
fn bench_runs_a_short_round_and_reports_every_path() {
    let out = Command::new(WEFT)
        .args([
            "bench",
            "--envoy",
            "none",
            "--rates",
            "200",
            "--step",
            "500ms",
            "--peak",
            "500ms",
            "--rounds",
            "1",
            "--connections",
            "4",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["schema"], "weft.bench/v1");
    assert_eq!(doc["rounds"], 1);
    assert_eq!(doc["weft_vs_envoy"], Value::Null, "no Envoy ran");
    let paths = doc["paths"].as_array().unwrap();
    let names: Vec<&str> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["direct", "weft"], "{doc}");
    for p in paths {
        assert!(p["peak_rps"].as_f64().unwrap() > 0.0, "{p}");
        assert_eq!(p["peak_failed"], 0, "{p}");
        let step = &p["rates"][0];
        assert_eq!(
            (step["rate"].as_f64(), &step["failed"]),
            (Some(200.0), &Value::from(0))
        );
        let achieved = step["achieved_rps"].as_f64().unwrap();
        // Requests over the time until the last answer: a slow last answer on a loaded machine
        // lowers it; a wrong pacer would be far off.
        assert!((120.0..=220.0).contains(&achieved), "{p}");
        assert!(step["p50_us"].as_f64().unwrap() <= step["p99_us"].as_f64().unwrap());
        // Round by round too; with one round, its figures are the medians.
        assert_eq!(p["peak_rounds"].as_array().map(Vec::len), Some(1), "{p}");
        assert_eq!(p["peak_rounds"][0]["rps"], p["peak_rps"], "{p}");
        assert_eq!(step["rounds"][0]["p50_us"], step["p50_us"], "{p}");
        // The app the benchmark started is measured on every path that ends at it: each
        // request costs it some CPU, the floor beside which the proxies' is read.
        for v in [
            &p["peak_app_cpu_us_per_request"],
            &step["app_cpu_us_per_request"],
            &step["rounds"][0]["app_cpu_us_per_request"],
            &step["app_slices_per_request"],
        ] {
            assert!(v.as_f64().is_some_and(|v| v > 0.0), "{p}");
        }
    }
    let weft = &paths[1];
    assert_eq!(weft["proxies"], 2);
    // The proxies' wakes per request (time slices), beside their CPU.
    assert!(
        weft["rates"][0]["slices_per_request"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{weft}"
    );
    assert_eq!(paths[0]["rates"][0]["slices_per_request"], Value::Null);
    for field in ["peak_cpu_us_per_request", "rss_idle_kib", "rss_load_kib"] {
        assert!(
            weft[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {weft}"
        );
    }
    // An idle proxy may well spend nothing measurable.
    assert!(
        weft["idle_cpu_ms_per_s"].as_f64().is_some_and(|v| v >= 0.0),
        "{weft}"
    );
    assert!(
        weft["rates"][0]["added_p50_us"].as_f64().is_some(),
        "{weft}"
    );
    check_tcp_paths(&doc);
}

/// The TCP paths of a `weft bench` run without Envoy: `tcp-direct` and `tcp-weft` echoed bytes
/// in both kinds of step with no failed connection (every chunk came back intact and every
/// half-close was answered with a close, through weft's tunnel too), and weft's two proxies'
/// CPU per MiB and memory were read.
fn check_tcp_paths(doc: &Value) {
    let tcp = doc["tcp_paths"].as_array().unwrap();
    let names: Vec<&str> = tcp.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tcp-direct", "tcp-weft"], "{doc}");
    assert_eq!(doc["tcp_ping_bytes"], 64);
    for p in tcp {
        for field in ["throughput_mib_s", "ping_messages_per_s", "ping_p50_us"] {
            let s = &p[field];
            assert!(
                s["median"].as_f64().is_some_and(|v| v > 0.0),
                "{field}: {p}"
            );
            assert!(
                s["min"].as_f64().unwrap() <= s["max"].as_f64().unwrap(),
                "{field}: {p}"
            );
        }
        assert_eq!(
            (&p["failed"], &p["ping_failed"]),
            (&Value::from(0), &Value::from(0)),
            "{p}"
        );
    }
    let weft = &tcp[1];
    assert_eq!(weft["proxies"], 2);
    assert!(
        weft["cpu_us_per_mib"]["median"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{weft}"
    );
    assert!(
        weft["rss_load_kib"].as_u64().is_some_and(|v| v > 0),
        "{weft}"
    );
    assert!(
        weft["ping_added_p50_us"]["median"].as_f64().is_some(),
        "{weft}"
    );
    assert_eq!(
        tcp[0]["cpu_us_per_mib"],
        Value::Null,
        "no proxies on the direct path"
    );
}

/// `weft bench --protocol tcp`: only the TCP paths run (no HTTP path, no HTTP app), with the
/// chunk size asked for.
#[test]
fn bench_runs_the_tcp_paths_alone() {
    let out = Command::new(WEFT)
        .args([
            "bench",
            "--envoy",
            "none",
            "--protocol",
            "tcp",
            "--tcp-chunk",
            "64KiB",
            "--step",
            "500ms",
            "--peak",
            "500ms",
            "--rounds",
            "2",
            "--connections",
            "4",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["schema"], "weft.bench/v1");
    assert_eq!(doc["paths"], Value::Array(vec![]), "{doc}");
    assert_eq!(doc["tcp_chunk_bytes"], 64 * 1024);
    check_tcp_paths(&doc);
}

/// `weft bench --transparent` measures the same two hops with each side in a pod of a
/// transparent mesh, the load captured in the client pod: every request answered, the ratios
/// to the explicit paths (the benchmark's own proxies, and a `weft up` mesh on loopback)
/// reported, and the pods gone afterwards. Needs root (CI runs as root).
#[test]
fn bench_runs_the_transparent_path() {
    if !common::pods::can_run_pods() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(WEFT)
        .args([
            "bench",
            "--envoy",
            "none",
            "--protocol",
            "http",
            "--transparent",
            "--rates",
            "200",
            "--step",
            "500ms",
            "--peak",
            "500ms",
            "--rounds",
            "1",
            "--connections",
            "4",
            "-o",
            "json",
        ])
        .env("WEFT_HOME", home.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    let named = |name: &str| {
        doc["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} path: {doc}"))
            .clone()
    };
    // The pods' network with no mesh: the transparent path's added latency counts from it.
    let base = named("pods-direct");
    assert_eq!(base["proxies"], 0, "{base}");
    assert_eq!(base["rates"][0]["failed"], 0, "{base}");
    assert!(base["rates"][0]["added_p50_us"].is_null(), "{base}");
    let path = named("weft-transparent");
    assert!(path["rates"][0]["added_p50_us"].is_f64(), "{path}");
    assert_eq!(named("weft-pods-explicit")["rates"][0]["failed"], 0);
    // The same services in a weft up mesh on loopback: the like-for-like explicit path.
    let proxy_env = named("weft-proxy-env");
    assert_eq!(proxy_env["proxies"], 2, "{proxy_env}");
    assert_eq!(proxy_env["rates"][0]["failed"], 0, "{proxy_env}");
    assert_eq!(proxy_env["peak_failed"], 0, "{proxy_env}");
    assert!(
        proxy_env["rates"][0]["added_p50_us"].is_f64(),
        "{proxy_env}"
    );
    assert_eq!(path["proxies"], 2);
    assert_eq!(path["peak_failed"], 0, "{path}");
    assert_eq!(path["rates"][0]["failed"], 0, "{path}");
    assert!(path["peak_rps"].as_f64().unwrap() > 0.0, "{path}");
    let ratios = &doc["transparent_vs_explicit"];
    assert!(
        ratios["peak_cpu_per_request"].as_f64().is_some(),
        "{ratios}"
    );
    assert!(
        ratios["proxy_env"]["peak_cpu_per_request"]
            .as_f64()
            .is_some(),
        "{ratios}"
    );
    let left = common::pods::sh(&["ip", "netns", "list"]);
    assert!(
        !left.contains("weft-bench-pods"),
        "pods left behind: {left}"
    );
}

/// `weft check` says per port which protocol weft assumed and why: an explicit `protocol`, an
/// Istio port name prefix, `appProtocol`, Linkerd's opaque-ports annotation, or the default.
#[test]
fn check_explains_each_ports_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: ports}
spec:
  services:
  - {name: a, port: 80, protocol: grpc}
  - name: b
    ports:
    - {port: 8080, name: http-web}
    - {port: 9090, name: grpc-api}
    - {port: 9091, name: admin, appProtocol: kubernetes.io/h2c}
    - {port: 6379, name: cache}
    annotations: {config.linkerd.io/opaque-ports: "6379"}
  - {name: c, port: 5000}
"#,
    )
    .unwrap();
    let out = ok(weft(dir.path(), &["check", file.to_str().unwrap()], None));
    let ports: Vec<&str> = out.lines().filter(|l| l.starts_with("port: ")).collect();
    assert_eq!(
        ports,
        [
            "port: default/a 80: grpc, from protocol: grpc",
            "port: default/b 8080 (http-web): http, from port name prefix http-",
            "port: default/b 9090 (grpc-api): grpc, from port name prefix grpc-",
            "port: default/b 9091 (admin): http2, from appProtocol: kubernetes.io/h2c",
            "port: default/b 6379 (cache): tcp, from annotation config.linkerd.io/opaque-ports",
            "port: default/c 5000: http, the default",
        ],
        "{out}"
    );
}
