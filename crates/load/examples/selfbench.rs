//! Measures how fast the load generator itself is: a trivial HTTP/1.1 keep-alive server on its own
//! thread (one current-thread runtime), and the closed model on the main thread's current-thread
//! runtime (`load::run_blocking`), so each side has one core.
//!
//! `cargo run --release -p load --example selfbench [CONNECTIONS] [SECONDS] [--http2] [--rate R]`
//! (defaults: 32 connections, 5 s, HTTP/1.1, closed model).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Requests the server answered, to cross-check the client's count.
static SERVED: AtomicU64 = AtomicU64::new(0);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let http2 = args.iter().any(|a| a == "--http2");
    let rate: Option<f64> = args
        .iter()
        .position(|a| a == "--rate")
        .and_then(|i| args.get(i + 1))
        .map(|r| r.parse())
        .transpose()?;
    let mut numbers = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--rate"))
        .map(|(_, a)| a);
    let connections: usize = numbers.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let seconds: u64 = numbers.next().map(|s| s.parse()).transpose()?.unwrap_or(5);

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("server".into())
        .spawn(move || serve(listener))?;

    let mut spec = load::LoadSpec::new(format!("http://{addr}/").parse()?);
    spec.duration = Some(Duration::from_secs(seconds));
    spec.http2 = http2;
    spec.rate = rate;
    if http2 {
        spec.connections = connections.div_ceil(16).max(1);
        spec.concurrency = connections;
    } else {
        spec.connections = connections;
        spec.concurrency = connections;
    }
    let report = load::run_blocking(spec, None)?;
    print!("{}", report.to_text());
    println!();
    println!(
        "selfbench: {:.0} req/s on one client core ({} lanes, {})",
        report.achieved_rps,
        report.concurrency,
        if http2 { "h2c" } else { "HTTP/1.1 keep-alive" }
    );
    println!(
        "server answered {} requests",
        SERVED.load(Ordering::Relaxed)
    );
    if let Some(cpu) = thread_cpu_seconds() {
        println!(
            "client thread CPU: {cpu:.2}s over the {seconds}s run ({:.0}% of one core)",
            cpu / seconds as f64 * 100.0
        );
    }
    Ok(())
}

fn serve(listener: std::net::TcpListener) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("server runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let body = Bytes::from_static(b"ok");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                SERVED.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// User + system CPU time of the calling thread (Linux), assuming the usual 100 ticks per second.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
