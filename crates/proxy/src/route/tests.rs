//! Unit tests: match semantics (segment-wise prefixes, header presence and absence, query
//! parameters, methods) and weighted destinations.

use super::*;
use model::route::Destination;
use model::{LoadBalancer, ServiceKey};

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn backend(name: &str) -> Arc<Backend> {
    Arc::new(crate::table::tests_support::backend(
        name,
        LoadBalancer::RoundRobin,
    ))
}

fn route(matches: Vec<RouteMatch>) -> Route {
    let r = HttpRoute {
        name: "r".into(),
        matches,
        destinations: vec![Destination::service(ServiceKey::new("s", "default"), 1)],
        ..Default::default()
    };
    Route::compile(&r, |_| backend("s")).unwrap()
}

#[test]
fn segment_prefix_matches_whole_segments_only() {
    let r = route(vec![RouteMatch {
        path: Some(PathMatch::SegmentPrefix("/v2".into())),
        ..Default::default()
    }]);
    for (path, want) in [
        ("/v2", true),
        ("/v2/", true),
        ("/v2/example", true),
        ("/v2example", false),
        ("/", false),
    ] {
        assert_eq!(r.matches(&parts("GET", path, &[])), want, "{path}");
    }
    let istio = route(vec![RouteMatch {
        path: Some(PathMatch::Prefix("/v2".into())),
        ..Default::default()
    }]);
    assert!(istio.matches(&parts("GET", "/v2example", &[])));
}

#[test]
fn headers_presence_absence_and_regex() {
    let m = |name: &str, value: StringMatch, invert: bool| {
        route(vec![RouteMatch {
            headers: vec![HeaderMatch {
                name: name.into(),
                value,
                invert,
            }],
            ..Default::default()
        }])
    };
    let jason = m("end-user", StringMatch::Exact("jason".into()), false);
    assert!(jason.matches(&parts("GET", "/", &[("end-user", "jason")])));
    assert!(!jason.matches(&parts("GET", "/", &[("end-user", "json")])));
    assert!(!jason.matches(&parts("GET", "/", &[])));
    let present = m("x-canary", StringMatch::Present, false);
    assert!(present.matches(&parts("GET", "/", &[("x-canary", "")])));
    assert!(!present.matches(&parts("GET", "/", &[])));
    let without = m("x-canary", StringMatch::Present, true);
    assert!(without.matches(&parts("GET", "/", &[])));
    assert!(!without.matches(&parts("GET", "/", &[("x-canary", "1")])));
    let re = m(
        "user-agent",
        StringMatch::Regex(".*Firefox.*".into()),
        false,
    );
    assert!(re.matches(&parts("GET", "/", &[("user-agent", "Mozilla Firefox 1")])));
    assert!(!re.matches(&parts("GET", "/", &[("user-agent", "curl")])));
}

#[test]
fn query_parameters_are_case_sensitive_and_exact() {
    let r = route(vec![RouteMatch {
        query: vec![QueryMatch {
            name: "animal".into(),
            value: StringMatch::Exact("whale".into()),
        }],
        ..Default::default()
    }]);
    assert!(r.matches(&parts("GET", "/?animal=whale", &[])));
    assert!(!r.matches(&parts("GET", "/?animal=whaledolphin", &[])));
    assert!(!r.matches(&parts("GET", "/?ANIMAL=whale", &[])));
    assert!(!r.matches(&parts("GET", "/", &[])));
}

#[test]
fn any_of_the_matches_and_all_conditions_within_one() {
    let r = route(vec![
        RouteMatch {
            method: Some("POST".into()),
            path: Some(PathMatch::Exact("/a".into())),
            ..Default::default()
        },
        RouteMatch {
            method: Some("GET".into()),
            ..Default::default()
        },
    ]);
    assert!(r.matches(&parts("POST", "/a", &[])));
    assert!(!r.matches(&parts("POST", "/b", &[])));
    assert!(r.matches(&parts("GET", "/b", &[])));
    assert!(!r.matches(&parts("HEAD", "/a", &[])));
}

#[test]
fn weights_split_traffic_and_zero_gets_nothing() {
    let r = HttpRoute {
        name: "split".into(),
        matches: vec![],
        destinations: ["a", "b", "c"]
            .iter()
            .zip([70, 30, 0])
            .map(|(n, w)| Destination::service(ServiceKey::new(*n, "default"), w))
            .collect(),
        ..Default::default()
    };
    let r = Route::compile(&r, |d| backend(&d.service.name)).unwrap();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..10_000 {
        *counts
            .entry(r.pick().unwrap().backend.name.clone())
            .or_insert(0) += 1;
    }
    let a = counts.get("a").copied().unwrap_or(0);
    assert!((6700..=7300).contains(&a), "{counts:?}");
    assert_eq!(counts.get("c"), None, "{counts:?}");
}

