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
    let mut out = Vec::new();
    for (instance, admin) in st.admins() {
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
        let mut rows = vec![[
            "SRC".to_string(),
            "DST".into(),
            "MTLS".into(),
            "CONNS".into(),
        ]];
        rows.extend(merged(&edges).into_iter().map(|(src, dst, mtls, n)| {
            let mtls = if mtls { "yes" } else { "no" };
            [src, dst, mtls.to_string(), n.to_string()]
        }));
        print!("{}", super::text::columns(&rows));
        Ok(0)
    })
}

/// `weft check --mtls`: every edge that carried traffic, once, and whether it was mTLS. An edge
/// a client proxy opened (both ends meshed) that was not mTLS fails the check; plaintext calls
/// from outside the mesh are listed, not failed (a STRICT port refuses them anyway). An edge
/// is one (client, server) pair, however many endpoints and proxies carried it.
pub fn check_mtls(mesh: Option<&str>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let edges = collect(mesh).await?;
        if edges.is_empty() {
            println!("no traffic yet: no edge to check");
            return Ok(0);
        }
        let verdicts = verdicts(&edges);
        for v in &verdicts {
            println!("{v}");
        }
        let bad = verdicts
            .iter()
            .filter(|v| v.verdict == Verdict::NotMtls)
            .count();
        if bad > 0 {
            eprintln!("{bad} edge(s) between meshed workloads were not mTLS");
            Ok(1)
        } else {
            println!("ok: every edge between meshed workloads is mTLS");
            Ok(0)
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Mtls,
    NotMtls,
    /// A plaintext caller outside the mesh (no client proxy).
    Outside,
}

/// What `weft check --mtls` says of one edge.
#[derive(Debug)]
struct EdgeVerdict {
    src: String,
    dst: String,
    verdict: Verdict,
    connections: u64,
    /// The proxies that saw it (the client side's when there is one).
    seen_by: Vec<String>,
}

impl std::fmt::Display for EdgeVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.verdict {
            Verdict::Mtls => "mTLS",
            Verdict::NotMtls => "NOT mTLS",
            Verdict::Outside => "plaintext from outside the mesh",
        };
        write!(
            f,
            "{} → {}: {what} ({} connections, seen by {})",
            self.src,
            self.dst,
            self.connections,
            self.seen_by.join(", ")
        )
    }
}

/// One verdict per (client, server): from what the client proxies saw, or, for an edge no
/// client proxy reported (a caller outside the mesh, a client proxy gone since), from what
/// the server proxies saw. Connections are summed over the endpoints and proxies.
fn verdicts(edges: &[MeshEdge]) -> Vec<EdgeVerdict> {
    let mut by: BTreeMap<(&str, &str), Vec<&MeshEdge>> = BTreeMap::new();
    for e in edges {
        by.entry((&e.src, &e.dst)).or_default().push(e);
    }
    by.into_iter()
        .map(|((src, dst), seen)| {
            let outbound: Vec<&MeshEdge> = seen
                .iter()
                .copied()
                .filter(|e| e.seen_by == "outbound")
                .collect();
            let (side, from_client) = if outbound.is_empty() {
                (seen, false)
            } else {
                (outbound, true)
            };
            let verdict = if side.iter().all(|e| e.mtls) {
                Verdict::Mtls
            } else if from_client {
                Verdict::NotMtls
            } else {
                Verdict::Outside
            };
            let mut seen_by: Vec<String> = side.iter().map(|e| e.proxy.clone()).collect();
            seen_by.dedup();
            EdgeVerdict {
                src: src.to_string(),
                dst: dst.to_string(),
                verdict,
                connections: side.iter().map(|e| e.connections).sum(),
                seen_by,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(src: &str, dst: &str, mtls: bool, seen_by: &str, proxy: &str, n: u64) -> MeshEdge {
        MeshEdge {
            src: src.into(),
            dst: dst.into(),
            mtls,
            seen_by: seen_by.into(),
            proxy: proxy.into(),
            connections: n,
        }
    }

    #[test]
    fn each_edge_is_judged_once_from_the_client_side() {
        let (ingress, hello) = (
            "spiffe://td/ns/istio-system/sa/ingress",
            "spiffe://td/ns/default/sa/hello",
        );
        let outside = "unknown (plaintext from 127.0.0.1:5000)";
        let mut edges = vec![
            // The ingress reached both replicas of hello: one edge record per endpoint.
            edge(ingress, hello, true, "outbound", "ingress", 1),
            edge(ingress, hello, true, "outbound", "ingress", 2),
            edge(ingress, hello, true, "inbound", "hello-v1-0", 1),
            edge(ingress, hello, true, "inbound", "hello-v1-1", 2),
            edge(outside, hello, false, "inbound", "hello-v1-0", 1),
            // A client proxy that is gone (`weft exec`): only the server saw it.
            edge(
                "spiffe://td/ns/default/sa/web",
                hello,
                true,
                "inbound",
                "hello-v1-1",
                1,
            ),
        ];
        edges.sort();
        let v: Vec<String> = verdicts(&edges).iter().map(|v| v.to_string()).collect();
        assert_eq!(
            v,
            [
                format!("spiffe://td/ns/default/sa/web → {hello}: mTLS (1 connections, seen by hello-v1-1)"),
                format!("{ingress} → {hello}: mTLS (3 connections, seen by ingress)"),
                format!("{outside} → {hello}: plaintext from outside the mesh (1 connections, seen by hello-v1-0)"),
            ]
        );
        edges.push(edge(ingress, hello, false, "outbound", "ingress", 1));
        edges.sort();
        let bad = verdicts(&edges);
        assert_eq!(bad[1].verdict, Verdict::NotMtls);
        assert_eq!(bad[1].connections, 4);
    }
}
