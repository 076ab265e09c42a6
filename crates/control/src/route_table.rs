//! The route table of a service (or of the ingress gateway) as text, in the order rules are
//! tried: what `weft routes SERVICE` prints and the dashboard's routes view shows.

use model::{Destination, ServiceKey, Snapshot};
use std::fmt::Write as _;

/// The ingress gateway's virtual hosts and their rules.
pub fn gateway(snapshot: &Snapshot) -> String {
    let mut out = format!(
        "ingress gateway: {} virtual hosts, snapshot {}\n",
        snapshot.gateway.len(),
        snapshot.version
    );
    for v in &snapshot.gateway {
        let _ = writeln!(out, "  {} (hosts: {})", v.name, v.hosts.join(", "));
        for (i, r) in v.routes.iter().enumerate() {
            let to: Vec<String> = r
                .destinations
                .iter()
                .map(|d| format!("{} weight {}", d.service, d.weight))
                .collect();
            let _ = writeln!(
                out,
                "    {}. {}: {} → {}",
                i + 1,
                r.name,
                compact(&r.matches),
                to.join(", ")
            );
        }
    }
    if snapshot.gateway.is_empty() {
        out.push_str("  none: requests are routed by service name (Host)\n");
    }
    out
}

/// `key`'s table in `snapshot` (read from proxy `from`), `None` when the snapshot has no such
/// service.
pub fn service(snapshot: &Snapshot, key: &ServiceKey, from: &str) -> Option<String> {
    let svc = snapshot.service(key)?;
    let mut out = format!(
        "{key}: port {}, {} ready endpoints, snapshot {} from {from}\n",
        svc.port,
        svc.endpoints.len(),
        snapshot.version,
    );
    if !svc.policy.is_empty() {
        let _ = writeln!(out, "  policy: {}", compact(&svc.policy));
    }
    for sub in &svc.subsets {
        let _ = writeln!(out, "  subset {}: {}", sub.name, compact(&sub.policy));
    }
    if svc.routes.is_empty() {
        out.push_str("  no routes: every request goes to every endpoint\n");
    }
    for (i, r) in svc.routes.iter().enumerate() {
        let dests = shares(r.destinations.iter().map(|d| (d, None)));
        rule(&mut out, i, &r.name, &r.matches, "every request", &dests);
        // Everything else the rule does (timeouts, retries, faults, filters), as JSON.
        if let Ok(serde_json::Value::Object(mut rest)) = serde_json::to_value(r) {
            for k in ["name", "matches", "destinations"] {
                rest.remove(k);
            }
            for (k, v) in &rest {
                let _ = writeln!(out, "     {k}: {}", compact(v));
            }
        }
    }
    if !svc.tcp_routes.is_empty() {
        out.push_str("  connection rules (tunnels, TCP):\n");
    }
    for (i, r) in svc.tcp_routes.iter().enumerate() {
        let dests = shares(r.destinations.iter().map(|d| (&d.to, d.port)));
        rule(&mut out, i, &r.name, &r.matches, "every connection", &dests);
    }
    Some(out)
}

/// Rule `i`'s lines: its name, what it matches (`all` when nothing) and where it sends.
fn rule<M: serde::Serialize>(
    out: &mut String,
    i: usize,
    name: &str,
    matches: &[M],
    all: &str,
    dests: &[String],
) {
    let matches = if matches.is_empty() {
        all.to_string()
    } else {
        matches.iter().map(compact).collect::<Vec<_>>().join(" OR ")
    };
    let _ = writeln!(
        out,
        "  {}. {name}\n     match: {matches}\n     to:    {}",
        i + 1,
        dests.join(", ")
    );
}

/// Each destination (with its port, if it names one) and its share of the traffic.
fn shares<'a>(dests: impl Iterator<Item = (&'a Destination, Option<u16>)> + Clone) -> Vec<String> {
    let total: u32 = dests.clone().map(|(d, _)| d.weight).sum();
    dests
        .map(|(d, port)| {
            let subset = d
                .subset
                .as_deref()
                .map(|s| format!(" subset {s}"))
                .unwrap_or_default();
            let port = port.map(|p| format!(" port {p}")).unwrap_or_default();
            let share = if total > 0 {
                100.0 * d.weight as f64 / total as f64
            } else {
                0.0
            };
            format!("{}{subset}{port} {share:.0}%", d.service)
        })
        .collect()
}

fn compact<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
