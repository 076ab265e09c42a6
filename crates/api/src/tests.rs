//! Unit tests: snapshot wire conversions.
//!
//! `sample()` gives every field a non-default value somewhere, and `canary()`, `destination()`
//! and hello's policy spell every field out (no `..Default::default()`), so a new model field
//! fails to compile here until it is given a value — and, through `snapshot_round_trips`, a
//! wire mapping.

use super::*;
use model::{
    ConnectionPool, Cors, Destination, DirectResponse, FailureAccrual, Fault, HashOn, HeaderEdits,
    HeaderMatch, HttpRoute, LoadBalancer, Mirror, OutlierDetection, PathMatch, PathRewrite,
    QueryMatch, Redirect, ResponseClass, RetryBudget, RetryOn, RetryPolicy, Rewrite, RouteMatch,
    StringMatch, SubsetPolicy, TrafficPolicy, VirtualHost,
};

fn labels(k: &str, v: &str) -> model::Labels {
    [(k.to_string(), v.to_string())].into()
}

fn edits(tag: &str) -> HeaderEdits {
    HeaderEdits {
        set: vec![(format!("x-{tag}-set"), "1".into())],
        add: vec![
            (format!("x-{tag}-add"), "a".into()),
            (format!("x-{tag}-add"), "b\tc".into()),
        ],
        remove: vec![format!("x-{tag}-remove")],
    }
}

fn destination(subset: &str, weight: u32) -> Destination {
    Destination {
        service: ServiceKey::new("hello", "default"),
        subset: Some(subset.into()),
        labels: labels("version", subset),
        weight,
        request_headers: edits("dest-req"),
        response_headers: edits("dest-resp"),
    }
}

