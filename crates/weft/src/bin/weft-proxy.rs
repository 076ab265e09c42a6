//! `weft-proxy`: the data plane alone. It takes the flags of `weft proxy` and runs the same
//! proxy, from an executable without the control plane, the CLI and the demo apps, so a
//! running proxy maps a fraction of `weft`'s code. `weft up` starts its proxies with it when it
//! sits beside `weft`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "weft-proxy",
    version = local::launch::VERSION,
    about = "One weft proxy (sidecar, ingress or client): the flags of `weft proxy`"
)]
struct Args {
    #[command(flatten)]
    proxy: weft::cli::ProxyArgs,
}

fn main() {
    let args = Args::parse();
    weft::main_with(weft::SERVING_LOG_LEVEL, || weft::cli::run_proxy(args.proxy))
}
