//! `snapshot`: what a proxy does with a snapshot from its control stream, from the bytes on:
//! the protobuf decode of [`api::pb::Snapshot`], the checked conversion into
//! [`model::Snapshot`], and the compile into the proxy's state (the route table with its
//! regular expressions and balancers, and the inbound security of one workload), as
//! `proxy::discovery` does for each snapshot it applies.
//!
//! Besides "no panic": a snapshot that converts is written back to the wire (as the control
//! plane writes it) and converts again to the same snapshot.

use api::pb;
use model::Snapshot;
use prost::Message;
use proxy::authz::AuthzStats;
use proxy::jwt::JwksStore;
use proxy::route::Me;
use proxy::security::Compiler;
use proxy::table::RouteTable;
use std::sync::OnceLock;

fn compiler() -> &'static Compiler {
    static C: OnceLock<Compiler> = OnceLock::new();
    C.get_or_init(|| {
        let labels = [("app".to_string(), "reviews".to_string())].into();
        let stats = AuthzStats::register(&mut prometheus_client::registry::Registry::default());
        let jwks = JwksStore::new(crate::idle_runtime().handle().clone());
        Compiler::new("default", &labels, "cluster.local", stats, jwks)
    })
}

pub fn run(data: &[u8]) {
    let Ok(wire) = pb::Snapshot::decode(data) else {
        return;
    };
    let Ok(snapshot) = Snapshot::try_from(wire) else {
        return;
    };
    let again = Snapshot::try_from(pb::Snapshot::from(&snapshot));
    assert_eq!(
        again.as_ref(),
        Ok(&snapshot),
        "the wire round trip changed it"
    );

    let labels = [("app".to_string(), "reviews".to_string())].into();
    let me = Me {
        namespace: "default",
        labels: &labels,
    };
    let Ok(table) = RouteTable::compile_for(snapshot, &RouteTable::default(), me) else {
        return;
    };
    // `jwksUri`s would start fetches; inline key sets are parsed here like any other rule.
    let mut security = table.snapshot.security.clone();
    for ra in &mut security.request_authns {
        for rule in &mut ra.rules {
            rule.jwks_uri = None;
        }
    }
    let port = table.snapshot.services.first().map_or(80, |s| s.port);
    let _ = compiler().compile(&security, port);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_and_garbage() {
        run(&pb::Snapshot::default().encode_to_vec());
        run(b"\xff\xff\xff");
    }
}
