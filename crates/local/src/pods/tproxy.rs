//! The capture rules of `weft up`'s pods: an nftables table that hands a pod's TCP to its
//! sidecar unchanged (`tproxy`), with no connection tracking and no address rewriting.
//!
//! Why not the `nat` table's `REDIRECT`, as `weft capture` installs for Kubernetes pods: a `nat`
//! table turns on connection tracking for every packet of the namespace, loopback included, and
//! a request through a pod's sidecar crosses three hops (app → sidecar, sidecar → sidecar,
//! sidecar → app). Measured with `scripts/pod-network` (a plain call between two pods, 8 rounds):
//! no rules 16.6 µs of CPU per request in all, a `nat` table 20.0 µs, this table 18.9 µs.
//!
//! How a connection is captured:
//! - outbound: the `output` chain marks the app's TCP packets with [`CAPTURE_MARK`] (not the
//!   sidecar's, which carry [`super::SOCKET_MARK`]; not those to loopback, the host or what the
//!   pod's service excludes). A rule in the pod (`ip rule fwmark CAPTURE_MARK lookup
//!   CAPTURE_TABLE`, whose one route is `local 0.0.0.0/0 dev lo`) then routes them to the pod's
//!   loopback, where the `prerouting` chain gives them to the sidecar's capture listener
//!   (127.0.0.1:[`super::CAPTURE_PORT`]);
//! - inbound: the `prerouting` chain gives TCP arriving on `eth0` for any port but the sidecar's
//!   own and the excluded ones to the sidecar's inbound listener ([`super::INBOUND_PORT`]).
//!
//! Either way the sidecar's accepted socket keeps the address the client called as its own
//! local address: that is the original destination (no `SO_ORIGINAL_DST`). Its listeners are
//! `IP_TRANSPARENT` (to accept connections for addresses that are not theirs) and carry the
//! sidecar's socket mark, so that its replies are not captured in turn. Packets of connections
//! the pod's sockets made themselves fall through `tproxy` (it takes only transparent sockets).
//! A connection `tproxy` cannot hand over (no sidecar listening yet) never goes past it: the
//! app's is refused, one from outside the pod dropped.

use super::{run, run_with_input, Exempt, PodError, ADMIN_PORT, CAPTURE_PORT, INBOUND_PORT};
use model::Capture;
use std::fmt::Write as _;

/// The mark of an app's outbound packets on their way to the sidecar.
pub const CAPTURE_MARK: u32 = 1338;
/// The routing table that sends [`CAPTURE_MARK`]ed packets to the pod's loopback.
pub const CAPTURE_TABLE: u32 = 133;
/// The nftables table (family `ip`) of the rules.
pub const TABLE: &str = "weft";

/// Installs the capture rules ([`ruleset`]) in network namespace `ns`, and the routing rule
/// and table that send [`CAPTURE_MARK`]ed packets to its loopback.
pub fn install(ns: &str, exempt: &Exempt, capture: &Capture) -> Result<(), PodError> {
    let rules = ruleset(exempt, capture);
    run_with_input(&["ip", "netns", "exec", ns, "nft", "-f", "-"], Some(&rules))?;
    let (mark, table) = (CAPTURE_MARK.to_string(), CAPTURE_TABLE.to_string());
    run(&[
        "ip", "-n", ns, "rule", "add", "fwmark", &mark, "lookup", &table,
    ])?;
    run(&[
        "ip",
        "-n",
        ns,
        "route",
        "add",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        &table,
    ])?;
    Ok(())
}

/// `{ a, b }`, or the one element alone (nft sets want at least one).
fn set<T: std::fmt::Display>(items: &[T]) -> String {
    match items {
        [one] => one.to_string(),
        _ => {
            let list: Vec<String> = items.iter().map(ToString::to_string).collect();
            format!("{{ {} }}", list.join(", "))
        }
    }
}

/// The ruleset (for `nft -f -`) that captures a pod's TCP for its sidecar: inbound to any port
/// but the sidecar's own and the excluded ones; outbound unless it is `exempt`, stays in the pod
/// or is excluded by port or CIDR; with `include_outbound_cidrs`, only connections to those.
pub fn ruleset(exempt: &Exempt, capture: &Capture) -> String {
    let mut r = format!("table ip {TABLE} {{\n");
    r.push_str(
        "  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n",
    );
    let _ = writeln!(
        r,
        "    iif \"lo\" meta mark {CAPTURE_MARK} meta l4proto tcp tproxy to 127.0.0.1:{CAPTURE_PORT} accept"
    );
    // Not taken above: the sidecar's capture listener is not there (the sidecar is starting or
    // restarting). Refused, as a `REDIRECT` to a port nobody listens on is, rather than delivered
    // to whatever in the pod listens on the destination's port.
    let _ = writeln!(
        r,
        "    iif \"lo\" meta mark {CAPTURE_MARK} meta l4proto tcp reject with tcp reset"
    );
    r.push_str("    iif \"lo\" accept\n    meta l4proto tcp jump inbound\n  }\n");
    r.push_str("  chain inbound {\n");
    let mut own: Vec<u16> = vec![INBOUND_PORT, ADMIN_PORT];
    own.extend(&capture.exclude_inbound_ports);
    let _ = writeln!(r, "    tcp dport {} return", set(&own));
    let _ = writeln!(
        r,
        "    meta l4proto tcp tproxy to :{INBOUND_PORT} meta mark set {CAPTURE_MARK} accept"
    );
    // A new connection the sidecar is not there to take never reaches the app past it (STRICT
    // mTLS would be bypassed); dropped, so that the client's next SYN finds the sidecar back.
    // Other packets are those of the pod's own connections (replies to the sidecar's).
    r.push_str("    tcp flags & (syn | ack) == syn drop\n  }\n");
    r.push_str("  chain output {\n    type route hook output priority mangle; policy accept;\n");
    r.push_str("    meta l4proto tcp jump capture\n  }\n  chain capture {\n");
    if let Some(mark) = exempt.mark {
        let _ = writeln!(r, "    meta mark {mark} return");
    }
    if let Some(uid) = exempt.uid {
        let _ = writeln!(r, "    meta skuid {uid} return");
    }
    r.push_str("    oif \"lo\" return\n");
    if !exempt.hosts.is_empty() {
        let _ = writeln!(r, "    ip daddr {} return", set(&exempt.hosts));
    }
    if !capture.exclude_outbound_ports.is_empty() {
        let _ = writeln!(
            r,
            "    tcp dport {} return",
            set(&capture.exclude_outbound_ports)
        );
    }
    if !capture.exclude_outbound_cidrs.is_empty() {
        let _ = writeln!(
            r,
            "    ip daddr {} return",
            set(&capture.exclude_outbound_cidrs)
        );
    }
    // What the pod serves on ports of its own: the app's replies on an excluded inbound port,
    // and the kernel's resets from the sidecar's ports while it is down (so that a peer learns
    // at once, rather than at its connect timeout). There is no connection tracking to tell a
    // reply from a new connection.
    let _ = writeln!(r, "    tcp sport {} return", set(&own));
    if !capture.include_outbound_cidrs.is_empty() {
        let _ = writeln!(
            r,
            "    ip daddr != {} return",
            set(&capture.include_outbound_cidrs)
        );
    }
    let _ = writeln!(r, "    meta mark set {CAPTURE_MARK}\n  }}\n}}");
    r
}
