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

    /// An error message if `port` is not a port number, or not the service's.
    pub fn check_port(&self, key: &ServiceKey, port: u32) -> Option<String> {
        match self.port(key) {
            _ if port == 0 || port > 65535 => Some("port must be between 1 and 65535".into()),
            Some(p) if u32::from(p) != port => {
                Some(format!("service {key} listens on port {p}, not {port}"))
            }
            _ => None,
        }
    }
}
