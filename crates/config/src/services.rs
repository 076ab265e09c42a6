//! What route translation checks against and decides by: the mesh's services (when there is a
//! Mesh document; without one nothing is checked), and which API wins a service or an ingress
//! host that several route.

use model::{Authority, ServiceKey, ServiceSpec};
use std::collections::HashMap;

/// Which API wins when several route one service or one ingress host (a ServiceProfile routes
/// only services). The one order every warning, README and docs/config.md state.
pub(crate) const PRECEDENCE: &str =
    "precedence: VirtualService > ServiceProfile > HTTPRoute > TrafficSplit";

/// The mesh's services by key, if there is a mesh.
pub(crate) struct Services<'a> {
    known: Option<HashMap<ServiceKey, &'a ServiceSpec>>,
}

impl<'a> Services<'a> {
    /// `services` is `None` when there is no Mesh document.
    pub fn new(services: Option<&'a [ServiceSpec]>) -> Self {
        Services {
            known: services.map(|s| s.iter().map(|s| (s.key(), s)).collect()),
        }
    }

    /// Whether there is a mesh to check against.
    pub fn checked(&self) -> bool {
        self.known.is_some()
    }

    /// The service `name` in `namespace`, or an error message naming it as `what`. Without a
    /// mesh nothing is checked.
    pub fn named(&self, name: &str, namespace: &str, what: &str) -> Result<ServiceKey, String> {
        let key = ServiceKey::new(name, namespace);
        match &self.known {
            Some(known) if !known.contains_key(&key) => {
                Err(format!("{what} {key} is not a service of the mesh"))
            }
            _ => Ok(key),
        }
    }

    /// The service a `host` names (in `namespace` when short), or an error message. Without a
    /// mesh a host is only resolved by form (`None`: cannot tell, skip).
    pub fn host(&self, host: &str, namespace: &str) -> Result<Option<ServiceKey>, String> {
        let key = Authority::parse(host).service_key(namespace);
        match (&self.known, key) {
            (None, key) => Ok(key),
            (Some(known), Some(key)) if known.contains_key(&key) => Ok(Some(key)),
            (Some(_), _) => Err(format!("host `{host}` is not a service of the mesh")),
        }
    }

    /// The service's port, if there is a mesh and the service is one of it.
    pub fn port(&self, key: &ServiceKey) -> Option<u16> {
        self.known.as_ref()?.get(key).map(|s| s.port)
    }

    /// Every port of the service, if there is a mesh and the service is one of it.
    pub fn ports(&self, key: &ServiceKey) -> Option<Vec<u16>> {
        let spec = self.known.as_ref()?.get(key)?;
        let mut ports: Vec<u16> = spec.ports.iter().map(|p| p.port).collect();
        if ports.is_empty() {
            ports.push(spec.port);
        }
        Some(ports)
    }

    /// An error message if `port` is not a port number, or not one of the service's.
    pub fn check_port(&self, key: &ServiceKey, port: u32) -> Option<String> {
        if port == 0 || port > 65535 {
            return Some("port must be between 1 and 65535".into());
        }
        let ports = self.ports(key)?;
        if ports.iter().any(|p| u32::from(*p) == port) {
            return None;
        }
        Some(match ports.as_slice() {
            [p] => format!("service {key} listens on port {p}, not {port}"),
            _ => {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                format!(
                    "service {key} listens on ports {}, not {port}",
                    list.join(", ")
                )
            }
        })
    }
}
