use super::*;

fn service(name: &str, port: u16, protocol: model::Protocol) -> model::ServiceSpec {
    model::ServiceSpec {
        name: name.into(),
        namespace: "default".into(),
        port,
        ports: vec![model::PortSpec {
            port,
            protocol,
            name: String::new(),
            why: String::new(),
        }],
        lb: Default::default(),
        labels: Default::default(),
        annotations: Default::default(),
        workloads: Vec::new(),
        capture: Default::default(),
        depends_on: None,
    }
}

#[test]
fn tcp_services_get_a_weft_tcp_variable_each() {
    let services = [
        service("web", 80, model::Protocol::Http),
        service("redis-cache", 6379, model::Protocol::Tcp),
        service("db.main", 5432, model::Protocol::Tcp),
    ];
    // A second port of its own.
    let mut services = services.to_vec();
    services[0].ports.push(model::PortSpec {
        port: 9000,
        protocol: model::Protocol::Tcp,
        name: "tcp-admin".into(),
        why: String::new(),
    });
    let tcp = TcpService::of(&services);
    let names: Vec<_> = tcp.iter().map(TcpService::env_name).collect();
    assert_eq!(
        names,
        [
            "WEFT_TCP_WEB_9000",
            "WEFT_TCP_REDIS_CACHE_6379",
            "WEFT_TCP_DB_MAIN_5432"
        ]
    );
    assert_eq!(tcp[1].key, model::ServiceKey::new("redis-cache", "default"));
}
