//! Linkerd tests: ServiceProfiles, `policy.linkerd.io` HTTPRoutes and annotations loaded from
//! YAML, their conditions checked against Linkerd's own evaluation by a tiny matcher.

use super::profile::{self, RequestCondition};
use super::*;
use crate::{load_str, Errors, Loaded};
use model::{PathMatch, ResponseClass, RetryOn, RetryPolicy, RouteMatch};
use std::path::Path;

const MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - {name: books, port: 7000}
  - {name: books-v2, port: 7000}
  - {name: authors, port: 7001}
";

/// `docs` (whole documents), then the mesh: the documents keep their line numbers.
fn file(docs: &[&str], mesh: &str) -> String {
    let mut text = String::new();
    for d in docs {
        text.push_str(d);
        text.push_str("---\n");
    }
    text + mesh
}

fn load(docs: &[&str]) -> Result<Loaded, Errors> {
    load_str(Path::new("l5d.yaml"), &file(docs, MESH))
}

fn ok(docs: &[&str]) -> Loaded {
    let loaded = load(docs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines(&loaded.rejected), Vec::<String>::new());
    loaded
}

/// Diagnostics as `LINE:COL: FIELD: MESSAGE`.
fn lines(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| {
            let d = d.to_string();
            d.strip_prefix("l5d.yaml:").unwrap_or(&d).to_string()
        })
        .collect()
}

fn routes_of(loaded: &Loaded, name: &str) -> Vec<HttpRoute> {
    let key = ServiceKey::new(name, "default");
    let mesh = loaded.mesh.as_ref().unwrap();
    let found: Vec<_> = mesh.routes.iter().filter(|r| r.service == key).collect();
    assert_eq!(found.len(), 1, "{:#?}", mesh.routes);
    found[0].routes.clone()
}

fn names(routes: &[HttpRoute]) -> Vec<&str> {
    routes.iter().map(|r| r.name.as_str()).collect()
}

fn to(name: &str, weight: u32) -> Destination {
    Destination::service(ServiceKey::new(name, "default"), weight)
}

fn path_method(path: &str, method: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::Regex(path.into())),
        method: Some(method.into()),
        ..RouteMatch::default()
    }
}

const PROFILE: &str = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.default.svc.cluster.local
  namespace: default
spec:
  routes:
  - name: GET /books/{id}
    condition:
      method: GET
      pathRegex: /books/[^/]*
    isRetryable: true
    timeout: 300ms
    responseClasses:
    - condition:
        status: {min: 500, max: 504}
      isFailure: true
  - name: POST /books
    condition:
      all:
      - method: POST
      - pathRegex: /books
  retryBudget:
    retryRatio: 0.25
    minRetriesPerSecond: 5
    ttl: 10s
";

const LABEL: &str = "ServiceProfile default/books.default.svc.cluster.local";

#[test]
fn profile_routes_in_order_then_a_catch_all() {
    let loaded = ok(&[PROFILE]);
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    let routes = routes_of(&loaded, "books");
    assert_eq!(
        names(&routes),
        [
            format!("{LABEL} routes[0] (GET /books/{{id}})"),
            format!("{LABEL} routes[1] (POST /books)"),
            format!("{LABEL} (catch-all)"),
        ]
    );
    assert_eq!(
        routes[0],
        HttpRoute {
            name: routes[0].name.clone(),
            matches: vec![path_method("^/books/[^/]*$", "GET")],
            destinations: vec![to("books", 1)],
            timeout_ms: Some(300),
            retry: Some(RetryPolicy {
                attempts: profile::RETRYABLE_ATTEMPTS,
                per_try_timeout_ms: None,
                on: RetryOn {
                    failure_class: true,
                    ..RetryOn::default()
                },
            }),
            response_classes: vec![ResponseClass {
                min: 500,
                max: 504,
                is_failure: true,
            }],
            ..HttpRoute::default()
        }
    );
    assert_eq!(routes[1].matches, [path_method("^/books$", "POST")]);
    assert_eq!(
        (routes[1].retry.as_ref(), routes[1].timeout_ms),
        (None, None)
    );
    assert!(routes[2].matches.is_empty());
    assert_eq!(routes[2].destinations, [to("books", 1)]);

    let policies = &loaded.mesh.as_ref().unwrap().policies;
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].source, LABEL);
    assert_eq!(
        policies[0].policy.retry_budget,
        Some(RetryBudget {
            ratio: 0.25,
            min_per_second: 5,
            ttl_ms: 10_000,
        })
    );
}

#[test]
fn dst_overrides_split_every_route_by_quantity_weights() {
    let profile = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local}
spec:
  routes:
  - name: all
    condition: {pathRegex: '/.*'}
  dstOverrides:
  - {authority: books.default.svc.cluster.local:7000, weight: 900m}
  - {authority: 'books-v2:7000', weight: 100m}
";
    let routes = routes_of(&ok(&[profile]), "books");
    assert_eq!(routes.len(), 2);
    for r in &routes {
        assert_eq!(r.destinations, [to("books", 900), to("books-v2", 100)]);
    }
    // Only dstOverrides: the catch-all alone splits.
    let split_only = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local}
spec:
  dstOverrides:
  - {authority: books-v2.default.svc.cluster.local, weight: 1}
  - {authority: books, weight: 0}
";
    let routes = routes_of(&ok(&[split_only]), "books");
    assert_eq!(names(&routes), [format!("{LABEL} (catch-all)")]);
    assert_eq!(
        routes[0].destinations,
        [to("books-v2", 1000), to("books", 0)]
    );
}

