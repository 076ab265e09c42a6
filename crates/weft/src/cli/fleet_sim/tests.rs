//! Unit tests: the mesh each scoping serves loads, and with declared scoping every service
//! declares `common` and the two after it.

use super::*;
use clap::Parser;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: FleetSimArgs,
}

fn args(line: &[&str]) -> FleetSimArgs {
    Cli::parse_from(std::iter::once("fleet-sim").chain(line.iter().copied())).args
}

fn loaded(a: &FleetSimArgs) -> model::MeshSpec {
    config::load_str(std::path::Path::new("fleet.yaml"), &mesh_yaml(a))
        .unwrap_or_else(|e| panic!("{e}"))
        .mesh
        .unwrap()
}

#[test]
fn declared_scoping_declares_common_and_two_more_per_service() {
    let m = loaded(&args(&[
        "--scope",
        "declared",
        "--services",
        "5",
        "--namespaces",
        "2",
    ]));
    assert_eq!(m.scope, model::egress::MeshScope::Declared);
    let declared = |i: usize| -> Vec<String> {
        m.services[i]
            .depends_on
            .as_ref()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(m.services[0].name, "common");
    assert_eq!(declared(0), ["ns-0/svc-1", "ns-1/svc-2"]);
    assert_eq!(declared(1), ["shared/common", "ns-1/svc-2", "ns-0/svc-3"]);
    // Wrapping around past the last service skips `common` (declared already).
    assert_eq!(declared(4), ["shared/common", "ns-0/svc-1"]);

    for scope in ["none", "namespace"] {
        let m = loaded(&args(&["--scope", scope, "--services", "5"]));
        assert_eq!(m.scope, model::egress::MeshScope::Whole);
        assert!(m.services.iter().all(|s| s.depends_on.is_none()));
    }
}
