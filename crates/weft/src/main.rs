//! `weft`: the one binary. Each subcommand parses its flags and calls into a library crate.

mod cli;

use clap::Parser;

fn main() {
    quiet_on_closed_stdout();
    let args = cli::Cli::parse();
    // A client command's own proxy should not talk over the command it runs.
    let default = if args.is_quiet() {
        "warn"
    } else {
        "info,h2=warn,hyper=warn,tower=warn,tonic=warn"
    };
    let level = std::env::var("WEFT_LOG").unwrap_or_else(|_| default.into());
    // Log lines go to stderr from a thread of their own through a bounded queue: whoever reads
    // our stderr (`weft up`, a pipe, a terminal) can stop reading without blocking the data
    // plane. Lines that do not fit are dropped and counted (`weft_log_lines_dropped`).
    let (writer, flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("weft-log")
        .finish(std::io::stderr());
    cli::set_log_dropped(writer.error_counter());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(writer)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr is no reason to print about it (to the same closed stderr).
        .log_internal_errors(false)
        .init();
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprint_quietly(&format!("weft: error: {e:#}\n"));
            1
        }
    };
    drop(flush_on_exit);
    std::process::exit(code);
}

/// Log lines that may wait for stderr; beyond them lines are dropped, not waited for.
const LOG_QUEUE_LINES: usize = 4_096;

/// Writes to stderr, ignoring a closed or full one (`eprint!` panics on a closed stderr).
fn eprint_quietly(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `weft load -o json | head -c 200` closes stdout before weft is done printing: leave quietly
/// with SIGPIPE's status, as Unix tools do, instead of printing a panic. (The SIGPIPE signal
/// itself stays ignored: the proxies' sockets must never kill the process.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}
