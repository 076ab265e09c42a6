//! `weft`: the one binary. Each subcommand parses its flags and calls into a library crate.

use clap::Parser;
use weft::cli;

fn main() {
    let args = cli::Cli::parse();
    // A client command's own proxy should not talk over the command it runs.
    let level = if args.is_quiet() {
        "warn"
    } else {
        weft::SERVING_LOG_LEVEL
    };
    weft::main_with(level, || cli::run(args))
}
