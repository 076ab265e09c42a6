//! Short-lived jobs in `weft up`: a workload's `restartPolicy` (Always, OnFailure, Never) says
//! whether its app is started again when it exits; once a job's app has finished for good its
//! sidecar is drained and stopped (its pod removed, in a transparent mesh), `weft status`
//! shows the replica `completed` or `failed`, and the mesh does not wait for it. Real
//! processes: the jobs are `sh -c` scripts that call a service of the mesh with curl.

mod common;

use common::pods::can_run_pods;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A mesh with `web` (an echo replica) and, after it, the `extra` services (YAML list items).
fn yaml(name: &str, interception: &str, extra: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {{name: {name}}}
spec:
  ingress: 127.0.0.1:0
  interception: {interception}
  services:
  - name: web
    port: 80
    workloads:
    - {{name: web-v1, command: [weft, demo, echo, --service, web]}}
{extra}"
    )
}

/// A service `name` whose one workload `name` runs `script` with `sh -c` under `policy`, with
/// `OUT` set to `out`.
fn job(name: &str, policy: &str, out: &Path, script: &str) -> String {
    format!(
        "  - name: {name}
    port: 80
    workloads:
    - name: {name}
      restartPolicy: {policy}
      env: {{OUT: '{out}'}}
      command: [sh, -c, '{script}']
",
        out = out.display()
    )
}

/// One call to `web` through the mesh (retried while `web` is not routable yet), its body
/// appended to `$OUT`; the script's exit status is curl's.
const CALL_WEB: &str =
    "curl -sS -f --retry 20 --retry-delay 1 --retry-all-errors http://web/job >> \"$OUT\"; echo >> \"$OUT\"";

