//! Istio tests: VirtualService filters (rewrite, redirect, direct response, mirrors, CORS,
//! header edits), DestinationRule traffic policies, Gateways and ingress routes, and the
//! rejection of one resource while the others apply.

use crate::{load_str, Diagnostic, Loaded};
use model::{
    ConnectionPool, Cors, DirectResponse, HashOn, HeaderEdits, HttpRoute, LoadBalancer, Mirror,
    OutlierDetection, PathMatch, PathRewrite, Redirect, Rewrite, ServiceKey, StringMatch,
    TrafficPolicy,
};
use std::path::Path;

const MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: shop}
spec:
  services:
  - name: reviews
    port: 9080
    workloads:
    - {name: reviews-v1, labels: {version: v1}, command: [x]}
    - {name: reviews-v2, labels: {version: v2}, command: [x]}
  - {name: ratings, port: 9080}
  - {name: productpage, port: 9080}
  - {name: shadow, port: 9080}
";

const REVIEWS_DR: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

/// The mesh (13 lines) then `docs`, each after a `---` line.
fn text(docs: &[&str]) -> String {
    let mut text = MESH.to_string();
    for d in docs {
        text.push_str("---\n");
        text.push_str(d);
    }
    text
}

fn load(docs: &[&str]) -> Loaded {
    load_str(Path::new("istio.yaml"), &text(docs)).unwrap_or_else(|e| panic!("{e}"))
}

/// Diagnostics as `LINE:COL: FIELD: MESSAGE`.
fn lines(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| {
            let d = d.to_string();
            d.strip_prefix("istio.yaml:").unwrap_or(&d).to_string()
        })
        .collect()
}

/// Loads cleanly: no rejection, no warning.
fn clean(docs: &[&str]) -> Loaded {
    let loaded = load(docs);
    assert_eq!(lines(&loaded.rejected), Vec::<String>::new());
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    loaded
}

fn reviews() -> ServiceKey {
    ServiceKey::new("reviews", "default")
}

fn routes_of(loaded: &Loaded, key: &ServiceKey) -> Vec<HttpRoute> {
    let mesh = loaded.mesh.as_ref().unwrap();
    let found: Vec<_> = mesh.routes.iter().filter(|r| r.service == *key).collect();
    assert_eq!(found.len(), 1, "{:#?}", mesh.routes);
    found[0].routes.clone()
}

/// A VirtualService for reviews (its `http` list starts at line 20) with the given rules.
fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\n\
         spec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

/// The routes of reviews with one VirtualService made of `http`.
fn rules(http: &str) -> Vec<HttpRoute> {
    routes_of(&clean(&[REVIEWS_DR, &vs(http)]), &reviews())
}

/// The rejections of loading `docs`, as lines.
fn rejected(docs: &[&str]) -> Vec<String> {
    lines(&load(docs).rejected)
}

#[test]
fn rewrite_after_a_prefix_replaces_the_prefix_and_otherwise_the_path() {
    let r = rules(
        "  - match:
    - uri: {prefix: /wpcatalog}
    - uri: {prefix: /consumercatalog}
    - uri: {exact: /catalog}
    - headers: {x-old: {exact: '1'}}
    rewrite: {uri: /newcatalog, authority: catalog.internal}
    route:
    - destination: {host: reviews}
",
    );
    // Prefix, prefix; exact; a block without uri is Istio's prefix `/`.
    assert_eq!(r.len(), 3, "{r:#?}");
    let prefix = Some(Rewrite {
        path: Some(PathRewrite::Prefix("/newcatalog".into())),
        authority: Some("catalog.internal".into()),
    });
    let full = Some(Rewrite {
        path: Some(PathRewrite::Full("/newcatalog".into())),
        authority: Some("catalog.internal".into()),
    });
    assert_eq!((r[0].matches.len(), &r[0].rewrite), (2, &prefix));
    assert_eq!((r[1].matches.len(), &r[1].rewrite), (1, &full));
    assert_eq!((r[2].matches.len(), &r[2].rewrite), (1, &prefix));
    assert_eq!(r[2].matches[0].path, Some(PathMatch::Prefix("/".into())));
    assert_eq!(r[2].matches[0].headers.len(), 1);
    assert!(r
        .iter()
        .all(|x| x.name == "VirtualService default/reviews http[0]"));

    // No match at all: every request, as the prefix `/`.
    let r = rules("  - rewrite: {uri: /v2}\n    route:\n    - destination: {host: reviews}\n");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].matches[0].path, Some(PathMatch::Prefix("/".into())));
    assert_eq!(
        r[0].rewrite.as_ref().unwrap().path,
        Some(PathRewrite::Prefix("/v2".into()))
    );

    // A regex rewrite, and an authority alone.
    let r = rules(
        "  - rewrite:
      uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}
    route:
    - destination: {host: reviews}
  - rewrite: {authority: ratings}
    route:
    - destination: {host: reviews}
",
    );
    assert!(r[0].matches.is_empty());
    assert_eq!(
        r[0].rewrite,
        Some(Rewrite {
            path: Some(PathRewrite::Regex {
                pattern: "^/service/([^/]+)(/.*)$".into(),
                substitution: "\\2/instance/\\1".into(),
            }),
            authority: None,
        })
    );
    assert_eq!(
        r[1].rewrite,
        Some(Rewrite {
            path: None,
            authority: Some("ratings".into())
        })
    );
}

