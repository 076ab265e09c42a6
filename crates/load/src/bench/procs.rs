//! The processes a benchmark starts (upstream app, proxies, control plane), pinned to a CPU on
//! request, and what `/proc` says about their CPU time and memory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    /// Stopped with SIGINT and waited for (a `weft up`, which then takes its pods down),
    /// rather than killed.
    pub graceful: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.graceful {
            super::transparent::stop_gracefully(&mut self.child);
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `program args…`, on CPU `cpu` (through `taskset`) when given.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
    cpu: Option<usize>,
    stdout: bool,
) -> std::io::Result<Proc> {
    let mut cmd = match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::null());
    let child = cmd.spawn().map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display()))
    })?;
    Ok(Proc {
        name: name.to_string(),
        child,
        graceful: false,
    })
}

/// The first line the process writes to stdout (it says where it listens, or that it is ready).
pub fn first_line(p: &mut Proc) -> std::io::Result<String> {
    let out = p
        .child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut r = BufReader::new(out);
    let mut line = String::new();
    r.read_line(&mut line)?;
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    if line.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} exited before saying where it listens",
            p.name
        )));
    }
    Ok(line)
}

/// What the scheduler counted for a process, over all its threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sched {
    /// CPU time used, with nanosecond resolution.
    pub cpu: Duration,
    /// Time slices run in: each one wake, or one return to the CPU after being preempted.
    pub slices: u64,
}

impl std::ops::Add for Sched {
    type Output = Sched;
    fn add(self, o: Sched) -> Sched {
        Sched {
            cpu: self.cpu + o.cpu,
            slices: self.slices + o.slices,
        }
    }
}

impl std::iter::Sum for Sched {
    fn sum<I: Iterator<Item = Sched>>(iter: I) -> Sched {
        iter.fold(Sched::default(), |a, b| a + b)
    }
}

/// The process's [`Sched`], from `/proc/PID/task/*/schedstat` (run time in ns, wait time,
/// time slices), one read per thread; where schedstat is missing, the CPU time from the
/// tick-resolution `/proc/PID/stat` and no slices.
pub fn sched(pid: u32) -> Sched {
    let mut total = Sched::default();
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            let mut fields = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            if let Some(Some(ns)) = fields.next() {
                total.cpu += Duration::from_nanos(ns);
                total.slices += fields.nth(1).flatten().unwrap_or(0);
                found = true;
            }
        }
    }
    if found {
        return total;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return total;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    total.cpu = Duration::from_millis(ticks * 10);
    total
}

/// CPU time the process has used, over all its threads ([`sched`]).
pub fn cpu_time(pid: u32) -> Duration {
    sched(pid).cpu
}

/// Resident memory in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
