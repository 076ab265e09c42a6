//! `weft canary`: progressive rollouts run by the control plane's canary controller. `start`
//! applies a `kind: Canary` (the same resource `weft apply` takes); `status` shows where each
//! rollout stands; `pause`, `resume`, `abort` and `promote` act at once. The rollout goes on
//! when the CLI exits; `--follow` prints a line per change until it ends.
//!
//! Exit status: 0; 1 when the control plane refused or cannot be reached; with `--follow`, 0
//! when the rollout succeeded and 4 when it was rolled back or aborted.

use super::get::{get as http_get, post};
use super::{parse_duration, runtime, Output};
use model::canary::Phase;
use serde_json::Value;
use std::time::Duration;

/// `--follow` exit status of a rollout that ended without the new version.
const NOT_PROMOTED: i32 = 4;

#[derive(clap::Subcommand)]
pub enum CanaryCmd {
    /// Start a rollout of SERVICE from one version to another (a `kind: Canary` applied)
    Start(Box<StartArgs>),
    /// Where rollouts stand: phase, step, weights, the last analysis against the thresholds,
    /// the history
    Status(NameArgs),
    /// Hold a rollout where it is
    Pause(NameArgs),
    /// Go on with a paused rollout (its step's interval starts again)
    Resume(NameArgs),
    /// All traffic back to the old version, now
    Abort(NameArgs),
    /// All traffic to the new version, now
    Promote(NameArgs),
}

#[derive(clap::Args)]
pub struct StartArgs {
    /// The service (whose workloads differ by their `version` label); with --http-route or
    /// --traffic-split, the name of the rollout
    service: String,
    /// The version that has the traffic (a `version` label value; a Service with
    /// --http-route/--traffic-split)
    #[arg(long)]
    from: String,
    /// The version to move the traffic to
    #[arg(long)]
    to: String,
    /// Roll out on this Gateway API HTTPRoute's backends (the two versions' Services)
    #[arg(long, conflicts_with = "traffic_split")]
    http_route: Option<String>,
    /// Roll out on this SMI TrafficSplit's backends
    #[arg(long)]
    traffic_split: Option<String>,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The new version's weights, in percent; the last is 100
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100")]
    steps: Vec<u32>,
    /// How long each step runs before it is judged
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    interval: Duration,
    /// The largest share of the new version's requests that may fail (5xx, or a gRPC status
    /// other than OK): 1% or 0.01
    #[arg(long, default_value = "1%")]
    max_error_rate: String,
    /// The new version's p99 may not exceed it
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    max_p99: Duration,
    /// Fewer requests to the new version in a step: not judged yet
    #[arg(long, default_value_t = 100)]
    min_requests: u64,
    /// Failed analyses before the rollback
    #[arg(long, default_value_t = 1)]
    failed_checks: u32,
    /// Before any weight moves, requests with this header ('x-canary: true') go to the new
    /// version, for --ab-duration, and are judged
    #[arg(long, requires = "ab_duration")]
    ab_header: Option<String>,
    #[arg(long, value_parser = parse_duration, requires = "ab_header")]
    ab_duration: Option<Duration>,
    /// POSTed before the rollout starts and before the promotion; must answer 2xx
    #[arg(long)]
    webhook: Option<String>,
    /// Print a line per change until the rollout ends
    #[arg(long)]
    follow: bool,
    #[arg(long)]
    mesh: Option<String>,
}