#[test]
fn redirect_and_direct_response_answer_without_destinations() {
    let r = rules(
        "  - match: [{uri: {prefix: /v1/getProductRatings}}]
    redirect: {uri: /v1/bookRatings, authority: newratings.default.svc.cluster.local}
  - match: [{uri: {prefix: /old}}]
    redirect: {scheme: https, port: 8443, redirectCode: 308}
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: HTTPS, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {prefix: /gone}}]
    directResponse: {status: 410, body: {string: gone}}
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {bytes: aGVsbG8=}}
  - match: [{uri: {prefix: /empty}}]
    directResponse: {status: 503}
  - route:
    - destination: {host: reviews}
",
    );
    assert_eq!(
        r[0].redirect,
        Some(Redirect {
            scheme: None,
            host: Some("newratings.default.svc.cluster.local".into()),
            port: None,
            // Istio replaces the whole path, whatever the match.
            path: Some(PathRewrite::Full("/v1/bookRatings".into())),
            status: 301,
        })
    );
    assert_eq!(
        r[1].redirect,
        Some(Redirect {
            scheme: Some("https".into()),
            host: None,
            port: Some(8443),
            path: None,
            status: 308,
        })
    );
    assert_eq!(r[2].redirect.as_ref().unwrap().port, Some(443));
    for (i, status, body) in [(3, 410, "gone"), (4, 418, "hello"), (5, 503, "")] {
        assert_eq!(
            r[i].direct_response,
            Some(DirectResponse {
                status,
                body: body.into()
            })
        );
        assert!(r[i].destinations.is_empty() && r[i].redirect.is_none());
    }
    assert!(r[0].destinations.is_empty());
    assert_eq!(r[6].destinations.len(), 1);
}

