//! Unit tests: which proxies become endpoints, versions, warm-up.

use super::*;
use model::security::SecuritySpec;
use model::{LoadBalancer, ServiceSpec, WorkloadSpec};

fn spec() -> MeshSpec {
    MeshSpec {
        name: "t".into(),
        ingress: "127.0.0.1:0".parse().unwrap(),
        services: vec![ServiceSpec {
            name: "hello".into(),
            namespace: "default".into(),
            port: 80,
            ports: Vec::new(),
            lb: LoadBalancer::PeakEwma,
            labels: Default::default(),
            annotations: Default::default(),
            workloads: vec![WorkloadSpec {
                name: "hello-v1".into(),
                labels: Default::default(),
                replicas: 2,
                command: vec!["x".into()],
                env: Default::default(),
                sidecar: true,
                restart_policy: Default::default(),
                placement: Default::default(),
            }],
            capture: Default::default(),
            depends_on: None,
        }],
        routes: Vec::new(),
        tcp_routes: Vec::new(),
        policies: Vec::new(),
        gateway: Vec::new(),
        security: SecuritySpec::new(),
        default_retries: None,
        interception: Default::default(),
        outbound_policy: Default::default(),
        outbound_policies: Default::default(),
        egress: Default::default(),
        scope: Default::default(),
    }
}

fn node(instance: &str, port: u16) -> Node {
    Node {
        mode: "sidecar".into(),
        service: "hello".into(),
        namespace: "default".into(),
        workload: "hello-v1".into(),
        instance: instance.into(),
        labels: Default::default(),
        inbound: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        outbound: None,
        admin: None,
        app: None,
        identity: Identity::spiffe("default", "hello"),
        pid: 1,
        asks: true,
    }
}

fn endpoints(r: &Registry) -> Vec<String> {
    r.snapshot().services[0]
        .endpoints
        .iter()
        .map(|e| e.instance.clone())
        .collect()
}

#[test]
fn only_ready_undrained_sidecars_are_endpoints() {
    let r = Registry::new(spec());
    let v0 = r.snapshot().version;
    let a = r.register(node("hello-v1-0", 1000));
    let b = r.register(node("hello-v1-1", 1001));
    assert!(endpoints(&r).is_empty());
    r.set_health(a.id, true, String::new());
    r.set_health(b.id, true, String::new());
    assert_eq!(endpoints(&r), ["hello-v1-0", "hello-v1-1"]);
    assert!(r.snapshot().version > v0);
    r.set_draining(a.id);
    assert_eq!(endpoints(&r), ["hello-v1-1"]);
    drop(b);
    assert!(endpoints(&r).is_empty());
}

#[test]
fn versions_only_move_when_endpoints_change() {
    let r = Registry::new(spec());
    let a = r.register(node("hello-v1-0", 1000));
    r.set_health(a.id, true, String::new());
    let v = r.snapshot().version;
    r.ack(a.id, v, String::new());
    r.set_health(a.id, true, String::new());
    assert_eq!(r.snapshot().version, v);
    assert_eq!(r.proxies()[0].acked, v);
}

#[test]
fn a_reconnected_proxy_replaces_its_old_registration() {
    let r = Registry::new(spec());
    let old = r.register(node("hello-v1-0", 1000));
    r.set_health(old.id, true, String::new());
    let new = r.register(node("hello-v1-0", 2000));
    r.set_health(new.id, true, String::new());
    let snap = r.snapshot();
    assert_eq!(snap.services[0].endpoints.len(), 1);
    assert_eq!(snap.services[0].endpoints[0].address.port(), 2000);
}

#[test]
fn warm_once_every_declared_replica_registered() {
    let r = Registry::new(spec());
    assert!(!r.is_warm());
    let a = r.register(node("hello-v1-0", 1000));
    r.set_health(a.id, true, String::new());
    assert!(!r.is_warm());
    let b = r.register(node("hello-v1-1", 1001));
    assert!(!r.is_warm(), "registered but health unknown");
    r.set_health(b.id, false, "app down".into());
    assert!(r.is_warm());
}

fn strict_mesh() -> SecuritySpec {
    use model::security::{MtlsMode, PeerAuthn, Scope};
    SecuritySpec {
        peer_authns: vec![PeerAuthn {
            name: "PeerAuthentication istio-system/default".into(),
            scope: Scope::Mesh,
            mode: MtlsMode::Strict,
            ports: vec![],
        }],
        ..SecuritySpec::new()
    }
}

