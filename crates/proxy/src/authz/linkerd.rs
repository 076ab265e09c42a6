//! Linkerd Server policy: Servers with their HTTPRoutes, authorizations and their
//! authentications (MeshTLS identities, networks, unauthenticated).

use super::istio::parse_cidr;
use super::stats::{Tallies, Tally};
use super::{AuthzError, HttpAttributes, RequestContext};
use crate::route::{Path as RoutePath, RequestMatch};
use ipnet::IpNet;
use model::route::RouteMatch;
use model::security::{DefaultPolicy, LinkerdAuthn, LinkerdAuthz, LinkerdServer, LinkerdTarget};
use model::Identity;
use std::fmt;
use std::sync::Arc;

/// A Linkerd `Server` covering one port of this workload.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) tally: Arc<Tally>,
    pub(super) port: u16,
    pub(super) access_policy: DefaultPolicy,
    /// Authorizations targeting the Server or its namespace.
    pub(super) authz: Vec<LinkerdAuthzM>,
    pub(super) routes: Vec<RouteM>,
}

impl Server {
    pub(super) fn compile(
        s: &LinkerdServer,
        service_port: u16,
        all: &[LinkerdAuthz],
        tallies: &mut Tallies<'_>,
        errors: &mut Vec<AuthzError>,
    ) -> Server {
        let namespace = s.name.split_once('/').map_or("", |(ns, _)| ns);
        let mut authz = Vec::new();
        for a in all {
            let applies = match &a.target {
                LinkerdTarget::Server(name) => *name == s.name,
                LinkerdTarget::Namespace(ns) => ns == namespace,
                LinkerdTarget::Route(_) => false,
            };
            if applies {
                authz.extend(LinkerdAuthzM::compile(a, tallies, errors));
            }
        }
        let mut routes = Vec::new();
        for (name, matches) in &s.routes {
            let compiled = matches
                .iter()
                .map(RouteMatchM::compile)
                .collect::<Result<Vec<_>, String>>();
            let matches = match compiled {
                Ok(m) => Some(m),
                Err(why) => {
                    // The route then matches nothing: its requests get the Server's 404.
                    errors.push(AuthzError::Linkerd {
                        policy: format!("HTTPRoute {name}"),
                        why,
                    });
                    None
                }
            };
            let mut route_authz = Vec::new();
            for a in all {
                if matches!(&a.target, LinkerdTarget::Route(r) if r == name) {
                    route_authz.extend(LinkerdAuthzM::compile(a, tallies, errors));
                }
            }
            routes.push(RouteM {
                matches,
                authz: route_authz,
            });
        }
        Server {
            tally: tallies.get(&s.name),
            port: s.port.unwrap_or(service_port),
            access_policy: s.access_policy,
            authz,
            routes,
        }
    }
}

/// An inbound HTTPRoute of a Server, with the authorizations that target it.
#[derive(Debug)]
pub(super) struct RouteM {
    /// Any of them; none listed: every request. `None`: the route did not compile and
    /// matches nothing.
    matches: Option<Vec<RouteMatchM>>,
    pub(super) authz: Vec<LinkerdAuthzM>,
}

/// How specific a match is, by the Gateway API's precedence (what Linkerd's proxy uses to pick
/// among a Server's routes): exact path, then the longest prefix, then a method, then the most
/// headers, then the most query parameters.
pub(super) type Rank = (u8, usize, bool, usize, usize);

impl RouteM {
    /// The rank of the most specific of this route's matches that `req` satisfies.
    pub(super) fn best(&self, req: &HttpAttributes<'_>) -> Option<Rank> {
        let ms = self.matches.as_ref()?;
        if ms.is_empty() {
            // No matches: the Gateway API's default, a `/` prefix.
            return Some((2, 1, false, 0, 0));
        }
        ms.iter().filter(|m| m.matches(req)).map(|m| m.rank()).max()
    }
}

/// A Gateway-API-style match, compiled as the route table compiles them, over
/// [`HttpAttributes`].
struct RouteMatchM {
    request: RequestMatch,
    negated: Vec<RouteMatchM>,
}

impl fmt::Debug for RouteMatchM {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteMatchM")
            .field("path", &self.request.path)
            .field("method", &self.request.method)
            .field("headers", &self.request.headers.len())
            .field("query", &self.request.query.len())
            .field("negated", &self.negated)
            .finish()
    }
}

impl RouteMatchM {
    fn compile(m: &RouteMatch) -> Result<Self, String> {
        let request = RequestMatch::compile(m, "").map_err(|e| e.why)?;
        let negated = m
            .negated
            .iter()
            .map(RouteMatchM::compile)
            .collect::<Result<_, _>>()?;
        Ok(RouteMatchM { request, negated })
    }

    fn rank(&self) -> Rank {
        let r = &self.request;
        let (kind, len) = match &r.path {
            Some(RoutePath::Exact(p)) => (3, p.len()),
            Some(RoutePath::Prefix(p)) | Some(RoutePath::SegmentPrefix(p)) => (2, p.len().max(1)),
            Some(RoutePath::Regex(r)) => (1, r.as_str().len()),
            None => (2, 1),
        };
        (
            kind,
            len,
            r.method.is_some(),
            r.headers.len(),
            r.query.len(),
        )
    }