#[test]
fn redirect_and_direct_response_conflicts_are_errors() {
    let bad = vs("  - redirect: {uri: /x, redirectCode: 305}
    rewrite: {uri: /y}
    route:
    - destination: {host: reviews}
  - directResponse: {status: 99, body: {string: a, bytes: YQ==}}
    redirect: {port: 0, derivePort: FROM_REQUEST_PORT, scheme: ftp}
    mirror: {host: shadow}
  - directResponse: {status: 200, body: {bytes: '%%'}}
");
    assert_eq!(
        rejected(&[&bad]),
        [
            "21:5: spec.http[0].redirect: VirtualService default/reviews: a rule cannot have both route and redirect",
            "22:5: spec.http[0].rewrite: VirtualService default/reviews: a rule cannot have both rewrite and redirect",
            "21:25: spec.http[0].redirect.redirectCode: VirtualService default/reviews: redirectCode 305 must be one of 301, 302, 303, 307, 308",
            "25:5: spec.http[1].directResponse: VirtualService default/reviews: a rule cannot have both redirect and directResponse",
            "27:5: spec.http[1].mirror: VirtualService default/reviews: mirror applies only to forwarded requests: the rule needs route",
            "26:56: spec.http[1].redirect.scheme: VirtualService default/reviews: scheme `ftp` must be http or https",
            "26:16: spec.http[1].redirect.port: VirtualService default/reviews: port must be between 1 and 65535",
            "26:25: spec.http[1].redirect.derivePort: VirtualService default/reviews: set only one of port and derivePort",
            "25:22: spec.http[1].directResponse.status: VirtualService default/reviews: status 99 must be between 200 and 599",
            "25:34: spec.http[1].directResponse.body: VirtualService default/reviews: set exactly one of string and bytes",
            "28:42: spec.http[2].directResponse.body.bytes: VirtualService default/reviews: bytes must be base64 of UTF-8 text (weft's bodies are text)",
        ]
    );
}

#[test]
fn mirrors_with_their_shares() {
    let shadow = |per_million| Mirror {
        destination: model::Destination::service(ServiceKey::new("shadow", "default"), 1),
        per_million,
    };
    let mirror = |extra: &str| {
        rules(&format!(
            "  - route:\n    - destination: {{host: reviews}}\n    mirror: {{host: shadow}}\n{extra}"
        ))
        .remove(0)
        .mirrors
    };
    // No share: every request.
    assert_eq!(mirror(""), [shadow(1_000_000)]);
    assert_eq!(
        mirror("    mirrorPercentage: {value: 12.5}\n"),
        [shadow(125_000)]
    );
    assert_eq!(mirror("    mirrorPercent: 30\n"), [shadow(300_000)]);
    // `mirrorPercentage` wins over the deprecated integer.
    assert_eq!(
        mirror("    mirrorPercent: 30\n    mirrorPercentage: {value: 0}\n"),
        [shadow(0)]
    );
    // The newer list, with a subset.
    let r = rules(
        "  - route:
    - destination: {host: ratings}
    mirrors:
    - destination: {host: shadow}
      percentage: {value: 50}
    - destination: {host: reviews, subset: v2}
",
    );
    assert_eq!(r[0].mirrors.len(), 2);
    assert_eq!(r[0].mirrors[0], shadow(500_000));
    assert_eq!(r[0].mirrors[1].per_million, 1_000_000);
    assert_eq!(r[0].mirrors[1].destination.subset.as_deref(), Some("v2"));
    assert_eq!(r[0].mirrors[1].destination.labels["version"], "v2");

    let bad = vs("  - route:
    - destination: {host: reviews}
    mirror: {host: nowhere}
    mirrorPercent: 101
    mirrors:
    - destination: {host: shadow, subset: v9}
      percentage: {value: -1}
");
    assert_eq!(
        rejected(&[REVIEWS_DR, &bad]),
        [
            "34:5: spec.http[0].mirrors: VirtualService default/reviews: a rule cannot have both mirror and mirrors",
            "32:14: spec.http[0].mirror.host: VirtualService default/reviews: host `nowhere` is not a service of the mesh",
            "33:5: spec.http[0].mirrorPercent: VirtualService default/reviews: percent 101 must be between 0 and 100",
            "35:35: spec.http[0].mirrors[0].destination.subset: VirtualService default/reviews: unknown subset v9 of shadow.default",
            "36:20: spec.http[0].mirrors[0].percentage.value: VirtualService default/reviews: percentage -1 must be between 0 and 100",
        ]
    );
}

#[test]
fn cors_policies() {
    let r = rules(
        "  - route:
    - destination: {host: reviews}
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      - regex: 'https://.*\\.example\\.org'
      allowMethods: [POST, GET]
      allowHeaders: [X-Foo-Bar]
      exposeHeaders: [X-Expose]
      maxAge: 24h
      allowCredentials: true
  - route:
    - destination: {host: reviews}
    corsPolicy:
      allowOrigin: ['*']
      maxAge: 1500ms
",
    );
    assert_eq!(
        r[0].cors,
        Some(Cors {
            allow_origins: vec![
                StringMatch::Exact("https://example.com".into()),
                StringMatch::Regex("https://.*\\.example\\.org".into()),
            ],
            allow_methods: vec!["POST".into(), "GET".into()],
            allow_headers: vec!["X-Foo-Bar".into()],
            expose_headers: vec!["X-Expose".into()],
            max_age_s: Some(86_400),
            allow_credentials: true,
        })
    );
    // The deprecated exact list; whole seconds.
    assert_eq!(
        r[1].cors,
        Some(Cors {
            allow_origins: vec![StringMatch::Exact("*".into())],
            max_age_s: Some(1),
            ..Cors::default()
        })
    );
    let bad = vs("  - route:
    - destination: {host: reviews}
    corsPolicy:
      allowOrigins: [{}]
      maxAge: soon
      unmatchedPreflights: IGNORE
");
    let loaded = load(&[&bad]);
    assert_eq!(
        lines(&loaded.rejected),
        [
            "24:22: spec.http[0].corsPolicy.allowOrigins[0]: VirtualService default/reviews: needs one of exact, prefix, regex",
            "25:7: spec.http[0].corsPolicy.maxAge: VirtualService default/reviews: `soon` is not a duration like 1s, 0.5s, 100ms or 1m",
        ]
    );
    assert_eq!(
        lines(&loaded.unsupported),
        ["26:7: spec.http[0].corsPolicy.unmatchedPreflights: VirtualService default/reviews: unmatchedPreflights is not yet supported; ignored"]
    );
}

#[test]
fn header_edits_on_the_rule_and_per_destination() {
    let r = rules(
        "  - headers:
      request:
        set: {X-Test: true, x-b: b}
        add: {X-Trace: on}
        remove: [X-Debug]
      response:
        remove: [Server]
    route:
    - destination: {host: reviews, subset: v2}
      weight: 25
    - destination: {host: reviews, subset: v1}
      headers:
        response: {remove: [foo]}
        request: {set: {X-Version: v1}}
      weight: 75
",
    );
    assert_eq!(
        r[0].request_headers,
        HeaderEdits {
            set: vec![("x-test".into(), "true".into()), ("x-b".into(), "b".into())],
            add: vec![("x-trace".into(), "on".into())],
            remove: vec!["x-debug".into()],
        }
    );
    assert_eq!(r[0].response_headers.remove, ["server"]);
    let (v2, v1) = (&r[0].destinations[0], &r[0].destinations[1]);
    assert!(v2.request_headers.is_empty() && v2.response_headers.is_empty());
    assert_eq!(v1.response_headers.remove, ["foo"]);
    assert_eq!(
        v1.request_headers.set,
        [("x-version".to_string(), "v1".to_string())]
    );
}

/// A DestinationRule for reviews with `spec` after its host (line 20 on).
fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\n\
         spec:\n  host: reviews\n{spec}"
    )
}

fn policies(spec: &str) -> Vec<model::ServicePolicy> {
    clean(&[&dr(spec)]).mesh.unwrap().policies
}

fn policy(spec: &str) -> TrafficPolicy {
    let p = policies(spec);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(
        (&p[0].service, p[0].source.as_str()),
        (&reviews(), "DestinationRule default/reviews")
    );
    p[0].policy.clone()
}

#[test]
fn load_balancers_and_consistent_hashes() {
    let lb = |simple: &str| {
        policy(&format!(
            "  trafficPolicy: {{loadBalancer: {{simple: {simple}}}}}\n"
        ))
        .lb
    };
    assert_eq!(lb("ROUND_ROBIN"), Some(LoadBalancer::RoundRobin));
    assert_eq!(lb("LEAST_REQUEST"), Some(LoadBalancer::LeastRequest));
    assert_eq!(lb("LEAST_CONN"), Some(LoadBalancer::LeastRequest));
    assert_eq!(lb("RANDOM"), Some(LoadBalancer::Random));
    // UNSPECIFIED: weft's default, and so no policy at all.
    assert_eq!(
        policies("  trafficPolicy: {loadBalancer: {simple: UNSPECIFIED}}\n"),
        vec![]
    );

    let hash = |key: &str| {
        policy(&format!(
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {key}\n"
        ))
        .consistent_hash
    };
    assert_eq!(
        hash("{httpHeaderName: X-User}"),
        Some(HashOn::Header("x-user".into()))
    );
    assert_eq!(
        hash("{httpCookie: {name: user, path: /, ttl: 0s}}"),
        Some(HashOn::Cookie {
            name: "user".into(),
            path: Some("/".into()),
            ttl_s: Some(0),
        })
    );
    assert_eq!(
        hash("{httpCookie: {name: user, ttl: 1500ms}}"),
        Some(HashOn::Cookie {
            name: "user".into(),
            path: None,
            ttl_s: Some(2),
        })
    );
    assert_eq!(hash("{useSourceIp: true}"), Some(HashOn::SourceIp));
    assert_eq!(
        hash("{httpQueryParameterName: user}"),
        Some(HashOn::QueryParam("user".into()))
    );
    // The hash algorithm is weft's own: a notice.
    let loaded = load(&[&dr(
        "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 1024}}\n",
    )]);
    assert_eq!(
        lines(&loaded.unsupported),
        ["22:43: spec.trafficPolicy.loadBalancer.consistentHash.ringHash: DestinationRule default/reviews: ringHash is ignored: weft picks its own consistent-hash algorithm"]
    );

    let bad = dr("  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
  subsets:
  - name: a
    trafficPolicy: {loadBalancer: {simple: FASTEST}}
  - name: b
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: false}}}
  - name: c
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x}}}
");
    assert_eq!(
        rejected(&[&bad]),
        [
            "21:20: spec.trafficPolicy.loadBalancer.simple: DestinationRule default/reviews: PASSTHROUGH is not supported: weft always balances over the service's endpoints",
            "24:36: spec.subsets[0].trafficPolicy.loadBalancer.simple: DestinationRule default/reviews: unknown load balancer `FASTEST`: use ROUND_ROBIN, LEAST_REQUEST, RANDOM or UNSPECIFIED",
            "26:36: spec.subsets[1].trafficPolicy.loadBalancer.consistentHash: DestinationRule default/reviews: needs one of httpHeaderName, httpCookie, useSourceIp: true, httpQueryParameterName",
            "28:36: spec.subsets[2].trafficPolicy.loadBalancer.consistentHash: DestinationRule default/reviews: set only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        ]
    );
}