#[test]
fn istio_scheme_authority_port_and_source_matches() {
    let m = RouteMatch {
        scheme: Some(StringMatch::Exact("http".into())),
        authority: Some(StringMatch::Prefix("reviews".into())),
        port: Some(9080),
        ..Default::default()
    };
    let r = route(vec![m]);
    assert!(r.matches(&parts("GET", "http://reviews:9080/", &[])));
    assert!(r.matches(&parts("GET", "/", &[("host", "reviews.default:9080")])));
    assert!(
        !r.matches(&parts("GET", "http://reviews:80/", &[])),
        "other port"
    );
    assert!(
        !r.matches(&parts("GET", "http://ratings:9080/", &[])),
        "other authority"
    );

    let from_productpage = HttpRoute {
        name: "r".into(),
        matches: vec![RouteMatch {
            source_labels: [("app".to_string(), "productpage".to_string())].into(),
            source_namespace: Some("bookinfo".into()),
            ..Default::default()
        }],
        destinations: vec![Destination::service(ServiceKey::new("s", "default"), 1)],
        ..Default::default()
    };
    let labels: model::Labels = [
        ("app".to_string(), "productpage".to_string()),
        ("version".to_string(), "v1".to_string()),
    ]
    .into();
    let me = Me {
        namespace: "bookinfo",
        labels: &labels,
    };
    let mine = Route::compile_for(&from_productpage, me, |_| backend("s")).unwrap();
    assert!(mine.matches(&parts("GET", "/", &[])));
    let other_ns = Me {
        namespace: "default",
        labels: &labels,
    };
    let theirs = Route::compile_for(&from_productpage, other_ns, |_| backend("s")).unwrap();
    assert!(!theirs.matches(&parts("GET", "/", &[])));
    let nobody = Route::compile(&from_productpage, |_| backend("s")).unwrap();
    assert!(!nobody.matches(&parts("GET", "/", &[])));
}

#[test]
fn operations_are_named_as_istio_names_spans() {
    let reviews = ServiceKey::new("reviews", "default");
    let to = |svc: &ServiceKey, w: u32| Destination::service(svc.clone(), w);
    let path = |p: PathMatch| RouteMatch {
        path: Some(p),
        ..RouteMatch::default()
    };
    let rule = |matches: Vec<RouteMatch>, destinations: Vec<Destination>| HttpRoute {
        name: "VirtualService default/reviews-vs http[0]".into(),
        matches,
        destinations,
        ..HttpRoute::default()
    };
    let one = vec![to(&reviews, 1)];
    let fqdn = "reviews.default.svc.cluster.local";
    for (matches, want) in [
        (vec![], format!("{fqdn}:9080/*")),
        (
            vec![path(PathMatch::Prefix("/api".into()))],
            format!("{fqdn}:9080/api*"),
        ),
        (
            vec![path(PathMatch::Exact("/login".into()))],
            format!("{fqdn}:9080/login"),
        ),
        (
            vec![path(PathMatch::Regex("/u/[0-9]+".into()))],
            format!("{fqdn}:9080/u/[0-9]+"),
        ),
        // Matches that differ in path: any path.
        (
            vec![
                path(PathMatch::Exact("/a".into())),
                path(PathMatch::Exact("/b".into())),
            ],
            format!("{fqdn}:9080/*"),
        ),
    ] {
        assert_eq!(operation(&rule(matches, one.clone()), Some(9080)), want);
    }
    // Two destination services: the resource's name stands for the host.
    let split = rule(
        vec![path(PathMatch::Prefix("/".into()))],
        vec![
            to(&reviews, 50),
            to(&ServiceKey::new("ratings", "default"), 50),
        ],
    );
    assert_eq!(operation(&split, Some(9080)), "reviews-vs:9080/*");
    // Two subsets of one service are still that service.
    let mut v2 = to(&reviews, 50);
    v2.subset = Some("v2".into());
    assert_eq!(
        operation(&rule(vec![], vec![to(&reviews, 50), v2]), Some(9080)),
        format!("{fqdn}:9080/*")
    );
    assert_eq!(default_operation(&reviews, 9080), format!("{fqdn}:9080/*"));
    let compiled = Route::compile(&rule(vec![], one.clone()), |_| backend("reviews"))
        .unwrap()
        .on_port(&rule(vec![], one), Some(9080));
    assert_eq!(&*compiled.operation, format!("{fqdn}:9080/*"));
}