#[test]
fn kubernetes_quantities() {
    for (text, milli) in [
        ("1", Some(1000)),
        ("100", Some(100_000)),
        ("500m", Some(500)),
        ("0.5", Some(500)),
        (".5", Some(500)),
        ("1.", Some(1000)),
        ("+2", Some(2000)),
        ("1k", Some(1_000_000)),
        ("1Ki", Some(1_024_000)),
        ("1e3", Some(1_000_000)),
        ("1E-3", Some(1)),
        ("1P", Some(1_000_000_000_000_000_000)),
        ("1u", Some(1)),
        ("1n", Some(1)),
        ("0", Some(0)),
        ("0.0001", Some(1)),
        ("1.5m", Some(2)),
    ] {
        assert_eq!(profile::quantity_milli(text), milli, "{text}");
    }
    for text in [
        "1E", "", "-1", "m", "1x", "1.2.3", "1 m", "1e", "1e+", "1Ei0", "1e99999", "1EE",
    ] {
        assert_eq!(profile::quantity_milli(text), None, "{text}");
    }
    let number = |yaml: &str| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml).unwrap();
    assert_eq!(profile::weight(&number("0.25")), Ok(250));
    assert_eq!(profile::weight(&number("3")), Ok(3000));
    assert!(profile::weight(&number("5000000"))
        .unwrap_err()
        .contains("too large"));
    assert!(profile::weight(&number("[1]")).is_err());
}

#[test]
fn path_regexes_mean_what_linkerd_makes_of_them() {
    for (written, weft) in [
        ("/books/[^/]*", "^/books/[^/]*$"),
        ("^/books", "^/books$"),
        ("/books$", "^/books$"),
        ("^/api/.*$", "^/api/.*$"),
        ("  /x  ", "^/x$"),
        ("/a|/b", "(?s:.*)(?:^/a|/b$)(?s:.*)"),
        ("/a\\$", "(?s:.*)(?:^/a\\$)(?s:.*)"),
    ] {
        assert_eq!(profile::linkerd_path_regex(written), weft, "{written}");
    }
    // What they match, against Linkerd's own reading (anchor as it does, then search).
    let paths = [
        "/a", "/a/x", "/x/a", "/b", "/x/b", "/b/x", "/a$", "/a$x", "/api/v1",
    ];
    for written in [
        "/a",
        "^/a",
        "/a$",
        "/a|/b",
        "^/a|/b$",
        "/a\\$",
        "/api/.*",
        "(/a)|(/b)",
    ] {
        let weft = profile::linkerd_path_regex(written);
        for path in paths {
            assert_eq!(
                full_match(&weft, path),
                linkerd_path_holds(written, path),
                "{written} on {path}"
            );
        }
    }
}

/// weft's proxy: the regex must match the whole path.
fn full_match(re: &str, path: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$"))
        .unwrap()
        .is_match(path)
}

/// Linkerd's proxy (`service-profiles/src/proto.rs`): trim, anchor what is not, search.
fn linkerd_path_holds(re: &str, path: &str) -> bool {
    let re = re.trim();
    let hd = if re.starts_with('^') { "" } else { "^" };
    let tl = if re.ends_with('$') { "" } else { "$" };
    regex::Regex::new(&format!("{hd}{re}{tl}"))
        .unwrap()
        .is_match(path)
}