#[test]
fn connection_pools_and_outlier_detection_with_istio_defaults() {
    let p = policy(
        "  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, idleTimeout: 1h}
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 1
        maxRetries: 3
        idleTimeout: 90s
        h2UpgradePolicy: UPGRADE
        useClientProtocol: true
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
",
    );
    assert_eq!(
        p.connection_pool,
        Some(ConnectionPool {
            max_connections: Some(100),
            connect_timeout_ms: Some(30),
            max_pending_requests: Some(10),
            max_requests: Some(1000),
            max_requests_per_connection: Some(1),
            max_retries: Some(3),
            // The HTTP idle timeout is the one that closes pooled connections.
            idle_timeout_ms: Some(90_000),
        })
    );
    assert_eq!(
        p.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: 7,
            interval_ms: 300_000,
            base_ejection_ms: 900_000,
            ..OutlierDetection::default()
        })
    );
    // Only a TCP idle timeout; `0s` disables it.
    let pool = |tcp: &str| {
        policy(&format!(
            "  trafficPolicy:\n    connectionPool:\n      tcp: {tcp}\n"
        ))
        .connection_pool
        .unwrap()
        .idle_timeout_ms
    };
    assert_eq!(pool("{idleTimeout: 10m}"), Some(600_000));
    assert_eq!(pool("{idleTimeout: 0s, maxConnections: 1}"), None);

    let outlier = |o: &str| {
        policy(&format!("  trafficPolicy:\n    outlierDetection: {o}\n"))
            .outlier_detection
            .unwrap()
    };
    // Nothing said: Istio's defaults.
    assert_eq!(outlier("{}"), OutlierDetection::default());
    // The legacy field counts gateway errors and turns the 5xx count off…
    assert_eq!(
        outlier("{consecutiveErrors: 3}"),
        OutlierDetection {
            consecutive_5xx: 0,
            consecutive_gateway: 3,
            ..OutlierDetection::default()
        }
    );
    // …unless the newer fields say otherwise.
    assert_eq!(
        outlier("{consecutiveErrors: 3, consecutive5xxErrors: 5, consecutiveGatewayErrors: 2}"),
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway: 2,
            ..OutlierDetection::default()
        }
    );
    // 0 is Istio's "not set" for the ejection share; the health floor is taken as written.
    assert_eq!(
        outlier("{maxEjectionPercent: 0, minHealthPercent: 50}"),
        OutlierDetection {
            min_health_percent: 50,
            ..OutlierDetection::default()
        }
    );
    assert_eq!(
        outlier("{maxEjectionPercent: 100}").max_ejection_percent,
        100
    );

    let loaded = load(&[&dr("  trafficPolicy:
    connectionPool:
      tcp: {tcpKeepalive: {time: 7200s}, maxConnectionDuration: 1h}
      http: {maxConcurrentStreams: 10}
    outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}
    tls: {mode: ISTIO_MUTUAL}
")]);
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "22:13: spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: DestinationRule default/reviews: tcpKeepalive is not yet supported; ignored",
            "22:42: spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration: DestinationRule default/reviews: maxConnectionDuration is not yet supported; ignored",
            "23:14: spec.trafficPolicy.connectionPool.http.maxConcurrentStreams: DestinationRule default/reviews: maxConcurrentStreams is not yet supported; ignored",
            "24:24: spec.trafficPolicy.outlierDetection.splitExternalLocalOriginErrors: DestinationRule default/reviews: splitExternalLocalOriginErrors is not yet supported; ignored",
            "24:62: spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: DestinationRule default/reviews: consecutiveLocalOriginFailures is not yet supported; ignored",
        ]
    );

    let bad = dr("  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: -1, connectTimeout: 0s}
      http: {h2UpgradePolicy: SOMETIMES, idleTimeout: 5 minutes}
    outlierDetection: {consecutive5xxErrors: -2, interval: 0s, maxEjectionPercent: 101}
");
    assert_eq!(
        rejected(&[&bad]),
        [
            "22:13: spec.trafficPolicy.connectionPool.tcp.maxConnections: DestinationRule default/reviews: -1 must be between 0 and 4294967295",
            "22:33: spec.trafficPolicy.connectionPool.tcp.connectTimeout: DestinationRule default/reviews: must be at least 1ms",
            "23:42: spec.trafficPolicy.connectionPool.http.idleTimeout: DestinationRule default/reviews: `5 minutes` is not a duration like 1s, 0.5s, 100ms or 1m",
            "23:14: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: DestinationRule default/reviews: h2UpgradePolicy `SOMETIMES` must be DEFAULT, DO_NOT_UPGRADE or UPGRADE",
            "24:24: spec.trafficPolicy.outlierDetection.consecutive5xxErrors: DestinationRule default/reviews: consecutive5xxErrors must be 0 or more",
            "24:50: spec.trafficPolicy.outlierDetection.interval: DestinationRule default/reviews: must be at least 1ms",
            "24:64: spec.trafficPolicy.outlierDetection.maxEjectionPercent: DestinationRule default/reviews: 101 must be between 0 and 100",
        ]
    );
}

