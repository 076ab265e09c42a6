//! Istio AuthorizationPolicy rules: policies compiled once per snapshot into rules of sources,
//! operations and conditions, and their evaluation against a request's attributes. The string,
//! host and path patterns and CIDRs are in `pattern`; `when` conditions in `condition`.

mod condition;
mod pattern;

pub(super) use pattern::parse_cidr;

use super::path::{normalize_path, InvalidPath};
use super::stats::{Tallies, Tally};
use super::{AuthzError, RequestContext};
use crate::jwt::VerifiedJwt;
use condition::ConditionM;
use http::HeaderMap;
use ipnet::IpNet;
use model::security::{AuthzPolicy, AuthzRule, Operation, Source};
use pattern::{HostPat, Pat, PathPat};
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// How a rule treats what it cannot evaluate (a field an invalid rule had, an HTTP-only field on
/// a plain connection): an ALLOW (or AUDIT) rule then matches nothing, a DENY rule matches more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Allow,
    Deny,
}

impl Action {
    /// The value of a field that cannot be evaluated.
    fn unknown(self) -> bool {
        self == Action::Deny
    }
}

#[derive(Debug)]
pub(super) struct IstioPolicy {
    pub(super) tally: Arc<Tally>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug)]
enum CompiledRule {
    Valid(Rule),
    /// A rule with a field that did not compile: fails closed.
    Invalid,
}

impl IstioPolicy {
    pub(super) fn compile(
        p: &AuthzPolicy,
        tallies: &mut Tallies<'_>,
        errors: &mut Vec<AuthzError>,
    ) -> Self {
        let rules = p
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| match Rule::compile(r) {
                Ok(r) => CompiledRule::Valid(r),
                Err((field, why)) => {
                    errors.push(AuthzError::Rule {
                        policy: p.name.clone(),
                        rule: i,
                        field,
                        why,
                    });
                    CompiledRule::Invalid
                }
            })
            .collect();
        IstioPolicy {
            tally: tallies.get(&p.name),
            rules,
        }
    }

    /// Whether a rule reads the path (then normalised once per request).
    pub(super) fn reads_path(&self) -> bool {
        self.rules.iter().any(|r| match r {
            CompiledRule::Valid(r) => r.to.iter().any(|o| !o.paths.is_empty()),
            CompiledRule::Invalid => false,
        })
    }

    /// Any rule matches. No rules: an ALLOW policy allows nothing, a DENY policy denies nothing.
    pub(super) fn matches(&self, a: &Attrs<'_>, action: Action) -> bool {
        self.rules.iter().any(|r| match r {
            CompiledRule::Valid(r) => r.matches(a, action),
            CompiledRule::Invalid => action.unknown(),
        })
    }
}

/// A compile failure: the field's path within the rule and why.
type FieldError = (String, String);

#[derive(Debug)]
struct Rule {
    from: Vec<SourceM>,
    to: Vec<OperationM>,
    when: Vec<ConditionM>,
}

impl Rule {
    fn compile(r: &AuthzRule) -> Result<Rule, FieldError> {
        let from = r
            .from
            .iter()
            .enumerate()
            .map(|(i, s)| {
                SourceM::compile(s).map_err(|(f, w)| (format!("from[{i}].source.{f}"), w))
            })
            .collect::<Result<_, _>>()?;
        let to =
            r.to.iter()
                .enumerate()
                .map(|(i, o)| {
                    OperationM::compile(o).map_err(|(f, w)| (format!("to[{i}].operation.{f}"), w))
                })
                .collect::<Result<_, _>>()?;
        let when = r
            .when
            .iter()
            .enumerate()
            .map(|(i, c)| ConditionM::compile(c).map_err(|(f, w)| (format!("when[{i}]{f}"), w)))
            .collect::<Result<_, _>>()?;
        Ok(Rule { from, to, when })
    }

    /// At least one source (or none listed), at least one operation (or none listed), and
    /// every condition.
    fn matches(&self, a: &Attrs<'_>, action: Action) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a, action)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a, action)))
            && self.when.iter().all(|c| c.matches(a, action))
    }
}

/// A list and its `not` list: the value must match one of `any` (when listed) and none of
/// `none`. An absent value matches no `any` list and every `none` list.
#[derive(Debug)]
struct Either<T> {
    any: Vec<T>,
    none: Vec<T>,
}

impl<T> Either<T> {
    fn compile<E>(
        any: &[String],
        none: &[String],
        name: (&str, &str),
        mut f: impl FnMut(&str) -> Result<T, E>,
    ) -> Result<Self, FieldError>
    where
        E: fmt::Display,
    {
        let mut list = |values: &[String], field: &str| {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| f(v).map_err(|e| (format!("{field}[{i}]"), format!("{v:?}: {e}"))))
                .collect::<Result<Vec<T>, FieldError>>()
        };
        Ok(Either {
            any: list(any, name.0)?,
            none: list(none, name.1)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.any.is_empty() && self.none.is_empty()
    }

    /// `matches(item)` says whether the request's value matches one item (false when the
    /// request has no such value).
    fn eval(&self, matches: impl Fn(&T) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&matches)) && !self.none.iter().any(&matches)
    }

    /// As [`Either::eval`] for an HTTP-only field: on a plain connection the field cannot be
    /// evaluated.
    fn eval_http(&self, a: &Attrs<'_>, action: Action, matches: impl Fn(&T) -> bool) -> bool {
        if self.is_empty() {
            return true;
        }
        if a.ctx.http.is_none() {
            return action.unknown();
        }
        self.eval(matches)
    }
}

