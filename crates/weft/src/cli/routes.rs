//! `weft routes SERVICE`: the route table a proxy runs for a service, read from a proxy's admin
//! `/config` (the snapshot it applied), in the order rules are tried.

use super::{get::get, runtime, Output};
use ::stat::bucket_counts_quantile;
use control::status::Status;
use model::{Authority, Snapshot};

#[derive(clap::Args)]
pub struct RoutesArgs {
    /// The service (NAME, NAME.NAMESPACE, or the FQDN)
    service: String,
    /// Read the table from this replica's proxy (default: the first ready one)
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    mesh: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    /// Per-route traffic instead of the table: RPS, effective success (after retries), actual
    /// success (per attempt) and latency, summed over every proxy that routes to the service
    #[arg(long)]
    stats: bool,
    /// With --stats: how long to measure
    #[arg(long, value_parser = super::parse_duration, default_value = "10s")]
    window: std::time::Duration,
}

pub fn run(a: RoutesArgs) -> anyhow::Result<i32> {
    if a.stats {
        return stats(a);
    }
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let rt = runtime()?;
    rt.block_on(async {
        let (_, body) = get(&format!("http://{}/status", mesh.api)).await?;
        let st: Status = serde_json::from_slice(&body)?;
        let proxy = st
            .workloads
            .iter()
            .find(|w| match &a.from {
                Some(f) => &w.instance == f,
                None => w.ready,
            })
            .ok_or_else(|| anyhow::anyhow!("no ready proxy to read the table from"))?;
        let (_, body) = get(&format!("http://{}/config", proxy.admin)).await?;
        let config: serde_json::Value = serde_json::from_slice(&body)?;
        let snapshot: Snapshot = serde_json::from_value(config["snapshot"].clone())?;
        let key = Authority::parse(&a.service)
            .service_key(model::names::DEFAULT_NAMESPACE)
            .ok_or_else(|| anyhow::anyhow!("{:?} is not a service name", a.service))?;
        if key.name == local::INGRESS_NAME {
            // The ingress gateway: its virtual hosts (Istio Gateway + VirtualService, Gateway
            // API HTTPRoutes with a Gateway parent), tried before plain service names.
            if a.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&snapshot.gateway)?);
                return Ok(0);
            }
            print!("{}", control::route_table::gateway(&snapshot));
            return Ok(0);
        }
        let svc = snapshot
            .service(&key)
            .ok_or_else(|| anyhow::anyhow!("no service {key} in the mesh"))?;
        if a.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&svc.routes)?);
            return Ok(0);
        }
        let table =
            control::route_table::service(&snapshot, &key, &proxy.instance).unwrap_or_default();
        print!("{table}");
        Ok(0)
    })
}

/// One route's counters as a proxy's admin `/routes` reports them.
#[derive(Clone, Debug, Default, serde::Deserialize)]
struct Counts {
    name: String,
    requests: u64,
    successes: u64,
    attempts: u64,
    attempt_successes: u64,
    #[serde(default)]
    latency_bounds_ms: Vec<f64>,
    #[serde(default)]
    latency_counts: Vec<u64>,
}

/// The service's routes summed over every proxy that routes to it.
async fn sample(admins: &[String], service: &str) -> std::collections::BTreeMap<String, Counts> {
    let mut out: std::collections::BTreeMap<String, Counts> = Default::default();
    for admin in admins {
        let Ok((200, body)) = get(&format!("http://{admin}/routes")).await else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        for svc in doc["services"].as_array().into_iter().flatten() {
            if svc["service"] != service {
                continue;
            }
            for r in svc["routes"].as_array().into_iter().flatten() {
                let Ok(c) = serde_json::from_value::<Counts>(r.clone()) else {
                    continue;
                };
                let t = out.entry(c.name.clone()).or_insert_with(|| Counts {
                    name: c.name.clone(),
                    latency_bounds_ms: c.latency_bounds_ms.clone(),
                    latency_counts: vec![0; c.latency_counts.len()],
                    ..Counts::default()
                });
                t.requests += c.requests;
                t.successes += c.successes;
                t.attempts += c.attempts;
                t.attempt_successes += c.attempt_successes;
                for (a, b) in t.latency_counts.iter_mut().zip(&c.latency_counts) {
                    *a += b;
                }
            }
        }
    }
    out
}

fn stats(a: RoutesArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let key = Authority::parse(&a.service)
        .service_key(model::names::DEFAULT_NAMESPACE)
        .ok_or_else(|| anyhow::anyhow!("{:?} is not a service name", a.service))?;
    let service = key.to_string();
    let rt = runtime()?;
    rt.block_on(async {
        let (_, body) = get(&format!("http://{}/status", mesh.api)).await?;
        let st: Status = serde_json::from_slice(&body)?;
        let mut admins: Vec<String> = st
            .workloads
            .iter()
            .filter(|w| !w.admin.is_empty())
            .map(|w| w.admin.clone())
            .collect();
        if !st.ingress_admin.is_empty() {
            admins.push(st.ingress_admin.clone());
        }
        let before = sample(&admins, &service).await;
        let started = std::time::Instant::now();
        tokio::time::sleep(a.window).await;
        let after = sample(&admins, &service).await;
        let secs = started.elapsed().as_secs_f64();
        let mut rows = Vec::new();
        for (name, now) in &after {
            let then = before.get(name).cloned().unwrap_or_default();
            let d = |n: u64, t: u64| n.saturating_sub(t);
            let requests = d(now.requests, then.requests);
            let attempts = d(now.attempts, then.attempts);
            let counts: Vec<u64> = now
                .latency_counts
                .iter()
                .enumerate()
                .map(|(i, c)| d(*c, then.latency_counts.get(i).copied().unwrap_or(0)))
                .collect();
            let share = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
            rows.push(serde_json::json!({
                "route": name,
                "requests": requests,
                "rps": requests as f64 / secs,
                "effective_success": share(d(now.successes, then.successes), requests),
                "attempts": attempts,
                "actual_success": share(d(now.attempt_successes, then.attempt_successes), attempts),
                "p50_ms": bucket_counts_quantile(0.5, &now.latency_bounds_ms, &counts),
                "p99_ms": bucket_counts_quantile(0.99, &now.latency_bounds_ms, &counts),
            }));
        }
        if a.output == Output::Json {
            let doc = serde_json::json!({
                "schema": "weft.routes-stats/v1",
                "service": service,
                "window_s": secs,
                "routes": rows,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(0);
        }
        let pct = |v: &serde_json::Value| {
            v.as_f64()
                .map_or("-".to_string(), |f| format!("{:.2}%", f * 100.0))
        };
        let ms =
            |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |f| format!("{f:.1}ms"));
        println!(
            "{:<48} {:>8} {:>10} {:>10} {:>9} {:>9}",
            "ROUTE", "RPS", "EFFECTIVE", "ACTUAL", "P50", "P99"
        );
        for r in &rows {
            println!(
                "{:<48} {:>8.1} {:>10} {:>10} {:>9} {:>9}",
                r["route"].as_str().unwrap_or(""),
                r["rps"].as_f64().unwrap_or(0.0),
                pct(&r["effective_success"]),
                pct(&r["actual_success"]),
                ms(&r["p50_ms"]),
                ms(&r["p99_ms"])
            );
        }
        if rows.is_empty() {
            println!("(no routes of {service} carried traffic in {secs:.1} s)");
        }
        Ok(0)
    })
}