/// Linkerd's reading of a condition: every field set must hold.
fn linkerd_holds(c: &RequestCondition, method: &str, path: &str) -> bool {
    fn set(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    set(&c.method).is_none_or(|m| m == method)
        && set(&c.path_regex).is_none_or(|re| linkerd_path_holds(re, path))
        && c.all
            .iter()
            .flatten()
            .all(|c| linkerd_holds(c, method, path))
        && c.any
            .as_ref()
            .is_none_or(|any| any.iter().any(|c| linkerd_holds(c, method, path)))
        && c.not
            .as_ref()
            .is_none_or(|not| !linkerd_holds(not, method, path))
}

/// weft's proxy's reading of one all-of match (its `negated` included).
fn weft_holds(m: &RouteMatch, method: &str, path: &str) -> bool {
    let path_ok = match &m.path {
        None => true,
        Some(PathMatch::Regex(re)) => full_match(re, path),
        Some(other) => panic!("a ServiceProfile makes only regex paths: {other:?}"),
    };
    path_ok
        && m.method.as_deref().is_none_or(|x| x == method)
        && m.negated.iter().all(|n| !weft_holds(n, method, path))
}

fn dnf(yaml: &str) -> Vec<RouteMatch> {
    let c: RequestCondition = serde_yaml_ng::from_str(yaml).unwrap();
    let tree = Node::parse(yaml).unwrap().unwrap();
    let doc = Doc {
        file: Path::new("c.yaml"),
        first_line: 1,
        tree: &tree,
    };
    let mut errors = Vec::new();
    let out = profile::condition(&doc, "", &c, &mut errors);
    assert_eq!(lines(&errors), Vec::<String>::new(), "{yaml}");
    out.unwrap()
}

#[test]
fn conditions_in_disjunctive_normal_form_match_as_linkerd_does() {
    let conditions = [
        "{method: GET}",
        "{pathRegex: /books.*}",
        "{method: GET, pathRegex: /books}",
        "{not: {method: GET}}",
        "{any: [{method: GET}, {method: POST, pathRegex: /books}]}",
        "{all: [{method: GET}, {method: POST}]}",
        "{all: [{pathRegex: /books.*}, {pathRegex: '.*/1'}]}",
        "{all: [{pathRegex: /books.*}, {not: {pathRegex: /books/1}}]}",
        "{not: {any: [{method: GET}, {pathRegex: /authors.*}]}}",
        "{not: {all: [{method: GET}, {pathRegex: /books.*}]}}",
        "{not: {not: {method: PUT}}}",
        "{any: []}",
        "{all: []}",
        "{not: {any: []}}",
        "{not: {all: []}}",
        "{method: GET, any: [{pathRegex: /a}, {pathRegex: /books}], not: {pathRegex: /books}}",
        "{all: [{any: [{method: GET}, {method: POST}]}, {any: [{pathRegex: /books}, \
          {pathRegex: /books/1}]}, {not: {all: [{method: POST}, {pathRegex: /books/1}]}}]}",
        "{pathRegex: /a|/b}",
        // More alternatives than are spelled out: kept as nested negations.
        "{all: [{any: [{method: GET}, {method: POST}, {method: PUT}]}, \
          {any: [{pathRegex: /books}, {pathRegex: /books/1}, {pathRegex: /a}]}, \
          {any: [{pathRegex: '/.*'}, {pathRegex: '/b.*'}, {pathRegex: '.*1'}]}, \
          {any: [{not: {method: PUT}}, {pathRegex: /a}, {pathRegex: '/books.*'}]}]}",
    ];
    let requests: Vec<(&str, &str)> = ["GET", "POST", "PUT"]
        .into_iter()
        .flat_map(|m| {
            [
                "/",
                "/a",
                "/books",
                "/books/1",
                "/authors/2",
                "/x/b",
                "/booksx",
            ]
            .map(|p| (m, p))
        })
        .collect();
    for yaml in conditions {
        let c: RequestCondition = serde_yaml_ng::from_str(yaml).unwrap();
        let matches = dnf(yaml);
        for (method, path) in &requests {
            assert_eq!(
                matches.iter().any(|m| weft_holds(m, method, path)),
                linkerd_holds(&c, method, path),
                "{yaml} on {method} {path}: {matches:#?}"
            );
        }
    }
}

#[test]
fn dnf_shapes() {
    assert_eq!(
        dnf("{any: [{method: GET}, {method: POST, pathRegex: /b}]}"),
        [
            RouteMatch {
                method: Some("GET".into()),
                ..RouteMatch::default()
            },
            path_method("^/b$", "POST"),
        ]
    );
    // Two methods at once: nothing; "not nothing": everything.
    assert_eq!(dnf("{all: [{method: GET}, {method: POST}]}"), []);
    assert_eq!(dnf("{not: {any: []}}"), [RouteMatch::default()]);
    assert_eq!(
        dnf("{not: {any: [{method: GET}, {pathRegex: /a}]}}"),
        [RouteMatch {
            negated: vec![
                RouteMatch {
                    method: Some("GET".into()),
                    ..RouteMatch::default()
                },
                RouteMatch {
                    path: Some(PathMatch::Regex("^/a$".into())),
                    ..RouteMatch::default()
                },
            ],
            ..RouteMatch::default()
        }]
    );
    // The product of many alternatives stays one match.
    let big = "{all: [{any: [{method: A}, {method: B}, {method: C}]}, \
               {any: [{pathRegex: /1}, {pathRegex: /2}, {pathRegex: /3}]}, \
               {any: [{pathRegex: '/.*'}, {pathRegex: '/x.*'}, {pathRegex: '.*y'}]}, \
               {any: [{pathRegex: '/.*1'}, {pathRegex: '/.*2'}, {pathRegex: '.*3'}]}]}";
    assert_eq!(dnf(big).len(), 1);
}

#[test]
fn response_classes_become_status_ranges() {
    #[derive(serde::Deserialize)]
    struct Classes {
        c: Vec<profile::ResponseClassSpec>,
    }
    let classes = |yaml: &str| {
        let yaml = format!("c: {yaml}");
        let specs = serde_yaml_ng::from_str::<Classes>(&yaml).unwrap().c;
        let tree = Node::parse(&yaml).unwrap().unwrap();
        let doc = Doc {
            file: Path::new("c.yaml"),
            first_line: 1,
            tree: &tree,
        };
        let mut errors = Vec::new();
        let out = profile::response_classes(&doc, "c", &specs, &mut errors);
        (out, lines(&errors))
    };
    let class = |min, max, is_failure| ResponseClass {
        min,
        max,
        is_failure,
    };
    let (out, errors) = classes(
        "[{condition: {not: {status: {min: 200, max: 399}}}, isFailure: true}, \
          {condition: {any: [{status: {min: 200, max: 204}}, {status: {min: 205, max: 210}}]}}, \
          {condition: {all: [{status: {min: 400, max: 499}}, {status: {min: 450, max: 599}}]}, \
           isFailure: true}]",
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        out,
        [
            class(100, 199, true),
            class(400, 999, true),
            class(200, 210, false),
            class(450, 499, true),
        ]
    );
    let (_, errors) = classes(
        "[{condition: {status: {min: 500}}}, {condition: {status: {min: 504, max: 500}}}, \
          {isFailure: true}, {condition: {}}, {condition: {status: {min: 50, max: 600}}}]",
    );
    assert_eq!(
        errors,
        [
            "c.yaml:1:18: c[0].condition.status: status needs a max (Linkerd's proxy ignores a \
             response class without one)",
            "c.yaml:1:53: c[1].condition.status: status min 504 is greater than max 500",
            "c.yaml:1:86: c[2]: a response class needs a condition",
            "c.yaml:1:105: c[3].condition: a response condition needs at least one of status, \
             all, any or not",
            "c.yaml:1:143: c[4].condition.status.min: status min 50 must be between 100 and 599",
            "c.yaml:1:152: c[4].condition.status.max: status max 600 must be between 100 and 599",
        ]
    );
}

#[test]
fn bad_profiles_are_rejected_alone_with_located_errors() {
    let bad = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local}
spec:
  routes:
  - name: bad regex
    condition: {pathRegex: '/books/('}
  - name: no condition
  - name: empty condition
    condition: {}
  - name: ''
    condition: {method: 'GE T'}
    timeout: 1x
  dstOverrides:
  - {authority: nope, weight: 1}
  - {authority: 'authors:80', weight: 1}
  - {authority: books, weight: lots}
  retryBudget: {retryRatio: -1, minRetriesPerSecond: 10, ttl: 90s}
";
    let loaded = load(&[
        bad,
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: fine}
spec:
  hosts: [authors]
  http:
  - route:
    - destination: {host: authors}
",
    ])
    .unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
                        format!("15:6: spec.dstOverrides[0].authority: {LABEL}: backend nope.default is not a service of the mesh"),
                        format!("16:6: spec.dstOverrides[1].authority: {LABEL}: service authors.default listens on port 7001, not 80"),
                        format!("17:24: spec.dstOverrides[2].weight: {LABEL}: weight `lots` is not a non-negative Kubernetes quantity like 1, 100, 500m or 0.5"),
                        format!("7:17: spec.routes[0].condition.pathRegex: {LABEL}: invalid regex: regex parse error: ^(?:^/books/($)$ ^ error: unclosed group"),
            format!("8:5: spec.routes[1]: {LABEL}: missing field `condition`"),
            format!("10:5: spec.routes[2].condition: {LABEL}: a condition needs at least one of method, pathRegex, all, any or not"),
            format!("11:5: spec.routes[3].name: {LABEL}: a route needs a name"),
            format!("12:17: spec.routes[3].condition.method: {LABEL}: \"GE T\" is not an HTTP method"),
            format!("13:5: spec.routes[3].timeout: {LABEL}: `1x` is not a duration like 1s, 0.5s, 100ms or 1m"),
            format!("18:17: spec.retryBudget.retryRatio: {LABEL}: retryRatio -1 must be between 0 and 1000"),
                        format!("18:58: spec.retryBudget.ttl: {LABEL}: ttl must be between 1s and 60s (Linkerd's proxy drops the budget, and so every retry, otherwise)"),
        ]
    );
    // The rest applies: the VirtualService, and no route for books.
    let mesh = loaded.mesh.unwrap();
    assert_eq!(mesh.routes.len(), 1);
    assert_eq!(
        mesh.routes[0].service,
        ServiceKey::new("authors", "default")
    );
}

