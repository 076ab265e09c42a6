//! `weft edges` (who talks to whom, with client and server identities and whether each edge is
//! mTLS) and `weft check --mtls` (the guide's test-mtls tool: non-zero when an edge between two
//! meshed proxies was not mTLS). Both read every proxy's admin `/edges` through the control
//! plane's status.

use super::{get::get, runtime, Output};
use control::status::Status;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct EdgesArgs {
    #[arg(long)]
    mesh: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

/// One proxy's `/edges` record.
#[derive(Clone, Debug, Deserialize)]
struct Raw {
    direction: String,
    client: String,
    server: String,
    peer: String,
    mtls: bool,
    connections: u64,
}

/// An edge of the mesh, merged from what both ends saw.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct MeshEdge {
    /// The client's SPIFFE identity; `unknown` for plaintext from outside the mesh.
    pub src: String,
    pub dst: String,
    pub mtls: bool,
    /// Where the edge was seen: `outbound` (by a client proxy), `inbound` (by a server proxy).
    pub seen_by: String,
    /// The proxy instance that saw it.
    pub proxy: String,
    pub connections: u64,
}

/// Every proxy's edges: the sidecars', the ingress's.
async fn collect(mesh: Option<&str>) -> anyhow::Result<Vec<MeshEdge>> {
    let m = local::meshes::find(mesh)?;
    let (_, body) = get(&format!("http://{}/status", m.api)).await?;
    let st: Status = serde_json::from_slice(&body)?;
    let mut admins: Vec<(String, String)> = st
        .workloads
        .iter()
        .filter(|w| !w.admin.is_empty())
        .map(|w| (w.instance.clone(), w.admin.clone()))
        .collect();
    if !st.ingress_admin.is_empty() {
        admins.push(("ingress".into(), st.ingress_admin.clone()));
    }
    let mut out = Vec::new();
    for (instance, admin) in admins {
        let Ok((200, body)) = get(&format!("http://{admin}/edges")).await else {
            continue;
        };
        let doc: serde_json::Value = serde_json::from_slice(&body)?;
        let raws: Vec<Raw> = serde_json::from_value(doc["edges"].clone()).unwrap_or_default();
        for r in raws {
            out.push(MeshEdge {
                src: if r.client.is_empty() {
                    format!("unknown (plaintext from {})", r.peer)
                } else {
                    r.client
                },
                dst: r.server,
                mtls: r.mtls,
                seen_by: r.direction,
                proxy: instance.clone(),
                connections: r.connections,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Edges as one line per (src, dst, mTLS), connections summed over the proxies that saw them
/// from the client side (or the server side when no client proxy did: plaintext callers).
fn merged(edges: &[MeshEdge]) -> Vec<(String, String, bool, u64)> {
    let mut by: BTreeMap<(String, String, bool), (u64, u64)> = BTreeMap::new();
    for e in edges {
        let slot = by
            .entry((e.src.clone(), e.dst.clone(), e.mtls))
            .or_default();
        if e.seen_by == "outbound" {
            slot.0 += e.connections;
        } else {
            slot.1 += e.connections;
        }
    }
    by.into_iter()
        .map(|((s, d, m), (out, inn))| (s, d, m, if out > 0 { out } else { inn }))
        .collect()
}

pub fn run(a: EdgesArgs) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let edges = collect(a.mesh.as_deref()).await?;
        if a.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&edges)?);
            return Ok(0);
        }
        println!("{:<58} {:<58} {:<5} CONNS", "SRC", "DST", "MTLS");
        for (src, dst, mtls, n) in merged(&edges) {
            println!(
                "{src:<58} {dst:<58} {:<5} {n}",
                if mtls { "yes" } else { "no" }
            );
        }
        Ok(0)
    })
}

/// `weft check --mtls`: every edge that carried traffic, and whether it was mTLS. An edge a
/// client proxy opened (both ends meshed) that was not mTLS fails the check; plaintext calls
/// from outside the mesh are listed, not failed (a STRICT port refuses them anyway).
pub fn check_mtls(mesh: Option<&str>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let edges = collect(mesh).await?;
        if edges.is_empty() {
            println!("no traffic yet: no edge to check");
            return Ok(0);
        }
        let mut bad = 0;
        for e in edges.iter().filter(|e| e.seen_by == "outbound") {
            let verdict = if e.mtls {
                "mTLS"
            } else {
                bad += 1;
                "NOT mTLS"
            };
            println!(
                "{} → {}: {verdict} ({} connections, seen by {})",
                e.src, e.dst, e.connections, e.proxy
            );
        }
        for e in edges.iter().filter(|e| e.seen_by == "inbound" && !e.mtls) {
            println!(
                "{} → {}: plaintext from outside the mesh ({} connections, seen by {})",
                e.src, e.dst, e.connections, e.proxy
            );
        }
        if bad > 0 {
            eprintln!("{bad} edge(s) between meshed workloads were not mTLS");
            Ok(1)
        } else {
            println!("ok: every edge between meshed workloads is mTLS");
            Ok(0)
        }
    })
}
