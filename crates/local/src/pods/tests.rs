use super::*;

fn svc(name: &str, namespace: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        namespace: namespace.into(),
        port: 80,
        ports: Vec::new(),
        lb: Default::default(),
        labels: Default::default(),
        annotations: Default::default(),
        workloads: Vec::new(),
        capture: Default::default(),
        depends_on: None,
    }
}

#[test]
fn names_fit_the_kernel_limits() {
    assert_eq!(bridge_name("shop").len(), 11);
    assert!(bridge_name("a-very-long-mesh-name-indeed").len() <= 15);
    assert_ne!(bridge_name("shop"), bridge_name("shop2"));
    assert_eq!(netns_name("shop", "web-v1-0"), "weft-shop-web-v1-0");
    let long = netns_name(&"m".repeat(40), &"i".repeat(40));
    assert_eq!(long.len(), NETNS_MAX);
    assert!(long.starts_with("weft-mmm"));
    assert_ne!(long, netns_name(&"m".repeat(40), &"i".repeat(41)));
    assert!(veth_name("weft-shop-web-v1-0").len() <= 15);
}

#[test]
fn the_first_subnet_no_interface_uses() {
    assert_eq!(free_subnet(&[]), Some(0));
    let used = [
        "10.234.0.1".parse().unwrap(),
        "10.234.1.7".parse().unwrap(),
        "10.235.2.1".parse().unwrap(),
        "192.168.3.1".parse().unwrap(),
    ];
    assert_eq!(free_subnet(&used), Some(2));
}

#[test]
fn capture_rules_skip_the_sidecar_the_host_and_the_exclusions() {
    let gw = Exempt {
        mark: Some(SOCKET_MARK),
        hosts: vec![Ipv4Addr::new(10, 234, 3, 1)],
        ..Exempt::default()
    };
    let all = capture_rules(&gw, &Capture::default());
    assert!(all.contains("-A PREROUTING -p tcp -j WEFT_INBOUND\n"));
    assert!(all.contains("-A WEFT_INBOUND -p tcp --dport 15006 -j RETURN\n"));
    assert!(all.contains("-A WEFT_INBOUND -p tcp --dport 15020 -j RETURN\n"));
    assert!(all.contains("-A WEFT_INBOUND -p tcp -j REDIRECT --to-ports 15006\n"));
    assert!(all.contains("-A WEFT_OUTPUT -m mark --mark 1337 -j RETURN\n"));
    assert!(all.contains("-A WEFT_OUTPUT -o lo -j RETURN\n"));
    assert!(all.contains("-A WEFT_OUTPUT -d 10.234.3.1/32 -j RETURN\n"));
    assert!(all.ends_with("-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"));

    let some = capture_rules(
        &gw,
        &Capture {
            exclude_outbound_ports: vec![5432],
            exclude_inbound_ports: vec![9901],
            include_outbound_cidrs: vec!["10.235.0.0/16".into()],
            exclude_outbound_cidrs: vec!["192.168.0.0/16".into()],
        },
    );
    assert!(some.contains("-A WEFT_INBOUND -p tcp --dport 9901 -j RETURN\n"));
    assert!(some.contains("-A WEFT_OUTPUT -p tcp --dport 5432 -j RETURN\n"));
    assert!(some.contains("-A WEFT_OUTPUT -d 192.168.0.0/16 -j RETURN\n"));
    assert!(some.contains(
        "-A WEFT_OUTPUT -d 10.235.0.0/16 -p tcp -j REDIRECT --to-ports 15001\n-A WEFT_OUTPUT -j RETURN\n"
    ));
    // Exclusions come before the redirect that would take them.
    assert!(some.find("--dport 9901").unwrap() < some.find("--to-ports 15006").unwrap());
    // Kubernetes pods: the proxy's user, no host.
    let k8s = capture_rules(
        &Exempt {
            uid: Some(1337),
            ..Exempt::default()
        },
        &Capture::default(),
    );
    assert!(k8s.contains("-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"));
    assert!(!k8s.contains("--mark") && !k8s.contains("/32"), "{k8s}");
}

#[test]
fn hosts_name_services_by_their_vip_and_bare_in_the_own_namespace() {
    let services = [svc("web", "shop"), svc("db", "data")];
    let pod = Pod {
        name: "weft-m-web-v1-0".into(),
        address: Ipv4Addr::new(10, 234, 0, 2),
        service: "web".into(),
        namespace: "shop".into(),
        instance: "web-v1-0".into(),
        seq: 1,
    };
    let hosts = hosts_file(&pod, &services);
    let keys: Vec<_> = services.iter().map(|s| s.key()).collect();
    let vips = model::mesh::service_vips(&keys);
    let web = vips[&services[0].key()];
    let db = vips[&services[1].key()];
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
    assert!(hosts.contains("10.234.0.2\tweb-v1-0 weft-m-web-v1-0\n"));
    assert!(hosts.contains(&format!(
        "{web}\tweb.shop web.shop.svc web.shop.svc.cluster.local web\n"
    )));
    assert!(hosts.contains(&format!(
        "{db}\tdb.data db.data.svc db.data.svc.cluster.local\n"
    )));
}

#[test]
fn tproxy_rules_skip_the_sidecar_the_host_and_the_exclusions() {
    let gw = Exempt {
        mark: Some(SOCKET_MARK),
        hosts: vec![Ipv4Addr::new(10, 234, 3, 1)],
        ..Exempt::default()
    };
    let all = tproxy::ruleset(&gw, &Capture::default());
    for line in [
        "    iif \"lo\" meta mark 1338 meta l4proto tcp tproxy to 127.0.0.1:15001 accept\n",
        "    tcp dport { 15006, 15020 } return\n",
        "    meta l4proto tcp tproxy to :15006 meta mark set 1338 accept\n",
        // Without a sidecar to take them: refused, and dropped, never past it.
        "    iif \"lo\" meta mark 1338 meta l4proto tcp reject with tcp reset\n",
        "    tcp flags & (syn | ack) == syn drop\n",
        "    meta mark 1337 return\n",
        "    oif \"lo\" return\n",
        "    ip daddr 10.234.3.1 return\n",
    ] {
        assert!(all.contains(line), "{line} not in\n{all}");
    }
    assert!(all.ends_with("    meta mark set 1338\n  }\n}\n"), "{all}");
    assert!(
        all.contains("    tcp sport { 15006, 15020 } return\n"),
        "{all}"
    );

    let some = tproxy::ruleset(
        &gw,
        &Capture {
            exclude_outbound_ports: vec![5432],
            exclude_inbound_ports: vec![9901],
            include_outbound_cidrs: vec!["10.235.0.0/16".into()],
            exclude_outbound_cidrs: vec!["192.168.0.0/16".into(), "172.16.0.0/12".into()],
        },
    );
    for line in [
        "    tcp dport { 15006, 15020, 9901 } return\n",
        "    tcp dport 5432 return\n",
        "    ip daddr { 192.168.0.0/16, 172.16.0.0/12 } return\n",
        // The app's own replies on a port it serves itself.
        "    tcp sport { 15006, 15020, 9901 } return\n",
        "    ip daddr != 10.235.0.0/16 return\n    meta mark set 1338\n",
    ] {
        assert!(some.contains(line), "{line} not in\n{some}");
    }
    // Exclusions come before the capture that would take them.
    assert!(some.find("dport { 15006").unwrap() < some.find("tproxy to :15006").unwrap());
    assert!(some.find("tcp dport 5432").unwrap() < some.find("meta mark set 1338\n").unwrap());
}
