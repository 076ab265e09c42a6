//! The gRPC `Discovery` stream (ADS-shaped): a proxy says hello, then receives the current
//! snapshot and every later one, narrowed to what its Sidecar scope admits ([`crate::view`]);
//! it answers each with an ack or a nack and reports its health and drain on the same stream.
//! The proxy is deregistered when its stream ends.
//!
//! A proxy told about some services only (`spec.scope: observed`) asks on the same stream for
//! a host a request names and its snapshot lacks: the service is added to its view for as long
//! as the stream lives (a reconnecting proxy lists what it was given in its Hello), or the
//! host is refused at once when no service of the mesh has it or the proxy may not ask.
//!
//! The stream is served by hand ([`DiscoveryRoutes`]): each message goes out as its gRPC frame
//! around the view's encoded bytes, shared by every proxy that gets the same view, where a
//! generated server would copy every message into a buffer each stream keeps (as large as the
//! largest snapshot it ever sent). `Certify` is the generated server's.

use crate::listener::Peer;
use crate::registry::{Node, Registry};
use crate::view::Views;
use api::control_side::discovery_server::{Discovery, DiscoveryServer};
use api::pb::{self, proxy_message::Msg};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub struct Push {
    pub registry: Arc<Registry>,
    /// The mesh's CA; `None`: proxies run without certificates (plaintext between them).
    pub ca: Option<Arc<crate::ca::Ca>>,
    /// Each proxy's view of the snapshot, built once per distinct view.
    pub views: Arc<Views>,
}

impl Push {
    pub fn new(registry: Arc<Registry>, ca: Option<Arc<crate::ca::Ca>>) -> Push {
        Push {
            registry,
            views: Arc::new(Views::new(ca.clone())),
            ca,
        }
    }
}

/// `weft.v1.Discovery`: `Stream` served by [`Push::stream`] (by hand), `Certify` by the
/// generated server.
#[derive(Clone)]
pub struct DiscoveryRoutes {
    push: Arc<Push>,
    generated: DiscoveryServer<Push>,
}

impl DiscoveryRoutes {
    pub fn new(push: Push) -> DiscoveryRoutes {
        let push = Arc::new(push);
        DiscoveryRoutes {
            generated: DiscoveryServer::from_arc(push.clone()),
            push,
        }
    }
}

