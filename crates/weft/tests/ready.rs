//! "Ready" means routable: once `weft up` prints its ready line (read as scripts read it, with
//! the log on the same stream) or `weft status --wait` returns, the first request through the
//! ingress, the first call from one sidecar to another and the first call of a `weft exec`
//! client are all routed; `weft status` calls a replica ready only when every proxy routes to
//! it, also after its sidecar was killed and restarted, and never while another process holds
//! its app's port.

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many times the mesh is started, and how many start at once (a loaded machine is where
/// a readiness race shows).
const STARTS: usize = 30;
const AT_ONCE: usize = 3;
/// The whole loop's bound.
const LOOP_LIMIT: Duration = Duration::from_secs(600);

/// The 3-service mesh: `front` calls `back` (2 replicas) through its sidecar; `third` stands
/// beside them.
fn three_services(name: &str) -> String {
    mesh_yaml(name, &[("front", 1, ""), ("back", 2, ""), ("third", 1, "")])
}

/// The first requests after ready to the mesh running in `home` whose status (read right after
/// ready) is `status`: how many of the ingress's and sidecar-to-sidecar ones were routed, and
/// one line per failure.
fn first_requests(home: &Path, status: &Value) -> (usize, Vec<String>) {
    let ingress: SocketAddr = status["ingress"].as_str().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut ok = 0;
    rt.block_on(async {
        let c = client();
        // Through the ingress, straight to a service.
        match get(&c, ingress, "third", "/").await {
            Ok(r) if r.status == 200 && r.body["service"] == "third" => ok += 1,
            other => failures.push(format!("ingress → third: {other:?}")),
        }
        // Sidecar to sidecar: front's app calls back through its sidecar.
        match get(&c, ingress, "front", "/fetch?url=http://back/").await {
            Ok(r) if r.status == 200 && r.body["downstream"]["status"] == 200 => ok += 1,
            other => failures.push(format!("front → back: {other:?}")),
        }
    });
    // A `weft exec` client: its command runs once its own proxy can route.
    let script = "import sys,urllib.request\n\
                  try: r = urllib.request.urlopen('http://back/'); print(r.status)\n\
                  except Exception as e: print(e); sys.exit(1)";
    let out = weft_in(
        home,
        &["exec", "--service", "front", "--", "python3", "-c", script],
    );
    if !out.status.success() {
        failures.push(format!(
            "weft exec → back: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // And status, read right after ready, says every replica is ready.
    for w in status["workloads"].as_array().unwrap() {
        if w["ready"] != Value::Bool(true) {
            failures.push(format!("status right after ready: {w}"));
        }
    }
    (ok, failures)
}

#[test]
fn the_first_requests_after_ready_are_routed_every_start() {
    let started = Instant::now();
    let mut ok = 0;
    let mut failures = Vec::new();
    let mut starts = 0;
    while starts < STARTS {
        assert!(
            started.elapsed() < LOOP_LIMIT,
            "{starts} starts took {:?}",
            started.elapsed()
        );
        let batch: Vec<_> = (0..AT_ONCE.min(STARTS - starts))
            .map(|i| {
                let name = format!("ready{}", starts + i);
                std::thread::spawn(move || {
                    let mesh = Mesh::up_as_script(&three_services(&name));
                    let (ok, mut failures) = first_requests(&mesh.home, &mesh.status);
                    if !mesh.ready_line.contains(&format!("mesh {name} is ready")) {
                        failures.push(format!(
                            "the first line saying ready is not weft's: {}",
                            mesh.ready_line
                        ));
                    }
                    let stderr = if failures.is_empty() {
                        String::new()
                    } else {
                        mesh.stderr()
                    };
                    (name, ok, failures, stderr)
                })
            })
            .collect();
        for t in batch {
            let (name, n, f, stderr) = t.join().unwrap();
            ok += n;
            if !f.is_empty() {
                failures.push(format!("{name}:\n  {}\n{stderr}", f.join("\n  ")));
            }
            starts += 1;
        }
    }
    eprintln!(
        "{STARTS} starts in {:?}: {ok}/{} first requests routed (ingress and sidecar to sidecar)",
        started.elapsed(),
        2 * STARTS
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(ok, 2 * STARTS);
}

/// Whether `config` lists `instance` of `service` at `inbound`.
fn lists(config: &Value, service: &str, instance: &str, inbound: &str) -> bool {
    config["snapshot"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["key"]["name"] == service)
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .any(|e| e["instance"] == instance && e["address"] == inbound)
}

/// A sidecar killed with SIGKILL is restarted; its replica is reported ready again only once
/// every proxy (the ingress, every sidecar, its own) lists it in the snapshot it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sidecar_is_ready_only_when_every_proxy_routes_to_it() {
    let mesh = Mesh::up(&three_services("restart"));
    let c = client();
    let victim = workload(&mesh.status, "back-v1-0");
    let (pid, inbound) = (
        victim["pid"].as_u64().unwrap(),
        victim["inbound"].as_str().unwrap().to_string(),
    );
    for (who, config) in from_every_proxy(&c, &mesh.status, "/config").await {
        assert!(lists(&config, "back", "back-v1-0", &inbound), "{who}");
    }
    // Two clients call back through the ingress the whole time (bounded: 60 s at most).
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<(Instant, Result<String, String>)>::new()));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (c, stop, log, ingress) = (c.clone(), stop.clone(), log.clone(), mesh.ingress);
            tokio::spawn(async move {
                let end = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let r = match get(&c, ingress, "back", "/").await {
                        Ok(r) if r.status == 200 => Ok(r.body["instance"].to_string()),
                        Ok(r) => Err(format!("{} {:?} {}", r.status, r.flag, r.text)),
                        Err(e) => Err(format!("{e:?}")),
                    };
                    log.lock().unwrap().push((Instant::now(), r));
                }
            })
        })
        .collect();
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Status is the readiness signal: poll it until the restarted sidecar's replica is ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_not_ready = None;
    let status = loop {
        let st = tokio::task::block_in_place(|| mesh.status_json(Some("restart")));
        let w = workload(&st, "back-v1-0");
        let restarted = w["pid"].as_u64().is_some_and(|p| p != pid && p != 0);
        if restarted && w["ready"] == Value::Bool(true) {
            break st;
        }
        if w["ready"] == Value::Bool(false) {
            seen_not_ready.get_or_insert_with(|| w.clone());
        }
        assert!(
            Instant::now() < deadline,
            "back-v1-0 is not ready again: {w}\n{}",
            mesh.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ready_again = Instant::now();
    eprintln!("while it restarted, status said: {seen_not_ready:?}");
    assert_eq!(workload(&status, "back-v1-0")["inbound"], inbound.as_str());
    // Ready means routable: every proxy runs a snapshot listing the restarted replica.
    for (who, config) in from_every_proxy(&c, &status, "/config").await {
        assert!(
            lists(&config, "back", "back-v1-0", &inbound),
            "{who} does not route to back-v1-0 although status says it is ready: {config}"
        );
    }
    // And the first calls to it from its peers are answered.
    let r = get(&c, mesh.ingress, "front", "/fetch?url=http://back/")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["downstream"]["status"], 200, "{}", r.text);
    // A little more load once it is back, then the tally.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let log = log.lock().unwrap();
    let failed: Vec<_> = log.iter().filter(|(_, r)| r.is_err()).collect();
    let after = log.iter().filter(|(t, _)| *t > ready_again).count();
    let back_after = log
        .iter()
        .filter(|(t, r)| *t > ready_again && r.as_deref() == Ok("\"back-v1-0\""))
        .count();
    eprintln!(
        "{} requests to back, {} failed; back-v1-0 ready again {:?} after the kill; {after} requests since, {back_after} answered by it",
        log.len(),
        failed.len(),
        ready_again - killed,
    );
    // Requests in flight through the killed sidecar may fail (at most one per client);
    // everything else is routed around it, and nothing fails once it is back.
    assert!(failed.len() <= 2, "{failed:?}");
    assert!(failed.iter().all(|(t, _)| *t < ready_again), "{failed:?}");
    let stderr = mesh.stderr();
    assert!(
        stderr.contains("back-v1-0 proxy exited"),
        "the crash was not reported:\n{stderr}"
    );
}

