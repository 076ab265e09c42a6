use super::*;

#[test]
fn a_snapshot_is_read_for_its_change_without_decoding_the_rest() {
    use prost::Message;
    let route = |weights: &[(&str, u32)]| pb::HttpRoute {
        destinations: weights
            .iter()
            .map(|(subset, weight)| pb::Destination {
                service: "common".into(),
                namespace: "shared".into(),
                subset: subset.to_string(),
                weight: *weight,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let service = |name: &str, ns: &str, routes| pb::Service {
        name: name.into(),
        namespace: ns.into(),
        port: 80,
        routes,
        ..Default::default()
    };
    let snap = pb::Snapshot {
        version: 42,
        services: vec![
            service("a", "ns-0", vec![]),
            service("common", "shared", vec![route(&[("v1", 93), ("v2", 7)])]),
        ],
        ..Default::default()
    };
    let bytes = Bytes::from(snap.encode_to_vec());
    assert_eq!(read(&bytes), Some((42, 7, 2)));
    let mut initial = snap.clone();
    initial.services[1].routes = vec![route(&[("v1", 100)])];
    assert_eq!(
        read(&Bytes::from(initial.encode_to_vec())),
        Some((42, 0, 2))
    );
    // Through the control message, as it arrives.
    let msg = pb::ControlMessage {
        snapshot: Some(snap),
        refused: vec![],
    }
    .encode_to_vec();
    let lite = LiteControl::decode(msg.as_slice()).unwrap();
    assert_eq!(read(&lite.snapshot), Some((42, 7, 2)));
}
