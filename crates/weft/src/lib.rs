//! The weft executables' shared code: the command line ([`cli`]) and how a process of either
//! executable starts (logging, a closed stdout): `weft` runs every subcommand, `weft-proxy`
//! only the proxy's.

pub mod cli;

/// Runs `work` as the body of a weft process: logs go to stderr at `WEFT_LOG`'s level (else
/// `default_level`) from a thread of their own, an error is printed as `weft: error: …`, and the
/// process exits with the code `work` returned (1 on an error).
pub fn main_with(default_level: &str, work: impl FnOnce() -> anyhow::Result<i32>) -> ! {
    quiet_on_closed_stdout();
    let level = std::env::var("WEFT_LOG").unwrap_or_else(|_| default_level.into());
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
    let code = match work() {
        Ok(code) => code,
        Err(e) => {
            eprint_quietly(&format!("weft: error: {e:#}\n"));
            1
        }
    };
    drop(flush_on_exit);
    std::process::exit(code);
}

/// The log level of commands that serve (a proxy, a mesh) unless `WEFT_LOG` says otherwise.
pub const SERVING_LOG_LEVEL: &str = "info,h2=warn,hyper=warn,tower=warn,tonic=warn";

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