#[test]
fn snapshots_carry_the_security_policies() {
    let mut s = spec();
    s.security = strict_mesh();
    let r = Registry::new(s);
    assert_eq!(r.snapshot().security, strict_mesh());
    // They stay across endpoint changes.
    let a = r.register(node("hello-v1-0", 1000));
    r.set_health(a.id, true, String::new());
    assert_eq!(r.snapshot().security, strict_mesh());
}

#[test]
fn applied_security_reaches_a_new_snapshot() {
    let r = Registry::new(spec());
    let v = r.snapshot().version;
    let mut applied = spec();
    applied.security = strict_mesh();
    r.set_traffic(Some(applied.clone()));
    let snap = r.snapshot();
    assert!(snap.version > v, "a security-only change is pushed");
    assert_eq!(snap.security, strict_mesh());
    assert_eq!(r.spec().security, strict_mesh());
    // The same again changes nothing.
    r.set_traffic(Some(applied));
    assert_eq!(r.snapshot().version, snap.version);
    // Deleting everything leaves no policy.
    r.set_traffic(None);
    assert_eq!(r.snapshot().security, SecuritySpec::new());
    assert!(r.snapshot().version > snap.version);
}

#[test]
fn workloads_without_a_sidecar_are_not_waited_for() {
    let mut s = spec();
    s.services[0].workloads.push(WorkloadSpec {
        name: "legacy-client".into(),
        labels: Default::default(),
        replicas: 1,
        command: vec!["x".into()],
        env: Default::default(),
        sidecar: false,
        restart_policy: Default::default(),
        placement: Default::default(),
    });
    assert_eq!(
        declared_instances(&s).map(|(_, i)| i).collect::<Vec<_>>(),
        ["hello-v1-0", "hello-v1-1"]
    );
    let r = Registry::new(s);
    let mut held = Vec::new();
    for (i, port) in [("hello-v1-0", 1000), ("hello-v1-1", 1001)] {
        let reg = r.register(node(i, port));
        r.set_health(reg.id, true, String::new());
        held.push(reg);
    }
    assert!(r.is_warm());
}

fn ingress_node() -> Node {
    Node {
        mode: "ingress".into(),
        service: "istio-ingressgateway".into(),
        namespace: "istio-system".into(),
        workload: "istio-ingressgateway".into(),
        instance: "ingress-0".into(),
        inbound: None,
        ..node("ingress-0", 1)
    }
}

fn record(r: &Registry, id: u64) -> ProxyRecord {
    r.lock().proxies.all()[&id].clone()
}

fn routable(r: &Registry, id: u64) -> Result<(), NotRoutable> {
    record(r, id).routable(&r.proxies())
}

#[test]
fn a_replica_is_routable_once_every_live_proxy_applied_a_snapshot_listing_it() {
    let r = Registry::new(spec());
    let ingress = r.register(ingress_node());
    let a = r.register(node("hello-v1-0", 1000));
    let b = r.register(node("hello-v1-1", 1001));
    assert_eq!(
        routable(&r, a.id),
        Err(NotRoutable::NotReady("registered".into()))
    );
    r.set_health(a.id, true, String::new());
    let v = r.snapshot().version;
    assert_eq!(record(&r, a.id).listed_since, Some(v));
    let Err(NotRoutable::Behind { since, proxies }) = routable(&r, a.id) else {
        panic!("listed but applied by nobody: not routable");
    };
    assert_eq!(since, v);
    assert_eq!(proxies.len(), 3, "{proxies:?}");
    r.ack(ingress.id, v, String::new());
    r.ack(a.id, v, String::new());
    // b rejects the snapshot: it still routes with the one before, which does not list a.
    r.ack(b.id, v, "bad route".into());
    let Err(NotRoutable::Behind { proxies, .. }) = routable(&r, a.id) else {
        panic!("b has not applied a snapshot listing a");
    };
    assert_eq!(proxies, [("hello-v1-1 proxy".to_string(), 0)]);
    r.ack(b.id, v, String::new());
    assert_eq!(routable(&r, a.id), Ok(()));

    // Later versions keep the date a was first listed: b's readiness does not unlist a.
    r.set_health(b.id, true, String::new());
    let w = r.snapshot().version;
    assert!(w > v);
    assert_eq!(record(&r, a.id).listed_since, Some(v));
    assert_eq!(
        routable(&r, a.id),
        Ok(()),
        "everyone has a version listing a"
    );
    assert!(matches!(routable(&r, b.id), Err(NotRoutable::Behind { since, .. }) if since == w));

    // A proxy that joins (a `weft exec` client) could send to a: a waits for it too.
    let mut client = node("hello-exec-1", 0);
    client.mode = "client".into();
    client.inbound = None;
    let c = r.register(client);
    assert!(matches!(
        routable(&r, a.id),
        Err(NotRoutable::Behind { .. })
    ));
    r.ack(c.id, w, String::new());
    assert_eq!(routable(&r, a.id), Ok(()));
    // A draining proxy sends nothing new: nobody waits for it.
    r.set_draining(c.id);
    r.set_health(a.id, false, "app is not accepting connections".into());
    r.set_health(a.id, true, String::new());
    let x = r.snapshot().version;
    assert_eq!(record(&r, a.id).listed_since, Some(x), "listed anew");
    for id in [ingress.id, a.id, b.id] {
        r.ack(id, x, String::new());
    }
    assert_eq!(routable(&r, a.id), Ok(()));
}

