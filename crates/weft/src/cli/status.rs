//! `weft status`: what runs where.

use super::{get::get, runtime, Output};
use control::status::Status;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    /// Which mesh (when several run)
    #[arg(long)]
    mesh: Option<String>,
}

pub fn run(a: StatusArgs) -> anyhow::Result<i32> {
    let mesh = control::meshes::find(a.mesh.as_deref())?;
    let rt = runtime()?;
    let (code, body) = rt.block_on(get(&format!("http://{}/status", mesh.api)))?;
    if code != 200 {
        anyhow::bail!(
            "control plane answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let st: Status = serde_json::from_slice(&body)?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&st)?),
        Output::Table => print_table(&st),
    }
    Ok(0)
}

fn print_table(st: &Status) {
    println!(
        "mesh {}   control {}   ingress {}   snapshot {}",
        st.mesh, st.control, st.ingress, st.version
    );
    let rows: Vec<[String; 8]> = st
        .workloads
        .iter()
        .map(|w| {
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                format!("{}.{}", w.service, w.namespace),
                w.instance.clone(),
                if w.reason.is_empty() {
                    w.state.clone()
                } else {
                    format!("{} ({})", w.state, w.reason)
                },
                w.app.clone(),
                w.inbound.clone(),
                w.outbound.clone(),
                w.admin.clone(),
                labels.join(","),
            ]
        })
        .collect();
    let head = [
        "SERVICE", "INSTANCE", "STATE", "APP", "INBOUND", "OUTBOUND", "ADMIN", "LABELS",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
