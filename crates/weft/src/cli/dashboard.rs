//! `weft dashboard`: prints the URL of the running mesh's web dashboard, with the admin
//! credential once in it (opening it signs the browser in with a cookie); opens nothing.

use super::get::{env_credential, get};
use super::runtime;

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// Which mesh (when several run)
    #[arg(long)]
    mesh: Option<String>,
}

pub fn run(a: DashboardArgs) -> anyhow::Result<i32> {
    let m = local::meshes::find(a.mesh.as_deref())?;
    // Its own listener (`--dashboard`) when it has one, else the API's /dashboard/.
    let base = m.dashboard.clone().unwrap_or_else(|| m.api.clone());
    let loopback = base
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    let scheme = if m.ca_file.is_some() && !loopback {
        "https"
    } else {
        "http"
    };
    if scheme == "http" {
        runtime()?.block_on(async {
            get(&format!("http://{base}/healthz")).await.map_err(|e| {
                anyhow::anyhow!(
                    "mesh {}: the dashboard at {base} does not answer: {e}",
                    m.name
                )
            })
        })?;
    }
    let url = match env_credential().or_else(|| local::meshes::admin_token(&m)) {
        Some(token) => {
            let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
            format!("{scheme}://{base}/dashboard/?token={token}")
        }
        None => format!("{scheme}://{base}/dashboard/"),
    };
    println!("{url}");
    eprintln!(
        "weft: mesh {}'s dashboard: open the URL above in a browser on this machine (it signs you in once; keep it private)",
        m.name
    );
    Ok(0)
}
