//! `weft ca rotate|prepare|activate|retire`: rotate the running mesh's root CA without
//! downtime. `rotate` = `prepare` (the next root joins every proxy's trust bundle) then
//! `activate` (it signs from then on; every proxy renews its certificate from it at once);
//! `retire` drops the old root, and refuses while a proxy still holds a certificate of it
//! (`--force` retires anyway: those proxies' new connections fail until they renew).

use super::get::post;
use super::runtime;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Step {
    Rotate,
    Prepare,
    Activate,
    Retire,
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
}

pub fn run(a: CaArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let steps: &[&str] = match a.step {
        Step::Rotate => &["prepare", "activate"],
        Step::Prepare => &["prepare"],
        Step::Activate => &["activate"],
        Step::Retire => &["retire"],
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
