//! The security this proxy enforces on traffic it receives, compiled once per snapshot: the
//! inbound port's mTLS mode (PeerAuthentication), end-user JWT checks (RequestAuthentication)
//! and authorization (Istio AuthorizationPolicy, Linkerd Server policies). It is part of the
//! proxy's per-snapshot state, which requests read through one load. A JWT that fails gets
//! 401, a denied request 403 `RBAC: access denied` (404 for a Linkerd Server route miss), each
//! logged with its reason.

use crate::authz::{self, Authorizer, AuthzStats, HttpAttributes, RequestContext, Workload};
use crate::body::Body;
use crate::jwt::{self, JwksStore, JwtAuthenticator, VerifiedJwt};
use crate::server::PeerInfo;
use http::{Request, Response};
use model::security::{MtlsMode, SecuritySpec};
use model::Labels;

/// One snapshot's inbound security for this workload (part of [`crate::state::ProxyState`]).
pub struct Compiled {
    /// The workload's port the rules were compiled for (`destination.port`, Server ports).
    pub port: u16,
    /// The inbound port's mTLS mode (PeerAuthentication).
    pub mode: MtlsMode,
    pub authz: Authorizer,
    pub jwt: JwtAuthenticator,
}

/// Compiles a snapshot's security rules for the workload this proxy serves, with the
/// per-proxy state the compiled rules share (authorization counters, fetched JWKS).
pub struct Compiler {
    namespace: String,
    labels: Labels,
    trust_domain: String,
    stats: AuthzStats,
    jwks: JwksStore,
}

impl Compiler {
    pub fn new(
        namespace: &str,
        labels: &Labels,
        trust_domain: &str,
        stats: AuthzStats,
        jwks: JwksStore,
    ) -> Compiler {
        Compiler {
            namespace: namespace.to_string(),
            labels: labels.clone(),
            trust_domain: trust_domain.to_string(),
            stats,
            jwks,
        }
    }

    /// What a proxy enforces before its first snapshot: nothing, on a PERMISSIVE port.
    pub fn empty(&self) -> Compiled {
        Compiled {
            port: 0,
            mode: MtlsMode::Permissive,
            authz: Authorizer::compile(&SecuritySpec::new(), self.workload(0), &self.stats),
            jwt: JwtAuthenticator::default(),
        }
    }

    fn workload(&self, port: u16) -> Workload<'_> {
        Workload {
            namespace: &self.namespace,
            labels: &self.labels,
            service_port: port,
            trust_domain: &self.trust_domain,
        }
    }

    /// Compiles `spec` for this workload on `port`; rules that cannot be enforced as written
    /// fail closed, each logged.
    pub fn compile(&self, spec: &SecuritySpec, port: u16) -> Compiled {
        let mode = spec.mtls_mode(&self.namespace, &self.labels, port);
        let authz = Authorizer::compile(spec, self.workload(port), &self.stats);
        for e in authz.errors() {
            tracing::warn!(error = %e, "authorization policy fails closed");
        }
        for u in authz.unsupported() {
            tracing::warn!(policy = %u, "CUSTOM authorization is not supported; the policy is not enforced");
        }
        let jwt = JwtAuthenticator::compile(spec, &self.namespace, &self.labels, &self.jwks);
        for e in jwt.errors() {
            tracing::warn!(error = %e, "JWT rule fails closed");
        }
        Compiled {
            port,
            mode,
            authz,
            jwt,
        }
    }
}

impl Compiled {
    /// A JWKS these rules need that has not settled yet (never fetched, still within its
    /// patience): its URI.
    pub fn pending_jwks(&self) -> Option<String> {
        self.jwt
            .remotes()
            .find(|r| !r.settled())
            .map(|r| r.uri().to_string())
    }

    /// Checks a request from `peer`: its JWT (if rules apply) then its authorization. `Err`:
    /// the answer to send instead of forwarding it.
    pub fn check<B>(
        &self,
        req: &mut Request<B>,
        peer: &PeerInfo,
    ) -> Result<Option<VerifiedJwt>, Box<Response<Body>>> {
        let c = self;
        let verified = if c.jwt.is_empty() {
            None
        } else {
            match c.jwt.authenticate_request(req) {
                Ok(v) => v,
                Err(e) => {
                    tracing::info!(path = %req.uri().path(), error = %e, "JWT rejected");
                    let mut rsp = jwt::unauthorized_response(&realm(req));
                    rsp.headers_mut().insert(
                        crate::flags::FLAG_HEADER,
                        http::HeaderValue::from_static(crate::flags::Flag::Unauthorized.as_str()),
                    );
                    return Err(Box::new(rsp));
                }
            }
        };
        let ctx = RequestContext {
            peer_ip: peer.addr.ip(),
            peer_identity: peer.identity.as_ref(),
            destination_ip: None,
            destination_port: c.port,
            sni: None,
            http: Some(HttpAttributes::of(req, verified.as_ref())),
        };
        let d = c.authz.authorize(&ctx);
        if d.allowed {
            if d.audited {
                tracing::info!(policy = %d.policy, path = %req.uri().path(), "audited request allowed");
            }
            return Ok(verified);
        }
        tracing::info!(decision = %d, path = %req.uri().path(), client = ?ctx.peer_identity, "request denied");
        if d.route_not_found() {
            return Err(Box::new(crate::flags::respond(
                crate::flags::Flag::NoRoute,
                "no route of the server matches",
            )));
        }
        Err(Box::new(authz::denied_response()))
    }
}

/// The realm a 401 names: the request's host.
fn realm<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h).to_string())
        })
        .unwrap_or_default()
}
