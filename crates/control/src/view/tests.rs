//! Unit tests: which services each proxy's view carries, and that views are built once per
//! distinct one.

use super::*;
use model::egress::ScopedEgress;
use model::security::Scope;
use prost::Message;

fn service(key: &str) -> model::Service {
    let (name, ns) = key.split_once('.').unwrap();
    model::Service {
        key: ServiceKey::new(name, ns),
        port: 80,
        lb: Default::default(),
        endpoints: vec![],
        routes: vec![],
        tcp_routes: vec![],
        policy: Default::default(),
        subsets: vec![],
        vip: None,
        ports: vec![],
    }
}

/// Services in `a`, `b` and `shared`; with `scoped`, the mesh default Sidecar `./*` +
/// `shared/*`.
fn snapshot(version: u64, scoped: bool) -> Arc<Snapshot> {
    let egress = if scoped {
        vec![ScopedEgress {
            name: "Sidecar istio-system/default".into(),
            scope: Scope::Namespace("istio-system".into()),
            hosts: Some(vec![
                EgressHost::parse("./*").unwrap(),
                EgressHost::parse("shared/*").unwrap(),
            ]),
        }]
    } else {
        vec![]
    };
    Arc::new(Snapshot {
        version,
        services: ["one.a", "two.a", "one.b", "two.b", "db.shared"]
            .iter()
            .map(|k| service(k))
            .collect(),
        gateway: vec![model::VirtualHost {
            name: "gw".into(),
            hosts: vec!["*".into()],
            routes: vec![],
        }],
        egress,
        security: model::security::SecuritySpec::new(),
        ..Snapshot::default()
    })
}

fn node(mode: &str, service: &str, namespace: &str) -> Node {
    Node {
        mode: mode.into(),
        service: service.into(),
        namespace: namespace.into(),
        workload: format!("{service}-v1"),
        instance: format!("{service}-v1-0"),
        labels: Default::default(),
        inbound: None,
        outbound: None,
        admin: None,
        app: None,
        identity: model::Identity::spiffe(namespace, service),
        pid: 1,
        asks: true,
    }
}

/// Nothing asked for.
fn none() -> BTreeSet<ServiceKey> {
    BTreeSet::new()
}

/// The services a view carries, as the proxy decodes them.
fn carried(v: &View, snap: &Snapshot) -> Vec<String> {
    let m = pb::Snapshot::decode(v.message(snap)).unwrap();
    let s = model::Snapshot::try_from(m).unwrap();
    assert_eq!(s.version, v.version);
    s.services.iter().map(|s| s.key.to_string()).collect()
}

#[test]
fn without_a_sidecar_every_proxy_shares_the_whole_snapshot() {
    let views = Views::new(None);
    let snap = snapshot(1, false);
    let a = views.view(&snap, &node("sidecar", "one", "a"), &none());
    let b = views.view(&snap, &node("sidecar", "two", "b"), &none());
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(carried(&a, &snap).len(), 5);
    assert_eq!(
        views.stats(),
        ViewStats {
            built: 1,
            shared: 1
        }
    );
}

#[test]
fn a_sidecar_narrows_each_namespace_to_its_own_and_shared_services() {
    let views = Views::new(None);
    let snap = snapshot(1, true);
    let one_a = views.view(&snap, &node("sidecar", "one", "a"), &none());
    assert_eq!(carried(&one_a, &snap), ["one.a", "two.a", "db.shared"]);
    // Same content, another own service: the same view, not built again.
    let two_a = views.view(&snap, &node("sidecar", "two", "a"), &none());
    assert!(Arc::ptr_eq(&one_a, &two_a));
    let one_b = views.view(&snap, &node("sidecar", "one", "b"), &none());
    assert_eq!(carried(&one_b, &snap), ["one.b", "two.b", "db.shared"]);
    // The ingress heeds no mesh-default Sidecar: everything, gateway included.
    let ingress = views.view(
        &snap,
        &node("ingress", "istio-ingressgateway", "istio-system"),
        &none(),
    );
    assert_eq!(carried(&ingress, &snap).len(), 5);
    let decoded = pb::Snapshot::decode(ingress.message(&snap)).unwrap();
    assert_eq!(decoded.gateway.len(), 1);
    let decoded = pb::Snapshot::decode(one_a.message(&snap)).unwrap();
    assert!(
        decoded.gateway.is_empty(),
        "a narrowed sidecar gets no gateway"
    );
    assert_eq!(views.stats().built, 3);

    // A new snapshot: built afresh; the one before still answers (uncached) for a proxy
    // that has not moved on.
    let next = snapshot(2, true);
    let v2 = views.view(&next, &node("sidecar", "two", "a"), &none());
    assert_eq!(v2.version, 2);
    let old = views.view(&snap, &node("sidecar", "one", "a"), &none());
    assert_eq!(old.version, 1);
    assert_eq!(carried(&old, &snap), ["one.a", "two.a", "db.shared"]);
    assert!(Arc::ptr_eq(
        &v2,
        &views.view(&next, &node("sidecar", "one", "a"), &none())
    ));
}