#[derive(Debug)]
struct SourceM {
    principals: Either<Pat>,
    request_principals: Either<Pat>,
    namespaces: Either<Pat>,
    ip_blocks: Either<IpNet>,
    remote_ip_blocks: Either<IpNet>,
}

impl SourceM {
    fn compile(s: &Source) -> Result<Self, FieldError> {
        let principal = |v: &str| Pat::compile(v.strip_prefix("spiffe://").unwrap_or(v));
        Ok(SourceM {
            principals: Either::compile(
                &s.principals,
                &s.not_principals,
                ("principals", "notPrincipals"),
                principal,
            )?,
            request_principals: Either::compile(
                &s.request_principals,
                &s.not_request_principals,
                ("requestPrincipals", "notRequestPrincipals"),
                Pat::compile,
            )?,
            namespaces: Either::compile(
                &s.namespaces,
                &s.not_namespaces,
                ("namespaces", "notNamespaces"),
                Pat::compile,
            )?,
            ip_blocks: Either::compile(
                &s.ip_blocks,
                &s.not_ip_blocks,
                ("ipBlocks", "notIpBlocks"),
                parse_cidr,
            )?,
            remote_ip_blocks: Either::compile(
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                ("remoteIpBlocks", "notRemoteIpBlocks"),
                parse_cidr,
            )?,
        })
    }

    fn matches(&self, a: &Attrs<'_>, action: Action) -> bool {
        self.principals
            .eval(|p| a.principal.is_some_and(|v| p.matches(v)))
            && self.request_principals.eval_http(a, action, |p| {
                a.jwt().is_some_and(|j| p.matches(&j.principal))
            })
            && self
                .namespaces
                .eval(|p| a.namespace.is_some_and(|v| p.matches(v)))
            && self.ip_blocks.eval(|n| n.contains(&a.source_ip))
            && self.remote_ip_blocks.eval(|n| n.contains(&a.remote_ip))
    }
}

#[derive(Debug)]
struct OperationM {
    hosts: Either<HostPat>,
    ports: Either<u16>,
    methods: Either<Pat>,
    paths: Either<PathPat>,
}

impl OperationM {
    fn compile(o: &Operation) -> Result<Self, FieldError> {
        let ports = Either {
            any: o.ports.clone(),
            none: o.not_ports.clone(),
        };
        Ok(OperationM {
            hosts: Either::compile(
                &o.hosts,
                &o.not_hosts,
                ("hosts", "notHosts"),
                HostPat::compile,
            )?,
            ports,
            methods: Either::compile(
                &o.methods,
                &o.not_methods,
                ("methods", "notMethods"),
                Pat::compile,
            )?,
            paths: Either::compile(
                &o.paths,
                &o.not_paths,
                ("paths", "notPaths"),
                PathPat::compile,
            )?,
        })
    }

    fn matches(&self, a: &Attrs<'_>, action: Action) -> bool {
        let http = a.ctx.http.as_ref();
        self.ports.eval(|p| *p == a.ctx.destination_port)
            && self
                .hosts
                .eval_http(a, action, |h| http.is_some_and(|r| h.matches(r.host)))
            && self.methods.eval_http(a, action, |m| {
                http.is_some_and(|r| m.matches(r.method.as_str()))
            })
            && self.paths.eval_http(a, action, |p| {
                a.path.as_deref().is_some_and(|v| p.matches(v))
            })
    }
}

/// A request's attributes as Istio rules read them, derived once per request.
pub(super) struct Attrs<'a> {
    ctx: &'a RequestContext<'a>,
    /// The peer's principal: its SPIFFE ID without `spiffe://`.
    principal: Option<&'a str>,
    /// The namespace in the principal.
    namespace: Option<&'a str>,
    source_ip: IpAddr,
    /// The original client: the first `X-Forwarded-For` address, else the peer.
    remote_ip: IpAddr,
    /// The normalised path, when a rule reads paths and this is HTTP.
    path: Option<Cow<'a, str>>,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(ctx: &'a RequestContext<'a>, needs_path: bool) -> Result<Self, InvalidPath> {
        let principal = ctx
            .peer_identity
            .map(|id| id.0.strip_prefix("spiffe://").unwrap_or(&id.0));
        let namespace = principal.and_then(|p| {
            let mut parts = p.split('/').skip(1);
            (parts.next() == Some("ns")).then(|| parts.next()).flatten()
        });
        let source_ip = ctx.peer_ip.to_canonical();
        let remote_ip = ctx
            .http
            .as_ref()
            .and_then(|h| forwarded_for(h.headers))
            .unwrap_or(source_ip);
        let path = match &ctx.http {
            Some(h) if needs_path => Some(normalize_path(h.path)?),
            _ => None,
        };
        Ok(Attrs {
            ctx,
            principal,
            namespace,
            source_ip,
            remote_ip,
            path,
        })
    }

    fn jwt(&self) -> Option<&'a VerifiedJwt> {
        self.ctx.http.as_ref().and_then(|h| h.jwt)
    }
}

/// The first address of `X-Forwarded-For` (the original client, as far as it says).
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let v = headers.get("x-forwarded-for")?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}
