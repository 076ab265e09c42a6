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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
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
