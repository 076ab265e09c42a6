//! Istio `when` conditions: the attribute a condition key names (peer, JWT claims, headers,
//! addresses, SNI) and the values or `notValues` it is compared with.

use super::pattern::{parse_cidr, Pat};
use super::{Action, Attrs, Either, FieldError};
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use model::security::Condition;
use std::borrow::Cow;

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
pub(super) struct ConditionM {
    key: Key,
    values: Values,
}

impl ConditionM {
    pub(super) fn compile(c: &Condition) -> Result<Self, FieldError> {
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

    pub(super) fn matches(&self, a: &Attrs<'_>, action: Action) -> bool {
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
