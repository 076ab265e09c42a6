//! `weft install --kubernetes [--set KEY=VALUE…]`: prints the manifests that install weft's
//! control plane on a Kubernetes cluster (to pipe into `kubectl apply -f -`).

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Print the manifests for a Kubernetes cluster
    #[arg(long, required = true)]
    kubernetes: bool,
    /// The weft container image (REGISTRY/weft:TAG)
    #[arg(long, default_value_t = super::inject::default_image())]
    image: String,
    /// A setting (repeatable): image, namespace, replicas, trustDomain, imagePullPolicy
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(a: InstallArgs) -> anyhow::Result<i32> {
    let _ = a.kubernetes;
    let mut install = control::kubernetes::Install::new(&a.image);
    for s in &a.set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {s:?}: KEY=VALUE"))?;
        install
            .set(k.trim(), v.trim())
            .map_err(|e| anyhow::anyhow!("--set {s}: {e}"))?;
    }
    print!("{}", control::kubernetes::manifests(&install));
    Ok(0)
}
