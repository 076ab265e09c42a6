//! `$WEFT_HOME` and the CA directory belong to their user alone: a home another user owns or
//! may write to (where they could plant a CA key or a mesh record) is refused before anything
//! starts, as is a CA directory or key others can read; each mesh gets a root of its own.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `weft up` in `home` with a one-service mesh whose ingress port is free: its exit status and
/// stderr, and the ingress address (which must not answer after a refusal).
fn up_refused(home: &Path) -> (std::process::Output, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mesh.yaml");
    let yaml = mesh_yaml("home-check", &[("hello", 1, "")])
        .replace("ingress: 127.0.0.1:0", &format!("ingress: {port}"));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(WEFT)
        .args(["up", file.to_str().unwrap(), "--ready-timeout", "20s"])
        .env("WEFT_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, port)
}

fn assert_refused_before_start(home: &Path, why: &str) {
    let (out, ingress) = up_refused(home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "weft up ran in {}", home.display());
    assert!(
        stderr.contains(&home.display().to_string()) && stderr.contains(why),
        "the error names neither the path nor why: {stderr}"
    );
    assert!(
        std::net::TcpStream::connect(ingress).is_err(),
        "an ingress was started"
    );
    assert!(!home.join("ca").exists(), "a CA was written");
    assert!(!home.join("meshes").exists(), "a mesh was recorded");
}

#[test]
fn a_weft_home_others_may_write_is_refused() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused_before_start(home.path(), "others may write to it (mode 777)");
    // The CLI does not believe mesh records found there either.
    let out = weft_in(home.path(), &["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("others may write"));
}

#[test]
fn a_weft_home_of_another_user_is_refused() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: giving a directory to another user needs root (CI runs as root)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // Mode 0700, as an attacker who pre-created /tmp/weft-UID would leave it for the victim.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    std::os::unix::fs::chown(home.path(), Some(nobody.as_raw()), None).unwrap();
    assert_refused_before_start(home.path(), "owned by uid 65534");
}

/// Runs `weft control` for a mesh named `name` in `home` until it says it is ready; its
/// stderr when it refused to start.
fn control_once(home: &Path, name: &str) -> Result<(), String> {
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mesh.yaml");
    std::fs::write(&file, mesh_yaml(name, &[("hello", 1, "")])).unwrap();
    let mut child = Command::new(WEFT)
        .args(["control", file.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .env("WEFT_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    match first {
        Some(l) if l.contains("ready") => Ok(()),
        _ => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[test]
fn each_mesh_gets_a_root_of_its_own_kept_private() {
    let base = tempfile::tempdir().unwrap();
    // Not there yet: weft makes it, for its user alone.
    let home = base.path().join("home");
    let home = home.as_path();
    control_once(home, "one").unwrap();
    control_once(home, "two").unwrap();
    let root = |mesh: &str| std::fs::read(home.join("ca").join(mesh).join("root.pem"));
    assert_ne!(
        root("one").unwrap(),
        root("two").unwrap(),
        "two meshes share a root"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = home.join("ca").join("one");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("root.key")), 0o600);
    assert_eq!(mode(home), 0o700);

    // A key others can read is refused at the next start, naming it.
    std::fs::set_permissions(dir.join("root.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = control_once(home, "one").unwrap_err();
    assert!(
        err.contains(&dir.join("root.key").display().to_string()) && err.contains("mode 644"),
        "{err}"
    );
    // So is a CA directory others can list.
    std::fs::set_permissions(dir.join("root.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = control_once(home, "one").unwrap_err();
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("mode 755"),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    control_once(home, "one").unwrap();
}