#[test]
fn port_level_settings_and_subsets_merge_as_istio_does() {
    let p = policies(
        "  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
    connectionPool:
      tcp: {maxConnections: 10}
    outlierDetection: {consecutive5xxErrors: 3}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
      connectionPool:
        http: {http2MaxRequests: 5}
  - name: v2
    labels: {version: v2}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        outlierDetection: {consecutive5xxErrors: 9}
",
    );
    let p = &p[0];
    // Port 80 is not the service's (9080): the top level applies.
    assert_eq!(
        p.policy,
        TrafficPolicy {
            consistent_hash: Some(HashOn::Header("x-user".into())),
            connection_pool: Some(ConnectionPool {
                max_connections: Some(10),
                ..ConnectionPool::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 3,
                ..OutlierDetection::default()
            }),
            ..TrafficPolicy::default()
        }
    );
    // Only subsets with a policy of their own; v2 uses the service's.
    let names: Vec<&str> = p.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["v1", "v3"]);
    // v1: its load balancer replaces the whole one (hash included); its pool replaces the
    // service's; the outlier detection is inherited.
    assert_eq!(
        p.subsets[0].policy,
        TrafficPolicy {
            lb: Some(LoadBalancer::RoundRobin),
            connection_pool: Some(ConnectionPool {
                max_requests: Some(5),
                ..ConnectionPool::default()
            }),
            outlier_detection: p.policy.outlier_detection.clone(),
            ..TrafficPolicy::default()
        }
    );
    assert_eq!(p.subsets[0].labels["version"], "v1");
    // v3: a port-level entry for 9080 replaces everything, defaults for what it leaves out.
    assert_eq!(
        p.subsets[1].policy,
        TrafficPolicy {
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 9,
                ..OutlierDetection::default()
            }),
            ..TrafficPolicy::default()
        }
    );

    // The service's own port at the top level.
    let p = policy(
        "  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    outlierDetection: {}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
",
    );
    assert_eq!(
        p,
        TrafficPolicy {
            lb: Some(LoadBalancer::Random),
            ..TrafficPolicy::default()
        }
    );

    assert_eq!(
        rejected(&[&dr("  trafficPolicy:\n    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n    - port: {number: 0}\n")]),
        [
            "22:7: spec.trafficPolicy.portLevelSettings[0]: DestinationRule default/reviews: needs port.number",
            "23:14: spec.trafficPolicy.portLevelSettings[1].port.number: DestinationRule default/reviews: port must be between 1 and 65535",
        ]
    );
}

#[test]
fn a_second_destination_rule_for_a_host_is_rejected_and_the_first_applies() {
    let second = REVIEWS_DR
        .replace("{name: reviews}", "{name: reviews-2}")
        .replace(
            "{name: v1, labels: {version: v1}}",
            "{name: v3, labels: {version: v3}}",
        )
        + "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n";
    let loaded = load(&[
        REVIEWS_DR,
        &second,
        &vs("  - route:\n    - destination: {host: reviews, subset: v1}\n"),
    ]);
    assert_eq!(
        lines(&loaded.rejected),
        ["28:3: spec.host: DestinationRule default/reviews-2: one DestinationRule per host: reviews.default already has one at istio.yaml:19"]
    );
    let mesh = loaded.mesh.unwrap();
    assert_eq!(mesh.policies, vec![]);
    assert_eq!(
        mesh.routes[0].routes[0].destinations[0].labels["version"],
        "v1"
    );
}

#[test]
fn a_virtual_service_that_needs_a_rejected_destination_rule_is_rejected_too() {
    let bad_dr =
        REVIEWS_DR.to_string() + "  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n";
    let uses_subset = vs("  - route:\n    - destination: {host: reviews, subset: v2}\n");
    let ratings = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\n\
                   spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings}\n";
    let loaded = load(&[&bad_dr, &uses_subset, ratings]);
    assert_eq!(
        lines(&loaded.rejected),
        [
            "23:34: spec.trafficPolicy.loadBalancer.simple: DestinationRule default/reviews: PASSTHROUGH is not supported: weft always balances over the service's endpoints",
            "32:36: spec.http[0].route[0].destination.subset: VirtualService default/reviews: unknown subset v2 of reviews.default",
        ]
    );
    // The rest applies.
    let mesh = loaded.mesh.unwrap();
    let routed: Vec<String> = mesh.routes.iter().map(|r| r.service.to_string()).collect();
    assert_eq!(routed, ["ratings.default"]);
}