#[test]
fn profile_names_must_be_fully_qualified_services() {
    let named = |name: &str| {
        format!(
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {{name: {name}}}\n\
             spec:\n  routes:\n  - {{name: r, condition: {{method: GET}}}}\n"
        )
    };
    for (name, message) in [
        (
            "books",
            "ServiceProfile default/books: `books` is not a service's fully qualified name \
             NAME.NAMESPACE.svc.cluster.local, the name Linkerd looks profiles up by",
        ),
        (
            "books.default.svc",
            "ServiceProfile default/books.default.svc: `books.default.svc` is not a service's \
             fully qualified name NAME.NAMESPACE.svc.cluster.local, the name Linkerd looks \
             profiles up by",
        ),
        (
            "nope.default.svc.cluster.local",
            "ServiceProfile default/nope.default.svc.cluster.local: service nope.default is not \
             a service of the mesh",
        ),
    ] {
        let loaded = load(&[&named(name)]).unwrap();
        assert_eq!(
            lines(&loaded.rejected),
            [format!("3:12: metadata.name: {message}")]
        );
    }
    // Without a Mesh document, names are not checked against services.
    let loaded = load_str(
        Path::new("l5d.yaml"),
        &named("nope.default.svc.cluster.local"),
    )
    .unwrap();
    assert!(loaded.rejected.is_empty() && loaded.mesh.is_none());
}

#[test]
fn profile_notices() {
    let elsewhere = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local, namespace: client}
spec:
  routes:
  - {name: r, condition: {method: GET}}
";
    let empty = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: authors.default.svc.cluster.local}
spec:
  opaquePorts: {7001: true}
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
  routes:
  - {name: never, condition: {any: []}}
";
    let loaded = ok(&[elsewhere, empty]);
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "3:51: metadata.namespace: ServiceProfile client/books.default.svc.cluster.local: a \
             profile outside its service's namespace (default) applies only to clients in \
             namespace client in Linkerd, and weft does not yet scope routes by client \
             namespace; ignored",
            "12:3: spec.opaquePorts: ServiceProfile default/authors.default.svc.cluster.local: \
             opaquePorts is not yet supported; ignored",
            "15:19: spec.routes[0].condition: ServiceProfile \
             default/authors.default.svc.cluster.local routes[0] (never): the condition matches \
             no request; the route is never used",
        ]
    );
    let mesh = loaded.mesh.unwrap();
    // The authors profile has a route (that never matches), so it is in force: its catch-all.
    assert_eq!(mesh.routes.len(), 1);
    assert_eq!(mesh.routes[0].routes.len(), 1);
    assert_eq!(
        mesh.routes[0].service,
        ServiceKey::new("authors", "default")
    );
    // A profile with neither routes nor overrides does nothing.
    let idle = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local}
spec:
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
";
    let loaded = ok(&[idle]);
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "4:1: spec: ServiceProfile default/books.default.svc.cluster.local: has no routes and \
          no dstOverrides, so Linkerd does not use it; ignored"
        ]
    );
    let mesh = loaded.mesh.unwrap();
    assert!(mesh.routes.is_empty() && mesh.policies.is_empty());
}

#[test]
fn duplicate_profiles_for_one_service() {
    let loaded = load(&[PROFILE, PROFILE]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [format!(
            "31:3: metadata.name: {LABEL}: one ServiceProfile per service: books.default already \
             has {LABEL} at l5d.yaml:4"
        )]
    );
    assert_eq!(routes_of(&loaded, "books").len(), 3);
}

const VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books-vs}
spec:
  hosts: [books]
  http:
  - route:
    - destination: {host: books-v2}
";

/// A Gateway API HTTPRoute for books, in `api_version`'s group.
fn http_route(api_version: &str, annotations: &str) -> String {
    format!(
        "\
apiVersion: {api_version}
kind: HTTPRoute
metadata:
  name: books
  annotations: {{{annotations}}}
spec:
  parentRefs:
  - {{group: core, kind: Service, name: books, port: 7000}}
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /v2}}
    backendRefs:
    - {{name: books-v2, port: 7000}}
  - backendRefs:
    - {{name: books, port: 7000}}
"
    )
}

#[test]
fn precedence_virtual_service_then_profile_then_httproute() {
    let route = http_route("gateway.networking.k8s.io/v1", "");
    // ServiceProfile beats HTTPRoute, as in Linkerd; the warning is at the loser (the
    // HTTPRoute's parentRef naming the service), as when a VirtualService wins.
    let loaded = ok(&[PROFILE, &route]);
    assert_eq!(
        lines(&loaded.unsupported),
        [format!(
            "35:6: spec.parentRefs[0]: HTTPRoute default/books: service books.default is also \
             routed by {LABEL}; ServiceProfile wins, as in Linkerd; {PRECEDENCE}"
        )]
    );
    assert_eq!(routes_of(&loaded, "books").len(), 3);
    // VirtualService beats ServiceProfile: the profile's routes are shadowed, with a warning.
    let loaded = ok(&[PROFILE, VS]);
    assert_eq!(
        lines(&loaded.unsupported),
        [format!(
            "4:3: metadata.name: {LABEL}: service books.default is also routed by VirtualService \
             default/books-vs; VirtualService wins; {PRECEDENCE}"
        )]
    );
    assert_eq!(
        names(&routes_of(&loaded, "books")),
        ["VirtualService default/books-vs http[0]"]
    );
    assert!(loaded.mesh.unwrap().policies.is_empty());
    // A profile without routes or overrides leaves the HTTPRoute alone.
    let budget_only = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local}
