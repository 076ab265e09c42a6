//! Lays out the executables' machine code so that the functions a proxy runs sit together: the
//! linker places them first, in the order of `weft-proxy.order` for `weft-proxy` and of
//! `weft.order` for `weft` (whose `weft proxy` runs the same proxy), both written by
//! `scripts/order-proxy-text`. The kernel maps an executable's code in 64 KiB windows around
//! each page that runs, so packing what runs into few windows keeps a proxy's resident size down.
//!
//! The order is given to the linker only where it is certainly lld (rustc's default linker for
//! x86_64 Linux since 1.90, and no other linker configured): other linkers reject the option.
//! `WEFT_TEXT_ORDER=off` builds without it, to measure what it does.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    const ORDERS: [(&str, &str); 2] = [("weft-proxy", "weft-proxy.order"), ("weft", "weft.order")];
    for (_, file) in ORDERS {
        println!("cargo::rerun-if-changed={file}");
    }
    println!("cargo::rerun-if-env-changed=WEFT_TEXT_ORDER");
    if env::var("WEFT_TEXT_ORDER").as_deref() == Ok("off")
        || env::var("PROFILE").as_deref() != Ok("release")
        || !linker_is_rust_lld()
    {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap();
    for (bin, file) in ORDERS {
        let order = Path::new(&dir).join(file);
        if order.is_file() {
            let arg = format!("--symbol-ordering-file={}", order.display());
            println!("cargo::rustc-link-arg-bin={bin}=-Wl,{arg}");
            // Functions renamed or gone since the file was written are skipped without a word.
            println!("cargo::rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// Whether rustc links this build with its own lld: x86_64 Linux (GNU), rustc 1.90 or later,
/// and no linker or linker flavour chosen by configuration or flags.
fn linker_is_rust_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("RUSTC_LINKER").is_some()
        || ["linker", "fuse-ld", "link-self-contained"]
            .iter()
            .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
