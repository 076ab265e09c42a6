//! `weft inject -f FILE|DIR|-`: Kubernetes manifests with weft's sidecar and capture init
//! container added to every workload, as `istioctl kube-inject` and `linkerd inject` do;
//! printed on stdout, what became of each object on stderr.

use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InjectArgs {
    /// Manifests: files, directories (their .yaml/.yml/.json files, in name order) or `-` for
    /// stdin
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// The weft container image the sidecar and the init container run
    #[arg(long, default_value_t = default_image())]
    image: String,
    /// Where the proxies reach the control plane (HOST:PORT)
    #[arg(long, default_value_t = default_control())]
    control: String,
    #[arg(long, default_value = model::names::TRUST_DOMAIN)]
    trust_domain: String,
    /// Inject only workloads that opt in (or whose Namespace in the input does), as the
    /// admission webhook does; by default everything not opted out is injected
    #[arg(long)]
    opt_in: bool,
    /// Print nothing on stderr
    #[arg(short, long)]
    quiet: bool,
}

/// `weft:VERSION`: the image `weft install` and the docs build.
pub fn default_image() -> String {
    format!("weft:{}", env!("CARGO_PKG_VERSION"))
}

/// The control plane's Service as `weft install --kubernetes` creates it.
pub fn default_control() -> String {
    format!(
        "{}.{}.svc:15010",
        model::names::CONTROL_ACCOUNT,
        model::names::CONTROL_NAMESPACE
    )
}

/// The documents of `files`, each with the name errors should give.
pub fn read_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            out.push((PathBuf::from("<stdin>"), text));
        } else if f.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            for p in entries {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                out.push((p, text));
            }
        } else {
            let text =
                std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            out.push((f.clone(), text));
        }
    }
    Ok(out)
}

pub fn run(a: InjectArgs) -> anyhow::Result<i32> {
    let opts = config::inject::Options {
        image: a.image,
        control: a.control,
        trust_domain: a.trust_domain,
        version: env!("CARGO_PKG_VERSION").into(),
        by_default: !a.opt_in,
        namespaces: Default::default(),
    };
    let mut out = String::new();
    let mut failed = false;
    for (file, text) in read_inputs(&a.files)? {
        match config::inject::inject(&file, &text, &opts) {
            Ok(done) => {
                if !out.is_empty() && !done.yaml.is_empty() {
                    out.push_str("---\n");
                }
                out.push_str(&done.yaml);
                if !a.quiet {
                    for (object, outcome) in &done.objects {
                        let what = match outcome {
                            config::inject::Outcome::Injected => "injected".to_string(),
                            config::inject::Outcome::AlreadyInjected => {
                                "already injected: left as it is".to_string()
                            }
                            config::inject::Outcome::Skipped(why) => format!("skipped: {why}"),
                            config::inject::Outcome::NotAWorkload => continue,
                        };
                        eprintln!("{object}: {what}");
                    }
                }
            }
            Err(errors) => {
                failed = true;
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
    }
    if failed {
        return Ok(1);
    }
    print!("{out}");
    Ok(0)
}