#[derive(clap::Args)]
pub struct NameArgs {
    /// The rollout's name (its service's, unless named otherwise); none: every rollout
    name: Option<String>,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// (status) Print a line per change until the rollout ends
    #[arg(long)]
    follow: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    #[arg(long)]
    mesh: Option<String>,
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The `kind: Canary` document `start` applies.
pub fn canary_yaml(a: &StartArgs) -> anyhow::Result<String> {
    let rate = config::canary::parse_rate(&a.max_error_rate)
        .map_err(|e| anyhow::anyhow!("--max-error-rate: {e}"))?;
    let target = match (&a.http_route, &a.traffic_split) {
        (Some(r), _) => format!("  targetRef: {{kind: HTTPRoute, name: {r}}}\n"),
        (_, Some(t)) => format!("  targetRef: {{kind: TrafficSplit, name: {t}}}\n"),
        _ => format!("  service: {}\n", a.service),
    };
    let steps: Vec<String> = a.steps.iter().map(u32::to_string).collect();
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Canary\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{target}  from: {from}\n  to: {to}\n  steps: [{steps}]\n  interval: {interval}\n  analysis: {{maxErrorRate: {rate}, maxP99: {p99}, minRequests: {min}, failedChecks: {failed}}}\n",
        name = a.service,
        ns = a.namespace,
        from = a.from,
        to = a.to,
        steps = steps.join(", "),
        interval = ms(a.interval),
        p99 = ms(a.max_p99),
        min = a.min_requests,
        failed = a.failed_checks,
    );
    if let (Some(h), Some(d)) = (&a.ab_header, a.ab_duration) {
        y.push_str(&format!(
            "  abTest: {{header: {}, duration: {}}}\n",
            serde_json::to_string(h)?,
            ms(d)
        ));
    }
    if let Some(w) = &a.webhook {
        let w = serde_json::to_string(w)?;
        y.push_str(&format!(
            "  webhooks: {{preRollout: {w}, prePromotion: {w}}}\n"
        ));
    }
    Ok(y)
}

pub fn run(cmd: CanaryCmd) -> anyhow::Result<i32> {
    match cmd {
        CanaryCmd::Start(a) => start(*a),
        CanaryCmd::Status(a) => status(a),
        CanaryCmd::Pause(a) => act(a, "pause"),
        CanaryCmd::Resume(a) => act(a, "resume"),
        CanaryCmd::Abort(a) => act(a, "abort"),
        CanaryCmd::Promote(a) => act(a, "promote"),
    }
}

fn start(a: StartArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let yaml = canary_yaml(&a)?;
    let rt = runtime()?;
    let file = format!("<weft canary start {}>", a.service);
    // A rollout of the same name that ran before is replaced by a new one: deleted, then
    // applied (so the same spec starts over).
    let existing = rt.block_on(views(&mesh))?;
    if existing
        .iter()
        .any(|v| v["name"] == a.service.as_str() && v["namespace"] == a.namespace.as_str())
    {
        let (status, body) = rt.block_on(post(
            &format!("http://{}/delete", mesh.api),
            &serde_json::json!({"file": file, "yaml": yaml}),
        ))?;
        if status >= 300 {
            eprint!("{}", String::from_utf8_lossy(&body));
            return Ok(1);
        }
    }
    let (status, body) = rt.block_on(post(
        &format!("http://{}/apply", mesh.api),
        &serde_json::json!({"file": file, "yaml": yaml}),
    ))?;
    let body = String::from_utf8_lossy(&body);
    if status >= 300 {
        eprint!("{body}");
        return Ok(1);
    }
    println!(
        "canary {}/{} started: {} → {} in steps {:?}, {:?} each",
        a.namespace, a.service, a.from, a.to, a.steps, a.interval
    );
    if a.follow {
        return rt.block_on(follow(&mesh, &a.namespace, &a.service));
    }
    Ok(0)
}

