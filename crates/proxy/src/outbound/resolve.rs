//! The first step: which service a request is for, the rule it falls under and the destination
//! drawn. A [`Resolve`] is what tells a sidecar's outbound side ([`Sidecar`]) from the ingress
//! gateway (`crate::ingress`); every later step is shared.

use crate::body::Body;
use crate::body::RequestBody;
use crate::flags::{self, Flag};
use crate::server::PeerInfo;
use crate::state::ProxyState;
use crate::table::{RouteTable, Routed};
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Request, Response, Uri};
use model::Authority;

/// How a listener finds where a request goes.
pub trait Resolve: Send + Sync + 'static {
    /// What spans call this side.
    const SIDE: crate::trace::Side;

    /// Checks the request before it is routed (the gateway's JWT and authorization); `Err`:
    /// the answer to send instead.
    fn check(
        &self,
        _state: &ProxyState,
        _req: &mut Request<RequestBody>,
        _peer: &PeerInfo,
    ) -> Result<(), Box<Response<Body>>> {
        Ok(())
    }

    /// Whether `CONNECT` opens a tunnel to a service here: `Some(namespace a bare name
    /// resolves in)`; `None`: `CONNECT` is routed as any request.
    fn tunnels(&self) -> Option<&str> {
        None
    }

    /// The host to ask the control plane for when `table` has no service `authority` names
    /// and may have it on demand (without port, as the request names it); `None`: the answer
    /// stands.
    fn lacks(&self, _table: &RouteTable, _authority: &str) -> Option<String> {
        None
    }

    /// The rule and destination for a request to `authority`; `Err`: the answer (404 `NR`).
    fn route<'t>(
        &self,
        table: &'t RouteTable,
        authority: &str,
        parts: &Parts,
    ) -> Result<Routed<'t>, Box<Response<Body>>>;
}

/// A sidecar's outbound side: the request names a mesh service, a bare name meaning the one in
/// the workload's namespace, on the service's port.
pub struct Sidecar {
    /// The namespace a bare service name resolves in.
    pub namespace: String,
}

impl Resolve for Sidecar {
    const SIDE: crate::trace::Side = crate::trace::Side::Outbound;

    fn tunnels(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn lacks(&self, table: &RouteTable, authority: &str) -> Option<String> {
        lacks(table, &Authority::parse(authority), &self.namespace)
    }

    fn route<'t>(
        &self,
        table: &'t RouteTable,
        authority: &str,
        parts: &Parts,
    ) -> Result<Routed<'t>, Box<Response<Body>>> {
        service_route(table, authority, &self.namespace, parts, true)
    }
}

/// The rule for a request to the mesh service `authority` names (a bare name meaning the one
/// in `namespace`); `on_its_port`: the request must be for the service's port (80 when it names
/// none).
pub(crate) fn service_route<'t>(
    table: &'t RouteTable,
    authority: &str,
    namespace: &str,
    parts: &Parts,
    on_its_port: bool,
) -> Result<Routed<'t>, Box<Response<Body>>> {
    let auth = Authority::parse(authority);
    let Some(service) = table.resolve(&auth, namespace) else {
        return Err(no_service(authority));
    };
    if on_its_port && auth.port.unwrap_or(80) != service.port {
        return Err(Box::new(flags::respond(
            Flag::NoRoute,
            format!(
                "no service in the mesh for host {authority:?}: {} listens on port {}",
                service.key, service.port
            ),
        )));
    }
    service
        .route(parts)
        .ok_or_else(|| no_route(&service.key, parts))
}

/// The host of `auth` to ask for, when `table` may have services on demand and none of its
/// services is the one `auth` names (a bare name resolving in `namespace`).
pub(crate) fn lacks(table: &RouteTable, auth: &Authority<'_>, namespace: &str) -> Option<String> {
    (table.snapshot.on_demand && !auth.host.is_empty() && table.resolve(auth, namespace).is_none())
        .then(|| auth.host.to_string())
}

/// 404 `NR`: no service has this name.
pub(crate) fn no_service(authority: &str) -> Box<Response<Body>> {
    Box::new(flags::respond(
        Flag::NoRoute,
        format!("no service in the mesh for host {authority:?}"),
    ))
}

/// 404 `NR`: the service (or virtual host) `of` has rules and none matches.
pub(crate) fn no_route(of: &dyn std::fmt::Display, parts: &Parts) -> Box<Response<Body>> {
    Box::new(flags::respond(
        Flag::NoRoute,
        format!(
            "no route of {of} matches {} {}",
            parts.method,
            parts.uri.path()
        ),
    ))
}

/// The authority a request is for: its absolute-form URI, else its Host header.
pub fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(a) = uri.authority() {
        return Some(a.as_str().to_owned());
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Endpoint, Identity, LoadBalancer, ServiceKey, Snapshot};

    /// `reviews` with the virtual IP 10.235.0.7 on port 9080.
    fn table() -> RouteTable {
        let service = model::Service {
            key: ServiceKey::new("reviews", "default"),
            port: 9080,
            lb: LoadBalancer::RoundRobin,
            endpoints: vec![Endpoint {
                instance: "reviews-v1-0".into(),
                workload: "reviews-v1".into(),
                address: "10.233.0.5:9080".parse().unwrap(),
                labels: Default::default(),
                identity: Identity::spiffe("default", "reviews"),
            }],
            routes: vec![],
            tcp_routes: vec![],
            policy: Default::default(),
            subsets: vec![],
            vip: Some("10.235.0.7".parse().unwrap()),
            ports: vec![],
        };
        let snapshot = Snapshot {
            services: vec![service],
            ..Default::default()
        };
        RouteTable::compile(snapshot, &Default::default()).unwrap()
    }

    fn get(authority: &str) -> Parts {
        let req = Request::get(format!("http://{authority}/"))
            .body(())
            .unwrap();
        req.into_parts().0
    }

    #[test]
    fn a_request_for_a_services_virtual_ip_is_for_that_service() {
        let table = table();
        for authority in ["reviews:9080", "10.235.0.7:9080"] {
            let routed = service_route(&table, authority, "default", &get(authority), true);
            let routed = routed.unwrap_or_else(|r| panic!("{authority}: {}", r.status()));
            assert_eq!(
                routed.backend.unwrap().name,
                "reviews.default",
                "{authority}"
            );
        }
        // Another address, or the service's address on a port it does not listen on, is none
        // of the mesh's.
        for authority in ["10.235.0.8:9080", "10.235.0.7:80", "10.235.0.7"] {
            let routed = service_route(&table, authority, "default", &get(authority), true);
            assert!(routed.is_err(), "{authority} was routed");
        }
    }
}
