//! Unit tests: snapshots are validated on arrival; a bad one is nacked and the last good one
//! keeps serving.

use super::*;
use crate::inbound::AppHealth;
use model::{Authority, Endpoint, Identity, LoadBalancer, Service, ServiceKey};
use std::net::SocketAddr;
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

fn discovery() -> Discovery {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let security = crate::security::Compiler::new(
        "default",
        &Default::default(),
        "cluster.local",
        Default::default(),
        crate::jwt::JwksStore::new(runtime().handle().clone()),
    );
    let state = StateHandle::new(ProxyState::empty(security.empty()));
    let metrics = Arc::new(Metrics::new());
    let tls: Arc<crate::identity::Slot> = Default::default();
    let drain = Drain::new(Duration::ZERO);
    let readiness = Arc::new(Readiness::new(
        Mode::Client,
        false,
        state.clone(),
        tls.clone(),
        Arc::new(AppHealth::default()),
        drain.clone(),
    ));
    Discovery {
        control: Arc::new(crate::control_link::ControlLink::plaintext(any)),
        hello: pb::Hello::default(),
        mode: Mode::Client,
        namespace: "default".into(),
        labels: Default::default(),
        ingress_port: None,
        inbound_tls: Arc::new(crate::tls::InboundTls::new(
            None,
            state.clone(),
            metrics.clone(),
            Default::default(),
            String::new(),
        )),
        state,
        security,
        tls,
        readiness,
        metrics,
        drain,
        persist: None,
        on_demand: Default::default(),
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
            tcp_routes: vec![],
            policy: Default::default(),
            subsets: vec![],
            vip: None,
            ports: vec![],
        }],
        gateway: vec![],
        security: Default::default(),
        outbound_policy: Default::default(),
        outbound_policies: Default::default(),
        egress: Default::default(),
        ..Default::default()
    }
}

fn first_endpoint(s: &Discovery) -> Arc<crate::balance::EndpointState> {
    let state = s.state.load();
    let service = state
        .routes
        .resolve(&Authority::parse("hello"), "default")
        .unwrap();
    service.all.endpoints[0].clone()
}

fn endpoint_port(s: &Discovery) -> Option<u16> {
    let state = s.state.load();
    let service = state
        .routes
        .resolve(&Authority::parse("hello"), "default")?;
    Some(service.all.endpoints.first()?.endpoint.address.port())
}

#[test]
fn a_good_snapshot_is_applied_and_acked() {
    let s = discovery();
    let ack = apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    assert_eq!((ack.version, ack.error.as_str()), (5, ""));
    assert_eq!(s.state.load().version(), 5);
    assert_eq!(endpoint_port(&s), Some(1000));
    assert!(s.readiness.not_ready_reason().is_none());
}

#[test]
fn a_bad_snapshot_is_nacked_and_the_last_good_one_keeps_serving() {
    let s = discovery();
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    let mut bad = pb::Snapshot::from(&snapshot(6, 2000));
    bad.services[0].endpoints[0].address = "not an address".into();
    let ack = apply(&s, bad);
    assert_eq!(ack.version, 6);
    assert!(ack.error.contains("not an address"), "{}", ack.error);
    assert_eq!(s.state.load().version(), 5);
    assert_eq!(endpoint_port(&s), Some(1000));
}

#[test]
fn a_snapshot_with_keys_no_proxy_can_verify_with_is_nacked() {
    let s = discovery();
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    let mut bad = snapshot(6, 2000);
    bad.security
        .request_authns
        .push(model::security::RequestAuthn {
            name: "default/jwt".into(),
            scope: model::security::Scope::Mesh,
            rules: vec![model::security::JwtRule {
                issuer: "https://issuer.example".into(),
                jwks: Some(r#"{"keys":[{"kty":"EC","crv":"P-999","x":"AAAA","y":"AAAA"}]}"#.into()),
                ..Default::default()
            }],
        });
    let ack = apply(&s, pb::Snapshot::from(&bad));
    assert!(
        ack.error.starts_with(
            "security policy RequestAuthentication default/jwt: issuer https://issuer.example: jwks:"
        ),
        "{}",
        ack.error
    );
    assert_eq!(s.state.load().version(), 5);
    assert_eq!(endpoint_port(&s), Some(1000));
}

#[test]
fn a_snapshot_with_a_bad_regex_is_nacked() {
    let s = discovery();
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
        ack.error.contains("route broken: path: invalid regex"),
        "{}",
        ack.error
    );
    assert_eq!(s.state.load().version(), 5);
}

#[test]
fn endpoint_state_survives_a_new_snapshot() {
    let s = discovery();
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    let before = first_endpoint(&s);
    apply(&s, pb::Snapshot::from(&snapshot(6, 1000)));
    let after = first_endpoint(&s);
    assert!(
        Arc::ptr_eq(&before, &after),
        "the pooled connection and estimates were dropped"
    );
}