spec:
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
";
    let routes = routes_of(&ok(&[budget_only, &route]), "books");
    assert!(routes[0]
        .name
        .starts_with("HTTPRoute default/books rules[0]"));
}

#[test]
fn profile_beats_traffic_split() {
    let split = "\
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: canary}
spec:
  service: books
  backends:
  - {service: books-v2, weight: 1}
";
    let loaded = ok(&[split, PROFILE]);
    assert_eq!(
        lines(&loaded.unsupported),
        [format!(
            "5:3: spec.service: TrafficSplit default/canary: service books.default is also \
             routed by {LABEL}; ServiceProfile wins, as in Linkerd; {PRECEDENCE}"
        )]
    );
    assert_eq!(routes_of(&loaded, "books").len(), 3);
}

#[test]
fn policy_httproute_routes_like_the_gateway_api_one() {
    let gateway_api = routes_of(
        &ok(&[&http_route("gateway.networking.k8s.io/v1", "")]),
        "books",
    );
    for version in ["v1alpha1", "v1beta1", "v1beta2", "v1beta3"] {
        let loaded = ok(&[&http_route(&format!("policy.linkerd.io/{version}"), "")]);
        assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
        let linkerd = routes_of(&loaded, "books");
        assert_eq!(
            names(&linkerd),
            [
                "HTTPRoute.policy.linkerd.io default/books rules[0].matches[0]",
                "HTTPRoute.policy.linkerd.io default/books rules[1].matches[0]",
            ]
        );
        let renamed: Vec<HttpRoute> = linkerd
            .into_iter()
            .map(|r| HttpRoute {
                name: r.name.replace(".policy.linkerd.io", ""),
                ..r
            })
            .collect();
        assert_eq!(renamed, gateway_api, "{version}");
    }
    // Both groups at once: two resources, ranked together.
    let both = ok(&[
        &http_route("gateway.networking.k8s.io/v1", ""),
        &http_route("policy.linkerd.io/v1beta3", ""),
    ]);
    assert_eq!(routes_of(&both, "books").len(), 4);
}

#[test]
fn server_parents_make_inbound_routes() {
    let inbound = "\
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: books-inbound}
spec:
  parentRefs:
  - {group: policy.linkerd.io, kind: Server, name: books-http}
  rules:
  - matches:
    - path: {value: /admin}
";
    let mixed = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books}
spec:
  parentRefs:
  - {group: policy.linkerd.io, kind: Server, name: books-http}
  - {group: '', kind: Service, name: books}
  rules:
  - backendRefs:
    - {name: books-v2, port: 7000}
";
    // Without the Server: noticed, and the Service parent still routes.
    let loaded = ok(&[inbound, mixed]);
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "6:6: spec.parentRefs[0]: HTTPRoute.policy.linkerd.io default/books-inbound: Server \
             default/books-http is not declared; this inbound route applies to nothing",
            "16:6: spec.parentRefs[0]: HTTPRoute default/books: Server default/books-http is not \
             declared; this inbound route applies to nothing",
        ]
    );
    assert_eq!(
        routes_of(&loaded, "books")[0].destinations,
        [to("books-v2", 1)]
    );
    // With it: both are the Server's routes, and only the mixed one routes outbound.
    let server = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: books-http}
spec:
  podSelector: {matchLabels: {app: books}}
  port: 7000
";
    let loaded = ok(&[inbound, mixed, server]);
    // (This mesh declares no workloads.)
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "26:3: spec.podSelector: Server.policy.linkerd.io default/books-http: selects no \
          workload of the mesh"
        ]
    );
    let mesh = loaded.mesh.unwrap();
    let names: Vec<&str> = mesh.security.servers[0]
        .routes
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(names, ["default/books-inbound", "default/books"]);
    assert_eq!(mesh.routes.len(), 1);
}

#[test]
fn store_keys_tell_the_two_httproute_groups_apart() {
    let text = file(
        &[
            &http_route("gateway.networking.k8s.io/v1", ""),
            &http_route("policy.linkerd.io/v1beta3", ""),
            PROFILE,
        ],
        MESH,
    );
    let store = crate::Store::default().applied(crate::resources(Path::new("l5d.yaml"), &text));
    assert_eq!(store.resources.len(), 4);
    assert_eq!(store.resources[0].group(), "gateway.networking.k8s.io");
    assert_eq!(store.resources[1].group(), "policy.linkerd.io");
    assert_eq!(store.resources[2].group(), "linkerd.io");
    assert_eq!(store.resources[3].group(), "weft.dev");
    // Another version of the same resource replaces it.
    let again = http_route("policy.linkerd.io/v1beta2", "retry.linkerd.io/http: 5xx");
    let store = store.applied(crate::resources(Path::new("again.yaml"), &again));
    assert_eq!(store.resources.len(), 4);
    let loaded = store.load().unwrap();
    assert_eq!(routes_of(&loaded, "books").len(), 3, "the profile wins");
    // Deleting the profile lets both HTTPRoutes route, one of them retrying.
    let store = store.deleted(&crate::resources(Path::new("l5d.yaml"), PROFILE));
    let routes = routes_of(&store.load().unwrap(), "books");
    assert_eq!(routes.len(), 4);
    assert_eq!(routes.iter().filter(|r| r.retry.is_some()).count(), 2);
}

