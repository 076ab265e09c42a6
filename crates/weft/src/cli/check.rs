//! `weft check`: the configuration's validation, offline (as `istioctl analyze`): every error
//! with its file, line and field (a resource `weft up` would reject is an error too); warnings
//! for what is not yet supported and for APIs that disagree about a service (and which wins);
//! non-zero on errors.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Files or directories (also as positional arguments)
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    #[arg(trailing_var_arg = true)]
    rest: Vec<PathBuf>,
}

pub fn run(a: CheckArgs) -> anyhow::Result<i32> {
    let files: Vec<PathBuf> = a.files.into_iter().chain(a.rest).collect();
    if files.is_empty() {
        anyhow::bail!("nothing to check: give files or directories (-f FILE)");
    }
    match config::load(&files) {
        Err(errors) => {
            for d in &errors.0 {
                eprintln!("error: {d}");
            }
            eprintln!("{} error(s)", errors.0.len());
            Ok(1)
        }
        Ok(loaded) => {
            for d in &loaded.unsupported {
                eprintln!("warning: {d}");
            }
            if !loaded.rejected.is_empty() {
                for d in &loaded.rejected {
                    eprintln!("error: {d}");
                }
                eprintln!(
                    "{} error(s); the resources they name would be rejected, {} warning(s)",
                    loaded.rejected.len(),
                    loaded.unsupported.len()
                );
                return Ok(1);
            }
            match &loaded.mesh {
                Some(m) => {
                    let routes: usize = m.routes.iter().map(|r| r.routes.len()).sum();
                    println!(
                        "ok: mesh {}: {} services, {} routes for {} services, {} warning(s)",
                        m.name,
                        m.services.len(),
                        routes,
                        m.routes.len(),
                        loaded.unsupported.len()
                    );
                }
                None => println!(
                    "ok: no Mesh document (hosts and subsets not checked), {} warning(s)",
                    loaded.unsupported.len()
                ),
            }
            Ok(0)
        }
    }
}