impl tonic::server::NamedService for DiscoveryRoutes {
    const NAME: &'static str = "weft.v1.Discovery";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl tonic::codegen::Service<http::Request<tonic::body::BoxBody>> for DiscoveryRoutes {
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::BoxBody>) -> Self::Future {
        if req.uri().path() != api::STREAM_PATH {
            return tonic::codegen::Service::call(&mut self.generated, req);
        }
        let push = self.push.clone();
        Box::pin(async move {
            let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
            let decoder = tonic::codec::Codec::decoder(&mut tonic::codec::ProstCodec::<
                pb::ProxyMessage,
                pb::ProxyMessage,
            >::default());
            let from_proxy = Streaming::new_request(decoder, req.into_body(), None, None);
            Ok(match push.stream(peer, from_proxy).await {
                Ok(rx) => grpc_response(ControlBody {
                    rx,
                    next: None,
                    done: false,
                }),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// A gRPC response streaming `body`.
fn grpc_response(body: ControlBody) -> http::Response<tonic::body::BoxBody> {
    let mut rsp = http::Response::new(tonic::body::boxed(body));
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    rsp
}

/// What a stream's task sends its proxy.
#[derive(Debug)]
pub enum Out {
    /// A snapshot, encoded (shared with every proxy that gets the same view).
    Snapshot(Bytes),
    /// Hosts it asked for and will not be sent.
    Refused(Vec<String>),
}

/// The body of a `Stream` response: a `ControlMessage` frame per encoded snapshot (or
/// refusal) the stream's task sends, then the gRPC status in trailers (OK when the task ends
/// the stream, else its error).
struct ControlBody {
    rx: mpsc::Receiver<Result<Out, Status>>,
    /// The snapshot bytes of the frame whose head went out last.
    next: Option<Bytes>,
    done: bool,
}

impl http_body::Body for ControlBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if let Some(b) = self.next.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let status = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(Out::Snapshot(snapshot)))) => {
                let [head, body] = api::control_frame(&snapshot);
                self.next = (!body.is_empty()).then_some(body);
                return Poll::Ready(Some(Ok(http_body::Frame::data(head))));
            }
            Poll::Ready(Some(Ok(Out::Refused(refused)))) => {
                let message = pb::ControlMessage {
                    snapshot: None,
                    refused,
                };
                return Poll::Ready(Some(Ok(http_body::Frame::data(api::message_frame(
                    &message,
                )))));
            }
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        // A status that cannot be put in headers is reported as an internal error.
        if let Err(status) = status.add_header(&mut trailers) {
            let _ = Status::internal(status.message().to_string()).add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }
}

impl Push {
    /// Serves one proxy's stream: its Hello first, then snapshots out (encoded, through the
    /// channel returned) and its acks, health and drain in, until either side ends it.
    pub async fn stream(
        &self,
        peer: Peer,
        mut from_proxy: Streaming<pb::ProxyMessage>,
    ) -> Result<mpsc::Receiver<Result<Out, Status>>, Status> {
        let mut hello = match from_proxy.message().await? {
            Some(pb::ProxyMessage {
                msg: Some(Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        let given = std::mem::take(&mut hello.asked);
        let node = Node::try_from(hello).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(refused) = self.ca.as_ref().and_then(|ca| refusal(ca, &node, &peer)) {
            return Err(refused);
        }
        tracing::debug!(instance = %node.instance, mode = %node.mode, "proxy connected");
        let registration = self.registry.register(node.clone());
        let registry = self.registry.clone();
        let views = self.views.clone();
        // One snapshot in flight at a time (see `Pace`), and the stream's end.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            // Held for the stream's life: dropping it deregisters the proxy.
            let registration = registration;
            let id = registration.id;
            let mut snapshots = registry.subscribe();
            // Asks that come before there is a snapshot to judge them by.
            let mut early: Vec<String> = Vec::new();
            while !registry.is_warm() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    m = from_proxy.message() => match m {
                        Ok(Some(pb::ProxyMessage { msg: Some(Msg::Ask(a)) })) => early.extend(a.hosts),
                        Ok(Some(m)) => handle(&registry, id, m),
                        _ => return,
                    },
                }
            }
            // What it was given before (on this replica or another) and asks on this stream.
            let mut asked = Asked::default();
            {
                let snap = snapshots.borrow().clone();
                asked.given(&snap, &node, given);
                let refused = asked.ask(&snap, &node, early);
                if !refused.is_empty() && tx.send(Ok(Out::Refused(refused))).await.is_err() {
                    return;
                }
            }
            snapshots.mark_changed();
            let mut pace = Pace::default();
            loop {
                tokio::select! {
                    // One snapshot at a time: the next waits for the proxy's answer to this
                    // one, and is then the latest (a slow proxy skips versions rather than
                    // queueing them).
                    changed = snapshots.changed(), if pace.awaiting.is_none() => {
                        if changed.is_err() {
                            return;
                        }
                        let snap = snapshots.borrow_and_update().clone();
                        let view = views.view(&snap, &node, &asked.keys);
                        if let Some(current) = pace.unchanged(&view) {
                            // Nothing it sees changed: it runs this version already.
                            if let Some(v) = current {
                                registry.ack(id, v, String::new());
                            }
                            continue;
                        }
                        let message = view.message(&snap);
                        pace.sent(view.stamp());
                        if tx.send(Ok(Out::Snapshot(message))).await.is_err() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(pace.deadline), if pace.awaiting.is_some() => {
                        tracing::debug!(instance = %node.instance, "no answer to the last snapshot within {ANSWER_WAIT:?}; sending the next anyway");
                        pace.awaiting = None;
                    }
                    m = from_proxy.message() => match m {
                        Ok(Some(pb::ProxyMessage { msg: Some(Msg::Ask(a)) })) => {
                            let snap = snapshots.borrow().clone();
                            let before = asked.keys.len();
                            let refused = asked.ask(&snap, &node, a.hosts);
                            if asked.keys.len() > before {
                                // Its next view carries them (sent once it has answered the
                                // one before, as any change).
                                snapshots.mark_changed();
                            }
                            if !refused.is_empty() && tx.send(Ok(Out::Refused(refused))).await.is_err() {
                                return;
                            }
                        }
                        Ok(Some(mut m)) => {
                            if let Some(Msg::Ack(a)) = &mut m.msg {
                                pace.answered(a);
                            }
                            handle(&registry, id, m)
                        }
                        // Stream over: `registration` drops and the proxy is deregistered.
                        _ => return,
                    },
                }
            }
        });
        Ok(rx)
    }
}

#[tonic::async_trait]
impl Discovery for Push {
    async fn certify(
        &self,
        req: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let Some(ca) = &self.ca else {
            return Err(Status::unimplemented("this control plane runs no CA"));
        };
        if !peer(&req).tls {
            return Err(plaintext_refused());
        }
        let r = req.into_inner();
        let identity = model::Identity(r.identity);
        match ca.certify(r.csr_pem.as_bytes(), &identity, &r.token).await {
            Ok(issued) => {
                tracing::debug!(%identity, not_after = ?issued.not_after, "certificate issued");
                Ok(Response::new(pb::CertifyResponse {
                    chain_pem: issued.chain_pem(),
                    bundle_pem: ca.bundle_pem(),
                    renewal_token: issued.renewal_token,
                    generation: issued.generation,
                }))
            }
            Err(e) => {
                tracing::warn!(%identity, error = %e, "certificate refused");
                Err(Status::permission_denied(e.to_string()))
            }
        }
    }
}

fn peer<T>(req: &Request<T>) -> Peer {
    req.extensions().get::<Peer>().cloned().unwrap_or_default()
}

fn plaintext_refused() -> Status {
    Status::unauthenticated(
        "this mesh runs mTLS: its control plane speaks TLS only (give the proxy the mesh's trust anchors: --trust-anchors-file, or WEFT_TRUST_ANCHORS)",
    )
}

/// In a mesh with a CA, a proxy opens its stream over TLS and proves who it is with the
/// certificate the mesh CA gave it (it gets one with its join token first), and that identity
/// must be the one its Hello states and its service's own (`ns/NAMESPACE/sa/SERVICE`): nobody
/// registers as an endpoint of a service without its credentials. `Some`: why the stream is
/// refused.
fn refusal(ca: &crate::ca::Ca, node: &Node, peer: &Peer) -> Option<Status> {
    if !peer.tls {
        return Some(plaintext_refused());
    }
    match &peer.identity {
        None => {
            return Some(Status::unauthenticated(
                "this mesh runs mTLS: a proxy opens its control stream with the certificate the mesh CA gave it",
            ))
        }
        Some(id) if *id != node.identity => {
            return Some(Status::permission_denied(format!(
                "the certificate is {id}'s, not {}'s",
                node.identity
            )))
        }
        Some(_) => {}
    }
    let own = model::Identity::spiffe_in(&ca.config().trust_domain, &node.namespace, &node.service);
    (node.identity != own).then(|| {
        Status::permission_denied(format!(
            "identity {} cannot register for service {}.{} (its identity is {own})",
            node.identity, node.service, node.namespace
        ))
    })
}

/// The services one proxy asked for on its stream (and was given on streams before), for as
/// long as the stream lives.
#[derive(Default)]
struct Asked {
    keys: BTreeSet<model::ServiceKey>,
}

impl Asked {
    /// Hosts the proxy `node` lists in its Hello as given before: taken as far as it may still
    /// ask for them and they name a service of `snapshot` (a name is taken even when its
    /// service is gone for now, as an asked one stays).
    fn given(&mut self, snapshot: &model::Snapshot, node: &Node, hosts: Vec<String>) {
        if hosts.is_empty() || !may_ask(snapshot, node) {
            return;
        }
        for host in hosts {
            let named = model::Authority::parse(&host).service_key(&node.namespace);
            let found = model::egress::asked_service(snapshot, &host, &node.namespace)
                .map(|i| snapshot.services[i].key.clone());
            self.keys.extend(found.or(named));
        }
    }

    /// The proxy `node` asks for `hosts`: those naming a service of `snapshot` are added when
    /// it may ask for more; the others are returned, refused.
    fn ask(&mut self, snapshot: &model::Snapshot, node: &Node, hosts: Vec<String>) -> Vec<String> {
        let mut refused = Vec::new();
        if hosts.is_empty() {
            return refused;
        }
        let may = may_ask(snapshot, node);
        for host in hosts {
            match model::egress::asked_service(snapshot, &host, &node.namespace) {
                Some(i) if may => {
                    let key = &snapshot.services[i].key;
                    tracing::debug!(instance = %node.instance, %host, service = %key, "service asked for");
                    self.keys.insert(key.clone());
                }
                _ => refused.push(host),
            }
        }
        refused
    }
}

/// Whether `node` may ask for services it lacks in `snapshot`.
fn may_ask(snapshot: &model::Snapshot, node: &Node) -> bool {
    let service = model::ServiceKey::new(&node.service, &node.namespace);
    let who = model::egress::Viewer {
        service: &service,
        labels: &node.labels,
        ingress: node.mode == "ingress",
        asks: node.asks,
    };
    model::egress::bound_for(snapshot, &who).on_demand
}

/// How long a proxy may take to answer a snapshot before it is sent the next anyway. A proxy
/// answers most in far less, but holds its answer while the snapshot's JWT rules wait for keys
/// — which it may need the next snapshot to fetch (the issuer's endpoints): it must get it.
const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Where one proxy's stream stands: the view it was last sent, whether its answer is awaited,
/// and the latest version it runs as far as it can tell (views it was not sent because they
/// say the same as the one it has).
struct Pace {
    last: Option<crate::view::Stamp>,
    /// The version whose answer is awaited.
    awaiting: Option<u64>,
    deadline: tokio::time::Instant,
    /// The proxy applied `last`.
    applied: bool,
    /// The latest version whose view is the same as `last`.
    current: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            last: None,
            awaiting: None,
            deadline: tokio::time::Instant::now(),
            applied: false,
            current: 0,
        }
    }
}

impl Pace {
    /// `None`: `view` must be sent. `Some(v)`: it says what the proxy was last sent; `v` is
    /// the version to record it at if it applied that one.
    fn unchanged(&mut self, view: &crate::view::View) -> Option<Option<u64>> {
        let last = self.last.as_ref()?;
        if !view.same_as(last) {
            return None;
        }
        self.current = self.current.max(view.version);
        Some(self.applied.then_some(self.current))
    }

    fn sent(&mut self, view: crate::view::Stamp) {
        self.awaiting = Some(view.version);
        self.deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        self.current = view.version;
        self.applied = false;
        self.last = Some(view);
    }

    /// The proxy answered `a`; an ack of the last snapshot sent stands for the later versions
    /// that say the same.
    fn answered(&mut self, a: &mut pb::Ack) {
        let Some(sent) = self.last.as_ref().map(|l| l.version) else {
            return;
        };
        if a.version >= sent {
            self.awaiting = None;
            if a.version == sent && a.error.is_empty() {
                self.applied = true;
                a.version = a.version.max(self.current);
            }
        }
    }
}

fn handle(registry: &Registry, id: u64, m: pb::ProxyMessage) {
    match m.msg {
        Some(Msg::Ack(a)) => registry.ack(id, a.version, a.error),
        Some(Msg::Health(h)) => {
            registry.set_leaf_generation(id, h.leaf_generation);
            registry.set_health(id, h.ready, h.reason)
        }
        Some(Msg::Drain(_)) => registry.set_draining(id),
        // Asks are the stream task's (they change what it sends).
        Some(Msg::Hello(_)) | Some(Msg::Ask(_)) | None => {}
    }
}
