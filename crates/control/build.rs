//! Compiles etcd's v3 API (proto/etcd: the key-value, watch, lease, cluster and maintenance
//! services, as etcd publishes them without their Go-only annotations) with protox (pure Rust),
//! so a fresh machine needs no system protoc. Client stubs only: weft talks to etcd, it is none.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd");
    let fds = protox::compile(["proto/etcd/rpc.proto"], ["proto/etcd"])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