#[test]
fn a_restarted_proxy_is_routable_only_once_its_new_registration_is_listed_and_applied() {
    let r = Registry::new(spec());
    let ingress = r.register(ingress_node());
    let old = r.register(node("hello-v1-0", 1000));
    r.set_health(old.id, true, String::new());
    let v = r.snapshot().version;
    r.ack(ingress.id, v, String::new());
    r.ack(old.id, v, String::new());
    assert_eq!(routable(&r, old.id), Ok(()));
    // The proxy crashed: its stream ends, its registration goes, and so does the endpoint.
    drop(old);
    assert!(endpoints(&r).is_empty());
    // Its restart reuses the address; until it reports ready it is no endpoint.
    let new = r.register(node("hello-v1-0", 1000));
    assert!(endpoints(&r).is_empty());
    assert!(record(&r, new.id).listed_since.is_none());
    r.set_health(new.id, true, String::new());
    let w = r.snapshot().version;
    assert!(w > v);
    assert_eq!(endpoints(&r), ["hello-v1-0"]);
    assert!(matches!(routable(&r, new.id), Err(NotRoutable::Behind { since, .. }) if since == w));
    r.ack(ingress.id, w, String::new());
    r.ack(new.id, w, String::new());
    assert_eq!(routable(&r, new.id), Ok(()));
}

#[test]
fn a_proxy_registered_again_before_its_old_stream_ended_takes_over_once_it_reports() {
    let r = Registry::new(spec());
    let old = r.register(node("hello-v1-0", 1000));
    r.set_health(old.id, true, String::new());
    let v = r.snapshot().version;
    // The old stream has not ended yet when the proxy registers again (it restarted, or moved
    // to another control-plane replica): until the new registration reports, the address
    // stays listed as it was.
    let new = r.register(node("hello-v1-0", 1000));
    assert_eq!(r.snapshot().version, v);
    assert_eq!(endpoints(&r), ["hello-v1-0"]);
    // Ready: the newest registration speaks for the replica, at the same address.
    r.set_health(new.id, true, String::new());
    assert_eq!(r.snapshot().version, v, "the same endpoint all along");
    assert_eq!(record(&r, new.id).listed_since, Some(v));
    assert_eq!(record(&r, old.id).listed_since, None);
    // Not ready: it is no endpoint, whatever the old registration said.
    r.set_health(new.id, false, "app not accepting".into());
    assert!(r.snapshot().version > v);
    assert!(endpoints(&r).is_empty());
}

/// Registrations two registries share, as replicas sharing a store would.
#[derive(Clone, Default)]
struct SharedRegistrations(
    Arc<std::sync::Mutex<BTreeMap<u64, ProxyRecord>>>,
    BTreeMap<u64, ProxyRecord>,
);

impl Registrations for SharedRegistrations {
    fn all(&self) -> &BTreeMap<u64, ProxyRecord> {
        &self.1
    }
    fn put(&mut self, id: u64, record: ProxyRecord) {
        self.0.lock().unwrap().insert(id, record);
        self.1 = self.0.lock().unwrap().clone();
    }
    fn delete(&mut self, id: u64) {
        self.0.lock().unwrap().remove(&id);
        self.1 = self.0.lock().unwrap().clone();
    }
    fn reload(&mut self) {
        self.1 = self.0.lock().unwrap().clone();
    }
}

