//! Whether what listens on the app's address is the app, not another process that took its
//! port: a sidecar's app check, where the app's supervisor names the app's process in a file.
//!
//! A sidecar outside a pod shares the host's ports with every other program. Its app is told
//! a free port and binds it a moment later; should another process take the port in between
//! (another mesh's app, anything), the app fails to start while the port still accepts
//! connections — and a check that only connects would call the replica ready and send its
//! traffic to that other process. So when the supervisor writes the app's process id to a
//! file (`--app-pid-file`; `weft up` does, at every start of the app), the sidecar also finds
//! the listening sockets on the app's address (`/proc/self/net/tcp`, `tcp6`) and counts the app
//! ready only when each of them is held by that process, a process of its group (the app's
//! children: `weft up` starts each app in a group of its own), or a helper started after it
//! while it runs; never by a process that was there before the app, nor while the app is not
//! running. Where this cannot be seen (no procfs, another user's process), the connect check
//! alone decides, as without the file.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// Who holds the listening sockets on the app's address.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    /// The app (or nothing weft can tell apart from it).
    App,
    /// The app has not started yet: its supervisor has written no process id.
    NotStarted,
    /// Another process: why the app is not ready, in words.
    Other(String),
}

/// Who listens on `app`, the app being the process named in `pid_file`, the processes of its
/// group, and any process started after it while it runs: a helper the app had started for it
/// outside its group (`docker run -p` has `dockerd` start a `docker-proxy` on the port). A
/// process that was there before the app, or one listening while the app is not running,
/// holds the port in its place. `member` remembers, from one check to the next, the process
/// that held the listener for the app, so that a check of a ready app reads one or two
/// processes, not all of them.
pub fn holder(app: SocketAddr, pid_file: &Path, member: &mut Option<u32>) -> Holder {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return Holder::NotStarted;
    };
    let mut unseen = listening_inodes(app);
    if unseen.is_empty() {
        return Holder::App;
    }
    // `None`: the app's process is gone (it exited, and is restarted or not).
    let app_started = started_at(pid);
    let for_the_app = |p: u32| {
        group_of(p) == Some(pid)
            || app_started
                .zip(started_at(p))
                .is_some_and(|(app, other)| other >= app)
    };
    // Most apps hold their listener in the process started, or in the one that held it at the
    // last check: the common cases cost one or two processes.
    for p in std::iter::once(pid).chain(member.filter(|&m| m != pid && for_the_app(m))) {
        for inode in socket_inodes(p) {
            unseen.remove(&inode);
        }
    }
    // Otherwise every process, once: whoever holds what is left is the app's or another.
    for p in processes().filter(|&p| p != pid) {
        if unseen.is_empty() {
            break;
        }
        let held = socket_inodes(p);
        if !unseen.iter().any(|i| held.contains(i)) {
            continue;
        }
        if !for_the_app(p) {
            return Holder::Other(format!(
                "another process (pid {p}{}) listens on the app's address {app}, not the app (pid {pid}{})",
                command_name(p)
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default(),
                if app_started.is_some() { "" } else { ", not running" }
            ));
        }
        unseen.retain(|i| !held.contains(i));
        *member = Some(p);
    }
    // A process of the app's user whose file descriptors weft could not read would look
    // foreign: only a holder found, or an app whose own sockets could be read, makes it so.
    if !unseen.is_empty() && readable(pid) {
        return Holder::Other(format!(
            "another process listens on the app's address {app}, not the app (pid {pid})"
        ));
    }
    Holder::App
}

/// The inodes of the listening TCP sockets that take connections to `app` in this network
/// namespace: bound to its address, or to the unspecified address, on its port.
fn listening_inodes(app: SocketAddr) -> HashSet<u64> {
    let mut out = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some((local, inode)) = listener(line) {
                if local.port() == app.port() && covers(local.ip(), app.ip()) {
                    out.insert(inode);
                }
            }
        }
    }
    out
}