/// The mesh, with `annotations` (YAML lines, each `KEY: VALUE`) on service books (line 9 on).
fn annotated(annotations: &[&str]) -> String {
    let mut text = String::from(
        "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: books
    port: 7000
    annotations:
",
    );
    for a in annotations {
        text.push_str(&format!("      {a}\n"));
    }
    text + "  - {name: books-v2, port: 7000}\n  - {name: authors, port: 7001}\n"
}

fn load_annotated(annotations: &[&str], docs: &[&str]) -> Result<Loaded, Errors> {
    let mut text = annotated(annotations);
    for d in docs {
        text.push_str("---\n");
        text.push_str(d);
    }
    load_str(Path::new("l5d.yaml"), &text)
}

fn retry(attempts: u32, per_try_timeout_ms: Option<u64>, on: RetryOn) -> Option<RetryPolicy> {
    Some(RetryPolicy {
        attempts,
        per_try_timeout_ms,
        on,
    })
}

#[test]
fn service_annotations_make_a_catch_all_route() {
    let loaded = load_annotated(
        &[
            "retry.linkerd.io/http: 5xx,gateway-error, 429,500-503",
            "retry.linkerd.io/grpc: Unavailable,internal",
            "retry.linkerd.io/limit: '3'",
            "retry.linkerd.io/timeout: 200ms",
            "timeout.linkerd.io/request: 2s",
            "timeout.linkerd.io/response: 1s",
            "config.linkerd.io/opaque-ports: '3306'",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "14:7: spec.services[0].annotations[timeout.linkerd.io/response]: service \
          books.default: annotation timeout.linkerd.io/response: with retries, weft retries an \
          attempt that runs out of it (Linkerd does not)"
        ]
    );
    let routes = routes_of(&loaded, "books");
    assert_eq!(
        routes,
        [HttpRoute {
            name: "Service default/books annotations".into(),
            destinations: vec![to("books", 1)],
            timeout_ms: Some(2000),
            retry: retry(
                3,
                Some(200),
                RetryOn {
                    server_error: true,
                    gateway_error: true,
                    status_codes: vec![429, 500, 501, 502, 503],
                    grpc_statuses: vec![13, 14],
                    ..RetryOn::default()
                }
            ),
            ..HttpRoute::default()
        }]
    );
    // The limit defaults to 1; a response timeout alone bounds each attempt without retrying.
    let loaded = load_annotated(&["retry.linkerd.io/http: '504'"], &[]).unwrap();
    let on = RetryOn {
        status_codes: vec![504],
        ..RetryOn::default()
    };
    assert_eq!(routes_of(&loaded, "books")[0].retry, retry(1, None, on));
    let loaded = load_annotated(&["timeout.linkerd.io/response: 1m"], &[]).unwrap();
    assert_eq!(
        routes_of(&loaded, "books")[0].retry,
        retry(0, Some(60_000), RetryOn::default())
    );
    // Nothing that changes a route: no route.
    let loaded = load_annotated(&["timeout.linkerd.io/request: '0'"], &[]).unwrap();
    assert!(loaded.mesh.unwrap().routes.is_empty());
}

#[test]
fn service_annotation_notices() {
    let loaded = load_annotated(
        &[
            "retry.linkerd.io/limit: '0'",
            "timeout.linkerd.io/idle: 5m",
            "retry.linkerd.io/typo: x",
            "balancer.linkerd.io/failure-accrual-consecutive-max-failures: '3'",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "9:7: spec.services[0].annotations[retry.linkerd.io/limit]: service books.default: \
             annotation retry.linkerd.io/limit: `0` means the default limit (1) to Linkerd, not \
             \"no retries\"; remove the retry annotations to disable retries",
            "10:7: spec.services[0].annotations[timeout.linkerd.io/idle]: service books.default: \
             annotation timeout.linkerd.io/idle is not yet supported; ignored",
            "11:7: spec.services[0].annotations[retry.linkerd.io/typo]: service books.default: \
             annotation retry.linkerd.io/typo is not one Linkerd reads; ignored",
            "12:7: spec.services[0].annotations[balancer.linkerd.io/failure-accrual-consecutive-\
             max-failures]: service books.default: annotation \
             balancer.linkerd.io/failure-accrual-consecutive-max-failures does nothing without \
             balancer.linkerd.io/failure-accrual: consecutive; ignored",
        ]
    );
    // The limit of 0 is Linkerd's default of 1.
    let routes = routes_of(&loaded, "books");
    assert_eq!(routes[0].retry, retry(1, None, RetryOn::default()));
    assert!(loaded.mesh.unwrap().policies.is_empty());
}

#[test]
fn bad_service_annotations_fail_the_mesh_naming_service_and_annotation() {
    let err = load_annotated(
        &[
            "retry.linkerd.io/http: 5xx,600",
            "retry.linkerd.io/grpc: aborted",
            "retry.linkerd.io/limit: many",
            "retry.linkerd.io/timeout: 1.5s",
            "timeout.linkerd.io/request: 10",
            "timeout.linkerd.io/response: -1s",
            "balancer.linkerd.io/failure-accrual: sometimes",
        ],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        lines(&err.0),
        [
            "9:7: spec.services[0].annotations[retry.linkerd.io/http]: service books.default: \
             annotation retry.linkerd.io/http: `600` is not a retry condition: use 5xx, \
             gateway-error, a status code (504) or a range (500-504), separated by commas",
            "10:7: spec.services[0].annotations[retry.linkerd.io/grpc]: service books.default: \
             annotation retry.linkerd.io/grpc: `aborted` is not a gRPC retry condition: use \
             cancelled, deadline-exceeded, internal, resource-exhausted or unavailable, \
             separated by commas",
            "11:7: spec.services[0].annotations[retry.linkerd.io/limit]: service books.default: \
             annotation retry.linkerd.io/limit: `many` is not a number from 0 to 65535",
            "12:7: spec.services[0].annotations[retry.linkerd.io/timeout]: service \
             books.default: annotation retry.linkerd.io/timeout: `1.5s` is not a duration like \
             100ms, 5s, 1m, 2h or 1d",
            "13:7: spec.services[0].annotations[timeout.linkerd.io/request]: service \
             books.default: annotation timeout.linkerd.io/request: `10` is not a duration like \
             100ms, 5s, 1m, 2h or 1d",
            "14:7: spec.services[0].annotations[timeout.linkerd.io/response]: service \
             books.default: annotation timeout.linkerd.io/response: `-1s` is not a duration \
             like 100ms, 5s, 1m, 2h or 1d",
            "15:7: spec.services[0].annotations[balancer.linkerd.io/failure-accrual]: service \
             books.default: annotation balancer.linkerd.io/failure-accrual: failure accrual \
             `sometimes` is not supported: use `consecutive`",
        ]
    );
}