/// A script that starts `weft up` in the background and does not read its output waits with
/// `weft status --wait`; the first requests after it returns are routed.
#[test]
fn status_wait_returns_once_the_mesh_routes() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mesh.yaml");
    std::fs::write(&file, three_services("waited")).unwrap();
    // Nothing runs yet: --wait gives up after its timeout with exit status 3.
    let out = weft_in(
        home.path(),
        &["status", "--wait", "--timeout", "300ms", "--mesh", "waited"],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no mesh ready after"),
        "{out:?}"
    );
    let mut up = std::process::Command::new(WEFT)
        .args(["up", file.to_str().unwrap()])
        .env("WEFT_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = weft_in(
        home.path(),
        &["status", "--wait", "--timeout", "90s", "-o", "json"],
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let routed = out
        .status
        .success()
        .then(|| first_requests(home.path(), &status));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let stopped = wait_timeout(&mut up, Duration::from_secs(30));
    if stopped.is_none() {
        let _ = up.kill();
    }
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["pending"], serde_json::json!([]), "{status}");
    let (ok, failures) = routed.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(ok, 2);
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
}

/// Another process takes a replica's app port before the app binds it (here a listener the
/// app's own first start leaves behind, in a session of its own, listening once that start has
/// exited; in life any program that binds that port first): the app cannot start, and although
/// the port accepts connections the replica is never called ready — `weft up` gives up at its
/// ready timeout and says which process holds the port, rather than route the service to it.
#[test]
fn a_replica_whose_port_another_process_holds_is_never_ready() {
    let files = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mark = files.path().join("taken");
    let impostor_pid = files.path().join("impostor.pid");
    // An HTTP server on the app's port that answers as the service would. It waits until the
    // app's start that launched it has exited (so it was there before every later start of
    // the app), then listens and writes its process id.
    let impostor = format!(
        "import http.server,os,sys,time\n\
         def alive(p):\n\
         \x20 try: return open(f'/proc/{{p}}/stat').read().rsplit(')',1)[1].split()[0] != 'Z'\n\
         \x20 except OSError: return False\n\
         t=time.time()\n\
         while alive(int(sys.argv[1])) and time.time()-t < 30: time.sleep(0.01)\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20 def do_GET(self):\n\
         \x20   b=b'{{\"service\":\"taken\",\"impostor\":true}}'\n\
         \x20   self.send_response(200); self.send_header('content-length',str(len(b))); self.end_headers(); self.wfile.write(b)\n\
         s=http.server.HTTPServer(('127.0.0.1',int(os.environ['PORT'])),H)\n\
         open('{pid}.partial','w').write(str(os.getpid())); os.rename('{pid}.partial','{pid}')\n\
         s.serve_forever()",
        pid = impostor_pid.display()
    );
    std::fs::write(files.path().join("impostor.py"), impostor).unwrap();
    // The app's command: the first start leaves the impostor behind and fails; every later
    // start waits for the impostor to listen, then runs the real app, which finds its port
    // taken.
    let script = format!(
        "if [ ! -e {mark} ]; then touch {mark}; setsid python3 {py} $$ </dev/null >/dev/null 2>&1 & exit 1; fi\n\
         for i in $(seq 300); do [ -e {pid} ] && break; sleep 0.1; done\n\
         exec {weft} demo echo --service taken --version v1",
        mark = mark.display(),
        py = files.path().join("impostor.py").display(),
        pid = impostor_pid.display(),
        weft = WEFT,
    );
    let yaml = format!(
        "{}  - name: taken\n    port: 80\n    workloads:\n    - name: taken-v1\n      replicas: 1\n      command: [sh, -c, {script:?}]\n",
        mesh_yaml("portheld", &[("front", 1, "")])
    );
    let file = files.path().join("mesh.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut up = std::process::Command::new(WEFT)
        .args(["up", file.to_str().unwrap(), "--ready-timeout", "10s"])
        .env("WEFT_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_timeout(&mut up, Duration::from_secs(90));
    if exited.is_none() {
        let _ = up.kill();
    }
    let out = up.wait_with_output().unwrap();
    let impostor = std::fs::read_to_string(&impostor_pid).ok();
    if let Some(pid) = impostor
        .as_deref()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let impostor = impostor.expect("the impostor never listened");
    assert!(
        !stdout.contains("is ready") && !stderr.contains("mesh portheld is ready"),
        "a mesh whose replica's port another process holds was called ready:\n{stdout}\n{stderr}"
    );
    assert!(exited.is_some(), "weft up did not give up:\n{stderr}");
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let said = stderr
        .lines()
        .find(|l| l.contains("taken-v1-0:"))
        .unwrap_or_default();
    assert!(
        said.contains(&format!(
            "another process (pid {}, python3)",
            impostor.trim()
        )) && said.contains("not the app"),
        "the reason does not name the process holding the port:\n{stderr}"
    );
}