/// A listening socket's local address and inode, from a line of `/proc/net/tcp` or `tcp6`.
fn listener(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    if fields.get(3) != Some(&"0A") {
        return None;
    }
    let (addr, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Addresses are printed as 32-bit words in the kernel's byte order.
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    let inode = fields.get(9)?.parse().ok()?;
    Some((SocketAddr::new(ip, port), inode))
}

/// Whether a listener bound to `bound` takes connections to `to`.
fn covers(bound: IpAddr, to: IpAddr) -> bool {
    let bound = match bound {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(bound),
        v4 => v4,
    };
    bound.is_unspecified() || bound == to
}

/// Every process id in `/proc`.
fn processes() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// The process group of `pid`.
fn group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// When `pid` started (clock ticks since boot); `None` when it is gone (or has exited and not
/// been reaped yet).
fn started_at(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    // stime cutime cstime priority nice num_threads itrealvalue starttime …
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The inodes of the sockets `pid` holds open (empty where its descriptors cannot be read).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Whether `pid`'s file descriptors can be read (it lives, and belongs to this user).
fn readable(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok()
}

fn command_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim().to_string()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// Runs `command` in a process group of its own (never this process's, whoever started
    /// the test), its stdin kept open; the port it prints once it listens.
    fn listening(command: &mut Command) -> (std::process::Child, u16) {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line.trim().parse().unwrap())
    }

    fn pid_file(dir: &Path, pid: u32) -> std::path::PathBuf {
        let path = dir.join("app.pid");
        std::fs::write(&path, pid.to_string()).unwrap();
        path
    }

    #[test]
    fn a_listener_of_the_app_itself_is_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app = l.local_addr().unwrap();
        let file = pid_file(dir.path(), std::process::id());
        assert_eq!(holder(app, &file, &mut None), Holder::App);
    }

    #[test]
    fn no_process_id_yet_is_an_app_not_started() {
        let dir = tempfile::tempdir().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app = l.local_addr().unwrap();
        assert_eq!(
            holder(app, &dir.path().join("app.pid"), &mut None),
            Holder::NotStarted
        );
    }

    /// A server on 0.0.0.0 (which takes connections to 127.0.0.1 too) in a process group of its
    /// own; its port.
    fn other_listener() -> (std::process::Child, u16) {
        listening(Command::new("python3").args([
            "-c",
            "import socket,sys\n\
             s=socket.socket(); s.bind(('0.0.0.0',0)); s.listen()\n\
             print(s.getsockname()[1], flush=True); sys.stdin.read()",
        ]))
    }

    fn stop(mut child: std::process::Child) {
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A process that was listening on the app's port before the app started holds it in the
    /// app's place: it is named, and the app is not ready.
    #[test]
    fn a_process_there_before_the_app_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (other, port) = other_listener();
        // The app starts after it (a later clock tick).
        let app = loop {
            let app = Command::new("sleep").arg("30").spawn().unwrap();
            if started_at(app.id()) > started_at(other.id()) {
                break app;
            }
            stop(app);
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let verdict = holder(addr, &pid_file(dir.path(), app.id()), &mut None);
        let other_pid = other.id();
        stop(app);
        stop(other);
        let Holder::Other(why) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(
            why.contains(&format!("another process (pid {other_pid}, python3)"))
                && why.contains(&addr.to_string()),
            "{why}"
        );
    }

    /// A process started after the app, outside its group, while the app runs, is taken for a
    /// helper the app had started (`docker run -p` has `dockerd` start a `docker-proxy`).
    #[test]
    fn a_helper_started_after_the_app_is_the_apps() {
        let dir = tempfile::tempdir().unwrap();
        // This process is the app; the server starts after it.
        let (helper, port) = other_listener();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut member = None;
        let verdict = holder(addr, &pid_file(dir.path(), std::process::id()), &mut member);
        let helper_pid = helper.id();
        stop(helper);
        assert_eq!(verdict, Holder::App);
        assert_eq!(member, Some(helper_pid));
    }

    /// While the app is not running (it exited; it is restarted after a backoff), whatever
    /// listens on its port is not the app.
    #[test]
    fn a_listener_while_the_app_is_not_running_is_not_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let (other, port) = other_listener();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let verdict = holder(addr, &pid_file(dir.path(), gone.id()), &mut None);
        stop(other);
        let Holder::Other(why) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(why.contains("not running"), "{why}");
    }

    /// An app that forks its server (a shell running it, a pre-forking server): the process
    /// holding the listener is of the app's group, and is remembered for the next check.
    #[test]
    fn a_listener_of_a_process_of_the_apps_group_is_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let (mut app, port) = listening(Command::new("sh").args([
            "-c",
            "python3 -c \"import socket,sys\n\
             s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
             print(s.getsockname()[1], flush=True); sys.stdin.read()\"; true",
        ]));
        let app_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let file = pid_file(dir.path(), app.id());
        let mut member = None;
        let first = holder(app_addr, &file, &mut member);
        let again = holder(app_addr, &file, &mut member);
        drop(app.stdin.take());
        let _ = app.wait();
        assert_eq!(first, Holder::App);
        assert_eq!(again, Holder::App);
        assert!(member.is_some_and(|m| m != app.id()), "{member:?}");
    }

    #[test]
    fn proc_net_tcp_lines_are_read() {
        let v4 = "   0: 0100007F:3D0F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        let (addr, inode) = listener(v4).unwrap();
        assert_eq!(addr, "127.0.0.1:15631".parse().unwrap());
        assert_eq!(inode, 123456);
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(listener(&established), None);
        let v6 = "   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0";
        let (addr, inode) = listener(v6).unwrap();
        assert_eq!(addr, "[::]:8080".parse().unwrap());
        assert_eq!(inode, 777);
        assert!(covers(addr.ip(), "127.0.0.1".parse().unwrap()));
        assert!(!covers(
            "127.0.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
    }
}