#[test]
fn a_new_snapshot_writes_nothing_into_the_state_in_force() {
    let s = discovery();
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    let old = s.state.load_full();
    let before = first_endpoint(&s);
    // The endpoint's port turns DISABLE: it is reached in plaintext from the next state on.
    let mut next = snapshot(6, 1000);
    next.security.peer_authns.push(model::security::PeerAuthn {
        name: "PeerAuthentication default/plain".into(),
        scope: model::security::Scope::Namespace("default".into()),
        mode: model::security::MtlsMode::Disable,
        ports: vec![],
    });
    let ack = apply(&s, pb::Snapshot::from(&next));
    assert_eq!(ack.error, "");
    let after = first_endpoint(&s);
    assert!(
        after.plaintext,
        "the new state reaches the endpoint in plaintext"
    );
    assert!(
        !before.plaintext,
        "the state still serving requests changed under them"
    );
    assert!(!Arc::ptr_eq(&before, &after));
    assert_eq!(old.version(), 5);
    assert_eq!(
        s.state.load().security.mode,
        model::security::MtlsMode::Disable
    );
}

/// A proxy's stream handles with the state directory `dir`.
fn discovery_keeping(dir: &std::path::Path) -> Discovery {
    let mut s = discovery();
    s.persist = Some(Persist::open(&dir.join("state")).unwrap());
    s
}

fn kept_version(s: &Discovery) -> Option<u64> {
    let persist = s.persist.as_ref().unwrap();
    assert!(
        persist.flush(Duration::from_secs(10)),
        "the writer is stuck"
    );
    persist.load_snapshot().unwrap().map(|w| w.version)
}

#[test]
fn snapshots_put_in_force_are_kept_and_refused_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let s = discovery_keeping(dir.path());
    assert_eq!(kept_version(&s), None);
    apply(&s, pb::Snapshot::from(&snapshot(5, 1000)));
    assert_eq!(kept_version(&s), Some(5));
    let mut bad = pb::Snapshot::from(&snapshot(6, 2000));
    bad.services[0].endpoints[0].address = "not an address".into();
    assert!(!apply(&s, bad).error.is_empty());
    assert_eq!(kept_version(&s), Some(5), "a refused snapshot was kept");
    apply(&s, pb::Snapshot::from(&snapshot(7, 3000)));
    assert_eq!(kept_version(&s), Some(7));
}

#[test]
fn a_starting_proxy_serves_the_kept_snapshot_until_the_control_plane_pushes_one() {
    let dir = tempfile::tempdir().unwrap();
    let before = discovery_keeping(dir.path());
    let mut wire = pb::Snapshot::from(&snapshot(5, 1000));
    wire.ca_generation = 4;
    apply(&before, wire.clone());
    assert_eq!(kept_version(&before), Some(5));
    assert_eq!(before.state.load().source, Some(SnapshotSource::Control));
    // What is kept is the wire form as it came, CA generation included.
    let persist = before.persist.as_ref().unwrap();
    assert_eq!(persist.load_snapshot().unwrap(), Some(wire));
    drop(before);

    // The next run of the proxy, its control plane away.
    let after = discovery_keeping(dir.path());
    assert!(after.readiness.not_ready_reason().is_some());
    restore(&after);
    assert_eq!(after.state.load().version(), 5);
    assert_eq!(after.state.load().source, Some(SnapshotSource::Persisted));
    assert_eq!(endpoint_port(&after), Some(1000));
    assert!(after.readiness.not_ready_reason().is_none());
    assert_eq!(after.metrics.config_version.get(), 5);

    // The control plane answers: its snapshot replaces the kept one, and is kept in turn.
    apply(&after, pb::Snapshot::from(&snapshot(9, 2000)));
    assert_eq!(after.state.load().source, Some(SnapshotSource::Control));
    assert_eq!(endpoint_port(&after), Some(2000));
    assert_eq!(kept_version(&after), Some(9));
}

#[test]
fn a_kept_snapshot_that_does_not_decode_or_does_not_validate_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let s = discovery_keeping(dir.path());
    let path = s.persist.as_ref().unwrap().snapshot_path();
    crate::persist::write_atomic(&path, b"\x0a\xff\xff garbage", 0o600).unwrap();
    restore(&s);
    assert!(!s.state.load().applied);
    assert_eq!(s.state.load().source, None);

    let mut bad = pb::Snapshot::from(&snapshot(6, 2000));
    bad.services[0].endpoints[0].address = "not an address".into();
    crate::persist::write_atomic(&path, &prost::Message::encode_to_vec(&bad), 0o600).unwrap();
    restore(&s);
    assert!(!s.state.load().applied);
    // A pushed snapshot still applies, and replaces the bad file.
    apply(&s, pb::Snapshot::from(&snapshot(7, 1000)));
    assert_eq!(kept_version(&s), Some(7));
}
