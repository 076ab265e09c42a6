//! Istio AuthorizationPolicy rules: compiled patterns, CIDRs, path templates and conditions,
//! and their evaluation against a request's attributes.

use super::path::{normalize_path, InvalidPath};
use super::stats::{Tallies, Tally};
use super::{AuthzError, RequestContext};
use crate::jwt::VerifiedJwt;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use model::security::{AuthzPolicy, AuthzRule, Condition, Operation, Source};
use regex::Regex;
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

/// The attribute a `when` condition reads.
#[derive(Debug)]
enum Key {
    Header(HeaderName),
    SourceIp,
    RemoteIp,
    SourcePrincipal,
    SourceNamespace,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    /// `request.auth.claims[a][b]…`: the path into the claims.
    AuthClaims(Vec<String>),
    DestinationIp,
    DestinationPort,
    Sni,
}

impl Key {
    fn parse(key: &str) -> Result<Key, String> {
        let bracketed = |rest: &str| -> Result<Vec<String>, String> {
            let mut names = Vec::new();
            let mut rest = rest;
            while !rest.is_empty() {
                let inner = rest
                    .strip_prefix('[')
                    .and_then(|r| r.split_once(']'))
                    .filter(|(name, _)| !name.is_empty());
                let Some((name, after)) = inner else {
                    return Err(format!("{key:?}: expected `[name]` after the attribute"));
                };
                names.push(name.to_string());
                rest = after;
            }
            Ok(names)
        };
        Ok(match key {
            "source.ip" => Key::SourceIp,
            "remote.ip" => Key::RemoteIp,
            "source.principal" => Key::SourcePrincipal,
            "source.namespace" => Key::SourceNamespace,
            "request.auth.principal" => Key::AuthPrincipal,
            "request.auth.audiences" => Key::AuthAudiences,
            "request.auth.presenter" => Key::AuthPresenter,
            "destination.ip" => Key::DestinationIp,
            "destination.port" => Key::DestinationPort,
            "connection.sni" => Key::Sni,
            _ => {
                if let Some(rest) = key.strip_prefix("request.headers") {
                    match bracketed(rest)?.as_slice() {
                        [name] => Key::Header(
                            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                                .map_err(|_| format!("{key:?}: bad header name {name:?}"))?,
                        ),
                        _ => return Err(format!("{key:?}: expected request.headers[NAME]")),
                    }
                } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                    let names = bracketed(rest)?;
                    if names.is_empty() {
                        return Err(format!("{key:?}: expected request.auth.claims[NAME]"));
                    }
                    Key::AuthClaims(names)
                } else {
                    return Err(format!("unsupported condition key {key:?}"));
                }
            }
        })
    }

    fn http_only(&self) -> bool {
        matches!(
            self,
            Key::Header(_)
                | Key::AuthPrincipal
                | Key::AuthAudiences
                | Key::AuthPresenter
                | Key::AuthClaims(_)
        )
    }
}

#[derive(Debug)]
enum Values {
    Strings(Either<Pat>),
    Ips(Either<IpNet>),
    Ports(Either<u16>),
}

#[derive(Debug)]
struct ConditionM {
    key: Key,
    values: Values,
}

impl ConditionM {
    fn compile(c: &Condition) -> Result<Self, FieldError> {
        let key = Key::parse(&c.key).map_err(|why| (".key".to_string(), why))?;
        if c.values.is_empty() && c.not_values.is_empty() {
            return Err((
                String::new(),
                format!("condition {:?} has neither values nor notValues", c.key),
            ));
        }
        let names = ("values", "notValues");
        let at = |(f, w): FieldError| (format!(".{f}"), w);
        let values = match key {
            Key::SourceIp | Key::RemoteIp | Key::DestinationIp => Values::Ips(
                Either::compile(&c.values, &c.not_values, names, parse_cidr).map_err(at)?,
            ),
            Key::DestinationPort => Values::Ports(
                Either::compile(&c.values, &c.not_values, names, |v| v.parse::<u16>())
                    .map_err(at)?,
            ),
            _ => Values::Strings(
                Either::compile(&c.values, &c.not_values, names, Pat::compile).map_err(at)?,
            ),
        };
        Ok(ConditionM { key, values })
    }

    fn matches(&self, a: &Attrs<'_>, action: Action) -> bool {
        if self.key.http_only() && a.ctx.http.is_none() {
            return action.unknown();
        }
        match &self.values {
            Values::Ips(e) => {
                let ip = match self.key {
                    Key::SourceIp => Some(a.source_ip),
                    Key::RemoteIp => Some(a.remote_ip),
                    _ => a.ctx.destination_ip.map(|ip| ip.to_canonical()),
                };
                e.eval(|n| ip.is_some_and(|ip| n.contains(&ip)))
            }
            Values::Ports(e) => e.eval(|p| *p == a.ctx.destination_port),
            Values::Strings(e) => self.eval_strings(e, a),
        }
    }

    fn eval_strings(&self, e: &Either<Pat>, a: &Attrs<'_>) -> bool {
        let one = |v: Option<&str>| e.eval(|p| v.is_some_and(|v| p.matches(v)));
        let jwt = a.jwt();
        match &self.key {
            Key::SourcePrincipal => one(a.principal),
            Key::SourceNamespace => one(a.namespace),
            Key::Sni => one(a.ctx.sni),
            Key::AuthPrincipal => one(jwt.map(|j| j.principal.as_str())),
            Key::AuthPresenter => one(jwt.and_then(|j| j.presenter.as_deref())),
            Key::AuthAudiences => {
                e.eval(|p| jwt.is_some_and(|j| j.audiences.iter().any(|v| p.matches(v))))
            }
            Key::AuthClaims(path) => {
                let claim = jwt.and_then(|j| claim_at(&j.claims, path));
                e.eval(|p| claim.is_some_and(|c| claim_strings(c).any(|v| p.matches(v))))
            }
            Key::Header(name) => {
                let headers = a.ctx.http.as_ref().map(|h| h.headers);
                let value = headers.and_then(|h| joined_header(h, name));
                one(value.as_deref())
            }
            _ => false,
        }
    }
}