fn canary() -> HttpRoute {
    HttpRoute {
        name: "canary".into(),
        matches: vec![RouteMatch {
            path: Some(PathMatch::Prefix("/api".into())),
            method: Some("GET".into()),
            headers: vec![HeaderMatch {
                name: "end-user".into(),
                value: StringMatch::Exact("jason".into()),
                invert: false,
            }],
            query: vec![QueryMatch {
                name: "debug".into(),
                value: StringMatch::Present,
            }],
            negated: vec![
                RouteMatch {
                    path: Some(PathMatch::SegmentPrefix("/api/admin".into())),
                    ..Default::default()
                },
                RouteMatch {
                    method: Some("DELETE".into()),
                    // Negations nest (Linkerd's `not` of an `all` holding a `not`).
                    negated: vec![RouteMatch {
                        path: Some(PathMatch::Regex("/api/v[0-9]+/x".into())),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }],
        destinations: vec![destination("v1", 90), destination("v2", 10)],
        timeout_ms: Some(1500),
        retry: Some(RetryPolicy {
            attempts: 3,
            per_try_timeout_ms: Some(200),
            on: RetryOn {
                server_error: true,
                gateway_error: true,
                connect_failure: true,
                reset: true,
                refused_stream: true,
                status_codes: vec![500, 429],
                retriable_4xx: true,
                failure_class: true,
                grpc_statuses: vec![4, 14],
            },
        }),
        fault: Some(Fault {
            delay_ms: Some(5000),
            delay_per_million: 1_000_000,
            abort_status: Some(500),
            abort_per_million: 100_000,
        }),
        request_headers: edits("req"),
        response_headers: edits("resp"),
        rewrite: Some(Rewrite {
            path: Some(PathRewrite::Prefix("/v2".into())),
            authority: Some("hello.internal".into()),
        }),
        redirect: None,
        direct_response: None,
        mirrors: vec![
            Mirror {
                destination: destination("shadow", 0),
                per_million: 250_000,
            },
            Mirror {
                destination: Destination::service(ServiceKey::new("audit", "ops"), 1),
                per_million: 1_000_000,
            },
        ],
        cors: Some(Cors {
            allow_origins: vec![
                StringMatch::Exact("https://shop.example.com".into()),
                StringMatch::Prefix("https://dev-".into()),
                StringMatch::Regex(r"https://.*\.example\.org".into()),
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: vec!["x-request-id".into()],
            max_age_s: Some(86_400),
            allow_credentials: true,
        }),
        response_classes: vec![
            ResponseClass {
                min: 500,
                max: 504,
                is_failure: true,
            },
            ResponseClass {
                min: 404,
                max: 404,
                is_failure: false,
            },
        ],
    }
}

/// Routes that answer by themselves: no destination.
fn answering_routes() -> Vec<HttpRoute> {
    vec![
        HttpRoute {
            name: "moved".into(),
            matches: vec![RouteMatch {
                path: Some(PathMatch::Exact("/old".into())),
                ..Default::default()
            }],
            redirect: Some(Redirect {
                scheme: Some("https".into()),
                host: Some("new.example.com".into()),
                port: Some(8443),
                path: Some(PathRewrite::Full("/new".into())),
                status: 308,
            }),
            ..Default::default()
        },
        HttpRoute {
            name: "renamed".into(),
            redirect: Some(Redirect {
                scheme: None,
                host: None,
                port: None,
                path: Some(PathRewrite::Regex {
                    pattern: "^/v1/(.*)$".into(),
                    substitution: r"/v2/\1".into(),
                }),
                status: 302,
            }),
            ..Default::default()
        },
        HttpRoute {
            name: "gone".into(),
            direct_response: Some(DirectResponse {
                status: 410,
                body: "gone for good".into(),
            }),
            ..Default::default()
        },
    ]
}

fn service(name: &str, policy: TrafficPolicy, subsets: Vec<SubsetPolicy>) -> Service {
    Service {
        key: ServiceKey::new(name, "default"),
        port: 80,
        lb: LoadBalancer::RoundRobin,
        endpoints: vec![Endpoint {
            instance: format!("{name}-v1-0"),
            workload: format!("{name}-v1"),
            address: "127.0.0.1:4143".parse().unwrap(),
            labels: labels("app", name),
            identity: Identity::spiffe("default", name),
        }],
        routes: vec![],
        policy,
        subsets,
    }
}

fn sample() -> Snapshot {
    let hello_policy = TrafficPolicy {
        lb: Some(LoadBalancer::LeastRequest),
        consistent_hash: Some(HashOn::Header("x-user".into())),
        connection_pool: Some(ConnectionPool {
            max_connections: Some(1),
            connect_timeout_ms: Some(250),
            max_pending_requests: Some(1),
            max_requests: Some(100),
            max_requests_per_connection: Some(10),
            // A limit of 0 is not "no limit".
            max_retries: Some(0),
            idle_timeout_ms: Some(60_000),
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway: 2,
            interval_ms: 1_000,
            base_ejection_ms: 15_000,
            max_ejection_percent: 100,
            min_health_percent: 50,
        }),
        failure_accrual: Some(FailureAccrual {
            max_failures: 5,
            min_penalty_ms: 500,
            max_penalty_ms: 30_000,
            jitter_ratio: 0.25,
        }),
        retry_budget: Some(RetryBudget {
            ratio: 0.1,
            min_per_second: 5,
            ttl_ms: 20_000,
        }),
    };
    let subsets = vec![
        SubsetPolicy {
            name: "v1".into(),
            labels: labels("version", "v1"),
            policy: TrafficPolicy {
                lb: Some(LoadBalancer::Random),
                consistent_hash: Some(HashOn::Cookie {
                    name: "session".into(),
                    path: Some("/".into()),
                    ttl_s: Some(3600),
                }),
                ..hello_policy.clone()
            },
        },
        SubsetPolicy {
            name: "v2".into(),
            labels: labels("version", "v2"),
            policy: TrafficPolicy {
                lb: Some(LoadBalancer::PeakEwma),
                consistent_hash: Some(HashOn::SourceIp),
                ..hello_policy.clone()
            },
        },
        SubsetPolicy {
            name: "v3".into(),
            labels: labels("version", "v3"),
            policy: TrafficPolicy {
                consistent_hash: Some(HashOn::QueryParam("shard".into())),
                ..Default::default()
            },
        },
        SubsetPolicy {
            name: "v4".into(),
            labels: labels("version", "v4"),
            // An empty path and a zero ttl are not absent ones.
            policy: TrafficPolicy {
                consistent_hash: Some(HashOn::Cookie {
                    name: "pin".into(),
                    path: Some(String::new()),
                    ttl_s: Some(0),
                }),
                connection_pool: Some(ConnectionPool::default()),
                ..Default::default()
            },
        },
    ];
    let mut hello = service("hello", hello_policy, subsets);
    hello.routes = vec![canary()];
    // A service without a policy travels as one, and one with only a cookie hash without path.
    let plain = service("plain", TrafficPolicy::default(), vec![]);
    let sticky = service(
        "sticky",
        TrafficPolicy {
            consistent_hash: Some(HashOn::Cookie {
                name: "sticky".into(),
                path: None,
                ttl_s: None,
            }),
            ..Default::default()
        },
        vec![],
    );
    Snapshot {
        version: 7,
        services: vec![hello, plain, sticky],
        gateway: vec![
            VirtualHost {
                name: "Gateway default/shop".into(),
                hosts: vec!["shop.example.com".into(), "*.example.org".into()],
                routes: {
                    let mut routes = vec![canary()];
                    routes.extend(answering_routes());
                    routes
                },
            },
            VirtualHost {
                name: "HTTPRoute default/any".into(),
                hosts: vec!["*".into()],
                routes: vec![HttpRoute {
                    name: "any".into(),
                    destinations: vec![Destination::service(
                        ServiceKey::new("plain", "default"),
                        1,
                    )],
                    ..Default::default()
                }],
            },
        ],
    }
}

#[test]
fn snapshot_round_trips() {
    let s = sample();
    let wire = pb::Snapshot::from(&s);
    assert_eq!(Snapshot::try_from(wire).unwrap(), s);
}

#[test]
fn snapshot_round_trips_through_bytes() {
    use prost::Message;
    let s = sample();
    let bytes = pb::Snapshot::from(&s).encode_to_vec();
    let wire = pb::Snapshot::decode(bytes.as_slice()).unwrap();
    assert_eq!(Snapshot::try_from(wire).unwrap(), s);
}

#[test]
fn bad_wire_values_are_rejected_by_name() {
    let mut wire = pb::Snapshot::from(&sample());
    wire.services[0].endpoints[0].address = "nowhere".into();
    assert!(matches!(
        Snapshot::try_from(wire.clone()),
        Err(WireError::Address { .. })
    ));
    wire.services[0].port = 70000;
    assert!(matches!(
        Snapshot::try_from(wire.clone()),
        Err(WireError::Port { .. })
    ));
    wire.services[0].port = 80;
    wire.services[0].lb = "magic".into();
    assert_eq!(
        Snapshot::try_from(wire).unwrap_err().to_string(),
        "service hello: unknown load balancer \"magic\""
    );
}

/// The error a one-field change to the sample's wire form produces.
fn reject(edit: impl FnOnce(&mut pb::Snapshot)) -> String {
    let mut wire = pb::Snapshot::from(&sample());
    edit(&mut wire);
    Snapshot::try_from(wire).unwrap_err().to_string()
}

fn canary_wire(w: &mut pb::Snapshot) -> &mut pb::HttpRoute {
    &mut w.services[0].routes[0]
}

#[test]
fn bad_route_filters_are_rejected_by_route() {
    assert_eq!(
        reject(|w| canary_wire(w).response_classes[0].max = 600),
        "route canary: response class 500..=600: not a range of HTTP statuses"
    );
    assert_eq!(
        reject(|w| canary_wire(w).response_classes[0].min = 505),
        "route canary: response class 505..=504: not a range of HTTP statuses"
    );
    assert_eq!(
        reject(|w| canary_wire(w)
            .retry
            .as_mut()
            .unwrap()
            .grpc_statuses
            .push(17)),
        "route canary: retry on gRPC status 17: not a gRPC status"
    );
    assert_eq!(
        reject(
            |w| canary_wire(w).request_headers.as_mut().unwrap().set[0].value = "1\r\nx: y".into()
        ),
        "route canary: header edit: x-req-set: a control character in the value"
    );
    assert_eq!(
        reject(|w| canary_wire(w).destinations[0]
            .response_headers
            .as_mut()
            .unwrap()
            .remove[0] = "bad name".into()),
        "route canary: header edit: \"bad name\" is not a header name"
    );
    assert_eq!(
        reject(|w| canary_wire(w).mirrors[0].destination = None),
        "route canary: a mirror without a destination"
    );
    assert_eq!(
        reject(|w| canary_wire(w).cors.as_mut().unwrap().allow_origins[0].kind = None),
        "route canary: a match without a value"
    );
    assert_eq!(
        reject(
            |w| canary_wire(w).matches[0].negated[1].negated[0].headers = vec![pb::HeaderMatch {
                name: "x".into(),
                value: None,
                invert: false,
            }]
        ),
        "route canary: a match without a value"
    );
    assert_eq!(
        reject(|w| canary_wire(w)
            .rewrite
            .as_mut()
            .unwrap()
            .path
            .as_mut()
            .unwrap()
            .kind = None),
        "route canary: a path rewrite of an unknown kind"
    );
}

fn moved(w: &mut pb::Snapshot) -> &mut pb::Redirect {
    w.gateway[0].routes[1].redirect.as_mut().unwrap()
}

#[test]
fn bad_gateway_answers_are_rejected_by_route() {
    assert_eq!(
        reject(|w| moved(w).status = 200),
        "route moved: redirect status 200: not 301, 302, 303, 307 or 308"
    );
    assert_eq!(
        reject(|w| moved(w).port = Some(70_000)),
        "route moved: redirect port 70000: not a valid port"
    );
    assert_eq!(
        reject(|w| w.gateway[0].routes[3]
            .direct_response
            .as_mut()
            .unwrap()
            .status = 600),
        "route gone: direct response status 600: not an HTTP status"
    );
    assert_eq!(
        reject(|w| w.gateway[0].routes[3].direct_response = None),
        "route gone: no destination"
    );
}

#[test]
fn bad_policies_are_rejected_by_service_and_subset() {
    assert_eq!(
        reject(|w| w.services[0].subsets[1].policy.as_mut().unwrap().lb = "magic".into()),
        "service hello: subset v2: unknown load balancer \"magic\""
    );
    assert_eq!(
        reject(|w| w.services[0]
            .policy
            .as_mut()
            .unwrap()
            .consistent_hash
            .as_mut()
            .unwrap()
            .kind = None),
        "service hello: consistent hash of an unknown kind"
    );
    assert_eq!(
        reject(|w| w.services[0]
            .policy
            .as_mut()
            .unwrap()
            .outlier_detection
            .as_mut()
            .unwrap()
            .max_ejection_percent = 101),
        "service hello: outlier detection max ejection percent 101 is above 100"
    );
    assert_eq!(
        reject(|w| w.services[0]
            .policy
            .as_mut()
            .unwrap()
            .outlier_detection
            .as_mut()
            .unwrap()
            .interval_ms = 0),
        "service hello: outlier detection interval of 0 ms"
    );
    assert_eq!(
        reject(|w| w.services[0]
            .policy
            .as_mut()
            .unwrap()
            .failure_accrual
            .as_mut()
            .unwrap()
            .jitter_ratio = f64::NAN),
        "service hello: failure accrual jitter ratio NaN is not within 0..=100"
    );
    assert_eq!(
        reject(|w| w.services[0]
            .policy
            .as_mut()
            .unwrap()
            .retry_budget
            .as_mut()
            .unwrap()
            .ratio = -0.5),
        "service hello: retry budget ratio -0.5 is not a finite ratio >= 0"
    );
}

#[test]
fn shares_above_all_requests_are_clamped() {
    let mut wire = pb::Snapshot::from(&sample());
    wire.services[0].routes[0].mirrors[0].per_million = 3_000_000;
    let s = Snapshot::try_from(wire).unwrap();
    assert_eq!(s.services[0].routes[0].mirrors[0].per_million, 1_000_000);
}

#[test]
fn absent_policy_and_edits_decode_to_defaults() {
    let mut wire = pb::Snapshot::from(&sample());
    // What an older control plane sends: none of the newer fields.
    let svc = &mut wire.services[0];
    svc.policy = None;
    svc.subsets.clear();
    svc.routes[0].request_headers = None;
    let s = Snapshot::try_from(wire).unwrap();
    assert!(s.services[0].policy.is_empty());
    assert!(s.services[0].routes[0].request_headers.is_empty());
}
