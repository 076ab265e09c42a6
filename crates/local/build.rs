//! Stamps each build of the workspace's sources with an identifier of its own (`WEFT_BUILD`),
//! so that `weft` can tell a `weft-proxy` built with it from one left over by an earlier build
//! (`cargo run` rebuilds only the executable it runs).

fn main() {
    // Any change under crates/ (cargo scans a directory for modified files) or to the locked
    // dependencies runs this again, and so gives the next build a new identifier.
    println!("cargo:rerun-if-changed=..");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    println!("cargo:rustc-env=WEFT_BUILD={now:x}-{}", std::process::id());
}
