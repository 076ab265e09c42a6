//! The proxy ↔ control-plane wire protocol: generated protobuf/gRPC types and the checked
//! conversions between them and `model` types (validated once, on arrival).
//!
//! Layout:
//! - [`pb`]: the generated messages, client and server.
//! - conversions: `From<&model::Snapshot> for pb::Snapshot` and `TryFrom<pb::Snapshot> for model::Snapshot`.

use model::{Endpoint, Identity, LoadBalancer, Service, ServiceKey, Snapshot};

mod route;

/// Generated from proto/weft.proto.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("weft.v1");
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
}

pub fn lb_name(lb: LoadBalancer) -> &'static str {
    match lb {
        LoadBalancer::PeakEwma => "peak-ewma",
        LoadBalancer::RoundRobin => "round-robin",
        LoadBalancer::LeastRequest => "least-request",
        LoadBalancer::Random => "random",
    }
}

impl From<&Snapshot> for pb::Snapshot {
    fn from(s: &Snapshot) -> Self {
        pb::Snapshot {
            version: s.version,
            services: s
                .services
                .iter()
                .map(|svc| pb::Service {
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
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::Snapshot> for Snapshot {
    type Error = WireError;

    fn try_from(s: pb::Snapshot) -> Result<Self, WireError> {
        let mut services = Vec::with_capacity(s.services.len());
        for svc in s.services {
            let port = u16::try_from(svc.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| WireError::Port {
                    service: svc.name.clone(),
                    port: svc.port,
                })?;
            let lb = match svc.lb.as_str() {
                "" | "peak-ewma" => LoadBalancer::PeakEwma,
                "round-robin" => LoadBalancer::RoundRobin,
                "least-request" => LoadBalancer::LeastRequest,
                "random" => LoadBalancer::Random,
                other => {
                    return Err(WireError::LoadBalancer {
                        service: svc.name,
                        lb: other.to_string(),
                    })
                }
            };
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
            services.push(Service {
                key: ServiceKey::new(svc.name, svc.namespace),
                port,
                lb,
                endpoints,
                routes,
                policy: Default::default(),
                subsets: Vec::new(),
            });
        }
        Ok(Snapshot {
            version: s.version,
            services,
            gateway: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
