//! The ingress gateway: traffic entering the mesh. Its first step differs from a sidecar's
//! outbound side: the request's JWT and authorization are checked (Istio policies select the
//! gateway by its labels), then it is routed by the gateway's virtual hosts (Istio Gateway +
//! VirtualService, Gateway API HTTPRoute; the most specific host wins), and a host no virtual
//! host claims falls back to the mesh service of that name, on any port. From there it takes
//! the outbound path ([`crate::outbound::Forward`]).

use crate::body::Body;
use crate::body::RequestBody;
use crate::outbound::resolve::{no_route, service_route};
use crate::outbound::{Forward, Resolve};
use crate::server::PeerInfo;
use crate::state::ProxyState;
use crate::table::{RouteTable, Routed};
use http::request::Parts;
use http::{Request, Response};
use model::Authority;

/// The gateway's first step.
pub struct Ingress {
    /// The namespace a bare service name resolves in.
    pub namespace: String,
}

/// The ingress gateway's handler.
pub type IngressHandler = Forward<Ingress>;

impl Resolve for Ingress {
    const SIDE: crate::trace::Side = crate::trace::Side::Ingress;

    fn check(
        &self,
        state: &ProxyState,
        req: &mut Request<RequestBody>,
        peer: &PeerInfo,
    ) -> Result<(), Box<Response<Body>>> {
        state.security.check(req, peer).map(|_| ())
    }

    fn route<'t>(
        &self,
        table: &'t RouteTable,
        authority: &str,
        parts: &Parts,
    ) -> Result<Routed<'t>, Box<Response<Body>>> {
        let auth = Authority::parse(authority);
        if let Some(vh) = table.virtual_host(auth.host) {
            return vh.route(parts).ok_or_else(|| no_route(&vh.name, parts));
        }
        // Any port: the gateway listens on its own.
        service_route(table, authority, &self.namespace, parts, false)
    }
}
