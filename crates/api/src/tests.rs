//! Unit tests: snapshot wire conversions.
//!
//! `sample()` gives every field a non-default value somewhere, and `canary()`, `destination()`,
//! hello's policy and `security()` spell every field out (no `..Default::default()`), so a new
//! model field fails to compile here until it is given a value — and, through
//! `snapshot_round_trips`, a wire mapping.

use super::*;
use model::security::{
    AuthzAction, AuthzPolicy, AuthzRule, Condition, DefaultPolicy, JwtRule, LinkerdAuthn,
    LinkerdAuthz, LinkerdServer, LinkerdTarget, MtlsMode, Operation, PeerAuthn, RequestAuthn,
    Scope, SecuritySpec, Source,
};
use model::{
    ConnectionPool, Cors, Destination, DirectResponse, FailureAccrual, Fault, HashOn, HeaderEdits,
    HeaderMatch, HttpRoute, LoadBalancer, Mirror, OutlierDetection, PathMatch, PathRewrite,
    QueryMatch, Redirect, ResponseClass, RetryBudget, RetryOn, RetryPolicy, Rewrite, RouteMatch,
    StringMatch, SubsetPolicy, TcpDestination, TcpMatch, TcpRoute, TrafficPolicy, VirtualHost,
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
            scheme: Some(StringMatch::Exact("http".into())),
            authority: Some(StringMatch::Prefix("reviews".into())),
            port: Some(9080),
            source_labels: [("app".to_string(), "productpage".to_string())].into(),
            source_namespace: Some("bookinfo".into()),
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
        tcp_routes: vec![],
        policy,
        subsets,
        vip: None,
        ports: vec![],
    }
}

fn workload(namespace: &str, app: &str) -> Scope {
    Scope::Workload {
        namespace: namespace.into(),
        labels: labels("app", app),
    }
}