async fn views(mesh: &local::meshes::MeshRecord) -> anyhow::Result<Vec<Value>> {
    let (status, body) = http_get(&format!("http://{}/canaries", mesh.api)).await?;
    if status != 200 {
        anyhow::bail!(
            "control plane answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

fn phase(v: &Value) -> Option<Phase> {
    serde_json::from_value(v["state"]["phase"].clone()).ok()
}

/// One line for a change of a rollout.
fn line(v: &Value) -> String {
    let s = &v["state"];
    let last = &s["last"];
    let analysis = if last.is_object() {
        format!(
            " · last analysis {}: {} requests, errors {}, p99 {}",
            last["verdict"].as_str().unwrap_or("?"),
            last["requests"],
            last["error_rate"]
                .as_f64()
                .map_or("-".into(), |r| format!("{:.2}%", r * 100.0)),
            last["p99_ms"]
                .as_f64()
                .map_or("-".into(), |p| format!("{p:.0}ms")),
        )
    } else {
        String::new()
    };
    format!(
        "{}/{}: {} {} {}% / {} {}%{} · {}",
        v["namespace"].as_str().unwrap_or_default(),
        v["name"].as_str().unwrap_or_default(),
        s["phase"].as_str().unwrap_or("pending"),
        v["from"].as_str().unwrap_or_default(),
        v["weights"]["from"],
        v["to"].as_str().unwrap_or_default(),
        v["weights"]["to"],
        analysis,
        s["message"].as_str().unwrap_or_default(),
    )
}

async fn follow(mesh: &local::meshes::MeshRecord, ns: &str, name: &str) -> anyhow::Result<i32> {
    let mut said = String::new();
    loop {
        let all = views(mesh).await?;
        let Some(v) = all
            .iter()
            .find(|v| v["name"] == name && v["namespace"] == ns)
        else {
            anyhow::bail!("no Canary {ns}/{name}");
        };
        let now = line(v);
        if now != said {
            println!("{now}");
            said = now;
        }
        match phase(v) {
            Some(Phase::Succeeded) => return Ok(0),
            Some(p) if p.is_final() => return Ok(NOT_PROMOTED),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn status(a: NameArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let rt = runtime()?;
    if a.follow {
        let name = a
            .name
            .ok_or_else(|| anyhow::anyhow!("--follow needs the rollout's name"))?;
        return rt.block_on(follow(&mesh, &a.namespace, &name));
    }
    let all = rt.block_on(views(&mesh))?;
    let chosen: Vec<&Value> = all
        .iter()
        .filter(|v| {
            a.name
                .as_deref()
                .is_none_or(|n| v["name"] == n && v["namespace"] == a.namespace.as_str())
        })
        .collect();
    if a.output == Output::Json {
        let out = match (&a.name, chosen.first()) {
            (Some(_), Some(one)) => serde_json::to_string_pretty(one)?,
            (Some(n), None) => anyhow::bail!("no Canary {}/{n}", a.namespace),
            (None, _) => serde_json::to_string_pretty(&chosen)?,
        };
        println!("{out}");
        return Ok(0);
    }
    if chosen.is_empty() {
        match &a.name {
            Some(n) => anyhow::bail!("no Canary {}/{n}", a.namespace),
            None => {
                eprintln!("no rollouts");
                return Ok(0);
            }
        }
    }
    for v in chosen {
        let s = &v["state"];
        let t = &v["thresholds"];
        println!("{}", line(v));
        println!(
            "  target {} · steps {} · every {}s · thresholds: errors ≤ {:.2}%, p99 ≤ {}, ≥ {} requests, rollback after {} failed",
            v["target"].as_str().unwrap_or_default(),
            v["steps"],
            v["interval_ms"].as_u64().unwrap_or(0) / 1000,
            t["max_error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            t["max_p99_ms"].as_u64().map_or("-".into(), |p| format!("{p}ms")),
            t["min_requests"],
            t["failed_checks"],
        );
        if let Some(route) = v["route"].as_str() {
            println!("  route {route} (owned by the rollout)");
        }
        for reason in s["last"]["reasons"].as_array().into_iter().flatten() {
            println!("  analysis: {}", reason.as_str().unwrap_or_default());
        }
        for e in s["history"].as_array().into_iter().flatten() {
            let at = e["at_ms"].as_u64().unwrap_or(0);
            let started = s["started_ms"].as_u64().unwrap_or(at);
            println!(
                "  +{:>6.1}s {:<12} {:>3}%  {}",
                at.saturating_sub(started) as f64 / 1000.0,
                e["phase"].as_str().unwrap_or_default(),
                e["weight"],
                e["message"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(0)
}

fn act(a: NameArgs, action: &str) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let name = a
        .name
        .ok_or_else(|| anyhow::anyhow!("which rollout? weft canary {action} NAME"))?;
    let rt = runtime()?;
    let url = format!(
        "http://{}/canaries/{}/{name}/{action}",
        mesh.api, a.namespace
    );
    let (status, body) = rt.block_on(post(&url, &serde_json::json!({})))?;
    if status != 200 {
        eprint!("{}", String::from_utf8_lossy(&body));
        return Ok(1);
    }
    let state: Value = serde_json::from_slice(&body)?;
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        println!(
            "{}/{name}: {} at {}% · {}",
            a.namespace,
            state["phase"].as_str().unwrap_or_default(),
            state["weight"],
            state["message"].as_str().unwrap_or_default()
        );
    }
    Ok(0)
}
