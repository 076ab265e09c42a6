//! The proxy ↔ control-plane wire protocol: generated protobuf/gRPC types and the checked
//! conversions between them and `model` types (validated once, on arrival).
//!
//! Layout:
//! - [`pb`]: the generated messages, client and server.
//! - [`control_side`] and [`control_frame`]: the control plane's server (`Certify`) and the
//!   framing of the messages it streams by hand, each snapshot encoded once and shared by every
//!   proxy that gets the same.
//! - conversions: `From<&model::Snapshot> for pb::Snapshot` and `TryFrom<pb::Snapshot> for model::Snapshot`;
//!   services and endpoints here, routes, route filters and gateway virtual hosts in `route`,
//!   traffic policies and subsets in `policy`, security policies (mTLS modes, authorization,
//!   JWT rules, Linkerd Servers and default inbound policies) in `security`.
//!
//! Decoding checks what the wire can carry (ports, statuses, names of kinds), then every route,
//! traffic policy and JWT rule whole with `model::valid`: the checks the proxy's compilation
//! relies on, which `weft check` and the control plane (on the snapshot a change would produce,
//! before committing it) run too. A snapshot that decodes compiles in the proxy.

use model::{Endpoint, Identity, Service, ServiceKey, Snapshot};

mod policy;
mod route;
mod security;

pub use policy::lb_name;
pub use security::policy_name;

/// Generated from proto/weft.proto.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("weft.v1");
}

/// The control plane's server of `weft.v1.Discovery`, generated for `Certify` alone: the
/// control plane serves `Stream` by hand, framing each message around a snapshot encoded once
/// and shared ([`control_frame`]), where a generated server would copy it into a buffer of
/// every stream's own.
pub mod control_side {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/weft.v1.Discovery.rs"));
}

/// The gRPC route of `Discovery.Stream`.
pub const STREAM_PATH: &str = "/weft.v1.Discovery/Stream";

/// One `ControlMessage` on the wire, as gRPC frames it, whose snapshot is `snapshot` (a
/// [`pb::Snapshot`], encoded): the frame's prefix with the message's field header, then the
/// snapshot's bytes themselves, not copied (cloning [`bytes::Bytes`] shares them).
pub fn control_frame(snapshot: &bytes::Bytes) -> [bytes::Bytes; 2] {
    use bytes::BufMut;
    let len = snapshot.len() as u64;
    let field = 1 + prost::encoding::encoded_len_varint(len);
    let mut head = bytes::BytesMut::with_capacity(5 + field);
    // Not compressed; the message's length; field 1 (`snapshot`), length-delimited.
    head.put_u8(0);
    head.put_u32((field as u64 + len) as u32);
    head.put_u8(0x0a);
    prost::encoding::encode_varint(len, &mut head);
    [head.freeze(), snapshot.clone()]
}

/// Any `message` on the wire, as gRPC frames it (not compressed, its length, its bytes).
pub fn message_frame(message: &impl prost::Message) -> bytes::Bytes {
    use bytes::BufMut;
    let len = message.encoded_len();
    let mut out = bytes::BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    message
        .encode(&mut out)
        .expect("the buffer holds the message's encoded length");
    out.freeze()
}

/// A snapshot from the wire that cannot be applied; the proxy nacks it and keeps the last good one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("service {service}: port {port} is not a valid port")]
    Port { service: String, port: u32 },
    #[error("service {service}: unknown load balancer {lb:?}")]
    LoadBalancer { service: String, lb: String },
    #[error("route {route}: {why}")]
    Route { route: String, why: String },
    #[error("service {service}: endpoint {instance}: address {address:?} is not HOST:PORT")]
    Address {
        service: String,
        instance: String,
        address: String,
    },
    /// A traffic policy (the service's or a subset's, which `why` then names) that cannot apply.
    #[error("service {service}: {why}")]
    Policy { service: String, why: String },
    /// A security policy that cannot apply: the whole snapshot is refused rather than enforcing
    /// less (or more) than the control plane meant.
    #[error("security policy {policy}: {why}")]
    Security { policy: String, why: String },
}

impl From<&Snapshot> for pb::Snapshot {
    fn from(s: &Snapshot) -> Self {
        pb::Snapshot {
            version: s.version,
            services: s.services.iter().map(service_to).collect(),
            gateway: s.gateway.iter().map(route::vhost_to).collect(),
            security: Some(security::to_wire(&s.security)),
            // The control plane fills these in from its CA when it sends the snapshot.
            trust_bundle_pem: String::new(),
            ca_generation: 0,
            outbound_policy: outbound_to(s.outbound_policy),
            outbound_policies: s
                .outbound_policies
                .iter()
                .map(|p| pb::ScopedOutboundPolicy {
                    scope: Some(security::scope_to(&p.scope)),
                    mode: outbound_to(p.mode),
                })
                .collect(),
            on_demand: s.on_demand,
        }
    }
}

impl TryFrom<pb::Snapshot> for Snapshot {
    type Error = WireError;

