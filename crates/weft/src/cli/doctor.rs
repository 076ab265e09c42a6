//! `weft doctor`: what `weft up` left on this host that no running mesh owns (network
//! namespaces, `/etc/netns` directories and bridges of transparent meshes whose `weft up` is
//! gone), and with `--clean`, their removal.

use local::pods;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Remove what is listed (processes still in a leftover namespace are killed)
    #[arg(long)]
    clean: bool,
    /// Only what mesh NAME left (recorded by it, or named after it)
    #[arg(long, value_name = "NAME")]
    mesh: Option<String>,
}

pub fn run(a: DoctorArgs) -> anyhow::Result<i32> {
    let home = local::meshes::home();
    let found: Vec<_> = pods::leftovers(&home)
        .into_iter()
        .filter(|l| a.mesh.as_deref().is_none_or(|m| l.of_mesh(m)))
        .collect();
    if found.is_empty() {
        println!("weft doctor: nothing left over by weft on this host");
        return Ok(0);
    }
    if a.clean {
        pods::check_privileges()?;
    }
    let mut failed = 0;
    for leftover in &found {
        if !a.clean {
            println!("leftover: {leftover}");
            continue;
        }
        match pods::remove(leftover) {
            Ok(()) => println!("removed: {leftover}"),
            Err(e) => {
                failed += 1;
                println!("could not remove: {leftover}: {e}");
            }
        }
    }
    if a.clean {
        pods::forget_cleaned(&home);
        Ok(i32::from(failed > 0))
    } else {
        println!(
            "weft doctor: {} leftovers; `weft doctor --clean` removes them",
            found.len()
        );
        Ok(1)
    }
}
