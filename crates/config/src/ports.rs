//! A Mesh-file service's ports and what each carries: `port` + `protocol`, or `ports: [{port,
//! protocol, name, appProtocol}]`, decided as Istio decides (an explicit protocol, then
//! `appProtocol`, then the port name's prefix) with Linkerd's `config.linkerd.io/opaque-ports`
//! annotation making a port opaque TCP. Each port records why it got its protocol, for
//! `weft check`.

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::format::{PortEntry, Service};
use model::{PortSpec, Protocol};

/// Linkerd's annotation listing a service's opaque ports (`"4222,6379-6380"`).
pub const OPAQUE_PORTS: &str = "config.linkerd.io/opaque-ports";

/// The ports of `s` (at `field` of `doc`); errors and warnings go to the two lists. The result
/// has at least one port unless there were errors.
pub(crate) fn ports(
    doc: &Doc,
    field: &str,
    s: &Service,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<PortSpec> {
    let entries: Vec<(String, PortEntry)> = match (&s.port, &s.ports) {
        (Some(_), Some(_)) => {
            errors.push(doc.error(
                &format!("{field}.ports"),
                "give `port` (with `protocol`) or `ports`, not both",
            ));
            return Vec::new();
        }
        (None, None) => {
            errors.push(doc.error(field, "a service needs `port` or `ports`"));
            return Vec::new();
        }
        (Some(port), None) => vec![(
            field.to_string(),
            PortEntry {
                port: *port,
                protocol: s.protocol.clone(),
                name: None,
                app_protocol: None,
            },
        )],
        (None, Some(list)) => {
            if let Some(p) = &s.protocol {
                errors.push(doc.error(
                    &format!("{field}.protocol"),
                    format!("`protocol: {p}` goes on each entry of `ports`"),
                ));
            }
            if list.is_empty() {
                errors.push(doc.error(&format!("{field}.ports"), "needs at least one port"));
            }
            list.iter()
                .enumerate()
                .map(|(i, p)| (format!("{field}.ports[{i}]"), p.clone()))
                .collect()
        }
    };
    let opaque = opaque_ports(doc, field, s, errors);
    let several = entries.len() > 1;
    let mut out: Vec<PortSpec> = Vec::with_capacity(entries.len());
    for (at, e) in entries {
        if e.port == 0 {
            errors.push(doc.error(&format!("{at}.port"), "port must be between 1 and 65535"));
        }
        let name = e.name.clone().unwrap_or_default();
        if several && name.is_empty() {
            errors.push(doc.error(
                &format!("{at}.name"),
                "each of several ports needs a name (as Kubernetes asks)",
            ));
        }
        if !name.is_empty() && !valid_port_name(&name) {
            errors.push(doc.error(
                &format!("{at}.name"),
                format!(
                    "`{name}` is not a valid port name: at most 15 lowercase letters, digits \
                     and '-', starting and ending with a letter or digit"
                ),
            ));
        }
        if let Some(other) = out.iter().find(|o| o.port == e.port) {
            errors.push(doc.error(
                &format!("{at}.port"),
                format!("port {} is listed twice (also as {:?})", e.port, other.name),
            ));
        }
        if !name.is_empty() && out.iter().any(|o| o.name == name) {
            errors.push(doc.error(
                &format!("{at}.name"),
                format!("port name `{name}` is used twice"),
            ));
        }
        let (protocol, why) = decide(
            doc,
            &at,
            &e,
            &name,
            opaque.contains(&e.port),
            errors,
            warnings,
        );
        out.push(PortSpec {
            port: e.port,
            protocol,
            name,
            why,
        });
    }
    out
}

/// A port's protocol and why: `protocol`, then `appProtocol`, then Linkerd's opaque ports,
/// then the name's prefix, then `http`.
fn decide(
    doc: &Doc,
    at: &str,
    e: &PortEntry,
    name: &str,
    opaque: bool,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> (Protocol, String) {
    if let Some(p) = &e.protocol {
        return match Protocol::parse(p) {
            Some(protocol) => (protocol, format!("protocol: {protocol}")),
            None => {
                errors.push(doc.error(
                    &format!("{at}.protocol"),
                    format!("`{p}` is not a protocol: use http, http2, grpc or tcp"),
                ));
                (Protocol::Http, String::new())
            }
        };
    }
    if let Some(a) = &e.app_protocol {
        match istio_protocol(a) {
            Some(protocol) => return (protocol, format!("appProtocol: {a}")),
            None => warnings.push(doc.error(
                &format!("{at}.appProtocol"),
                format!("appProtocol `{a}` is not one weft knows; the port is treated as http"),
            )),
        }
    }
    if opaque {
        return (Protocol::Tcp, format!("annotation {OPAQUE_PORTS}"));
    }
    if let Some((prefix, protocol)) = name_prefix(name) {
        return (protocol, format!("port name prefix {prefix}"));
    }
    (Protocol::Http, "default".to_string())
}

/// Istio's protocol names (port name prefixes and `appProtocol` values) as weft carries them:
/// TLS and the database protocols are opaque byte streams; gRPC-Web is HTTP/1.1.
fn istio_protocol(p: &str) -> Option<Protocol> {
    Some(match p.to_ascii_lowercase().as_str() {
        "http" | "grpc-web" | "kubernetes.io/ws" | "kubernetes.io/wss" => Protocol::Http,
        "http2" | "kubernetes.io/h2c" => Protocol::Http2,
        "grpc" => Protocol::Grpc,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => Protocol::Tcp,
        _ => return None,
    })
}

/// The protocol a port name says by Istio's convention: `NAME` or `NAME-suffix` for a known
/// protocol name (`grpc-web` before `grpc`).
fn name_prefix(name: &str) -> Option<(String, Protocol)> {
    let lower = name.to_ascii_lowercase();
    [
        "grpc-web", "http2", "http", "grpc", "tcp", "tls", "https", "mongo", "mysql", "redis",
    ]
    .into_iter()
    .find(|p| lower == *p || lower.starts_with(&format!("{p}-")))
    .and_then(|p| Some((format!("{p}-"), istio_protocol(p)?)))
}

/// Kubernetes' IANA_SVC_NAME rule, which Service port names follow.
fn valid_port_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter().any(|c| c.is_ascii_lowercase())
}

/// The ports Linkerd's opaque-ports annotation lists (`"4222,6379-6380"`); errors located at
/// the annotation.
fn opaque_ports(doc: &Doc, field: &str, s: &Service, errors: &mut Vec<Diagnostic>) -> Vec<u16> {
    match s.annotations.get(OPAQUE_PORTS) {
        Some(value) => port_list(doc, field, OPAQUE_PORTS, value, errors),
        None => Vec::new(),
    }
}

/// The ports an annotation `name` of the service at `field` lists: `"4222,6379-6380"`.
pub(crate) fn port_list(
    doc: &Doc,
    field: &str,
    name: &str,
    value: &str,
    errors: &mut Vec<Diagnostic>,
) -> Vec<u16> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = match part.split_once('-') {
            Some((a, b)) => a
                .trim()
                .parse::<u16>()
                .ok()
                .zip(b.trim().parse::<u16>().ok()),
            None => part.parse::<u16>().ok().map(|p| (p, p)),
        };
        match range {
            Some((a, b)) if a > 0 && a <= b => out.extend(a..=b),
            _ => errors.push(doc.error(
                &format!("{field}.annotations.{name}"),
                format!("`{part}` is not a port or a range of ports like 6379-6380"),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_names_and_app_protocols() {
        for (name, want) in [
            ("grpc", Some(Protocol::Grpc)),
            ("grpc-api", Some(Protocol::Grpc)),
            ("grpc-web", Some(Protocol::Http)),
            ("http2-x", Some(Protocol::Http2)),
            ("http-web", Some(Protocol::Http)),
            ("tcp-db", Some(Protocol::Tcp)),
            ("redis", Some(Protocol::Tcp)),
            ("grpcx", None),
            ("web", None),
        ] {
            assert_eq!(name_prefix(name).map(|(_, p)| p), want, "{name}");
        }
        assert_eq!(istio_protocol("kubernetes.io/h2c"), Some(Protocol::Http2));
        assert_eq!(istio_protocol("HTTP2"), Some(Protocol::Http2));
        assert_eq!(istio_protocol("quic"), None);
        assert!(valid_port_name("grpc-api"));
        assert!(!valid_port_name("Grpc"));
        assert!(!valid_port_name("a-very-long-port-name"));
        assert!(!valid_port_name("-x"));
    }
}
