//! `snapshot`: what a proxy does with a snapshot from its control stream, from the bytes on:
//! the protobuf decode of [`api::pb::Snapshot`], the checked conversion into
//! [`model::Snapshot`], and the compile into the proxy's state (the route table with its
//! regular expressions and balancers, and the inbound security of one workload), as
//! `proxy::discovery` does for each snapshot it applies; then a little traffic under it: a
//! request routed to each service and virtual host, endpoints picked and failures reported
//! as attempts report them (limits, retry budgets, outlier detection, failure accrual), so
//! the snapshot's numbers meet the arithmetic that uses them.
//!
//! Besides "no panic": a snapshot that converts is written back to the wire (as the control
//! plane writes it) and converts again to the same snapshot.
//!
//! Byte mutations of protobuf rarely make a large number: widening a varint breaks the length
//! of every message around it. So half of the target's mutations are [`stretch`]: decode, set
//! one numeric field (a time, a count, a percentage, a ratio) to an extreme or random value,
//! encode again.

use api::pb;
use model::{Authority, Snapshot};
use prost::Message;
use proxy::authz::AuthzStats;
use proxy::jwt::JwksStore;
use proxy::policy::Outcome;
use proxy::route::Me;
use proxy::security::Compiler;
use proxy::table::{Backend, RouteTable};
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

    for svc in table.snapshot.services.iter().take(8) {
        let host = format!("{}.{}", svc.key.name, svc.key.namespace);
        let Some(service) = table.resolve(&Authority::parse(&host), "default") else {
            continue;
        };
        if let Some(req) = request(&host) {
            if let Some(backend) = service.route(&req).and_then(|r| r.backend) {
                traffic(backend);
            }
        }
    }
    for vhost in table.snapshot.gateway.iter().take(4) {
        for host in vhost.hosts.iter().take(2) {
            let host = host.replace('*', "any");
            let (Some(v), Some(req)) = (table.virtual_host(&host), request(&host)) else {
                continue;
            };
            if let Some(backend) = v.route(&req).and_then(|r| r.backend) {
                traffic(backend);
            }
        }
    }
}

/// `GET /` to `host`, as an app sends it through its sidecar.
fn request(host: &str) -> Option<http::request::Parts> {
    let req = http::Request::builder()
        .uri(format!("http://{host}/"))
        .header("end-user", "jason")
        .body(())
        .ok()?;
    Some(req.into_parts().0)
}

/// Admits a request and a retry, then picks endpoints and reports failures on them until
/// they are ejected, and a success.
fn traffic(backend: &Backend) {
    let _request = backend.counters.admit(backend.policy.max_in_flight);
    if let Some(budget) = &backend.counters.budget {
        budget.deposit();
    }
    let _retry = backend.counters.admit_retry(backend.policy.max_retries);
    for round in 0..8u64 {
        let hash = (round % 2 == 1).then_some(round);
        let Some((_, ep)) = backend.pick(&[], hash) else {
            break;
        };
        backend.record(ep, Outcome::Error);
        backend.record(
            ep,
            Outcome::Response {
                status: 503,
                failure: true,
            },
        );
    }
    if let Some((_, ep)) = backend.pick(&[], None) {
        backend.record(
            ep,
            Outcome::Response {
                status: 200,
                failure: false,
            },
        );
    }
}

