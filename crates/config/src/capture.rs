//! What a service's annotations say its replicas' capture rules (transparent interception)
//! leave alone: Istio's `traffic.sidecar.istio.io/exclude*` and `includeOutboundIPRanges`, and
//! Linkerd's `config.linkerd.io/skip-inbound-ports` / `skip-outbound-ports`.

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::ports::port_list;
use model::{Capture, Labels};

pub const ISTIO_EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const ISTIO_EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const ISTIO_INCLUDE_OUTBOUND_IP_RANGES: &str =
    "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const ISTIO_EXCLUDE_OUTBOUND_IP_RANGES: &str =
    "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const LINKERD_SKIP_OUTBOUND_PORTS: &str = "config.linkerd.io/skip-outbound-ports";
pub const LINKERD_SKIP_INBOUND_PORTS: &str = "config.linkerd.io/skip-inbound-ports";

/// The capture exclusions the annotations of the service at `field` ask for; errors located
/// at the annotation.
pub(crate) fn capture(
    doc: &Doc,
    field: &str,
    annotations: &Labels,
    errors: &mut Vec<Diagnostic>,
) -> Capture {
    let mut c = Capture::default();
    let mut ports = |names: [&str; 2], into: &mut Vec<u16>| {
        for name in names {
            if let Some(value) = annotations.get(name) {
                into.extend(port_list(doc, field, name, value, errors));
            }
        }
        into.sort_unstable();
        into.dedup();
    };
    ports(
        [ISTIO_EXCLUDE_OUTBOUND_PORTS, LINKERD_SKIP_OUTBOUND_PORTS],
        &mut c.exclude_outbound_ports,
    );
    ports(
        [ISTIO_EXCLUDE_INBOUND_PORTS, LINKERD_SKIP_INBOUND_PORTS],
        &mut c.exclude_inbound_ports,
    );
    for (name, into) in [
        (
            ISTIO_INCLUDE_OUTBOUND_IP_RANGES,
            &mut c.include_outbound_cidrs,
        ),
        (
            ISTIO_EXCLUDE_OUTBOUND_IP_RANGES,
            &mut c.exclude_outbound_cidrs,
        ),
    ] {
        let Some(value) = annotations.get(name) else {
            continue;
        };
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "*" && name == ISTIO_INCLUDE_OUTBOUND_IP_RANGES {
                // Every address: what capturing everything does anyway.
                continue;
            }
            match crate::loader::parse_cidr(part) {
                Ok(()) if part.contains(':') => errors.push(doc.error(
                    &format!("{field}.annotations.{name}"),
                    format!("`{part}`: only IPv4 ranges are captured"),
                )),
                Ok(()) => into.push(part.to_string()),
                Err(why) => errors.push(doc.error(
                    &format!("{field}.annotations.{name}"),
                    format!("`{part}` is not a CIDR: {why}"),
                )),
            }
        }
    }
    c
}
