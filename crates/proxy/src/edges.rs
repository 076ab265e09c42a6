//! Who talks to whom: every connection a proxy accepts (inbound) or opens to a peer
//! (outbound), by client and server identity and whether it was mTLS. Recorded once per
//! connection, never per request; read by `weft edges` and `weft check --mtls` through the
//! admin `/edges` endpoint.
//!
//! Lock-free on the read side: the set is an `ArcSwap` of an immutable map; a connection of a
//! known edge only bumps an atomic, and only a never-seen edge copies the map (under a mutex
//! that nothing else takes).

use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One edge as seen from this proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Edge {
    /// `inbound` (we are the server) or `outbound` (we are the client).
    pub direction: &'static str,
    /// The client's SPIFFE identity; empty when unknown (plaintext inbound).
    pub client: String,
    /// The server's SPIFFE identity (as verified on outbound mTLS, ours on inbound).
    pub server: String,
    /// The peer's address (the server's on outbound, the client's IP on inbound).
    pub peer: String,
    pub mtls: bool,
}

/// The edges a proxy has seen, with connection counts.
#[derive(Default)]
pub struct Edges {
    map: ArcSwap<HashMap<Edge, Arc<AtomicU64>>>,
    insert: Mutex<()>,
}

/// What `/edges` serves.
#[derive(Debug, Serialize)]
pub struct EdgeCount {
    #[serde(flatten)]
    pub edge: Edge,
    pub connections: u64,
}

/// More distinct edges than this are not recorded (a scan from many addresses must not grow
/// the map without bound).
pub const MAX_EDGES: usize = 4096;

impl Edges {
    pub fn record(&self, edge: Edge) {
        if let Some(c) = self.map.load().get(&edge) {
            c.fetch_add(1, Relaxed);
            return;
        }
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.map.load_full();
        if let Some(c) = current.get(&edge) {
            c.fetch_add(1, Relaxed);
            return;
        }
        if current.len() >= MAX_EDGES {
            return;
        }
        let mut next = (*current).clone();
        next.insert(edge, Arc::new(AtomicU64::new(1)));
        self.map.store(Arc::new(next));
    }

    pub fn list(&self) -> Vec<EdgeCount> {
        let mut out: Vec<EdgeCount> = self
            .map
            .load()
            .iter()
            .map(|(e, c)| EdgeCount {
                edge: e.clone(),
                connections: c.load(Relaxed),
            })
            .collect();
        out.sort_by(|a, b| {
            (
                a.edge.direction,
                &a.edge.client,
                &a.edge.server,
                &a.edge.peer,
            )
                .cmp(&(
                    b.edge.direction,
                    &b.edge.client,
                    &b.edge.server,
                    &b.edge.peer,
                ))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(client: &str, mtls: bool) -> Edge {
        Edge {
            direction: "inbound",
            client: client.into(),
            server: "spiffe://cluster.local/ns/default/sa/b".into(),
            peer: "127.0.0.1".into(),
            mtls,
        }
    }

    #[test]
    fn counts_connections_per_edge() {
        let e = Edges::default();
        e.record(edge("a", true));
        e.record(edge("a", true));
        e.record(edge("", false));
        let list = e.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].connections, 2);
        assert!(list[1].edge.mtls);
    }

    #[test]
    fn the_map_is_bounded() {
        let e = Edges::default();
        for i in 0..MAX_EDGES + 10 {
            e.record(edge(&format!("c{i}"), true));
        }
        assert_eq!(e.list().len(), MAX_EDGES);
    }
}