    fn try_from(s: pb::Snapshot) -> Result<Self, WireError> {
        Ok(Snapshot {
            version: s.version,
            services: s
                .services
                .into_iter()
                .map(service_from)
                .collect::<Result<_, _>>()?,
            gateway: s
                .gateway
                .into_iter()
                .map(route::vhost_from)
                .collect::<Result<_, _>>()?,
            security: security::from_wire(s.security)?,
            outbound_policy: outbound_from(&s.outbound_policy)?,
            outbound_policies: s
                .outbound_policies
                .into_iter()
                .map(|p| {
                    Ok(model::ScopedOutboundPolicy {
                        scope: security::scope_from(p.scope, "Sidecar outboundTrafficPolicy")?,
                        mode: outbound_from(&p.mode)?,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            // The control plane keeps the Sidecars' egress scopes: what a proxy receives is
            // already narrowed to its own.
            egress: Vec::new(),
            scope: Default::default(),
            declared: Vec::new(),
            on_demand: s.on_demand,
        })
    }
}

fn outbound_to(p: model::OutboundPolicy) -> String {
    match p {
        model::OutboundPolicy::AllowAny => String::new(),
        model::OutboundPolicy::RegistryOnly => "REGISTRY_ONLY".into(),
    }
}

fn outbound_from(p: &str) -> Result<model::OutboundPolicy, WireError> {
    match p {
        "" | "ALLOW_ANY" => Ok(model::OutboundPolicy::AllowAny),
        "REGISTRY_ONLY" => Ok(model::OutboundPolicy::RegistryOnly),
        other => Err(WireError::Policy {
            service: "(mesh)".into(),
            why: format!("unknown outbound traffic policy {other:?}"),
        }),
    }
}

fn service_to(svc: &Service) -> pb::Service {
    pb::Service {
        name: svc.key.name.clone(),
        namespace: svc.key.namespace.clone(),
        port: svc.port.into(),
        lb: lb_name(svc.lb).to_string(),
        endpoints: svc
            .endpoints
            .iter()
            .map(|e| pb::Endpoint {
                instance: e.instance.clone(),
                workload: e.workload.clone(),
                address: e.address.to_string(),
                labels: e.labels.clone().into_iter().collect(),
                identity: e.identity.0.clone(),
            })
            .collect(),
        routes: svc.routes.iter().map(route::to_wire).collect(),
        tcp_routes: svc.tcp_routes.iter().map(route::tcp_to_wire).collect(),
        vip: svc.vip.map(|v| v.to_string()).unwrap_or_default(),
        ports: svc
            .ports
            .iter()
            .map(|p| pb::ServicePort {
                port: p.port.into(),
                protocol: p.protocol.as_str().into(),
                name: p.name.clone(),
            })
            .collect(),
        policy: policy::service_policy_to(&svc.policy),
        subsets: svc.subsets.iter().map(policy::subset_to).collect(),
    }
}

fn service_from(svc: pb::Service) -> Result<Service, WireError> {
    let port = u16::try_from(svc.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| WireError::Port {
            service: svc.name.clone(),
            port: svc.port,
        })?;
    // An empty name is the default, as it was before the field had other values.
    let lb = policy::lb_from(&svc.lb)
        .map_err(|lb| WireError::LoadBalancer {
            service: svc.name.clone(),
            lb,
        })?
        .unwrap_or_default();
    let mut endpoints = Vec::with_capacity(svc.endpoints.len());
    for e in svc.endpoints {
        let address = e.address.parse().map_err(|_| WireError::Address {
            service: svc.name.clone(),
            instance: e.instance.clone(),
            address: e.address.clone(),
        })?;
        endpoints.push(Endpoint {
            instance: e.instance,
            workload: e.workload,
            address,
            labels: e.labels.into_iter().collect(),
            identity: Identity(e.identity),
        });
    }
    let routes = svc
        .routes
        .into_iter()
        .map(route::from_wire)
        .collect::<Result<_, _>>()?;
    let tcp_routes = svc
        .tcp_routes
        .into_iter()
        .map(|r| route::tcp_from_wire(r, &svc.name))
        .collect::<Result<_, _>>()?;
    let vip = match svc.vip.as_str() {
        "" => None,
        v => Some(v.parse().map_err(|_| WireError::Policy {
            service: svc.name.clone(),
            why: format!("virtual IP {v:?} is not an IPv4 address"),
        })?),
    };
    let mut ports = Vec::with_capacity(svc.ports.len());
    for p in &svc.ports {
        let port = u16::try_from(p.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| WireError::Port {
                service: svc.name.clone(),
                port: p.port,
            })?;
        let protocol = model::Protocol::parse(&p.protocol).ok_or_else(|| WireError::Policy {
            service: svc.name.clone(),
            why: format!("port {port}: unknown protocol {:?}", p.protocol),
        })?;
        ports.push(model::PortSpec {
            port,
            protocol,
            name: p.name.clone(),
            why: String::new(),
        });
    }
    let policy = policy::service_policy_from(svc.policy, &svc.name)?;
    let subsets = svc
        .subsets
        .into_iter()
        .map(|s| policy::subset_from(s, &svc.name))
        .collect::<Result<_, _>>()?;
    Ok(Service {
        key: ServiceKey::new(svc.name, svc.namespace),
        port,
        lb,
        endpoints,
        routes,
        tcp_routes,
        policy,
        subsets,
        vip,
        ports,
    })
}

#[cfg(test)]
mod tests;
