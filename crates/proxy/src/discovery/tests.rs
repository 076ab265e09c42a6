//! Unit tests: snapshots are validated on arrival; a bad one is nacked and the last good one
//! keeps serving.

use super::*;
use crate::inbound::AppHealth;
use crate::metrics::Metrics;
use crate::run::{Bound, Shared};
use crate::server::Drain;
use crate::settings::{Mode, Settings};
use arc_swap::ArcSwap;
use model::{Authority, Endpoint, Identity, LoadBalancer, Service, ServiceKey};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A runtime for the JWKS store's background work (these tests are synchronous).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn shared() -> Shared {
    let any = "127.0.0.1:0".parse().unwrap();
    Shared {
        settings: Settings {
            mode: Mode::Client,
            service: "t".into(),
            namespace: "default".into(),
            default_namespace: "default".into(),
            workload: "t".into(),
            instance: "t-0".into(),
            labels: Default::default(),
            identity: Identity::spiffe("default", "t"),
            control: any,
            outbound: None,
            inbound: None,
            admin: any,
            app: None,
            drain_timeout: Duration::from_secs(1),
            drain_grace: Duration::ZERO,
            probe_interval: Duration::from_secs(1),
            workers: 1,
            join_token: None,
        },
        bound: Bound {
            inbound: None,
            outbound: None,
            admin: any,
        },
        table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(AppHealth::default()),
        has_snapshot: AtomicBool::new(false),
        started: AtomicBool::new(false),
        tls: Default::default(),
        inbound_tls: Arc::new(crate::server::InboundTls::new(
            None,
            Default::default(),
            Default::default(),
            String::new(),
        )),
        edges: Default::default(),
        app_pool: Default::default(),
        security: Arc::new(crate::security::Security::new(
            "default",
            &Default::default(),
            "cluster.local",
            Default::default(),
            crate::jwt::JwksStore::new(runtime().handle().clone()),
        )),
        observe: Arc::new(crate::observe::Observe::new(
            "t",
            "default",
            &Default::default(),
            &Identity::spiffe("default", "t"),
        )),
        shutdown: Default::default(),
        drain: Drain::new(Duration::ZERO),
    }
}

fn snapshot(version: u64, port: u16) -> Snapshot {
    Snapshot {
        version,
        services: vec![Service {
            key: ServiceKey::new("hello", "default"),
            port: 80,
            lb: LoadBalancer::PeakEwma,
            endpoints: vec![Endpoint {
                instance: "hello-v1-0".into(),
                workload: "hello-v1".into(),
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                labels: Default::default(),
                identity: Identity::spiffe("default", "hello"),
            }],
            routes: vec![],
            policy: Default::default(),
            subsets: vec![],
        }],
        gateway: vec![],
        security: Default::default(),
    }
}

fn first_endpoint(s: &Shared) -> Arc<crate::balance::EndpointState> {
    let table = s.table.load();
    let service = table
        .resolve(&Authority::parse("hello"), "default")
        .unwrap();
    service.all.endpoints[0].clone()
}

fn endpoint_port(s: &Shared) -> Option<u16> {
    let table = s.table.load();
    let service = table.resolve(&Authority::parse("hello"), "default")?;
    Some(service.all.endpoints.first()?.endpoint.address.port())
}

#[test]
fn a_good_snapshot_is_applied_and_acked() {
    let s = shared();
    let ack = apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    assert_eq!((ack.version, ack.error.as_str()), (5, ""));
    assert_eq!(s.table.load().version(), 5);
    assert_eq!(endpoint_port(&s), Some(1000));
    assert!(s.not_ready_reason().is_none());
}

#[test]
fn a_bad_snapshot_is_nacked_and_the_last_good_one_keeps_serving() {
    let s = shared();
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    let mut bad = pb::Snapshot::from(&snapshot(6, 2000));
    bad.services[0].endpoints[0].address = "not an address".into();
    let ack = apply(&s, bad);
    assert_eq!(ack.version, 6);
    assert!(ack.error.contains("not an address"), "{}", ack.error);
    assert_eq!(s.table.load().version(), 5);
    assert_eq!(endpoint_port(&s), Some(1000));
}

#[test]
fn a_snapshot_with_a_bad_regex_is_nacked() {
    let s = shared();
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    let mut bad = snapshot(6, 1000);
    bad.services[0].routes.push(model::HttpRoute {
        name: "broken".into(),
        matches: vec![model::RouteMatch {
            path: Some(model::PathMatch::Regex("/(unclosed".into())),
            ..Default::default()
        }],
        destinations: vec![model::Destination::service(
            ServiceKey::new("hello", "default"),
            100,
        )],
        ..Default::default()
    });
    let ack = apply(&s, pb::Snapshot::from(&bad));
    assert!(
        ack.error.contains("route broken: bad regex"),
        "{}",
        ack.error
    );
    assert_eq!(s.table.load().version(), 5);
}

#[test]
fn endpoint_state_survives_a_new_snapshot() {
    let s = shared();
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    let before = first_endpoint(&s);
    apply(&s, pb::Snapshot::from(&snapshot(6, 1000)));
    let after = first_endpoint(&s);
    assert!(
        Arc::ptr_eq(&before, &after),
        "the pooled connection and estimates were dropped"
    );
}