const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*.bookinfo.com', 'shop/store.example.com', './local.example.com']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.bookinfo.com]
    tls: {mode: SIMPLE, credentialName: cert}
";

/// A VirtualService bound to `gateways` for `hosts`, sending `/productpage` to productpage.
fn ingress_vs(name: &str, namespace: &str, hosts: &str, gateways: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
  - match: [{{uri: {{prefix: /productpage}}}}]
    route:
    - destination: {{host: productpage.default.svc.cluster.local, port: {{number: 9080}}}}
"
    )
}

#[test]
fn virtual_services_bound_to_a_gateway_route_the_ingress() {
    let bookinfo = ingress_vs(
        "bookinfo",
        "default",
        "[www.bookinfo.com, '*.example.com', other.org]",
        "[bookinfo-gateway]",
    );
    let loaded = load(&[GATEWAY, &bookinfo]);
    assert_eq!(
        lines(&loaded.unsupported),
        ["23:38: spec.servers[1].port.protocol: Gateway default/bookinfo-gateway: protocol HTTPS is not yet supported (weft's ingress serves plain HTTP); this server is ignored"]
    );
    assert_eq!(loaded.rejected, vec![]);
    let mesh = loaded.mesh.unwrap();
    // Not a mesh route.
    assert_eq!(mesh.routes, vec![]);
    assert_eq!(mesh.gateway.len(), 1);
    let v = &mesh.gateway[0];
    assert_eq!(v.name, "VirtualService default/bookinfo");
    // The hosts the Gateway also serves: store.example.com is for namespace shop only.
    assert_eq!(v.hosts, ["www.bookinfo.com", "local.example.com"]);
    assert_eq!(v.routes.len(), 1);
    assert_eq!(
        v.routes[0].destinations[0].service,
        ServiceKey::new("productpage", "default")
    );

    // From namespace shop: its own host; none of the Gateway's: a warning.
    let shop = ingress_vs("store", "shop", "['*']", "[default/bookinfo-gateway]");
    let none = ingress_vs("none", "default", "[other.org]", "[bookinfo-gateway]");
    let loaded = load(&[GATEWAY, &shop, &none]);
    assert_eq!(loaded.rejected, vec![]);
    assert_eq!(
        lines(&loaded.unsupported)[1..],
        ["43:14: spec.gateways[0]: VirtualService default/none: none of its hosts is served by Gateway default/bookinfo-gateway (for namespace default); nothing is routed through it"]
    );
    let hosts: Vec<Vec<String>> = loaded
        .mesh
        .unwrap()
        .gateway
        .into_iter()
        .map(|v| v.hosts)
        .collect();
    assert_eq!(hosts, [["*.bookinfo.com", "store.example.com"]]);
}

#[test]
fn undeclared_gateways_mesh_and_gateway_bindings_and_merged_hosts() {
    // Bound to both: a mesh route for reviews, and ingress routes for both hosts.
    let both = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both}
spec:
  hosts: [reviews, reviews.example.com]
  gateways: [mesh, istio-system/ingress]
  http:
  - route:
    - destination: {host: reviews}
";
    // A second VirtualService on the same ingress host: merged after the first.
    let more = ingress_vs(
        "more",
        "default",
        "[reviews.example.com]",
        "[istio-system/ingress]",
    );
    let loaded = load(&[both, &more]);
    assert_eq!(loaded.rejected, vec![]);
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "20:20: spec.gateways[1]: VirtualService default/both: Gateway istio-system/ingress is not declared; its hosts are bound to weft's ingress as they are",
            "30:14: spec.gateways[0]: VirtualService default/more: Gateway istio-system/ingress is not declared; its hosts are bound to weft's ingress as they are",
        ]
    );
    let mesh = loaded.mesh.unwrap();
    assert_eq!(routes_of_mesh(&mesh, &reviews()).len(), 1);
    let names: Vec<(&str, &Vec<String>, usize)> = mesh
        .gateway
        .iter()
        .map(|v| (v.name.as_str(), &v.hosts, v.routes.len()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "VirtualService default/both",
                &vec!["reviews".to_string()],
                1
            ),
            (
                "VirtualService default/both, VirtualService default/more",
                &vec!["reviews.example.com".to_string()],
                2
            ),
        ]
    );
}

fn routes_of_mesh(mesh: &model::MeshSpec, key: &ServiceKey) -> Vec<HttpRoute> {
    mesh.routes
        .iter()
        .find(|r| r.service == *key)
        .map(|r| r.routes.clone())
        .unwrap_or_default()
}

#[test]
fn gateway_errors_reject_the_gateway() {
    let bad = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, protocol: HTTP}
    hosts: []
  - port: {number: 80, protocol: HTTP}
    hosts: ['a/b/c', 'ns/']
";
    assert_eq!(
        rejected(&[bad, bad]),
        [
            "21:5: spec.servers[0].hosts: Gateway default/gw: needs at least one host",
            "23:13: spec.servers[1].hosts[0]: Gateway default/gw: `a/b/c` is not a host or NAMESPACE/HOST",
            "23:22: spec.servers[1].hosts[1]: Gateway default/gw: `ns/` is not a host or NAMESPACE/HOST",
            "31:5: spec.servers[0].hosts: Gateway default/gw: needs at least one host",
            "33:13: spec.servers[1].hosts[0]: Gateway default/gw: `a/b/c` is not a host or NAMESPACE/HOST",
            "33:22: spec.servers[1].hosts[1]: Gateway default/gw: `ns/` is not a host or NAMESPACE/HOST",
        ]
    );
    let twice = GATEWAY.to_string();
    assert_eq!(
        rejected(&[&twice, &twice]),
        ["29:12: metadata.name: Gateway default/bookinfo-gateway: Gateway default/bookinfo-gateway is already defined at istio.yaml:17"]
    );
}