#[test]
fn failure_accrual_annotations_become_a_policy() {
    let loaded =
        load_annotated(&["balancer.linkerd.io/failure-accrual: consecutive"], &[]).unwrap();
    let mesh = loaded.mesh.unwrap();
    assert!(mesh.routes.is_empty());
    assert_eq!(mesh.policies.len(), 1);
    assert_eq!(mesh.policies[0].source, "Service default/books annotations");
    assert_eq!(
        mesh.policies[0].policy,
        TrafficPolicy {
            failure_accrual: Some(FailureAccrual {
                max_failures: 7,
                min_penalty_ms: 1_000,
                max_penalty_ms: 60_000,
                jitter_ratio: 0.5,
            }),
            ..TrafficPolicy::default()
        }
    );
    let loaded = load_annotated(
        &[
            "balancer.linkerd.io/failure-accrual: consecutive",
            "balancer.linkerd.io/failure-accrual-consecutive-max-failures: '3'",
            "balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 500ms",
            "balancer.linkerd.io/failure-accrual-consecutive-max-penalty: 1d",
            "balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio: '2.5'",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        loaded.mesh.unwrap().policies[0].policy.failure_accrual,
        Some(FailureAccrual {
            max_failures: 3,
            min_penalty_ms: 500,
            max_penalty_ms: 86_400_000,
            jitter_ratio: 2.5,
        })
    );
    let err = load_annotated(
        &[
            "balancer.linkerd.io/failure-accrual: consecutive",
            "balancer.linkerd.io/failure-accrual-consecutive-max-failures: '0'",
            "balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 2m",
            "balancer.linkerd.io/failure-accrual-consecutive-max-penalty: 1m",
            "balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio: '101'",
        ],
        &[],
    )
    .unwrap_err();
    let messages: Vec<&str> = err.0.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "service books.default: annotation \
             balancer.linkerd.io/failure-accrual-consecutive-max-failures: must be a whole \
             number from 1 to 4294967295",
            "service books.default: annotation \
             balancer.linkerd.io/failure-accrual-consecutive-min-penalty: the min penalty \
             (120000ms) is longer than the max penalty (60000ms)",
            "service books.default: annotation \
             balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio: must be a number \
             from 0.0 to 100.0",
        ]
    );
}

#[test]
fn a_profile_makes_linkerd_ignore_the_annotations() {
    let loaded = load_annotated(
        &[
            "retry.linkerd.io/http: 5xx",
            "balancer.linkerd.io/failure-accrual: consecutive",
        ],
        &[PROFILE],
    )
    .unwrap();
    assert_eq!(
        lines(&loaded.unsupported),
        [
            format!(
                "9:7: spec.services[0].annotations[retry.linkerd.io/http]: service \
                 books.default: annotation retry.linkerd.io/http: Linkerd ignores the retry, \
                 timeout and failure-accrual annotations of a service with a ServiceProfile \
                 ({LABEL}); ignored"
            ),
            format!(
                "10:7: spec.services[0].annotations[balancer.linkerd.io/failure-accrual]: \
                 service books.default: annotation balancer.linkerd.io/failure-accrual: Linkerd \
                 ignores the retry, timeout and failure-accrual annotations of a service with a \
                 ServiceProfile ({LABEL}); ignored"
            ),
        ]
    );
    let mesh = loaded.mesh.unwrap();
    assert_eq!(mesh.policies.len(), 1);
    assert_eq!(mesh.policies[0].policy.failure_accrual, None);
    assert!(mesh.routes[0]
        .routes
        .iter()
        .all(|r| r.retry.is_none() || r.retry.as_ref().unwrap().on.failure_class));
}

#[test]
fn service_annotations_are_defaults_of_the_routes() {
    // A VirtualService route with its own timeout keeps it and gets the retries.
    let vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books-vs}
spec:
  hosts: [books]
  http:
  - match:
    - uri: {prefix: /slow}
    timeout: 30s
    route:
    - destination: {host: books}
  - route:
    - destination: {host: books}
";
    let loaded = load_annotated(
        &[
            "retry.linkerd.io/http: 5xx",
            "retry.linkerd.io/timeout: 300ms",
            "timeout.linkerd.io/request: 2s",
        ],
        &[vs],
    )
    .unwrap();
    let routes = routes_of(&loaded, "books");
    let on = RetryOn {
        server_error: true,
        ..RetryOn::default()
    };
    assert_eq!(routes[0].timeout_ms, Some(30_000));
    assert_eq!(routes[1].timeout_ms, Some(2_000));
    for r in &routes {
        assert_eq!(r.retry, retry(1, Some(300), on.clone()), "{}", r.name);
    }
}