/// Every security field set, every variant of every enum used somewhere.
fn security() -> SecuritySpec {
    let source = Source {
        principals: vec!["cluster.local/ns/default/sa/sleep".into()],
        not_principals: vec!["*/sa/legacy".into()],
        request_principals: vec!["testing@secure.istio.io/*".into()],
        not_request_principals: vec!["*/admin".into()],
        namespaces: vec!["foo".into()],
        not_namespaces: vec!["legacy".into()],
        ip_blocks: vec!["10.0.0.0/8".into()],
        not_ip_blocks: vec!["10.1.0.0/16".into()],
        remote_ip_blocks: vec!["203.0.113.0/24".into()],
        not_remote_ip_blocks: vec!["203.0.113.4".into()],
    };
    let operation = Operation {
        hosts: vec!["httpbin.foo".into()],
        not_hosts: vec!["*.internal".into()],
        ports: vec![8000],
        not_ports: vec![15000],
        methods: vec!["GET".into()],
        not_methods: vec!["DELETE".into()],
        paths: vec!["/headers".into(), "/api/{*}/items/{**}".into()],
        not_paths: vec!["/admin*".into()],
    };
    let rule = AuthzRule {
        from: vec![source, Source::default()],
        to: vec![operation],
        when: vec![Condition {
            key: "request.auth.claims[groups]".into(),
            values: vec!["group1".into()],
            not_values: vec!["group2".into()],
        }],
    };
    let authz = |name: &str, scope, action| AuthzPolicy {
        name: name.into(),
        scope,
        action,
        rules: vec![rule.clone()],
    };
    SecuritySpec {
        cluster_networks: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
        root_namespace: "mesh-root".into(),
        default_inbound_policy: DefaultPolicy::AllAuthenticated,
        default_policy_overrides: vec![
            (
                Scope::Namespace("legacy".into()),
                DefaultPolicy::AllUnauthenticated,
            ),
            (workload("foo", "a"), DefaultPolicy::ClusterAuthenticated),
            (workload("foo", "b"), DefaultPolicy::ClusterUnauthenticated),
            (workload("foo", "c"), DefaultPolicy::Deny),
            (Scope::Mesh, DefaultPolicy::Audit),
        ],
        peer_authns: vec![
            PeerAuthn {
                name: "PeerAuthentication mesh-root/default".into(),
                scope: Scope::Mesh,
                mode: MtlsMode::Strict,
                ports: vec![],
            },
            PeerAuthn {
                name: "PeerAuthentication foo/httpbin".into(),
                scope: workload("foo", "httpbin"),
                mode: MtlsMode::Unset,
                ports: vec![(8080, MtlsMode::Disable), (8443, MtlsMode::Permissive)],
            },
        ],
        authz: vec![
            authz("foo/allow", workload("foo", "httpbin"), AuthzAction::Allow),
            authz(
                "foo/deny",
                Scope::Namespace("foo".into()),
                AuthzAction::Deny,
            ),
            authz("mesh-root/audit", Scope::Mesh, AuthzAction::Audit),
            authz("foo/ext", Scope::Mesh, AuthzAction::Custom),
            // Empty rules: ALLOW nothing.
            AuthzPolicy {
                name: "foo/allow-nothing".into(),
                scope: Scope::Namespace("foo".into()),
                action: AuthzAction::Allow,
                rules: vec![],
            },
        ],
        request_authns: vec![RequestAuthn {
            name: "foo/jwt".into(),
            scope: workload("foo", "httpbin"),
            rules: vec![
                JwtRule {
                    issuer: "testing@secure.istio.io".into(),
                    audiences: vec!["app".into(), "web".into()],
                    jwks: Some(ED25519_JWKS.into()),
                    jwks_uri: Some("https://example.com/jwks.json".into()),
                    from_headers: vec![("x-jwt".into(), "Bearer ".into())],
                    from_params: vec!["token".into()],
                    from_cookies: vec!["session".into()],
                    forward_original_token: true,
                    output_payload_to_header: Some("x-jwt-payload".into()),
                    output_claim_to_headers: vec![("x-sub".into(), "sub".into())],
                    timeout_ms: Some(5_000),
                },
                // Absent optional fields stay absent, and empty ones empty.
                JwtRule {
                    issuer: "other".into(),
                    jwks_uri: Some(String::new()),
                    ..Default::default()
                },
            ],
        }],
        servers: vec![
            LinkerdServer {
                name: "emojivoto/emoji-grpc".into(),
                scope: workload("emojivoto", "emoji-svc"),
                port: Some(8080),
                access_policy: DefaultPolicy::Deny,
                routes: vec![(
                    "emojivoto/emoji-get".into(),
                    vec![RouteMatch {
                        path: Some(PathMatch::SegmentPrefix("/api".into())),
                        method: Some("GET".into()),
                        ..Default::default()
                    }],
                )],
            },
            LinkerdServer {
                name: "emojivoto/web-http".into(),
                scope: Scope::Namespace("emojivoto".into()),
                port: None,
                access_policy: DefaultPolicy::Audit,
                routes: vec![],
            },
        ],
        linkerd_authz: vec![
            LinkerdAuthz {
                name: "AuthorizationPolicy emojivoto/emoji".into(),
                target: LinkerdTarget::Server("emojivoto/emoji-grpc".into()),
                authns: vec![
                    LinkerdAuthn::MeshTls {
                        identities: vec!["spiffe://cluster.local/ns/emojivoto/sa/web".into()],
                    },
                    LinkerdAuthn::Network {
                        cidrs: vec!["10.0.0.0/8".into()],
                        except: vec!["10.0.1.0/24".into()],
                    },
                ],
            },
            LinkerdAuthz {
                name: "AuthorizationPolicy emojivoto/route".into(),
                target: LinkerdTarget::Route("emojivoto/emoji-get".into()),
                authns: vec![LinkerdAuthn::Unauthenticated],
            },
            LinkerdAuthz {
                name: "AuthorizationPolicy emojivoto/ns".into(),
                target: LinkerdTarget::Namespace("emojivoto".into()),
                authns: vec![],
            },
        ],
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
    let mut plain = service("plain", TrafficPolicy::default(), vec![]);
    plain.vip = Some("10.235.1.2".parse().unwrap());
    plain.ports = vec![
        model::PortSpec {
            port: 80,
            protocol: model::Protocol::Http,
            name: "http".into(),
            why: String::new(),
        },
        model::PortSpec {
            port: 6379,
            protocol: model::Protocol::Tcp,
            name: String::new(),
            why: String::new(),
        },
    ];
    // Connection routes: by SNI and port from some workloads, and weighted with a port.
    plain.tcp_routes = vec![
        TcpRoute {
            name: "VirtualService default/plain tls[0]".into(),
            matches: vec![TcpMatch {
                port: Some(443),
                sni_hosts: vec!["a.example.com".into(), "*.example.org".into()],
                source_labels: labels("app", "web"),
                source_namespace: Some("shop".into()),
            }],
            destinations: vec![TcpDestination {
                to: destination("v1", 100),
                port: None,
            }],
        },
        TcpRoute {
            name: "VirtualService default/plain tcp[0]".into(),
            matches: vec![],
            destinations: vec![
                TcpDestination {
                    to: Destination::service(ServiceKey::new("hello", "default"), 80),
                    port: Some(6379),
                },
                TcpDestination {
                    to: Destination::service(ServiceKey::new("plain", "default"), 20),
                    port: None,
                },
            ],
        },
    ];
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
        security: security(),
        outbound_policy: model::OutboundPolicy::RegistryOnly,
        outbound_policies: vec![model::ScopedOutboundPolicy {
            scope: workload("shop", "web"),
            mode: model::OutboundPolicy::AllowAny,
        }],
        egress: vec![],
        scope: Default::default(),
        declared: vec![],
        on_demand: true,
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
    let mut far = pb::Snapshot::from(&sample());
    far.services[1].tcp_routes[1].destinations[0].port = 65536;
    assert_eq!(
        Snapshot::try_from(far).unwrap_err().to_string(),
        "service plain (VirtualService default/plain tcp[0] destination): port 65536 is not a valid port"
    );
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
        "route canary: request header edit set x-req-set: \"1\\r\\nx: y\" is not an HTTP header value (no CR, LF or other control characters)"
    );
    assert_eq!(
        reject(|w| canary_wire(w).destinations[0]
            .response_headers
            .as_mut()
            .unwrap()
            .remove[0] = "bad name".into()),
        "route canary: hello.default: response header edit remove: \"bad name\" is not an HTTP header name (a token of letters, digits and !#$%&'*+-.^_`|~)"
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
    // A Location the proxy could not send.
    assert_eq!(
        reject(|w| moved(w).path = Some(pb::PathRewrite {
            kind: Some(pb::path_rewrite::Kind::Full("/new\r\nSet-Cookie: a=b".into())),
        })),
        "route moved: redirect: \"/new\\r\\nSet-Cookie: a=b\" is not a URI path: invalid uri character"
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
        "route gone: direct response status 600: not an HTTP status (100..=599)"
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

#[test]
fn absent_security_decodes_to_no_policies() {
    let mut wire = pb::Snapshot::from(&sample());
    wire.security = None;
    let s = Snapshot::try_from(wire).unwrap();
    assert_eq!(s.security, SecuritySpec::new());
    // And an empty spec travels as one.
    let empty = Snapshot::default();
    assert_eq!(
        Snapshot::try_from(pb::Snapshot::from(&empty)).unwrap(),
        empty
    );
}

fn security_wire(w: &mut pb::Snapshot) -> &mut pb::Security {
    w.security.as_mut().unwrap()
}

#[test]
fn bad_security_policies_are_rejected_by_policy() {
    assert_eq!(
        reject(|w| security_wire(w).authz[0].action = "PERMIT".into()),
        "security policy foo/allow: unknown name \"PERMIT\""
    );
    assert_eq!(
        reject(|w| security_wire(w).authz[1].scope = None),
        "security policy foo/deny: a scope of an unknown kind"
    );
    assert_eq!(
        reject(|w| security_wire(w).authz[0].rules[0].to[0].ports[0] = 70_000),
        "security policy foo/allow: port 70000 is not a valid port"
    );
    assert_eq!(
        reject(|w| security_wire(w).peer_authns[1].ports[0].port = 0),
        "security policy PeerAuthentication foo/httpbin: port 0 is not a valid port"
    );
    assert_eq!(
        reject(|w| security_wire(w).peer_authns[0].mode = "MUTUAL".into()),
        "security policy PeerAuthentication mesh-root/default: unknown name \"MUTUAL\""
    );
    assert_eq!(
        reject(|w| security_wire(w).default_inbound_policy = "allow".into()),
        "security policy default inbound policy: unknown name \"allow\""
    );
    assert_eq!(
        reject(|w| security_wire(w).servers[0].access_policy = "open".into()),
        "security policy emojivoto/emoji-grpc: unknown name \"open\""
    );
    assert_eq!(
        reject(
            |w| security_wire(w).servers[0].routes[0].matches[0].headers = vec![pb::HeaderMatch {
                name: "x".into(),
                value: None,
                invert: false,
            }]
        ),
        "route emojivoto/emoji-get: a match without a value"
    );
    assert_eq!(
        reject(|w| security_wire(w).linkerd_authz[0].authns[0].kind = None),
        "security policy AuthorizationPolicy emojivoto/emoji: an authentication of an unknown kind"
    );
    assert_eq!(
        reject(|w| security_wire(w).linkerd_authz[1].target = None),
        "security policy AuthorizationPolicy emojivoto/route: a target of an unknown kind"
    );
    // Keys the proxy cannot verify with: refused whole rather than failing closed.
    let bad_curve = reject(|w| {
        security_wire(w).request_authns[0].rules[0].jwks =
            Some(r#"{"keys":[{"kty":"EC","crv":"P-999","x":"AAAA","y":"AAAA"}]}"#.into())
    });
    assert!(
        bad_curve.starts_with("security policy RequestAuthentication foo/jwt: issuer testing@secure.istio.io: jwks: the JWKS has no usable signing key")
            && bad_curve.contains("P-999"),
        "{bad_curve}"
    );
    assert_eq!(
        reject(
            |w| security_wire(w).servers[0].routes[0].matches[0].method = "GET ME".into()
        ),
        "security policy emojivoto/emoji-grpc: HTTPRoute emojivoto/emoji-get: \"GET ME\" is not an HTTP method"
    );
}

/// A JWKS with one Ed25519 key (RFC 8037's example), which a proxy can verify tokens with.
const ED25519_JWKS: &str =
    r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

#[test]
fn a_control_frame_is_a_grpc_framed_control_message() {
    use prost::Message;
    let wire = pb::Snapshot::from(&sample());
    let snapshot = bytes::Bytes::from(wire.encode_to_vec());
    let [head, body] = crate::control_frame(&snapshot);
    assert_eq!(body, snapshot, "the snapshot's bytes, as they were");
    let framed = [head.as_ref(), body.as_ref()].concat();
    assert_eq!(framed[0], 0, "not compressed");
    let len = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, framed.len() - 5);
    let message = pb::ControlMessage {
        snapshot: Some(wire),
        refused: vec![],
    };
    assert_eq!(framed[5..], message.encode_to_vec());
    assert_eq!(pb::ControlMessage::decode(&framed[5..]).unwrap(), message);
}
