//! The value checks the security translations share: CIDRs and addresses, ports written as
//! strings, Istio's `when` attribute names, Istio's path templates (`{*}`, `{**}`), HTTP header
//! names, and Kubernetes label selectors read from the marked tree.

use std::net::IpAddr;

/// Istio condition attributes weft evaluates, whole (`source.ip`) — besides the two maps below.
const CONDITION_KEYS: [&str; 10] = [
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

/// Map attributes: one key in brackets (`request.headers[x-token]`), or one or more
/// (`request.auth.claims[groups]`, nested `request.auth.claims[a][b]`).
const HEADERS: &str = "request.headers";
const CLAIMS: &str = "request.auth.claims";

/// Istio's experimental Envoy filter-state attributes, which weft does not have.
const ENVOY_FILTERS: &str = "experimental.envoy.filters.";

/// An address or CIDR (`10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32`), as (network, prefix).
pub(crate) fn cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("`{text}` is not an IP address or CIDR like 10.0.0.0/8");
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty() => {
            l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?
        }
        Some(_) => return Err(bad()),
    };
    Ok((ip, len))
}

/// Whether CIDR `inner` lies within CIDR `outer` (same family, longer or equal prefix).
pub(crate) fn contains(outer: (IpAddr, u8), inner: (IpAddr, u8)) -> bool {
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let ((o, ofam), (i, ifam)) = (bits(outer.0), bits(inner.0));
    if ofam != ifam || inner.1 < outer.1 {
        return false;
    }
    // Prefix lengths are within the family's width, and v4 addresses sit in the top 32 bits.
    let mask = if outer.1 == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(outer.1))
    };
    o & mask == i & mask
}