/// The claim at `path` (nested objects).
fn claim_at<'v>(claims: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(claims, |v, name| v.get(name))
}

/// The string values of a claim: a string, or the strings of a list (Istio supports no other
/// claim types in conditions).
fn claim_strings(v: &serde_json::Value) -> impl Iterator<Item = &str> {
    let (one, many) = match v {
        serde_json::Value::String(s) => (Some(s.as_str()), None),
        serde_json::Value::Array(items) => (None, Some(items.iter().filter_map(|i| i.as_str()))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

/// A header's value; repeated headers are joined with `,`, as Istio compares them.
fn joined_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Cow<'h, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    let mut joined: Option<String> = None;
    for v in values {
        let s = joined.get_or_insert_with(|| first.to_string());
        s.push(',');
        s.push_str(v.to_str().ok()?);
    }
    Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
}

pub(super) fn parse_cidr(v: &str) -> Result<IpNet, String> {
    let v = v.trim();
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(match net {
            // Canonical form, so that `::ffff:10.0.0.0/104` reads as `10.0.0.0/8`.
            IpNet::V6(n) => match n.addr().to_ipv4_mapped() {
                Some(v4) if n.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).map_err(|e| e.to_string())?
                }
                _ => net,
            },
            IpNet::V4(_) => net,
        });
    }
    v.parse::<IpAddr>()
        .map(|ip| IpNet::from(ip.to_canonical()))
        .map_err(|_| "not an IP address or CIDR".to_string())
}

/// Istio's string match: exact, `prefix*`, `*suffix` or `*` (any non-empty value).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pat {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl Pat {
    fn compile(v: &str) -> Result<Pat, String> {
        Ok(if v == "*" {
            Pat::Any
        } else if let Some(p) = v.strip_suffix('*') {
            Pat::Prefix(p.into())
        } else if let Some(s) = v.strip_prefix('*') {
            Pat::Suffix(s.into())
        } else {
            Pat::Exact(v.into())
        })
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Pat::Any => !v.is_empty(),
            Pat::Exact(e) => v == &**e,
            Pat::Prefix(p) => v.starts_with(&**p),
            Pat::Suffix(s) => v.ends_with(&**s),
        }
    }

    /// ASCII case-insensitive; the pattern is lowercase.
    fn matches_ignore_case(&self, v: &str) -> bool {
        let v = v.as_bytes();
        match self {
            Pat::Any => !v.is_empty(),
            Pat::Exact(e) => v.eq_ignore_ascii_case(e.as_bytes()),
            Pat::Prefix(p) => v
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            Pat::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .is_some_and(|at| v[at..].eq_ignore_ascii_case(s.as_bytes())),
        }
    }
}

/// A `hosts` entry: case-insensitive; without a port it matches the host whatever the port.
#[derive(Debug)]
struct HostPat {
    pat: Pat,
    with_port: bool,
}

impl HostPat {
    fn compile(v: &str) -> Result<HostPat, String> {
        let v = v.to_ascii_lowercase();
        let with_port = split_port(&v).1.is_some();
        Ok(HostPat {
            pat: Pat::compile(&v)?,
            with_port,
        })
    }

    fn matches(&self, host: &str) -> bool {
        let host = if self.with_port {
            host
        } else {
            split_port(host).0
        };
        self.pat.matches_ignore_case(host)
    }
}

/// `host:port` → (`host`, `Some(port)`); IPv6 literals keep their brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let split = match authority.rfind(':') {
        Some(i) if !authority[..i].contains(':') || authority[..i].ends_with(']') => {
            Some((&authority[..i], &authority[i + 1..]))
        }
        _ => None,
    };
    match split {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

/// A `paths` entry: an Istio string match, or a `{*}` / `{**}` URI template.
#[derive(Debug)]
enum PathPat {
    Str(Pat),
    Template(Regex),
}

/// Envoy's URI-template character classes: `{*}` is one non-empty segment, `{**}` any rest
/// (slashes included).
const ONE_SEGMENT: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+";
const ANY_SEGMENTS: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=/]*";

impl PathPat {
    fn compile(v: &str) -> Result<PathPat, String> {
        if !v.contains("{*}") && !v.contains("{**}") {
            return Pat::compile(v).map(PathPat::Str);
        }
        let mut re = String::from("^");
        let mut seen_any = false;
        for (i, segment) in v.split('/').enumerate() {
            if i > 0 {
                re.push('/');
            }
            match segment {
                "{*}" | "{**}" if seen_any => {
                    return Err("`{**}` must be the last operator of a path template".into())
                }
                "{*}" => re.push_str(ONE_SEGMENT),
                "{**}" => {
                    seen_any = true;
                    re.push_str(ANY_SEGMENTS);
                }
                s if s.contains(['*', '{', '}']) => {
                    return Err(format!(
                        "path template segment {s:?}: `*`, `{{` and `}}` may appear only as a \
                         whole `{{*}}` or `{{**}}` segment"
                    ))
                }
                s => re.push_str(&regex::escape(s)),
            }
        }
        re.push('$');
        Regex::new(&re)
            .map(PathPat::Template)
            .map_err(|e| e.to_string())
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathPat::Str(p) => p.matches(path),
            PathPat::Template(r) => r.is_match(path),
        }
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