#[test]
fn a_proxy_of_a_service_outside_its_scope_still_gets_its_own() {
    let views = Views::new(None);
    let mut snap = (*snapshot(1, true)).clone();
    snap.egress[0].hosts = Some(vec![EgressHost::parse("shared/*").unwrap()]);
    let snap = Arc::new(snap);
    let v = views.view(&snap, &node("sidecar", "one", "a"), &none());
    assert_eq!(carried(&v, &snap), ["one.a", "db.shared"]);
}

#[test]
fn a_view_is_unchanged_when_nothing_it_carries_changed() {
    let views = Views::new(None);
    let first = snapshot(1, true);
    let (a, b) = (node("sidecar", "one", "a"), node("sidecar", "one", "b"));
    let (a1, b1) = (
        views.view(&first, &a, &none()),
        views.view(&first, &b, &none()),
    );
    // A new endpoint of `one.b`: news for namespace b, not for a.
    let mut next = (*snapshot(2, true)).clone();
    next.services[2].endpoints.push(model::Endpoint {
        instance: "one-v1-1".into(),
        workload: "one-v1".into(),
        address: "127.0.0.1:9".parse().unwrap(),
        labels: Default::default(),
        identity: model::Identity::spiffe("b", "one"),
    });
    let next = Arc::new(next);
    let (a2, b2) = (
        views.view(&next, &a, &none()),
        views.view(&next, &b, &none()),
    );
    assert!(a2.same_as(&a1.stamp()));
    assert!(!b2.same_as(&b1.stamp()));
    // Unchanged again at 3: still what a proxy of b was sent at 2, not at 1.
    let mut third = (*next).clone();
    third.version = 3;
    let third = Arc::new(third);
    let b3 = views.view(&third, &b, &none());
    assert!(b3.same_as(&b2.stamp()));
    assert!(!b3.same_as(&b1.stamp()));
    // A service more in a's namespace changes a's view; so does a change of security.
    let mut fourth = (*third).clone();
    fourth.version = 4;
    fourth.services.push(service("three.a"));
    let fourth = Arc::new(fourth);
    assert!(!views.view(&fourth, &a, &none()).same_as(&a2.stamp()));
    assert!(views.view(&fourth, &b, &none()).same_as(&b3.stamp()));
    let mut fifth = (*fourth).clone();
    fifth.version = 5;
    fifth.security.root_namespace = "mesh-root".into();
    let fifth = Arc::new(fifth);
    let b5 = views.view(&fifth, &b, &none());
    assert!(!b5.same_as(&views.view(&fourth, &b, &none()).stamp()));
}

/// `snapshot(1, false)` with `spec.scope` `scope` and `one.a` declaring `db.shared` and
/// namespace `b`; `two.a` routes to `one.b`.
fn declared(scope: model::egress::MeshScope) -> Arc<Snapshot> {
    let mut snap = (*snapshot(1, false)).clone();
    snap.scope = scope;
    snap.declared = vec![model::egress::Declared {
        service: ServiceKey::new("one", "a"),
        hosts: ["db.shared", "b/*"]
            .iter()
            .map(|h| EgressHost::depends_on(h, "a").unwrap())
            .collect(),
    }];
    snap.services[1].routes = vec![model::HttpRoute {
        name: "r".into(),
        destinations: vec![model::Destination::service(
            ServiceKey::new("one", "b"),
            100,
        )],
        ..Default::default()
    }];
    Arc::new(snap)
}

