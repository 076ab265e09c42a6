//! Services asked for on demand (`spec.scope: observed`), over a real discovery stream: a proxy
//! first gets its own service only, with `on_demand` set; an Ask for a service of the mesh
//! brings a snapshot that carries it, one for a host no service has is refused at once; a proxy
//! that lists in its Hello what it was given gets it in its first snapshot from another
//! replica; a proxy a Sidecar bounds has every ask refused; and a proxy that predates asking
//! gets what it would in a mesh that declares (here, its service declaring nothing: all).

use api::pb::{self, discovery_client::DiscoveryClient, proxy_message::Msg};
use control::registry::Registry;
use control::server::ControlPlane;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Streaming;

const MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: observed}
spec:
  scope: observed
  services:
  - {name: client, namespace: front, port: 80}
  - {name: near, namespace: front, port: 80}
  - {name: far, namespace: back, port: 80}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: back}
spec:
  egress:
  - hosts: [\"./*\"]
";

async fn replica() -> ControlPlane {
    let loaded = config::load_str(std::path::Path::new("mesh.yaml"), MESH).unwrap();
    let registry = Registry::new(loaded.mesh.unwrap());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ControlPlane::start(registry, config::Store::default(), any, any, None)
        .await
        .unwrap()
}

/// A proxy's stream: what it sends, and what it is sent.
struct Proxy {
    tx: mpsc::Sender<pb::ProxyMessage>,
    rx: Streaming<pb::ControlMessage>,
}

impl Proxy {
    /// Opens a stream for a sidecar of `service` in `namespace`, listing `asked` as given before.
    async fn open(cp: &ControlPlane, service: &str, namespace: &str, asked: &[&str]) -> Proxy {
        Self::open_as(cp, service, namespace, asked, true).await
    }

    /// [`Proxy::open`] for a proxy that asks (`asks`) or predates asking.
    async fn open_as(
        cp: &ControlPlane,
        service: &str,
        namespace: &str,
        asked: &[&str],
        asks: bool,
    ) -> Proxy {
        let hello = pb::Hello {
            service: service.into(),
            namespace: namespace.into(),
            workload: format!("{service}-v1"),
            instance: format!("{service}-v1-0"),
            inbound: "127.0.0.1:9".into(),
            mode: "sidecar".into(),
            identity: model::Identity::spiffe(namespace, service).0,
            asked: asked.iter().map(|h| h.to_string()).collect(),
            asks,
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(8);
        tx.send(pb::ProxyMessage {
            msg: Some(Msg::Hello(hello)),
        })
        .await
        .unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let rx = DiscoveryClient::new(channel)
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Proxy { tx, rx }
    }

    async fn send(&self, msg: Msg) {
        self.tx
            .send(pb::ProxyMessage { msg: Some(msg) })
            .await
            .unwrap();
    }

    /// The next message, acking a snapshot as a proxy does.
    async fn next(&mut self) -> pb::ControlMessage {
        let m = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .expect("the stream is open");
        if let Some(s) = &m.snapshot {
            self.send(Msg::Ack(pb::Ack {
                version: s.version,
                error: String::new(),
            }))
            .await;
        }
        m
    }

    /// The services (`NAME.NAMESPACE`) of the next snapshot, and its `on_demand`.
    async fn next_snapshot(&mut self) -> (Vec<String>, bool) {
        loop {
            if let Some(s) = self.next().await.snapshot {
                return (services(&s), s.on_demand);
            }
        }
    }
}

fn services(s: &pb::Snapshot) -> Vec<String> {
    let mut names: Vec<String> = s
        .services
        .iter()
        .map(|s| format!("{}.{}", s.name, s.namespace))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_proxy_gets_what_it_asks_for_and_a_reconnecting_one_keeps_it() {
    let cp = replica().await;
    let mut client = Proxy::open(&cp, "client", "front", &[]).await;
    assert_eq!(
        client.next_snapshot().await,
        (vec!["client.front".to_string()], true)
    );

    client
        .send(Msg::Ask(pb::Ask {
            hosts: vec!["far.back".into(), "nosuch".into()],
        }))
        .await;
    let (mut refused, mut grown) = (None, None);
    while refused.is_none() || grown.is_none() {
        let m = client.next().await;
        if !m.refused.is_empty() {
            refused = Some(m.refused);
        }
        if let Some(s) = m.snapshot {
            grown = Some(services(&s));
        }
    }
    assert_eq!(refused.unwrap(), ["nosuch"]);
    assert_eq!(grown.unwrap(), ["client.front", "far.back"]);

    // Another replica: what the Hello lists is in the first snapshot.
    let other = replica().await;
    let mut again = Proxy::open(&other, "client", "front", &["far.back", "nosuch"]).await;
    assert_eq!(
        again.next_snapshot().await,
        (
            vec!["client.front".to_string(), "far.back".to_string()],
            true
        )
    );
}

#[tokio::test]
async fn a_proxy_a_sidecar_bounds_asks_for_nothing() {
    let cp = replica().await;
    let mut far = Proxy::open(&cp, "far", "back", &["client.front"]).await;
    // Its Sidecar's `./*`: its namespace, whatever it lists as given; it may not ask.
    assert_eq!(
        far.next_snapshot().await,
        (vec!["far.back".to_string()], false)
    );
    far.send(Msg::Ask(pb::Ask {
        hosts: vec!["client.front".into()],
    }))
    .await;
    let m = far.next().await;
    assert_eq!(m.refused, ["client.front"]);
    assert!(m.snapshot.is_none());
}

#[tokio::test]
async fn a_proxy_that_predates_asking_is_sent_the_whole_mesh() {
    let cp = replica().await;
    let mut old = Proxy::open_as(&cp, "client", "front", &[], false).await;
    assert_eq!(
        old.next_snapshot().await,
        (
            vec![
                "client.front".to_string(),
                "far.back".to_string(),
                "near.front".to_string()
            ],
            false
        )
    );
}