/// A structure-aware mutation of `data[..size]`: one numeric field of a decodable snapshot set
/// to an extreme or random value, written back into `data`; its new size, or `None` when the
/// input does not decode or the result would not fit (the caller then mutates bytes).
pub fn stretch(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> Option<usize> {
    let mut wire = pb::Snapshot::decode(&data[..size]).ok()?;
    let mut rng = u64::from(seed) | 1;
    let mut next = move || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut fields = numbers(&mut wire);
    if fields.is_empty() {
        return None;
    }
    let pick = (next() % fields.len() as u64) as usize;
    let value = match next() % 12 {
        0 => 0,
        1 => 1,
        2 => 100,
        3 => 101,
        4 => u64::from(u32::MAX),
        5 => u64::MAX,
        6 => u64::MAX / 2,
        7 => 1 << 58,
        8 => 1 << 44,
        9 => next() % 1000,
        _ => next(),
    };
    let float = match value % 6 {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => -1.0,
        3 => 1e30,
        4 => f64::from(f32::MAX),
        _ => (value % 200) as f64 / 2.0,
    };
    match &mut fields[pick] {
        Num::U32(n) => **n = value as u32,
        Num::U64(n) => **n = value,
        Num::OptU32(n) => **n = Some(value as u32),
        Num::OptU64(n) => **n = Some(value),
        Num::F32(n) => **n = float as f32,
        Num::F64(n) => **n = float,
    }
    drop(fields);
    let bytes = wire.encode_to_vec();
    let out = data
        .get_mut(..bytes.len())
        .filter(|_| bytes.len() <= max_size)?;
    out.copy_from_slice(&bytes);
    Some(bytes.len())
}

/// A numeric field of a snapshot on the wire.
enum Num<'a> {
    U32(&'a mut u32),
    U64(&'a mut u64),
    OptU32(&'a mut Option<u32>),
    OptU64(&'a mut Option<u64>),
    F32(&'a mut f32),
    F64(&'a mut f64),
}

/// The numbers of services' ports, traffic policies and routes.
fn numbers(wire: &mut pb::Snapshot) -> Vec<Num<'_>> {
    let mut out = Vec::new();
    let mut routes: Vec<&mut pb::HttpRoute> = Vec::new();
    for svc in &mut wire.services {
        out.push(Num::U32(&mut svc.port));
        let policies = svc
            .policy
            .iter_mut()
            .chain(svc.subsets.iter_mut().filter_map(|s| s.policy.as_mut()));
        for p in policies {
            policy_numbers(p, &mut out);
        }
        routes.extend(svc.routes.iter_mut());
    }
    for v in &mut wire.gateway {
        routes.extend(v.routes.iter_mut());
    }
    for r in routes {
        out.push(Num::U64(&mut r.timeout_ms));
        if let Some(retry) = &mut r.retry {
            out.push(Num::U32(&mut retry.attempts));
            out.push(Num::U64(&mut retry.per_try_timeout_ms));
        }
        if let Some(f) = &mut r.fault {
            out.push(Num::U64(&mut f.delay_ms));
            out.push(Num::U32(&mut f.delay_per_million));
            out.push(Num::U32(&mut f.abort_status));
            out.push(Num::U32(&mut f.abort_per_million));
        }
        for d in &mut r.destinations {
            out.push(Num::U32(&mut d.weight));
        }
        for m in &mut r.mirrors {
            out.push(Num::U32(&mut m.per_million));
        }
        for c in &mut r.response_classes {
            out.push(Num::U32(&mut c.min));
            out.push(Num::U32(&mut c.max));
        }
        if let Some(d) = &mut r.direct_response {
            out.push(Num::U32(&mut d.status));
        }
        if let Some(d) = &mut r.redirect {
            out.push(Num::U32(&mut d.status));
            out.push(Num::OptU32(&mut d.port));
        }
    }
    out
}

fn policy_numbers<'a>(p: &'a mut pb::TrafficPolicy, out: &mut Vec<Num<'a>>) {
    if let Some(o) = &mut p.outlier_detection {
        out.push(Num::U32(&mut o.consecutive_5xx));
        out.push(Num::U32(&mut o.consecutive_gateway));
        out.push(Num::U64(&mut o.interval_ms));
        out.push(Num::U64(&mut o.base_ejection_ms));
        out.push(Num::U32(&mut o.max_ejection_percent));
        out.push(Num::U32(&mut o.min_health_percent));
    }
    if let Some(a) = &mut p.failure_accrual {
        out.push(Num::U32(&mut a.max_failures));
        out.push(Num::U64(&mut a.min_penalty_ms));
        out.push(Num::U64(&mut a.max_penalty_ms));
        out.push(Num::F64(&mut a.jitter_ratio));
    }
    if let Some(b) = &mut p.retry_budget {
        out.push(Num::F32(&mut b.ratio));
        out.push(Num::U32(&mut b.min_per_second));
        out.push(Num::U64(&mut b.ttl_ms));
    }
    if let Some(c) = &mut p.connection_pool {
        out.push(Num::OptU32(&mut c.max_connections));
        out.push(Num::OptU64(&mut c.connect_timeout_ms));
        out.push(Num::OptU32(&mut c.max_pending_requests));
        out.push(Num::OptU32(&mut c.max_requests));
        out.push(Num::OptU32(&mut c.max_requests_per_connection));
        out.push(Num::OptU32(&mut c.max_retries));
        out.push(Num::OptU64(&mut c.idle_timeout_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_and_garbage() {
        run(&pb::Snapshot::default().encode_to_vec());
        run(b"\xff\xff\xff");
    }

    #[test]
    fn the_seed_snapshots_convert_and_take_traffic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/snapshot");
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            if f.file_name().to_string_lossy().starts_with("seed-") {
                let wire = pb::Snapshot::decode(&bytes[..]).unwrap();
                Snapshot::try_from(wire).unwrap();
            }
            run(&bytes);
        }
    }

    #[test]
    fn stretching_keeps_a_snapshot_decodable() {
        let seed = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/corpus/snapshot/seed-circuit-breaker"
        );
        let bytes = std::fs::read(seed).unwrap();
        let mut data = bytes.clone();
        data.resize(bytes.len() + 64, 0);
        let mut changed = 0;
        for seed in 0..200 {
            data[..bytes.len()].copy_from_slice(&bytes);
            let n = stretch(&mut data, bytes.len(), bytes.len() + 64, seed);
            if let Some(n) = n {
                pb::Snapshot::decode(&data[..n]).unwrap();
                changed += usize::from(data[..n] != bytes[..]);
            }
        }
        assert!(changed > 100, "{changed}");
        assert_eq!(stretch(&mut [0xff; 4], 4, 8, 1), None);
    }
}
