//! `weft ca rotate|prepare|activate|retire`: rotate the running mesh's root CA without
//! downtime. `rotate` = `prepare` (the next root joins every proxy's trust bundle) then
//! `activate` (it signs from then on; every proxy renews its certificate from it at once);
//! `retire` drops the old root, and refuses while a proxy still holds a certificate of it
//! (`--force` retires anyway: those proxies' new connections fail until they renew).
//! `weft ca operator --name NAME` issues an operator's client certificate, which the API takes
//! over TLS in place of the admin credential (`weft context add --cert-file`).

use super::get::post;
use super::runtime;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Step {
    Rotate,
    Prepare,
    Activate,
    Retire,
    /// Issue an operator's client certificate for the API
    Operator,
}

#[derive(clap::Args)]
pub struct CaArgs {
    #[arg(value_enum)]
    step: Step,
    #[arg(long)]
    mesh: Option<String>,
    /// retire: drop the old root even while proxies still hold certificates of it (their new
    /// connections to peers fail until they renew)
    #[arg(long)]
    force: bool,
    /// operator: the operator's name (letters, digits, '-', '.', '_')
    #[arg(long, required_if_eq("step", "operator"))]
    name: Option<String>,
    /// operator: how long the certificate is valid
    #[arg(long, value_parser = super::parse_duration, default_value = "720h")]
    ttl: std::time::Duration,
    /// operator: the directory it writes NAME.crt, NAME.key (mode 0600) and ca.pem into
    #[arg(long, default_value = ".")]
    out: std::path::PathBuf,
}

pub fn run(a: CaArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let steps: &[&str] = match a.step {
        Step::Rotate => &["prepare", "activate"],
        Step::Prepare => &["prepare"],
        Step::Activate => &["activate"],
        Step::Retire => &["retire"],
        Step::Operator => return operator(&mesh, &a),
    };
    runtime()?.block_on(async {
        for step in steps {
            let (status, body) = post(
                &format!("http://{}/ca/{step}", mesh.api),
                &serde_json::json!({ "force": a.force && *step == "retire" }),
            )
            .await?;
            let text = String::from_utf8_lossy(&body);
            if status != 200 {
                eprintln!("weft ca {step}: {}", text.trim());
                return Ok(1);
            }
            println!("{step}: {}", text.trim());
        }
        Ok(0)
    })
}

/// `weft ca operator`: asks the running mesh's API for an operator certificate and writes it.
fn operator(mesh: &local::meshes::MeshRecord, a: &CaArgs) -> anyhow::Result<i32> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = a.name.clone().unwrap_or_default();
    runtime()?.block_on(async {
        let (status, body) = post(
            &format!("http://{}/ca/operator", mesh.api),
            &serde_json::json!({ "name": name, "ttl_seconds": a.ttl.as_secs() }),
        )
        .await?;
        if status != 200 {
            eprintln!(
                "weft ca operator: {}",
                String::from_utf8_lossy(&body).trim()
            );
            return Ok(1);
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let write = |file: &str, text: &str, mode: u32| -> anyhow::Result<std::path::PathBuf> {
            let path = a.out.join(file);
            let _ = std::fs::remove_file(&path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            f.write_all(text.as_bytes())?;
            Ok(path)
        };
        let cert = write(&format!("{name}.crt"), &field("certificate"), 0o644)?;
        let key = write(&format!("{name}.key"), &field("key"), 0o600)?;
        let ca = write("ca.pem", &field("trust_bundle"), 0o644)?;
        println!(
            "operator {} ({}), valid until {}: {} {} {}",
            name,
            field("identity"),
            v["not_after"],
            cert.display(),
            key.display(),
            ca.display()
        );
        println!(
            "use it: weft context add CONTEXT --api {} --ca-file {} --cert-file {} --key-file {}",
            mesh.api,
            ca.display(),
            cert.display(),
            key.display()
        );
        Ok(0)
    })
}
