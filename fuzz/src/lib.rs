//! The harnesses behind weft's fuzz targets: each `fuzz_targets/*.rs` hands libFuzzer's input to
//! one function here, so a target is one line and its harness is checked like any library code.
//!
//! Every harness is a unit test in shape: no network, no processes, no files, bounded time. The
//! invariant is always "no panic" (a panic, an overflow or an out-of-bounds access is a crash);
//! some harnesses check a few properties of the result as well.

pub mod authz;
pub mod config;
pub mod detect;
pub mod h1;
pub mod jwt;
pub mod snapshot;

/// A current-thread tokio runtime that outlives every input, for harnesses that need a
/// [`tokio::runtime::Handle`] but never run a task on it.
pub(crate) fn idle_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}