/// The processes `weft up` runs whose command line mentions `instance` (its sidecar and its
/// app), by pid; zombies not counted.
fn processes_of(mesh: &Mesh, instance: &str) -> Vec<i32> {
    let out = std::process::Command::new("ps")
        .args(["--ppid", &mesh.pid().to_string(), "-o", "pid=,stat=,args="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() > 2 && !words[1].starts_with('Z') && words[2..].contains(&instance)
        })
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// How many processes `weft up` runs (zombies not counted).
fn running_children(mesh: &Mesh) -> usize {
    let out = std::process::Command::new("ps")
        .args(["--ppid", &mesh.pid().to_string(), "-o", "stat="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|s| !s.trim().starts_with('Z'))
        .count()
}

/// The lines of `weft up`'s output that name `instance`.
fn lines_about(mesh: &Mesh, instance: &str) -> Vec<String> {
    mesh.stderr()
        .lines()
        .filter(|l| l.contains(instance))
        .map(str::to_string)
        .collect()
}

/// The row of `instance` once `weft status` says it finished.
async fn finished_row(mesh: &Mesh, instance: &str) -> Value {
    let finished = eventually(true, || async {
        workload(&mesh.status_json(None), instance)["finished"].is_string()
    })
    .await;
    let row = workload(&mesh.status_json(None), instance).clone();
    assert!(finished, "{row}\n{}", mesh.stderr());
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_calls_a_service_once_and_its_sidecar_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("job.out");
    let mesh = Mesh::up(&yaml(
        "jobs-once",
        "proxy-env",
        &job("report", "OnFailure", &out, CALL_WEB),
    ));

    // Ready: the job ran before, and is not what the mesh waits for.
    let row = workload(&mesh.status, "report-0");
    assert_eq!(row["state"], "completed", "{row}\n{}", mesh.stderr());
    assert_eq!(row["finished"], "completed", "{row}");
    assert_eq!(row["reason"], "exit 0", "{row}");
    assert_eq!(row["ready"], false, "{row}");
    assert_eq!(mesh.status["ready"], true, "{}", mesh.status);
    assert!(
        workload(&mesh.status, "web-v1-0")["finished"].is_null(),
        "a running replica has no `finished`: {}",
        mesh.status
    );

    // It called web once, through its sidecar (which identified it over mTLS).
    let text = std::fs::read_to_string(&out).unwrap();
    let calls: Vec<Value> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["service"], "web", "{text}");
    assert_eq!(calls[0]["path"], "/job", "{text}");
    assert_eq!(
        calls[0]["headers"]["x-weft-client"], "spiffe://cluster.local/ns/default/sa/report",
        "the call went through the job's sidecar: {text}"
    );

    // Its sidecar has exited; its app was not restarted.
    assert_eq!(processes_of(&mesh, "report-0"), Vec::<i32>::new());
    assert_eq!(processes_of(&mesh, "web-v1-0").len(), 1, "web's sidecar");
    assert_eq!(
        running_children(&mesh),
        3,
        "the ingress, web's sidecar and web's app: {}",
        mesh.stderr()
    );
    let about = lines_about(&mesh, "report-0");
    assert!(
        about
            .iter()
            .any(|l| l == "weft: report-0 completed (exit 0)"),
        "{about:#?}"
    );
    assert!(
        !about.iter().any(|l| l.contains("restarting")),
        "{about:#?}"
    );
    // No endpoint of `report` is left.
    let r = get(&client(), mesh.ingress, "web", "/after").await.unwrap();
    assert_eq!(r.status, 200, "the rest of the mesh serves: {}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_a_failed_job_never_does_not_always_does() {
    let dir = tempfile::tempdir().unwrap();
    let (retried, once) = (dir.path().join("retried.out"), dir.path().join("once.out"));
    // The first run fails (and leaves a marker); the second calls web and succeeds.
    let fail_first = format!(
        "echo run >> \"$OUT.runs\"; if [ ! -e \"$OUT.marker\" ]; then touch \"$OUT.marker\"; exit 1; fi; {CALL_WEB}"
    );
    // A server whose first run exits 0 (default policy, Always): started again, as today.
    let server = dir.path().join("server.out");
    let serve_second = format!("echo run >> \"$OUT.runs\"; if [ ! -e \"$OUT.marker\" ]; then touch \"$OUT.marker\"; exit 0; fi; exec {WEFT} demo echo --service server");
    let server_yaml = job("server", "Always", &server, &serve_second)
        .replace("      restartPolicy: Always\n", "");
    let jobs = job("retried", "OnFailure", &retried, &fail_first) + &server_yaml;
    // `once` comes first: it fails (and finishes) before the rest of the mesh has started.
    let text = yaml("jobs-fail", "proxy-env", &jobs).replace(
        "  services:\n",
        &format!(
            "  services:\n{}",
            job("once", "Never", &once, "echo run >> \"$OUT.runs\"; exit 3")
        ),
    );
    let mesh = Mesh::up(&text);

    let row = finished_row(&mesh, "retried-0").await;
    assert_eq!(row["finished"], "completed", "{row}\n{}", mesh.stderr());
    assert_eq!(row["state"], "completed", "{row}");
    let runs = |p: &Path| {
        std::fs::read_to_string(p.with_extension("out.runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(runs(&retried), 2, "{}", mesh.stderr());
    let call: Value = serde_json::from_str(
        std::fs::read_to_string(&retried)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(call["service"], "web");
    let about = lines_about(&mesh, "retried-0");
    assert_eq!(
        about
            .iter()
            .filter(|l| l.starts_with("weft: retried-0 exited (exit status: 1); restarting in"))
            .count(),
        1,
        "{about:#?}"
    );
    assert!(
        about
            .iter()
            .any(|l| l == "weft: retried-0 completed (exit 0)"),
        "{about:#?}"
    );

    let row = finished_row(&mesh, "once-0").await;
    assert_eq!(
        (&row["state"], &row["finished"], &row["reason"]),
        (&"failed".into(), &"failed".into(), &"exit 3".into()),
        "{row}"
    );
    assert_eq!(runs(&once), 1, "{}", mesh.stderr());
    let about = lines_about(&mesh, "once-0");
    assert!(
        about
            .iter()
            .any(|l| l == "weft: once-0 failed (exit 3); not restarted (restartPolicy: Never)"),
        "{about:#?}"
    );
    assert!(
        !about.iter().any(|l| l.contains("restarting")),
        "{about:#?}"
    );
    for instance in ["retried-0", "once-0"] {
        assert_eq!(
            processes_of(&mesh, instance),
            Vec::<i32>::new(),
            "{instance}"
        );
    }
    // The default policy restarts an app that exited 0.
    assert_eq!(runs(&server), 2, "{}", mesh.stderr());
    let about = lines_about(&mesh, "server-0");
    assert!(
        about
            .iter()
            .any(|l| l.starts_with("weft: server-0 exited (exit status: 0); restarting in")),
        "{about:#?}"
    );
    let row = workload(&mesh.status, "server-0");
    assert_eq!(
        (&row["state"], &row["finished"]),
        (&"ready".into(), &Value::Null),
        "{row}"
    );
    assert_eq!(processes_of(&mesh, "server-0").len(), 1, "its sidecar");

    // Nothing is pending: a finished job is not a replica the mesh waits for.
    let st = mesh.status_json(None);
    assert_eq!(st["pending"], Value::Array(vec![]), "{st}");
}

/// `weft up --watch`: an edit elsewhere leaves a finished job alone; an edit to the job's own
/// workload runs it again, as a new Job would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_to_its_workload_runs_a_job_again_an_unrelated_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("watched.out");
    let text = yaml(
        "jobs-watch",
        "proxy-env",
        &job("watched", "Never", &out, CALL_WEB),
    );
    let mesh = Mesh::up_watching(&text, &[]);
    assert_eq!(workload(&mesh.status, "watched-0")["finished"], "completed");
    let calls = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    assert_eq!(calls(), 1);

    // More web replicas: the job is not touched.
    let file = mesh.files.path().join("mesh.yaml");
    std::fs::write(
        &file,
        text.replace("name: web-v1,", "name: web-v1, replicas: 2,"),
    )
    .unwrap();
    let scaled = "mesh: web-v1 replicas 1 → 2: started web-v1-1";
    let seen = eventually_within(Duration::from_secs(60), || mesh.stderr().contains(scaled)).await;
    assert!(seen, "{}", mesh.stderr());
    assert_eq!(calls(), 1, "{}", mesh.stderr());
    assert_eq!(
        workload(&mesh.status_json(None), "watched-0")["finished"],
        "completed"
    );

    // Its own env changed: it runs again, as a new replica, and completes.
    let edited = text
        .replace("name: web-v1,", "name: web-v1, replicas: 2,")
        .replace("env: {OUT:", "env: {RUN: '2', OUT:");
    std::fs::write(&file, edited).unwrap();
    let replaced = "mesh: watched env changed: replaced watched-0";
    let seen =
        eventually_within(Duration::from_secs(60), || mesh.stderr().contains(replaced)).await;
    assert!(seen, "{}", mesh.stderr());
    let row = finished_row(&mesh, "watched-0").await;
    assert_eq!(row["finished"], "completed", "{row}");
    assert_eq!(calls(), 2, "{}", mesh.stderr());
    assert_eq!(processes_of(&mesh, "watched-0"), Vec::<i32>::new());
}

/// Polls `f` every 50 ms until it holds, for at most `within`.
async fn eventually_within(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while !f() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A transparent mesh: the job runs in a pod and calls `web` by name with curl and no proxy
/// settings; once it completes, its sidecar has stopped and its pod is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_a_pod_completes_and_its_pod_is_removed() {
    if !can_run_pods() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pod-job.out");
    let mesh = Mesh::up(&yaml(
        "jobs-pod",
        "transparent",
        &job("podjob", "Never", &out, CALL_WEB),
    ));
    let row = finished_row(&mesh, "podjob-0").await;
    assert_eq!(row["finished"], "completed", "{row}\n{}", mesh.stderr());
    let call: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(call["service"], "web");
    assert_eq!(
        call["headers"]["x-weft-client"], "spiffe://cluster.local/ns/default/sa/podjob",
        "captured by the job's sidecar"
    );
    assert_eq!(processes_of(&mesh, "podjob-0"), Vec::<i32>::new());
    let netns = common::pods::sh(&["ip", "netns", "list"]);
    assert!(
        !netns.lines().any(|l| l.contains("jobs-pod-podjob-0")),
        "{netns}"
    );
    assert!(
        netns.lines().any(|l| l.contains("jobs-pod-web-v1-0")),
        "{netns}"
    );
    assert_eq!(row["pod"], Value::Null, "{row}");
}