#[test]
fn registrations_kept_elsewhere_reach_the_snapshot_on_refresh() {
    let store = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let here = SharedRegistrations(store.clone(), BTreeMap::new());
    let r = Registry::with_registrations(spec(), Box::new(here));
    let a = r.register(node("hello-v1-0", 1000));
    r.set_health(a.id, true, String::new());
    assert_eq!(endpoints(&r), ["hello-v1-0"]);
    // Another replica's sidecar lands in the shared store with an id of its own.
    let mut theirs = store.lock().unwrap()[&a.id].clone();
    theirs.node = node("hello-v1-1", 1001);
    store.lock().unwrap().insert(1 << 32, theirs);
    assert_eq!(endpoints(&r), ["hello-v1-0"], "nothing read it yet");
    r.refresh();
    assert_eq!(endpoints(&r), ["hello-v1-0", "hello-v1-1"]);
    // This replica's writes went through to the shared store.
    drop(a);
    assert_eq!(store.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_an_answer_reported_not_waited_out() {
    let r = Registry::new(spec());
    let a = r.register(node("hello-v1-0", 1000));
    let b = r.register(node("hello-v1-1", 1001));
    let v = r.snapshot().version;
    r.ack(a.id, v, String::new());
    r.ack(b.id, v, String::new());
    r.set_traffic(Some(MeshSpec {
        security: strict_mesh(),
        ..spec()
    }));
    let w = r.snapshot().version;
    assert!(w > v);
    // Nobody has answered yet: both are waited for, and named when the wait ends.
    let answers = r.wait_applied(w, Duration::from_secs(5)).await;
    assert_eq!(answers.silent.len(), 2, "{answers:?}");
    assert!(!answers.all_applied());

    r.ack(a.id, w, String::new());
    r.ack(b.id, w, "security policy foo/bar: bad".into());
    // Paused time: a wait that did not end at the answers would end at its deadline, with b
    // silent.
    let started = tokio::time::Instant::now();
    let answers = r.wait_applied(w, Duration::from_secs(60)).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "returned at the answers");
    assert_eq!(answers.proxies, 2);
    assert!(answers.silent.is_empty(), "{answers:?}");
    assert_eq!(
        answers.refused,
        [Refusal {
            proxy: "hello-v1-1 proxy".into(),
            version: w,
            error: "security policy foo/bar: bad".into(),
            runs: v,
        }]
    );
    assert_eq!(
        answers.refused[0].to_string(),
        format!(
            "hello-v1-1 proxy refused snapshot {w}: security policy foo/bar: bad (it keeps serving snapshot {v})"
        )
    );
    // It shows in the status: as what keeps the mesh from being ready, and as a nack.
    let st = crate::status::build(
        &r,
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    assert!(!st.ready);
    assert!(
        st.pending.contains(&format!(
            "hello-v1-1 proxy: refused snapshot {w}: security policy foo/bar: bad (runs {v})"
        )),
        "{:?}",
        st.pending
    );
    assert_eq!(st.nacks.len(), 1);
    assert_eq!(
        (
            st.nacks[0].instance.as_str(),
            st.nacks[0].version,
            st.nacks[0].config_version
        ),
        ("hello-v1-1", w, v)
    );
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["nacks"][0]["error"], "security policy foo/bar: bad");

    // Applying a later snapshot clears it.
    r.ack(b.id, w, String::new());
    assert!(r.answers(w).all_applied());
    let st = crate::status::build(
        &r,
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    assert!(st.nacks.is_empty());
    assert!(serde_json::to_value(&st).unwrap().get("nacks").is_none());
}

#[test]
fn a_replacement_at_another_address_is_listed_only_once_ready_and_the_old_one_serves_until_then() {
    let r = Registry::new(spec());
    let old = r.register(node("hello-v1-0", 1000));
    r.set_health(old.id, true, String::new());
    // A new process for the same replica starts beside the old one (another address): the
    // old one keeps serving until the new one is ready, then the new one alone is listed.
    let new = r.register(node("hello-v1-0", 2000));
    assert!(record(&r, old.id).listed_since.is_some());
    assert!(record(&r, new.id).listed_since.is_none());
    r.set_health(new.id, true, String::new());
    assert!(record(&r, new.id).listed_since.is_some());
    assert_eq!(record(&r, old.id).listed_since, None);
    assert_eq!(endpoints(&r), ["hello-v1-0"]);
}

#[test]
fn the_default_retry_policy_reaches_routes_without_one_and_services_without_routes() {
    use model::route::{Destination, HttpRoute, RetryPolicy};
    use model::ServiceRoutes;
    let policy = RetryPolicy {
        attempts: 2,
        ..RetryPolicy::default()
    };
    let mut s = spec();
    let other = ServiceSpec {
        name: "other".into(),
        ..s.services[0].clone()
    };
    s.services.push(other);
    let route = |name: &str, retry: Option<RetryPolicy>| HttpRoute {
        name: name.into(),
        destinations: vec![Destination::service(s.services[1].key(), 100)],
        retry,
        ..HttpRoute::default()
    };
    let off = RetryPolicy::default();
    s.routes = vec![ServiceRoutes {
        service: s.services[1].key(),
        routes: vec![route("own", Some(off.clone())), route("none", None)],
    }];
    let without = Registry::new(s.clone()).snapshot();
    assert!(
        without.services[0].routes.is_empty(),
        "no default: as written"
    );
    s.default_retries = Some(policy.clone());
    let snap = Registry::new(s).snapshot();
    let hello = &snap.services[0].routes;
    assert_eq!(hello.len(), 1);
    assert_eq!(hello[0].name, crate::snapshot::DEFAULT_ROUTE);
    assert_eq!(hello[0].retry, Some(policy.clone()));
    assert_eq!(hello[0].destinations[0].service, snap.services[0].key);
    let other = &snap.services[1].routes;
    assert_eq!(other[0].retry, Some(off), "a route's own policy wins");
    assert_eq!(other[1].retry, Some(policy));
}

#[test]
fn a_change_of_outbound_policy_alone_is_a_new_snapshot() {
    let r = Registry::new(spec());
    let v = r.snapshot().version;
    // The same again: no new snapshot.
    r.set_traffic(Some(spec()));
    assert_eq!(r.snapshot().version, v);
    r.set_traffic(Some(MeshSpec {
        outbound_policies: vec![model::ScopedOutboundPolicy {
            scope: model::security::Scope::Namespace("istio-system".into()),
            mode: model::OutboundPolicy::RegistryOnly,
        }],
        ..spec()
    }));
    let w = r.snapshot();
    assert!(w.version > v);
    assert_eq!(w.outbound_policies.len(), 1);
    r.set_traffic(Some(MeshSpec {
        outbound_policy: model::OutboundPolicy::RegistryOnly,
        ..spec()
    }));
    assert!(r.snapshot().version > w.version);
    assert_eq!(
        r.snapshot().outbound_policy,
        model::OutboundPolicy::RegistryOnly
    );
}

#[test]
fn a_finished_replica_is_neither_waited_for_nor_pending() {
    let r = Registry::new(spec());
    let a = r.register(node("hello-v1-0", 1000));
    r.set_health(a.id, true, String::new());
    // hello-v1-1's app (a job) ran and exited before its sidecar was ever ready; the sidecar
    // was stopped.
    drop(r.register(node("hello-v1-1", 1001)));
    assert!(!r.is_warm());
    r.set_finished(
        "hello",
        "default",
        "hello-v1-1",
        Some((Finished::Completed, "exit 0".into())),
    );
    assert!(r.is_warm());
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let st = crate::status::build(&r, any, any);
    let row = st
        .workloads
        .iter()
        .find(|w| w.instance == "hello-v1-1")
        .unwrap();
    assert_eq!(
        (row.state.as_str(), row.reason.as_str(), row.ready),
        ("completed", "exit 0", false)
    );
    let json = serde_json::to_value(row).unwrap();
    assert_eq!(json["finished"], "completed");
    assert!(
        !st.pending.iter().any(|p| p.contains("hello-v1-1")),
        "{:?}",
        st.pending
    );
    let other = st
        .workloads
        .iter()
        .find(|w| w.instance == "hello-v1-0")
        .unwrap();
    assert!(serde_json::to_value(other)
        .unwrap()
        .get("finished")
        .is_none());

    // Started again (its workload changed): waited for like any replica.
    r.set_finished("hello", "default", "hello-v1-1", None);
    assert!(!r.is_warm());
    let st = crate::status::build(&r, any, any);
    assert!(
        st.pending
            .iter()
            .any(|p| p.starts_with("hello-v1-1: starting")),
        "{:?}",
        st.pending
    );
}
