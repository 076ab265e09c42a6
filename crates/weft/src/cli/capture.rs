//! `weft capture`: installs the capture rules (iptables `nat` table) in the network namespace it
//! runs in — what the init container of an injected Kubernetes pod runs, and the same rules
//! `weft up` gives its transparent pods, with the proxy's own connections told apart by its
//! user id instead of a socket mark.

use model::Capture;
use std::io::Write;

#[derive(clap::Args)]
pub struct CaptureArgs {
    /// The proxy's user id: its connections are not captured
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// Inbound connections to these ports go straight to the app (1,2,3-5)
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound connections to these ports go straight out
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// Capture only outbound connections to these CIDRs
    #[arg(long, value_delimiter = ',')]
    include_outbound_cidrs: Vec<String>,
    /// Outbound connections to these CIDRs go straight out
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<String>,
    /// Print the rules instead of installing them
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: CaptureArgs) -> anyhow::Result<i32> {
    let capture = Capture {
        exclude_outbound_ports: a.exclude_outbound_ports,
        exclude_inbound_ports: a.exclude_inbound_ports,
        include_outbound_cidrs: a.include_outbound_cidrs,
        exclude_outbound_cidrs: a.exclude_outbound_cidrs,
    };
    for cidr in capture
        .include_outbound_cidrs
        .iter()
        .chain(&capture.exclude_outbound_cidrs)
    {
        if !v4_cidr(cidr) {
            anyhow::bail!("{cidr:?} is not an IPv4 CIDR (like 10.96.0.0/12)");
        }
    }
    let exempt = local::pods::Exempt {
        uid: Some(a.proxy_uid),
        ..Default::default()
    };
    let rules = local::pods::capture_rules(&exempt, &capture);
    if a.dry_run {
        print!("{rules}");
        return Ok(0);
    }
    let mut child = std::process::Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run iptables-restore (package iptables): {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        anyhow::bail!("iptables-restore failed ({status}); the rules were:\n{rules}");
    }
    eprintln!("weft: capture rules installed: inbound TCP to the proxy's port {}, outbound to {}, user {} exempt", model::names::POD_INBOUND_PORT, model::names::POD_CAPTURE_PORT, a.proxy_uid);
    Ok(0)
}

/// Whether `s` is an IPv4 CIDR (`10.96.0.0/12`).
fn v4_cidr(s: &str) -> bool {
    s.split_once('/').is_some_and(|(ip, bits)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
    })
}
