//! Helpers for tests of transparent meshes: whether this machine can run pods (root, `ip`,
//! `nft`, `iptables`), commands inside a pod's network namespace, and a namespace outside the mesh
//! attached to its bridge.

use std::process::{Command, Output};

/// Whether this machine can run pods: root, and the tools `weft up` and the tests use. Says why
/// not when it cannot (the caller then returns: CI runs as root, so the tests run there).
pub fn can_run_pods() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: transparent interception needs root (network namespaces, iptables)");
        return false;
    }
    for tool in [
        "ip",
        "nft",
        "iptables-restore",
        "iptables-save",
        "python3",
        "curl",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("skipped: `{tool}` is not installed");
            return false;
        }
    }
    true
}

/// Runs `argv`, which must succeed: its stdout.
pub fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The capture rules of pod `ns` (`nft list table ip weft`).
pub fn pod_rules(ns: &str) -> String {
    sh(&[
        "ip", "netns", "exec", ns, "nft", "list", "table", "ip", "weft",
    ])
}

/// Runs `argv` inside network namespace `ns`, as an unmodified app there would: no proxy
/// variables in its environment.
pub fn in_pod(ns: &str, argv: &[&str]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(argv);
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    c.output()
        .unwrap_or_else(|e| panic!("{argv:?} in {ns}: {e}"))
}

/// [`in_pod`], which must succeed: its stdout.
pub fn in_pod_ok(ns: &str, argv: &[&str]) -> String {
    let out = in_pod(ns, argv);
    assert!(
        out.status.success(),
        "{argv:?} in {ns}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace outside the mesh, attached to its bridge at `address` (one of the
/// addresses the mesh leaves to others, `.250`–`.254`), running `argv` there; removed, with
/// its process, on drop.
pub struct Outside {
    pub ns: String,
    veth: String,
    child: std::process::Child,
}

impl Outside {
    pub fn attach(name: &str, bridge: &str, address: &str, prefix: u8, argv: &[&str]) -> Outside {
        let ns = format!("wtest-{name}");
        let veth = format!("wtx{}", &name[..name.len().min(8)]);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &veth]).output();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        sh(&["ip", "link", "set", &veth, "master", bridge]);
        sh(&["ip", "link", "set", &veth, "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{address}/{prefix}"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Outside { ns, veth, child }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
