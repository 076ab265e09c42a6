//! `weft identity SERVICE`: the certificate chain, SPIFFE SAN and expiry a proxy of the
//! service holds (read from its admin `/identity`), and the trust bundle it verifies peers with.

use super::{get::get, runtime, Output};
use control::status::Status;
use model::Authority;

#[derive(clap::Args)]
pub struct IdentityArgs {
    /// The service (NAME, NAME.NAMESPACE, or the FQDN); `istio-ingressgateway` for the ingress
    service: String,
    /// Read from this replica's proxy (default: the first ready one)
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    mesh: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

pub fn run(a: IdentityArgs) -> anyhow::Result<i32> {
    let mesh = local::meshes::find(a.mesh.as_deref())?;
    let rt = runtime()?;
    rt.block_on(async {
        let (_, body) = get(&format!("http://{}/status", mesh.api)).await?;
        let st: Status = serde_json::from_slice(&body)?;
        let key = Authority::parse(&a.service)
            .service_key(model::names::DEFAULT_NAMESPACE)
            .ok_or_else(|| anyhow::anyhow!("{:?} is not a service name", a.service))?;
        let admin = if key.name == local::INGRESS_NAME && a.from.is_none() {
            Some(st.ingress_admin.clone()).filter(|a| !a.is_empty())
        } else {
            st.workloads
                .iter()
                .find(|w| match &a.from {
                    Some(f) => &w.instance == f,
                    None => w.service == key.name && w.namespace == key.namespace && w.ready,
                })
                .map(|w| w.admin.clone())
        };
        let Some(admin) = admin else {
            anyhow::bail!("no ready proxy of {key} in mesh {}", mesh.name);
        };
        let (status, body) = get(&format!("http://{admin}/identity")).await?;
        if status != 200 {
            anyhow::bail!("{}", String::from_utf8_lossy(&body).trim());
        }
        let doc: serde_json::Value = serde_json::from_slice(&body)?;
        if a.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(0);
        }
        println!("identity:   {}", doc["identity"].as_str().unwrap_or("?"));
        println!(
            "valid:      {} → {}",
            s(&doc["not_before"]),
            s(&doc["not_after"])
        );
        println!("renews at:  {}", s(&doc["renew_at"]));
        for (i, c) in doc["chain"].as_array().into_iter().flatten().enumerate() {
            let what = if i == 0 { "leaf" } else { "intermediate" };
            println!("chain[{i}] ({what}):");
            describe(c);
        }
        for (i, c) in doc["trust_bundle"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            println!("trust bundle[{i}]:");
            describe(c);
        }
        Ok(0)
    })
}

fn s(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn describe(c: &serde_json::Value) {
    let sans: Vec<&str> = c["subject_alt_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let subject = s(&c["subject"]);
    println!(
        "  subject:  {}",
        if subject.is_empty() {
            "(empty: the identity is the SAN)"
        } else {
            subject
        }
    );
    println!("  issuer:   {}", s(&c["issuer"]));
    if !sans.is_empty() {
        println!("  SAN:      {}", sans.join(", "));
    }
    println!(
        "  valid:    {} → {}",
        s(&c["not_before"]),
        s(&c["not_after"])
    );
}