#[test]
fn a_virtual_service_and_an_httproute_on_one_ingress_host() {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: web-gateway}]
  hostnames: [www.bookinfo.com, api.bookinfo.com]
  rules:
  - backendRefs: [{name: ratings, port: 9080}]
";
    let bookinfo = ingress_vs(
        "bookinfo",
        "default",
        "[www.bookinfo.com]",
        "[bookinfo-gateway]",
    );
    let loaded = load(&[GATEWAY, &bookinfo, route]);
    let warnings = lines(&loaded.unsupported);
    assert_eq!(
        warnings[1..],
        [
            "42:17: spec.parentRefs[0]: HTTPRoute default/web: Gateway default/web-gateway is not declared; the route is bound to weft's ingress with its own hostnames",
            "42:17: spec.parentRefs[0]: HTTPRoute default/web: ingress host www.bookinfo.com is also routed by VirtualService default/bookinfo; VirtualService wins; precedence: VirtualService > ServiceProfile > HTTPRoute > TrafficSplit",
        ]
    );
    let gateway = loaded.mesh.unwrap().gateway;
    let names: Vec<(&str, &Vec<String>)> = gateway
        .iter()
        .map(|v| (v.name.as_str(), &v.hosts))
        .collect();
    assert_eq!(
        names,
        [
            (
                "VirtualService default/bookinfo",
                &vec!["www.bookinfo.com".to_string()]
            ),
            (
                "HTTPRoute default/web",
                &vec!["api.bookinfo.com".to_string()]
            ),
        ]
    );
}

/// A mesh with TCP services (lines 1–16) then `docs`.
fn tcp_mesh(docs: &[&str]) -> Loaded {
    let mut text = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: data}
spec:
  services:
  - name: db
    ports: [{port: 5432, protocol: tcp, name: sql}, {port: 9000, protocol: tcp, name: admin}]
    workloads:
    - {name: db-v1, labels: {version: v1}, command: [x]}
    - {name: db-v2, labels: {version: v2}, command: [x]}
  - {name: backup, port: 6000, protocol: tcp}
  - {name: login, port: 443, protocol: tcp}
  - {name: web, port: 80}
  - {name: api, port: 80}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"
    .to_string();
    for d in docs {
        text.push_str("---\n");
        text.push_str(d);
    }
    load_str(Path::new("istio.yaml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn tcp_and_tls_rules_become_connection_routes_tls_first() {
    use model::{Destination, TcpDestination, TcpMatch, TcpRoute};
    let loaded = tcp_mesh(&["\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: backup, port: {number: 6000}}}]
  - route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, subset: v2}, weight: 20}
  tls:
  - match: [{port: 5432, sniHosts: [Login.example.com, '*.example.org'], sourceLabels: {app: web}, sourceNamespace: default}]
    route: [{destination: {host: login, port: {number: 443}}}]
"]);
    assert_eq!(lines(&loaded.rejected), Vec::<String>::new());
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    let mesh = loaded.mesh.unwrap();
    let db = ServiceKey::new("db", "default");
    // Connection rules only: HTTP routing of db is left to other APIs.
    assert!(
        mesh.routes.iter().all(|r| r.service != db),
        "{:?}",
        mesh.routes
    );
    let found: Vec<_> = mesh.tcp_routes.iter().filter(|r| r.service == db).collect();
    assert_eq!(found.len(), 1);
    let subset = |name: &str, weight: u32| TcpDestination {
        to: Destination {
            subset: Some(name.into()),
            labels: [("version".to_string(), name.to_string())].into(),
            ..Destination::service(db.clone(), weight)
        },
        port: None,
    };
    let to = |service: &str, port: u16| TcpDestination {
        to: Destination::service(ServiceKey::new(service, "default"), 100),
        port: Some(port),
    };
    assert_eq!(
        found[0].routes,
        vec![
            TcpRoute {
                name: "VirtualService default/db tls[0]".into(),
                matches: vec![TcpMatch {
                    port: Some(5432),
                    sni_hosts: vec!["login.example.com".into(), "*.example.org".into()],
                    source_labels: [("app".to_string(), "web".to_string())].into(),
                    source_namespace: Some("default".into()),
                }],
                destinations: vec![to("login", 443)],
            },
            TcpRoute {
                name: "VirtualService default/db tcp[0]".into(),
                matches: vec![TcpMatch {
                    port: Some(9000),
                    ..TcpMatch::default()
                }],
                destinations: vec![to("backup", 6000)],
            },
            TcpRoute {
                name: "VirtualService default/db tcp[1]".into(),
                matches: vec![],
                destinations: vec![subset("v1", 80), subset("v2", 20)],
            },
        ]
    );
}

#[test]
fn connection_rules_are_checked_field_by_field() {
    let loaded = tcp_mesh(&["\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5433}]
    route: [{destination: {host: db, port: {number: 5433}}}]
  - match: [{sniHosts: [a.example.com], destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: backup}, headers: {request: {set: {x: y}}}}]
  tls:
  - route: [{destination: {host: login}}]
  - match: [{port: 5432, sniHosts: ['a.*.com']}, {port: 5432, gateways: [mesh]}]
    route: [{destination: {host: nowhere}}]
"]);
    // tls[] rules are checked (and tried) before tcp[] rules.
    assert_eq!(
        lines(&loaded.rejected),
        [
            "36:5: spec.tls[0].match: a tls rule needs at least one match with sniHosts",
            "37:37: spec.tls[1].match[0].sniHosts[0]: `a.*.com` is not a server name: use NAME, *.SUFFIX or *",
            "37:51: spec.tls[1].match[1].sniHosts: a tls match needs at least one SNI host",
            "37:63: spec.tls[1].match[1].gateways: gateways is not yet supported in a connection match",
            "38:28: spec.tls[1].route[0].destination.host: host `nowhere` is not a service of the mesh",
            "31:14: spec.tcp[0].match[0].port: no host of this VirtualService has port 5433",
            "32:45: spec.tcp[0].route[0].destination.port.number: service db.default listens on ports 5432, 9000, not 5433",
            "33:14: spec.tcp[1].match[0].sniHosts: sniHosts belongs in tls[] rules; a tcp[] rule cannot match a server name",
            "33:41: spec.tcp[1].match[0].destinationSubnets: destinationSubnets is not yet supported in a connection match",
            "34:43: spec.tcp[1].route[0].headers: headers apply to HTTP only; a connection route cannot edit them",
        ]
        .map(|l| {
            let (at, message) = l.split_once(": ").unwrap();
            let (field, message) = message.split_once(": ").unwrap();
            format!("{at}: {field}: VirtualService default/db: {message}")
        })
    );
}

#[test]
fn sidecar_resources_scope_outbound_traffic_policies() {
    use model::security::Scope;
    use model::{OutboundPolicy, ScopedOutboundPolicy};
    let loaded = load(&[
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web}\nspec:\n  workloadSelector: {labels: {app: web}}\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n  egress: [{hosts: ['./*']}]\n",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: one}\nspec: {outboundTrafficPolicy: {mode: ALLOW_ANY}}\n",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: two}\nspec: {outboundTrafficPolicy: {mode: SOMETIMES}}\n",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: three}\nspec: {}\n",
    ]);
    assert_eq!(
        loaded.mesh.as_ref().unwrap().outbound_policies,
        [
            ScopedOutboundPolicy {
                scope: Scope::Namespace("istio-system".into()),
                mode: OutboundPolicy::RegistryOnly,
            },
            ScopedOutboundPolicy {
                scope: Scope::Workload {
                    namespace: "default".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                },
                mode: OutboundPolicy::AllowAny,
            },
            ScopedOutboundPolicy {
                scope: Scope::Namespace("default".into()),
                mode: OutboundPolicy::AllowAny,
            },
        ]
    );
    assert_eq!(
        lines(&loaded.rejected),
        [
            "37:32: spec.outboundTrafficPolicy.mode: Sidecar default/two: unknown mode `SOMETIMES`: use ALLOW_ANY or REGISTRY_ONLY",
            "36:12: metadata.name: Sidecar default/two: one Sidecar without workloadSelector per namespace: default already has one at istio.yaml:31",
            "41:12: metadata.name: Sidecar default/three: one Sidecar without workloadSelector per namespace: default already has one at istio.yaml:31",
        ]
    );
    assert!(
        loaded.unsupported.is_empty(),
        "{:?}",
        lines(&loaded.unsupported)
    );
}

