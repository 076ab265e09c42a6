//! Istio's value matchers: string patterns (exact, prefix, suffix, any), `hosts` entries,
//! `paths` entries with URI templates, and CIDRs.

use ipnet::IpNet;
use regex::Regex;
use std::net::IpAddr;

/// An address block as policies list them (`ipBlocks`, condition values, Linkerd networks): a
/// CIDR or one address, in canonical form (an IPv4-mapped IPv6 CIDR reads as IPv4).
pub(in crate::authz) fn parse_cidr(v: &str) -> Result<IpNet, String> {
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
pub(super) enum Pat {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl Pat {
    pub(super) fn compile(v: &str) -> Result<Pat, String> {
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

    pub(super) fn matches(&self, v: &str) -> bool {
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
pub(super) struct HostPat {
    pat: Pat,
    with_port: bool,
}

impl HostPat {
    pub(super) fn compile(v: &str) -> Result<HostPat, String> {
        let v = v.to_ascii_lowercase();
        let with_port = split_port(&v).1.is_some();
        Ok(HostPat {
            pat: Pat::compile(&v)?,
            with_port,
        })
    }

    pub(super) fn matches(&self, host: &str) -> bool {
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
pub(super) enum PathPat {
    Str(Pat),
    Template(Regex),
}

/// Envoy's URI-template character classes: `{*}` is one non-empty segment, `{**}` any rest
/// (slashes included).
const ONE_SEGMENT: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+";
const ANY_SEGMENTS: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=/]*";

impl PathPat {
    pub(super) fn compile(v: &str) -> Result<PathPat, String> {
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

    pub(super) fn matches(&self, path: &str) -> bool {
        match self {
            PathPat::Str(p) => p.matches(path),
            PathPat::Template(r) => r.is_match(path),
        }
    }
}
