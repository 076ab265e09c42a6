//! `weft routes SERVICE`: the route table a proxy runs for a service, read from a proxy's admin
//! `/config` (the snapshot it applied), in the order rules are tried.

use super::{get::get, runtime, Output};
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
}

pub fn run(a: RoutesArgs) -> anyhow::Result<i32> {
    let mesh = control::meshes::find(a.mesh.as_deref())?;
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
        if key.name == control::local::INGRESS_NAME {
            // The ingress gateway: its virtual hosts (Istio Gateway + VirtualService, Gateway
            // API HTTPRoutes with a Gateway parent), tried before plain service names.
            if a.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&snapshot.gateway)?);
                return Ok(0);
            }
            println!(
                "ingress gateway: {} virtual hosts, snapshot {}",
                snapshot.gateway.len(),
                snapshot.version
            );
            for v in &snapshot.gateway {
                println!("  {} (hosts: {})", v.name, v.hosts.join(", "));
                for (i, r) in v.routes.iter().enumerate() {
                    let to: Vec<String> = r
                        .destinations
                        .iter()
                        .map(|d| format!("{} weight {}", d.service, d.weight))
                        .collect();
                    println!(
                        "    {}. {}: {} → {}",
                        i + 1,
                        r.name,
                        compact(&r.matches),
                        to.join(", ")
                    );
                }
            }
            if snapshot.gateway.is_empty() {
                println!("  none: requests are routed by service name (Host)");
            }
            return Ok(0);
        }
        let svc = snapshot
            .service(&key)
            .ok_or_else(|| anyhow::anyhow!("no service {key} in the mesh"))?;
        if a.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&svc.routes)?);
            return Ok(0);
        }
        println!(
            "{key}: port {}, {} ready endpoints, snapshot {} from {}",
            svc.port,
            svc.endpoints.len(),
            snapshot.version,
            proxy.instance
        );
        if !svc.policy.is_empty() {
            println!("  policy: {}", compact(&svc.policy));
        }
        for sub in &svc.subsets {
            println!("  subset {}: {}", sub.name, compact(&sub.policy));
        }
        if svc.routes.is_empty() {
            println!("  no routes: every request goes to every endpoint");
        }
        for (i, r) in svc.routes.iter().enumerate() {
            let matches = if r.matches.is_empty() {
                "every request".to_string()
            } else {
                r.matches
                    .iter()
                    .map(|m| serde_json::to_string(m).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" OR ")
            };
            let total: u32 = r.destinations.iter().map(|d| d.weight).sum();
            let dests: Vec<String> = r
                .destinations
                .iter()
                .map(|d| {
                    let subset = d
                        .subset
                        .as_deref()
                        .map(|s| format!(" subset {s}"))
                        .unwrap_or_default();
                    let share = if total > 0 {
                        100.0 * d.weight as f64 / total as f64
                    } else {
                        0.0
                    };
                    format!("{}{subset} {share:.0}%", d.service)
                })
                .collect();
            println!(
                "  {}. {}\n     match: {matches}\n     to:    {}",
                i + 1,
                r.name,
                dests.join(", ")
            );
            // Everything else the rule does (timeouts, retries, faults, filters), as JSON.
            let mut rest = serde_json::to_value(r)?;
            if let Some(o) = rest.as_object_mut() {
                for k in ["name", "matches", "destinations"] {
                    o.remove(k);
                }
                for (k, v) in o.iter() {
                    println!("     {k}: {}", compact(v));
                }
            }
        }
        Ok(0)
    })
}

fn compact<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
