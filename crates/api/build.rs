//! Compiles proto/weft.proto with protox (pure Rust), so a fresh machine needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/weft.proto");
    let fds = protox::compile(["proto/weft.proto"], ["proto"])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