/// A port written as a number or a string of digits (Istio's `ports` are strings).
pub(crate) fn port(value: &serde_yaml_ng::Value) -> Result<u16, String> {
    let text = match value {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        other => return Err(format!("{other:?} is not a port number")),
    };
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{text}` is not a port number between 1 and 65535"))
}

/// Checks an Istio `when` key; the message says what is wrong.
pub(crate) fn condition_key(key: &str) -> Result<(), String> {
    if CONDITION_KEYS.contains(&key) {
        return Ok(());
    }
    for (map, nested) in [(HEADERS, false), (CLAIMS, true)] {
        let Some(rest) = key.strip_prefix(map) else {
            continue;
        };
        if rest.starts_with('[') && bracketed(rest, nested) {
            return Ok(());
        }
        if rest.starts_with('[') || rest.is_empty() {
            let form = if nested {
                "[CLAIM] (or [A][B])"
            } else {
                "[NAME]"
            };
            return Err(format!("`{key}`: write {map}{form} with a non-empty name"));
        }
    }
    if key.starts_with(ENVOY_FILTERS) {
        return Err(format!(
            "`{key}`: Envoy filter-state attributes are not supported by weft"
        ));
    }
    Err(format!(
        "unknown attribute `{key}`; supported: {}, {HEADERS}[NAME], {CLAIMS}[CLAIM]",
        CONDITION_KEYS.join(", ")
    ))
}

/// `[a]` (or, `nested`, `[a][b]…`) with non-empty names and nothing around them.
fn bracketed(mut rest: &str, nested: bool) -> bool {
    let mut groups = 0;
    while let Some(after) = rest.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return false;
        };
        let name = &after[..end];
        if name.is_empty() || name.contains('[') {
            return false;
        }
        groups += 1;
        rest = &after[end + 1..];
    }
    rest.is_empty() && (groups == 1 || (nested && groups > 1))
}

/// Checks the values of a `when` condition whose key wants addresses or ports.
pub(crate) fn condition_value(key: &str, value: &str) -> Result<(), String> {
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => cidr(value).map(|_| ()),
        "destination.port" => port(&serde_yaml_ng::Value::String(value.to_string())).map(|_| ()),
        _ => Ok(()),
    }
}

/// Checks an Istio AuthorizationPolicy path. Without `{*}` / `{**}` it is an exact, `prefix*`,
/// `*suffix` or `*` match and only braces are refused; with them it is a URI template, as
/// Istio validates one: each operator is a whole segment, `{**}` is the last operator, and the
/// other segments are plain literals (no `*`, `{`, `}`).
pub(crate) fn authz_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("a path must not be empty".into());
    }
    let templated = path.contains("{*}") || path.contains("{**}");
    if !templated {
        if path.contains(['{', '}']) {
            return Err(format!(
                "`{path}`: `{{` and `}}` are only allowed in the path templates {{*}} and {{**}}"
            ));
        }
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(format!("`{path}`: a path template must start with `/`"));
    }
    let mut any_seen = false;
    for segment in path.trim_matches('/').split('/') {
        match segment {
            "{*}" | "{**}" if any_seen => {
                return Err(format!(
                    "`{path}`: {{**}} must be the last operator of a path template"
                ))
            }
            "{*}" => {}
            "{**}" => any_seen = true,
            s if s.contains(['{', '}']) => {
                return Err(format!(
                    "`{path}`: segment `{s}`: an operator must be a whole segment, {{*}} or {{**}}"
                ))
            }
            s if s.contains('*') => {
                return Err(format!(
                    "`{path}`: segment `{s}`: `*` cannot be mixed with {{*}} / {{**}} in a path \
                     template"
                ))
            }
            s if !is_literal(s) => {
                return Err(format!(
                    "`{path}`: segment `{s}` is not a valid path segment of a template"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// RFC 3986 `pchar`s (`*` excluded, as a template's literals cannot hold one), at least one.
fn is_literal(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
            continue;
        }
        let ok = c.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@".contains(&c);
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

/// An HTTP header name, as the proxy builds it (`model::valid::header_name`).
pub(crate) fn is_header_name(s: &str) -> bool {
    model::valid::header_name(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_containment() {
        assert!(cidr("10.0.0.0/8").is_ok());
        assert!(cidr("203.0.113.4").is_ok());
        assert!(cidr("2001:db8::/32").is_ok());
        for bad in ["10.0.0.0/33", "10.0.0/8", "10.0.0.0/", "x", "10.0.0.0/+8"] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
        let c = |s| cidr(s).unwrap();
        assert!(contains(c("10.0.0.0/8"), c("10.1.0.0/16")));
        assert!(contains(c("10.0.0.0/8"), c("10.0.0.1")));
        assert!(!contains(c("10.1.0.0/16"), c("10.0.0.0/8")));
        assert!(!contains(c("10.0.0.0/8"), c("11.0.0.0/16")));
        assert!(contains(c("0.0.0.0/0"), c("192.168.1.1")));
        assert!(!contains(c("0.0.0.0/0"), c("::1")));
    }

    #[test]
    fn condition_keys() {
        for ok in [
            "source.ip",
            "request.headers[x-token]",
            "request.auth.claims[groups]",
            "request.auth.claims[nested][key]",
            "destination.port",
        ] {
            assert_eq!(condition_key(ok), Ok(()), "{ok}");
        }
        for bad in [
            "request.headers",
            "request.headers[]",
            "request.headers[a][b]",
            "request.auth.claims[a]x",
            "source.user",
            "experimental.envoy.filters.network.mysql_proxy[db.table]",
        ] {
            assert!(condition_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_templates_follow_istio() {
        for ok in [
            "/headers",
            "/info*",
            "*/admin",
            "*",
            "/foo/{*}",
            "/foo/{**}",
            "/foo/{*}/bar/{**}",
            "/foo/{**}/bar.html",
            "/api/{*}/v1.0/",
        ] {
            assert_eq!(authz_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/foo/{bar}",
            "/foo/{**}/{*}",
            "/foo/{**}/x/{**}",
            "/foo/a{*}",
            "/foo/{*}/bar*",
            "/foo/{*}//x",
            "foo/{*}",
            "/foo/{*}/%zz",
        ] {
            assert!(authz_path(bad).is_err(), "{bad}");
        }
    }
}