    fn matches(&self, req: &HttpAttributes<'_>) -> bool {
        let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
        self.request.matches(req.method, path, query, req.headers)
            && !self.negated.iter().any(|n| n.matches(req))
    }
}

/// A Linkerd authorization: every authn must hold.
#[derive(Debug)]
pub(super) struct LinkerdAuthzM {
    pub(super) tally: Arc<Tally>,
    authns: Vec<AuthnM>,
}

#[derive(Debug)]
enum AuthnM {
    MeshTls(Vec<IdPat>),
    Network {
        cidrs: Vec<IpNet>,
        except: Vec<IpNet>,
    },
    Unauthenticated,
}

impl LinkerdAuthzM {
    /// `None` (and an error) when an authn does not compile: the authorization then admits
    /// nobody.
    fn compile(
        a: &LinkerdAuthz,
        tallies: &mut Tallies<'_>,
        errors: &mut Vec<AuthzError>,
    ) -> Option<Self> {
        let nets = |list: &[String]| {
            list.iter()
                .map(|c| parse_cidr(c).map_err(|e| format!("network {c:?}: {e}")))
                .collect::<Result<Vec<_>, String>>()
        };
        let authns = a
            .authns
            .iter()
            .map(|n| match n {
                LinkerdAuthn::MeshTls { identities } => Ok(AuthnM::MeshTls(
                    identities.iter().map(|i| IdPat::compile(i)).collect(),
                )),
                LinkerdAuthn::Network { cidrs, except } => Ok(AuthnM::Network {
                    cidrs: nets(cidrs)?,
                    except: nets(except)?,
                }),
                LinkerdAuthn::Unauthenticated => Ok(AuthnM::Unauthenticated),
            })
            .collect::<Result<Vec<_>, String>>();
        match authns {
            Ok(authns) => Some(LinkerdAuthzM {
                tally: tallies.get(&a.name),
                authns,
            }),
            Err(why) => {
                errors.push(AuthzError::Linkerd {
                    policy: a.name.clone(),
                    why,
                });
                None
            }
        }
    }

    pub(super) fn admits(&self, ctx: &RequestContext<'_>) -> bool {
        let ip = ctx.peer_ip.to_canonical();
        self.authns.iter().all(|n| match n {
            AuthnM::Unauthenticated => true,
            AuthnM::Network { cidrs, except } => {
                cidrs.iter().any(|c| c.contains(&ip)) && !except.iter().any(|c| c.contains(&ip))
            }
            AuthnM::MeshTls(ids) => ctx
                .peer_identity
                .is_some_and(|id| ids.iter().any(|p| p.matches(id))),
        })
    }
}

/// A MeshTLSAuthentication identity: `*` (any mTLS client), an exact identity (SPIFFE ID or a
/// Linkerd name `SA.NS.serviceaccount.identity.linkerd.TRUST_DOMAIN`, compared as the SPIFFE ID
/// it stands for), or `*.SUFFIX` (any Linkerd name ending so, e.g. a whole namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
enum IdPat {
    Any,
    Exact(String),
    Suffix(String),
}

/// The fixed part of a Linkerd identity name between namespace and trust domain.
const LINKERD_ID_INFIX: &str = ".serviceaccount.identity.linkerd.";

impl IdPat {
    fn compile(v: &str) -> IdPat {
        if v == "*" {
            IdPat::Any
        } else if let Some(suffix) = v.strip_prefix('*') {
            IdPat::Suffix(suffix.to_string())
        } else if v.starts_with("spiffe://") {
            IdPat::Exact(v.to_string())
        } else if let Some((head, td)) = v.split_once(LINKERD_ID_INFIX) {
            match head.split_once('.') {
                Some((sa, ns)) => IdPat::Exact(format!("spiffe://{td}/ns/{ns}/sa/{sa}")),
                None => IdPat::Exact(v.to_string()),
            }
        } else if v.contains("/ns/") {
            // An Istio-style principal, `TRUST_DOMAIN/ns/NS/sa/SA`.
            IdPat::Exact(format!("spiffe://{v}"))
        } else {
            IdPat::Exact(v.to_string())
        }
    }

    fn matches(&self, id: &Identity) -> bool {
        match self {
            IdPat::Any => true,
            IdPat::Exact(e) => id.0 == *e,
            IdPat::Suffix(s) => linkerd_name(id).is_some_and(|n| n.ends_with(s.as_str())),
        }
    }
}

/// The Linkerd name of a SPIFFE ID `spiffe://TD/ns/NS/sa/SA`.
fn linkerd_name(id: &Identity) -> Option<String> {
    let rest = id.0.strip_prefix("spiffe://")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [td, "ns", ns, "sa", sa] => Some(format!("{sa}.{ns}{LINKERD_ID_INFIX}{td}")),
        _ => None,
    }
}
