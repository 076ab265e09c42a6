//! `weft check`: the configuration's validation, offline (as `istioctl analyze`): every error
//! with its file, line and field (a resource `weft up` would reject is an error too); warnings
//! for what is not yet supported and for APIs that disagree about a service (and which wins);
//! non-zero on errors.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Files or directories (also as positional arguments)
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    #[arg(trailing_var_arg = true)]
    rest: Vec<PathBuf>,
    /// Check the running mesh instead: every edge that carried traffic, and whether it was
    /// mTLS; non-zero when an edge between meshed workloads was not
    #[arg(long, conflicts_with_all = ["files", "rest"])]
    mtls: bool,
    /// With --mtls: which running mesh
    #[arg(long, requires = "mtls")]
    mesh: Option<String>,
}

pub fn run(a: CheckArgs) -> anyhow::Result<i32> {
    if a.mtls {
        return super::edges::check_mtls(a.mesh.as_deref());
    }
    let files: Vec<PathBuf> = a.files.into_iter().chain(a.rest).collect();
    if files.is_empty() {
        anyhow::bail!("nothing to check: give files or directories (-f FILE)");
    }
    match config::load(&files) {
        Err(errors) => {
            for d in &errors.0 {
                eprintln!("error: {d}");
            }
            eprintln!("{} error(s)", errors.0.len());
            Ok(1)
        }
        Ok(loaded) => {
            for d in &loaded.unsupported {
                eprintln!("warning: {d}");
            }
            if !loaded.rejected.is_empty() {
                for d in &loaded.rejected {
                    eprintln!("error: {d}");
                }
                eprintln!(
                    "{} error(s); the resources they name would be rejected, {} warning(s)",
                    loaded.rejected.len(),
                    loaded.unsupported.len()
                );
                return Ok(1);
            }
            match &loaded.mesh {
                Some(m) => {
                    let routes: usize = m.routes.iter().map(|r| r.routes.len()).sum();
                    println!(
                        "ok: mesh {}: {} services, {} routes for {} services, {} warning(s)",
                        m.name,
                        m.services.len(),
                        routes,
                        m.routes.len(),
                        loaded.unsupported.len()
                    );
                    if let Some(line) = security_summary(&m.security) {
                        println!("{line}");
                    }
                    for line in port_lines(&m.services) {
                        println!("{line}");
                    }
                }
                None => println!(
                    "ok: no Mesh document (hosts and subsets not checked), {} warning(s)",
                    loaded.unsupported.len()
                ),
            }
            Ok(0)
        }
    }
}

/// One line per service port: the protocol weft assumed for it and why (`NS/NAME port N
/// (NAME): grpc, from port name prefix grpc-`).
fn port_lines(services: &[model::ServiceSpec]) -> Vec<String> {
    services
        .iter()
        .flat_map(|s| {
            s.ports.iter().map(move |p| {
                let name = if p.name.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.name)
                };
                let why = match p.why.as_str() {
                    "default" | "" => "the default".to_string(),
                    why => format!("from {why}"),
                };
                format!(
                    "port: {}/{} {}{name}: {}, {why}",
                    s.namespace, s.name, p.port, p.protocol
                )
            })
        })
        .collect()
}

/// One line counting the security policies by kind (policies repeated per scope count once),
/// or `None` when there are none and the defaults are Istio's and Linkerd's.
fn security_summary(s: &model::security::SecuritySpec) -> Option<String> {
    use std::collections::BTreeSet;
    fn distinct<'a>(names: impl Iterator<Item = &'a String>) -> usize {
        names.collect::<BTreeSet<_>>().len()
    }
    let routes: usize = s.servers.iter().map(|v| v.routes.len()).sum();
    let counts = [
        (
            distinct(s.peer_authns.iter().map(|p| &p.name)),
            "PeerAuthentication",
        ),
        (
            distinct(s.authz.iter().map(|p| &p.name)),
            "AuthorizationPolicy (Istio)",
        ),
        (
            distinct(s.request_authns.iter().map(|p| &p.name)),
            "RequestAuthentication",
        ),
        (s.servers.len(), "Server"),
        (routes, "inbound route"),
        (
            distinct(s.linkerd_authz.iter().map(|p| &p.name)),
            "Linkerd authorization",
        ),
        (s.default_policy_overrides.len(), "default-policy override"),
    ];
    let default = model::security::SecuritySpec::new();
    let defaults_changed = s.default_inbound_policy != default.default_inbound_policy
        || s.root_namespace != default.root_namespace;
    if counts.iter().all(|(n, _)| *n == 0) && !defaults_changed {
        return None;
    }
    let listed: Vec<String> = counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    Some(format!(
        "security: {}; default inbound policy {}, root namespace {}",
        if listed.is_empty() {
            "no policies".to_string()
        } else {
            listed.join(", ")
        },
        api::policy_name(s.default_inbound_policy),
        s.root_namespace
    ))
}