#[test]
fn sidecar_egress_hosts_scope_what_workloads_see() {
    use model::security::Scope;
    use model::{EgressHost, ScopedEgress};
    let loaded = load(&[
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  egress:\n  - hosts: ['./*', 'istio-system/*']\n",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web}\nspec:\n  workloadSelector: {labels: {app: web}}\n  egress:\n  - port: {number: 80, protocol: HTTP, name: http}\n    bind: 127.0.0.1\n    captureMode: NONE\n    hosts: ['*/reviews.prod.svc.cluster.local']\n  - hosts: ['./*']\n",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: open, namespace: prod}\nspec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: bad, namespace: test}\nspec:\n  egress:\n  - hosts: ['reviews.prod', './*', 'pr*d/x']\n  - hosts: []\n",
    ]);
    let h = |s: &str| EgressHost::parse(s).unwrap();
    assert_eq!(
        loaded.mesh.as_ref().unwrap().egress,
        [
            ScopedEgress {
                name: "Sidecar istio-system/default".into(),
                scope: Scope::Namespace("istio-system".into()),
                hosts: Some(vec![h("./*"), h("istio-system/*")]),
            },
            ScopedEgress {
                name: "Sidecar default/web".into(),
                scope: Scope::Workload {
                    namespace: "default".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                },
                hosts: Some(vec![h("*/reviews.prod.svc.cluster.local"), h("./*")]),
            },
            // Without egress: it narrows nothing, but is the one its namespace's workloads get.
            ScopedEgress {
                name: "Sidecar prod/open".into(),
                scope: Scope::Namespace("prod".into()),
                hosts: None,
            },
        ]
    );
    assert_eq!(
        lines(&loaded.rejected),
        [
            "44:13: spec.egress[0].hosts[0]: Sidecar test/bad: `reviews.prod` is not NAMESPACE/DNS_NAME (as `./*`, `istio-system/*` or `*/NAME.NAMESPACE.svc.cluster.local`)",
            "44:36: spec.egress[0].hosts[2]: Sidecar test/bad: `pr*d/x`: the namespace must be `*`, `.`, `~` or a namespace's name",
            "45:5: spec.egress[1].hosts: Sidecar test/bad: an egress listener needs at least one host (NAMESPACE/DNS_NAME; `~/*` for none)",
        ]
    );
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "28:5: spec.egress[0].port: Sidecar default/web: port is ignored: weft's proxies have one outbound listener, and the hosts apply on every port",
            "29:5: spec.egress[0].bind: Sidecar default/web: bind is not yet supported; ignored",
            "30:5: spec.egress[0].captureMode: Sidecar default/web: captureMode is not yet supported; ignored",
        ]
    );
}
