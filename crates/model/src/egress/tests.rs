use super::*;

fn host(s: &str) -> EgressHost {
    EgressHost::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn key(s: &str) -> ServiceKey {
    let (name, ns) = s.split_once('.').unwrap();
    ServiceKey::new(name, ns)
}

/// Which of `services` `h` admits for a workload of `ns`.
fn picked(h: &str, ns: &str, services: &[&str]) -> Vec<String> {
    let h = host(h);
    services
        .iter()
        .filter(|s| h.admits(ns, &key(s)))
        .map(|s| s.to_string())
        .collect()
}

const MESH: &[&str] = &[
    "reviews.prod",
    "ratings.prod",
    "reviews.test",
    "hello.default",
    "prometheus.istio-system",
];

#[test]
fn namespace_parts_select_namespaces() {
    assert_eq!(
        picked("./*", "prod", MESH),
        ["reviews.prod", "ratings.prod"]
    );
    assert_eq!(picked("./*", "default", MESH), ["hello.default"]);
    assert_eq!(
        picked("istio-system/*", "prod", MESH),
        ["prometheus.istio-system"]
    );
    assert_eq!(picked("*/*", "prod", MESH).len(), MESH.len());
    assert!(picked("~/*", "prod", MESH).is_empty());
    assert!(picked("elsewhere/*", "prod", MESH).is_empty());
}

#[test]
fn names_are_fqdns_wildcards_or_the_short_forms_clients_call() {
    assert_eq!(
        picked("*/reviews.prod.svc.cluster.local", "default", MESH),
        ["reviews.prod"]
    );
    // The namespace part still applies to a fully qualified name.
    assert!(picked("test/reviews.prod.svc.cluster.local", "default", MESH).is_empty());
    assert_eq!(picked("prod/reviews", "default", MESH), ["reviews.prod"]);
    assert_eq!(
        picked("*/reviews", "default", MESH),
        ["reviews.prod", "reviews.test"]
    );
    assert_eq!(picked("./reviews", "test", MESH), ["reviews.test"]);
    assert_eq!(picked("*/reviews.test", "prod", MESH), ["reviews.test"]);
    assert_eq!(picked("*/reviews.test.svc", "prod", MESH), ["reviews.test"]);
    assert_eq!(
        picked("*/*.prod.svc.cluster.local", "default", MESH),
        ["reviews.prod", "ratings.prod"]
    );
    assert_eq!(
        picked("*/*.svc.cluster.local", "default", MESH).len(),
        MESH.len()
    );
    assert_eq!(picked("*/*.test", "default", MESH), ["reviews.test"]);
    // A wildcard stands for whole labels: `*.view.prod` is not `reviews.prod`.
    assert!(picked("*/*.views.prod", "default", MESH).is_empty());
    // Case does not matter; a trailing dot neither.
    assert_eq!(
        picked("PROD/Reviews.Prod.svc.cluster.local.", "default", MESH),
        ["reviews.prod"]
    );
}

#[test]
fn malformed_hosts_are_refused_with_the_form_expected() {
    for (bad, says) in [
        ("reviews.prod", "NAMESPACE/DNS_NAME"),
        ("a/b/c", "NAMESPACE/DNS_NAME"),
        ("pr*d/*", "the namespace must be"),
        ("/*", "the namespace must be"),
        ("prod/", "the name must be"),
        ("prod/re*views", "the name must be"),
        ("prod/a.*.b", "the name must be"),
        ("prod/a..b", "the name must be"),
    ] {
        let e = EgressHost::parse(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert_eq!(host("./*").to_string(), "./*");
    assert_eq!(host("~/*").to_string(), "~/*");
    assert_eq!(host("*/a.b").to_string(), "*/a.b");
}

#[test]
fn dot_means_the_workloads_namespace_once_resolved() {
    let h = host("./*");
    let r = h.resolved("prod");
    assert_eq!(r.to_string(), "prod/*");
    assert!(r.admits("elsewhere", &key("reviews.prod")));
    assert_eq!(host("*/x").resolved("prod"), host("*/x"));
}

#[test]
fn the_most_specific_sidecar_applies() {
    let labels = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let sc = |name: &str, scope: Scope| ScopedEgress {
        name: name.into(),
        scope,
        hosts: Some(vec![host("./*")]),
    };
    let all = [
        sc("root", Scope::Namespace("istio-system".into())),
        sc("prod", Scope::Namespace("prod".into())),
        sc(
            "web",
            Scope::Workload {
                namespace: "prod".into(),
                labels: labels(&[("app", "web")]),
            },
        ),
        sc(
            "web-again",
            Scope::Workload {
                namespace: "prod".into(),
                labels: labels(&[("app", "web")]),
            },
        ),
    ];
    let pick = |ns: &str, l: &[(&str, &str)]| {
        egress_for(&all, "istio-system", ns, &labels(l)).map(|s| s.name.as_str())
    };
    assert_eq!(pick("prod", &[("app", "web"), ("v", "1")]), Some("web"));
    assert_eq!(pick("prod", &[("app", "db")]), Some("prod"));
    assert_eq!(pick("test", &[("app", "web")]), Some("root"));
    assert_eq!(pick("istio-system", &[]), Some("root"));
    assert_eq!(
        egress_for(&all[1..], "istio-system", "test", &Labels::new()),
        None
    );
    // A selector selects in its own namespace only.
    assert_eq!(
        egress_for(
            &all[2..],
            "istio-system",
            "test",
            &labels(&[("app", "web")])
        ),
        None
    );
}

/// A snapshot of `services` (`NAME.NS`), with `hello.default` routing to `reviews.prod` and
/// mirroring to `ratings.prod`, a gateway route to `gw.edge`, and a JWKS at `auth`.
fn snapshot(sidecars: Vec<ScopedEgress>) -> Snapshot {
    use crate::route::{Destination, HttpRoute, Mirror};
    let service = |k: &str| crate::snapshot::Service {
        key: key(k),
        port: 80,
        lb: Default::default(),
        endpoints: vec![],
        routes: vec![],
        tcp_routes: vec![],
        policy: Default::default(),
        subsets: vec![],
        vip: None,
        ports: vec![],
    };
    let mut services: Vec<_> = [
        "hello.default",
        "other.default",
        "reviews.prod",
        "ratings.prod",
        "gw.edge",
        "auth.default",
        "lone.test",
    ]
    .iter()
    .map(|k| service(k))
    .collect();
    services[0].routes = vec![HttpRoute {
        name: "r".into(),
        destinations: vec![Destination::service(key("reviews.prod"), 100)],
        mirrors: vec![Mirror {
            destination: Destination::service(key("ratings.prod"), 100),
            per_million: 1_000_000,
        }],
        ..HttpRoute::default()
    }];
    let mut security = crate::security::SecuritySpec::new();
    security.request_authns.push(crate::security::RequestAuthn {
        name: "default/jwt".into(),
        scope: Scope::Namespace("default".into()),
        rules: vec![crate::security::JwtRule {
            issuer: "me".into(),
            jwks_uri: Some("http://auth/keys".into()),
            ..Default::default()
        }],
    });
    Snapshot {
        version: 7,
        services,
        gateway: vec![crate::snapshot::VirtualHost {
            name: "gw".into(),
            hosts: vec!["*".into()],
            routes: vec![HttpRoute {
                name: "g".into(),
                destinations: vec![Destination::service(key("gw.edge"), 100)],
                ..HttpRoute::default()
            }],
        }],
        security,
        egress: sidecars,
        ..Snapshot::default()
    }
}

fn names(s: &Snapshot, indices: &[usize]) -> Vec<String> {
    indices
        .iter()
        .map(|&i| s.services[i].key.to_string())
        .collect()
}

#[test]
fn a_proxy_sees_what_its_hosts_admit_and_what_it_cannot_work_without() {
    let sidecar = |hosts: &[&str]| ScopedEgress {
        name: "Sidecar istio-system/default".into(),
        scope: Scope::Namespace("istio-system".into()),
        hosts: Some(hosts.iter().map(|h| host(h)).collect()),
    };
    let labels = Labels::new();
    let (hello, lone) = (key("hello.default"), key("lone.test"));
    let who = |service| Viewer {
        service,
        labels: &labels,
        ingress: false,
        asks: true,
    };

    // No Sidecar: everything.
    let s = snapshot(vec![]);
    assert_eq!(hosts_for(&s, &who(&hello)), None);

    // The mesh default `./*`: each namespace its own, plus the routes' destinations and
    // mirrors of what it sees, and the JWKS service.
    let s = snapshot(vec![sidecar(&["./*"])]);
    let hosts = hosts_for(&s, &who(&hello)).unwrap();
    assert_eq!(hosts, [host("default/*")]);
    assert_eq!(
        names(
            &s,
            &visible(&s, &super::admitted(&s, &hosts, "default"), &who(&hello))
        ),
        [
            "hello.default",
            "other.default",
            "reviews.prod",
            "ratings.prod",
            "auth.default"
        ]
    );
    // Its own service, whatever the hosts say (`~/*`: nothing else but the JWKS service,
    // which a bare name puts in its own namespace, where no `auth` runs).
    let s = snapshot(vec![sidecar(&["~/*"])]);
    let hosts = hosts_for(&s, &who(&lone)).unwrap();
    assert_eq!(
        names(
            &s,
            &visible(&s, &super::admitted(&s, &hosts, "test"), &who(&lone))
        ),
        ["lone.test"]
    );

    // The ingress heeds no namespace-wide or mesh-default Sidecar…
    let edge = key("istio-ingressgateway.istio-system");
    let gw_labels: Labels = [("istio".to_string(), "ingressgateway".to_string())].into();
    let ingress = Viewer {
        service: &edge,
        labels: &gw_labels,
        ingress: true,
        asks: true,
    };
    assert_eq!(hosts_for(&s, &ingress), None);
    // …but one that selects it by its labels: then it also sees what its gateway routes name.
    let mut picked = sidecar(&["prod/*"]);
    picked.scope = Scope::Workload {
        namespace: "istio-system".into(),
        labels: gw_labels.clone(),
    };
    let s = snapshot(vec![picked]);
    let hosts = hosts_for(&s, &ingress).unwrap();
    assert_eq!(
        names(
            &s,
            &visible(&s, &super::admitted(&s, &hosts, "istio-system"), &ingress)
        ),
        ["reviews.prod", "ratings.prod", "gw.edge"]
    );
    let scoped = s.scoped(
        &visible(&s, &super::admitted(&s, &hosts, "istio-system"), &ingress),
        true,
        false,
    );
    assert_eq!(scoped.services.len(), 3);
    assert_eq!(scoped.gateway, s.gateway);
    assert!(scoped.egress.is_empty());
    assert_eq!(scoped.version, s.version);
    assert!(s.scoped(&[0], false, false).gateway.is_empty());
    assert!(s.scoped(&[0], false, true).on_demand);
}

#[test]
fn depends_on_entries_read_as_hosts_of_named_namespaces() {
    let read = |s: &str| EgressHost::depends_on(s, "shop").map(|h| h.to_string());
    assert_eq!(read("cart").unwrap(), "shop/cart");
    assert_eq!(read("ratings.prod").unwrap(), "prod/ratings");
    assert_eq!(read("prod/ratings").unwrap(), "prod/ratings");
    assert_eq!(read("prod/*").unwrap(), "prod/*");
    for bad in [
        "", "*", "Cart", "a.b.c", "prod/a.b", "*/cart", "prod/", "/cart", "a/b/c", "x y", "cart.",
        ".prod",
    ] {
        let e = read(bad).unwrap_err();
        assert!(
            e.to_string().contains("is not NAME, NAME.NAMESPACE"),
            "{bad}: {e}"
        );
    }
    let h = EgressHost::depends_on("ratings.prod", "shop").unwrap();
    assert_eq!(h.service(), Some(key("ratings.prod")));
    assert!(h.admits("shop", &key("ratings.prod")));
    assert!(!h.admits("shop", &key("reviews.prod")));
    assert_eq!(
        EgressHost::depends_on("prod/*", "shop").unwrap().service(),
        None
    );
    assert_eq!(MeshScope::parse("observed"), Some(MeshScope::Observed));
    assert_eq!(MeshScope::parse("Observed"), None);
}

#[test]
fn a_sidecar_wins_over_depends_on_which_wins_over_the_mesh_scope() {
    let labels = Labels::new();
    let (hello, other) = (key("hello.default"), key("other.default"));
    let who = |service| Viewer {
        service,
        labels: &labels,
        ingress: false,
        asks: true,
    };
    let declared = |s: &mut Snapshot| {
        s.declared = vec![Declared {
            service: hello.clone(),
            hosts: vec![
                EgressHost::depends_on("lone.test", "default").unwrap(),
                EgressHost::depends_on("prod/*", "default").unwrap(),
            ],
        }]
    };
    let whole = Bound {
        hosts: None,
        on_demand: false,
    };

    // `whole` (the default): declarations are not applied.
    let mut s = snapshot(vec![]);
    declared(&mut s);
    assert_eq!(bound_for(&s, &who(&hello)), whole);

    // `declared`: the declaring service sees what it declared (and what it cannot work
    // without); one that declares nothing sees everything.
    s.scope = MeshScope::Declared;
    let b = bound_for(&s, &who(&hello));
    assert!(!b.on_demand);
    let hosts = b.hosts.unwrap();
    assert_eq!(
        names(
            &s,
            &visible(&s, &super::admitted(&s, &hosts, "default"), &who(&hello))
        ),
        [
            "hello.default",
            "reviews.prod",
            "ratings.prod",
            "auth.default",
            "lone.test"
        ]
    );
    assert_eq!(bound_for(&s, &who(&other)), whole);

    // `observed`: the same start for a declaring service, nothing for another; both ask.
    s.scope = MeshScope::Observed;
    assert!(bound_for(&s, &who(&hello)).on_demand);
    assert_eq!(
        bound_for(&s, &who(&other)),
        Bound {
            hosts: Some(vec![]),
            on_demand: true
        }
    );
    let ingress = Viewer {
        ingress: true,
        ..who(&other)
    };
    assert_eq!(bound_for(&s, &ingress), whole);
    // A proxy that predates asking: as under `declared`.
    let old = |service| Viewer {
        asks: false,
        ..who(service)
    };
    assert_eq!(bound_for(&s, &old(&other)), whole);
    assert_eq!(
        bound_for(&s, &old(&hello)),
        Bound {
            hosts: bound_for(&s, &who(&hello)).hosts,
            on_demand: false
        }
    );

    // An Istio Sidecar applies instead of either, and its proxies ask for nothing.
    let mut s = snapshot(vec![ScopedEgress {
        name: "Sidecar istio-system/default".into(),
        scope: Scope::Namespace("istio-system".into()),
        hosts: Some(vec![host("./*")]),
    }]);
    declared(&mut s);
    s.scope = MeshScope::Observed;
    assert_eq!(
        bound_for(&s, &who(&hello)),
        Bound {
            hosts: Some(vec![host("default/*")]),
            on_demand: false
        }
    );
}

#[test]
fn an_asked_host_names_a_service_as_the_proxy_resolves_it() {
    let mut s = snapshot(vec![]);
    s.services[3].vip = Some("10.235.0.7".parse().unwrap());
    let asked = |h: &str, ns: &str| asked_service(&s, h, ns).map(|i| s.services[i].key.to_string());
    assert_eq!(
        asked("reviews.prod", "default").as_deref(),
        Some("reviews.prod")
    );
    assert_eq!(asked("reviews", "prod").as_deref(), Some("reviews.prod"));
    assert_eq!(asked("reviews", "default"), None);
    assert_eq!(
        asked("Reviews.prod.svc.cluster.local.", "default").as_deref(),
        Some("reviews.prod")
    );
    assert_eq!(
        asked("10.235.0.7", "default").as_deref(),
        Some("ratings.prod")
    );
    assert_eq!(asked("nosuch.prod", "default"), None);
    assert_eq!(asked("example.com", "default"), None);
}
