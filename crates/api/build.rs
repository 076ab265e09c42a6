//! Compiles proto/weft.proto with protox (pure Rust), so a fresh machine needs no system protoc;
//! and, for the control plane, a server of `weft.v1.Discovery` with its `Certify` method only
//! (the control plane serves `Stream` by hand, sending each snapshot's bytes uncopied).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/weft.proto");
    let fds = protox::compile(["proto/weft.proto"], ["proto"])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic::codec::ProstCodec")
    };
    let discovery = tonic_build::manual::Service::builder()
        .name("Discovery")
        .package("weft.v1")
        .method(
            method(
                "certify",
                "Certify",
                "crate::pb::CertifyRequest",
                "crate::pb::CertifyResponse",
            )
            .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&[discovery]);
    Ok(())
}
