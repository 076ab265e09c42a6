//! `weft apply -f`, `weft delete -f` and `weft get`: change and read the resources in force in
//! a running mesh, as `kubectl apply` / `delete` / `get` do. The control plane validates the
//! whole set (and decodes the snapshot it makes as the proxies do) before switching to it and
//! pushes the new routes to every proxy; the answer comes once every proxy answered.
//!
//! Exit status: 0 when every proxy runs the change; 1 when it was refused (nothing changed) or
//! could not be sent; 3 when it is in force at the control plane but a proxy refused it (the
//! answer names it and its error) or did not apply it within 5 s.

use super::get::{get as http_get, post};
use super::{runtime, Output};
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// A file, a directory (its *.yaml, *.yml, *.json), or - for stdin; repeatable
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[arg(long)]
    mesh: Option<String>,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// A kind (VirtualService, HTTPRoute, …; case-insensitive), or all
    kind: Option<String>,
    name: Option<String>,
    #[arg(long)]
    mesh: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            out.push(("<stdin>".to_string(), s));
        } else if p.is_dir() {
            for f in config::config_files(p)? {
                let text = config::read_text(&f).map_err(|d| anyhow::anyhow!("{d}"))?;
                out.push((f.display().to_string(), text));
            }
        } else {
            let text = config::read_text(p).map_err(|d| anyhow::anyhow!("{d}"))?;
            out.push((p.display().to_string(), text));
        }
    }
    Ok(out)
}

/// The change is in force at the control plane, but not every proxy runs it (as `weft status
/// --wait`'s "not ready").
const NOT_APPLIED: i32 = 3;

pub fn apply(a: ApplyArgs, delete: bool) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let sources = read_all(&a.files)?;
    let rt = runtime()?;
    let verb = if delete { "delete" } else { "apply" };
    let mut code = 0;
    for (file, text) in sources {
        let url = format!("http://{}/{verb}", mesh.api);
        let body = serde_json::json!({ "file": file, "yaml": text });
        let (status, body) = rt.block_on(post(&url, &body))?;
        let body = String::from_utf8_lossy(&body);
        match status {
            200 => print!("{body}"),
            // In force, but not run by every proxy: the body says which and why.
            202 => {
                eprint!("{body}");
                code = code.max(NOT_APPLIED);
            }
            _ => {
                eprint!("{body}");
                code = code.max(1);
            }
        }
    }
    Ok(code)
}

pub fn get(a: GetArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let rt = runtime()?;
    let (status, body) = rt.block_on(http_get(&format!("http://{}/resources", mesh.api)))?;
    if status != 200 {
        anyhow::bail!(
            "control plane answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let all: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let chosen: Vec<&serde_json::Value> = all
        .iter()
        .filter(|r| {
            a.kind
                .as_deref()
                .is_none_or(|k| k.eq_ignore_ascii_case(&s(r, "kind")) || k == "all")
                && a.name.as_deref().is_none_or(|n| n == s(r, "name"))
        })
        .collect();
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&chosen)?);
        return Ok(0);
    }
    if chosen.is_empty() {
        eprintln!("no resources found");
        return Ok(if a.name.is_some() { 1 } else { 0 });
    }
    let mut rows = vec![[
        "KIND".to_string(),
        "NAMESPACE/NAME".into(),
        "API VERSION".into(),
        "STATE".into(),
        "SOURCE".into(),
    ]];
    rows.extend(chosen.iter().map(|r| {
        [
            s(r, "kind"),
            format!("{}/{}", s(r, "namespace"), s(r, "name")),
            s(r, "api_version"),
            // A control plane that predates states has only resources in force.
            r["state"].as_str().unwrap_or("applied").to_string(),
            format!("{}:{}", s(r, "file"), r["first_line"]),
        ]
    }));
    let table = super::text::columns(&rows);
    let mut lines = table.lines();
    println!("{}", lines.next().unwrap_or_default());
    // Each resource's line, then why it is not in force and what of it is ignored.
    for (line, r) in lines.zip(&chosen) {
        println!("{line}");
        for (what, key) in [("", "reasons"), ("warning: ", "warnings")] {
            for reason in r[key].as_array().into_iter().flatten() {
                println!("  {what}{}", reason.as_str().unwrap_or_default());
            }
        }
    }
    Ok(0)
}