#[test]
fn httproute_annotations_apply_to_its_rules_and_replace_the_services_group() {
    let route = http_route(
        "gateway.networking.k8s.io/v1",
        "retry.linkerd.io/http: gateway-error, retry.linkerd.io/limit: '2'",
    );
    let loaded = load_annotated(
        &[
            "retry.linkerd.io/http: 5xx",
            "retry.linkerd.io/limit: '5'",
            "timeout.linkerd.io/request: 2s",
        ],
        &[&route],
    )
    .unwrap();
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    let routes = routes_of(&loaded, "books");
    assert_eq!(routes.len(), 2);
    let on = RetryOn {
        gateway_error: true,
        ..RetryOn::default()
    };
    for r in &routes {
        // The route's retry group, the service's timeouts.
        assert_eq!(r.retry, retry(2, None, on.clone()), "{}", r.name);
        assert_eq!(r.timeout_ms, Some(2_000), "{}", r.name);
    }
    // An annotation's request timeout wins over the rule's `timeouts.request`.
    let timed = "\
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata:
  name: books
  annotations: {timeout.linkerd.io/request: 5s}
spec:
  parentRefs:
  - {group: core, kind: Service, name: books}
  rules:
  - timeouts: {request: 1s, backendRequest: 500ms}
    backendRefs:
    - {name: books, port: 7000}
";
    let routes = routes_of(&ok(&[timed]), "books");
    assert_eq!(routes[0].timeout_ms, Some(5_000));
    assert_eq!(routes[0].retry, retry(0, Some(500), RetryOn::default()));
}

#[test]
fn httproute_annotation_notices_and_rejections() {
    let notices = http_route(
        "policy.linkerd.io/v1beta3",
        "retry.linkerd.io/grpc: internal, balancer.linkerd.io/failure-accrual: consecutive",
    );
    let loaded = ok(&[&notices]);
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "5:17: metadata.annotations[retry.linkerd.io/grpc]: HTTPRoute.policy.linkerd.io \
             default/books: annotation retry.linkerd.io/grpc is read on Services and GRPCRoutes, \
             not on HTTPRoutes; ignored",
            "5:50: metadata.annotations[balancer.linkerd.io/failure-accrual]: \
             HTTPRoute.policy.linkerd.io default/books: annotation \
             balancer.linkerd.io/failure-accrual is read on Services only; ignored",
        ]
    );
    let bad = http_route(
        "gateway.networking.k8s.io/v1",
        "retry.linkerd.io/http: 5xx, timeout.linkerd.io/request: soon",
    );
    let loaded = load(&[&bad, VS]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "5:45: metadata.annotations[timeout.linkerd.io/request]: HTTPRoute default/books: \
          annotation timeout.linkerd.io/request: `soon` is not a duration like 100ms, 5s, 1m, \
          2h or 1d"
        ]
    );
    // The rest applies.
    assert_eq!(
        names(&routes_of(&loaded, "books")),
        ["VirtualService default/books-vs http[0]"]
    );
    // A policy.linkerd.io HTTPRoute that does not parse is rejected under its group's name.
    let unparsed = http_route("policy.linkerd.io/v1beta3", "").replace("rules:", "rulez:");
    let loaded = load(&[&unparsed]).unwrap();
    assert_eq!(loaded.rejected.len(), 1);
    assert!(
        loaded.rejected[0]
            .message
            .starts_with("HTTPRoute.policy.linkerd.io default/books: "),
        "{:?}",
        loaded.rejected
    );
}

#[test]
fn linkerd_policies_join_a_destination_rules() {
    let dr = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books}
spec:
  host: books
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
";
    let loaded =
        load_annotated(&["balancer.linkerd.io/failure-accrual: consecutive"], &[dr]).unwrap();
    let mesh = loaded.mesh.unwrap();
    assert_eq!(mesh.policies.len(), 1);
    let p = &mesh.policies[0];
    assert_eq!(
        p.source,
        "DestinationRule default/books, Service default/books annotations"
    );
    assert_eq!(p.policy.lb, Some(model::LoadBalancer::RoundRobin));
    assert!(p.policy.failure_accrual.is_some());
    assert!(p.subsets[0].policy.failure_accrual.is_some());
}

#[test]
fn annotation_durations() {
    for (text, ms) in [
        ("0", 0),
        ("100ms", 100),
        ("5s", 5_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        (" 7s ", 7_000),
    ] {
        assert_eq!(annotations::duration_ms(text), Ok(ms), "{text}");
    }
    for text in [
        "",
        "5",
        "1.5s",
        "1m30s",
        "-1s",
        "s",
        "1w",
        "99999999999999999d",
    ] {
        assert!(annotations::duration_ms(text).is_err(), "{text}");
    }
}

#[test]
fn go_durations() {
    for (text, ms) in [
        ("300ms", Some(300)),
        ("1.5s", Some(1500)),
        ("1m30s", Some(90_000)),
        ("0", None),
        ("0s", None),
        ("+2s", Some(2000)),
    ] {
        assert_eq!(profile::go_duration(text), Ok(ms), "{text}");
    }
    for text in ["", "10", "-1s", "1d"] {
        assert!(profile::go_duration(text).is_err(), "{text}");
    }
}

/// A ServiceProfile route without `timeout` has none, and neither has the catch-all: Linkerd
/// dropped its 10 s default in 2.9 ("Removed the default timeout for ServiceProfiles so that
/// ServiceProfile routes behave the same as when there is no ServiceProfile definition",
/// edge-20.9.2; the controller's `toRoute` sends no timeout when the route sets none), though
/// the 2.10–2.13 "Configuring Timeouts" pages still say "If unspecified, the default timeout
/// is 10 seconds". A route's own timeout is kept; `0s` means none.
#[test]
fn profile_routes_have_no_default_timeout() {
    let profile = "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local, namespace: default}
spec:
  routes:
  - {name: list, condition: {method: GET, pathRegex: /books}}
  - {name: slow, condition: {method: GET, pathRegex: /slow}, timeout: 25s}
  - {name: unbounded, condition: {method: GET, pathRegex: /stream}, timeout: 0s}
";
    let routes = routes_of(&ok(&[profile]), "books");
    let timeouts: Vec<_> = routes
        .iter()
        .map(|r| (r.name.as_str(), r.timeout_ms))
        .collect();
    assert_eq!(
        timeouts,
        [
            (
                "ServiceProfile default/books.default.svc.cluster.local routes[0] (list)",
                None
            ),
            (
                "ServiceProfile default/books.default.svc.cluster.local routes[1] (slow)",
                Some(25_000)
            ),
            (
                "ServiceProfile default/books.default.svc.cluster.local routes[2] (unbounded)",
                None
            ),
            (
                "ServiceProfile default/books.default.svc.cluster.local (catch-all)",
                None
            ),
        ]
    );
}
