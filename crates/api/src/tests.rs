//! Unit tests: snapshot wire conversions.

use super::*;

fn sample() -> Snapshot {
    Snapshot {
        version: 7,
        services: vec![Service {
            key: ServiceKey::new("hello", "default"),
            port: 80,
            lb: LoadBalancer::RoundRobin,
            endpoints: vec![Endpoint {
                instance: "hello-v1-0".into(),
                workload: "hello-v1".into(),
                address: "127.0.0.1:4143".parse().unwrap(),
                labels: [("app".to_string(), "hello".to_string())].into(),
                identity: Identity::spiffe("default", "hello"),
            }],
            routes: vec![model::HttpRoute {
                name: "canary".into(),
                matches: vec![model::RouteMatch {
                    path: Some(model::PathMatch::Prefix("/api".into())),
                    method: Some("GET".into()),
                    headers: vec![model::HeaderMatch {
                        name: "end-user".into(),
                        value: model::StringMatch::Exact("jason".into()),
                        invert: false,
                    }],
                    query: vec![model::QueryMatch {
                        name: "debug".into(),
                        value: model::StringMatch::Present,
                    }],
                    negated: vec![],
                }],
                destinations: vec![model::Destination {
                    subset: Some("v2".into()),
                    labels: [("version".to_string(), "v2".to_string())].into(),
                    ..model::Destination::service(ServiceKey::new("hello", "default"), 10)
                }],
                timeout_ms: Some(1500),
                retry: Some(model::RetryPolicy {
                    attempts: 3,
                    per_try_timeout_ms: Some(200),
                    on: model::RetryOn {
                        gateway_error: true,
                        status_codes: vec![500],
                        ..Default::default()
                    },
                }),
                fault: Some(model::Fault {
                    delay_ms: Some(5000),
                    delay_per_million: 1_000_000,
                    abort_status: Some(500),
                    abort_per_million: 100_000,
                }),
                ..Default::default()
            }],
            policy: Default::default(),
            subsets: vec![],
        }],
        gateway: vec![],
    }
}

#[test]
fn snapshot_round_trips() {
    let s = sample();
    let wire = pb::Snapshot::from(&s);
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