#[test]
fn a_declaring_service_gets_what_it_declares_when_the_mesh_says_so() {
    use model::egress::MeshScope;
    let views = Views::new(None);
    // `whole`: declarations are not applied.
    let snap = declared(MeshScope::Whole);
    let v = views.view(&snap, &node("sidecar", "one", "a"), &none());
    assert_eq!(carried(&v, &snap).len(), 5);

    let snap = declared(MeshScope::Declared);
    let one_a = views.view(&snap, &node("sidecar", "one", "a"), &none());
    assert_eq!(
        carried(&one_a, &snap),
        ["one.a", "one.b", "two.b", "db.shared"]
    );
    let decoded = pb::Snapshot::decode(one_a.message(&snap)).unwrap();
    assert!(!decoded.on_demand);
    assert!(decoded.gateway.is_empty());
    // Another service declares nothing: the whole snapshot, shared.
    let two_b = views.view(&snap, &node("sidecar", "two", "b"), &none());
    assert_eq!(carried(&two_b, &snap).len(), 5);
    // A second replica of `one.a` shares the view.
    assert!(Arc::ptr_eq(
        &one_a,
        &views.view(&snap, &node("sidecar", "one", "a"), &none())
    ));
    // What it asked for is not added: it may not ask.
    let asked: BTreeSet<ServiceKey> = [ServiceKey::new("two", "a")].into();
    let v = views.view(&snap, &node("sidecar", "one", "a"), &asked);
    assert!(Arc::ptr_eq(&one_a, &v));

    // A Sidecar wins over the declaration.
    let mut with_sidecar = (*snap).clone();
    with_sidecar.egress = snapshot(1, true).egress.clone();
    let with_sidecar = Arc::new(with_sidecar);
    let v = views.view(&with_sidecar, &node("sidecar", "one", "a"), &none());
    // (`two.a`'s route to `one.b` brings that in.)
    assert_eq!(
        carried(&v, &with_sidecar),
        ["one.a", "two.a", "one.b", "db.shared"]
    );
}

#[test]
fn an_observing_proxy_starts_small_and_grows_by_what_it_asks_for() {
    use model::egress::MeshScope;
    let views = Views::new(None);
    let snap = declared(MeshScope::Observed);
    // Nothing declared: its own service and what its routes name.
    let two_a = node("sidecar", "two", "a");
    let first = views.view(&snap, &two_a, &none());
    assert_eq!(carried(&first, &snap), ["two.a", "one.b"]);
    let decoded = pb::Snapshot::decode(first.message(&snap)).unwrap();
    assert!(decoded.on_demand);
    // It asked for `db.shared`: a view that differs, carrying it.
    let asked: BTreeSet<ServiceKey> = [ServiceKey::new("db", "shared")].into();
    let grown = views.view(&snap, &two_a, &asked);
    assert!(!grown.same_as(&first.stamp()));
    assert_eq!(carried(&grown, &snap), ["two.a", "one.b", "db.shared"]);
    // A service it asked for that is gone is left out.
    let gone: BTreeSet<ServiceKey> = [ServiceKey::new("gone", "a")].into();
    assert!(Arc::ptr_eq(&first, &views.view(&snap, &two_a, &gone)));
    // A declaring service starts from its declaration, and may ask too.
    let one_a = views.view(&snap, &node("sidecar", "one", "a"), &asked);
    assert_eq!(
        carried(&one_a, &snap),
        ["one.a", "one.b", "two.b", "db.shared"]
    );
    assert!(
        pb::Snapshot::decode(one_a.message(&snap))
            .unwrap()
            .on_demand
    );
    // The ingress routes by any name: the whole snapshot.
    let ingress = views.view(
        &snap,
        &node("ingress", "istio-ingressgateway", "istio-system"),
        &none(),
    );
    assert_eq!(carried(&ingress, &snap).len(), 5);
    // Under a Sidecar a proxy neither starts small nor asks.
    let mut with_sidecar = (*snap).clone();
    with_sidecar.egress = snapshot(1, true).egress.clone();
    let with_sidecar = Arc::new(with_sidecar);
    let v = views.view(&with_sidecar, &two_a, &asked);
    assert_eq!(
        carried(&v, &with_sidecar),
        ["one.a", "two.a", "one.b", "db.shared"]
    );
    assert!(
        !pb::Snapshot::decode(v.message(&with_sidecar))
            .unwrap()
            .on_demand
    );
}
