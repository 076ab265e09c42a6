//! The processes `weft fleet-sim` runs and watches: an etcd member on loopback ports, control
//! plane replicas (`weft control --store etcd://…`), and what /proc and etcd's /metrics say
//! about them. Each is stopped by its PID when dropped.

use anyhow::Context;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd and a replica may take to say they are ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Linux reports CPU times in /proc in ticks of USER_HZ, which its ABI fixes at 100 a second.
const TICKS_PER_SECOND: f64 = 100.0;

/// A child process stopped (SIGTERM, then SIGKILL) by its PID when dropped.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its CPU time so far (user + system, every thread), from /proc.
    pub fn cpu(&self) -> Option<Duration> {
        cpu_time(self.pid())
    }

    /// Its peak and current resident memory, in bytes, from /proc.
    pub fn memory(&self) -> Option<(u64, u64)> {
        memory(self.pid())
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("weft fleet-sim: {} did not stop; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The peak and current resident memory of process `pid`, in bytes, from /proc.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("VmHWM:")?, kb("VmRSS:")?))
}

/// User + system CPU time of process `pid` (all its threads).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, in parentheses): state is the
    // 3rd field of the line, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
}

/// A port free now on 127.0.0.1 (etcd cannot be told to pick one and say which).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd server binary: the one given, else `etcd` on PATH, else Debian's.
pub fn etcd_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            ["/usr/bin/etcd", "/usr/local/bin/etcd"]
                .map(PathBuf::from)
                .into_iter()
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no etcd server: install it (Debian: apt-get install etcd-server), give --etcd PATH, or point --store at a cluster"
            )
        })
}

/// One etcd member on loopback ports, its data in `dir`.
pub struct Etcd {
    pub proc: Proc,
    pub client: SocketAddr,
}

impl Etcd {
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Etcd> {
        let (client, peer) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(bin)
            .args([
                "--name",
                "fleet",
                "--data-dir",
                &dir.join("etcd").display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("fleet={peer_url}"),
            ])
            // Debian's etcd refuses to run on some architectures unless told.
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let etcd = Etcd {
            proc: Proc {
                child,
                what: "etcd".into(),
            },
            client: SocketAddr::from(([127, 0, 0, 1], client)),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let health = super::http_get(&format!("http://{}/health", etcd.client)).await;
            if health.is_ok_and(|(s, b)| s == 200 && b.contains("\"true\"")) {
                return Ok(etcd);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "etcd did not become healthy within {START_TIMEOUT:?} (see {})",
                dir.join("etcd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The counters of etcd's /metrics the simulation reports.
pub const ETCD_COUNTERS: &[&str] = &[
    "etcd_mvcc_put_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_txn_total",
    "etcd_mvcc_delete_total",
    "etcd_debugging_mvcc_events_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_server_proposals_committed_total",
];

/// Those of [`ETCD_COUNTERS`] that are gauges (reported as they are, not as increases).
pub const ETCD_GAUGES: &[&str] = &["etcd_debugging_mvcc_watcher_total"];

/// [`ETCD_COUNTERS`] as the member at `client` reports them now.
pub async fn etcd_counters(client: SocketAddr) -> anyhow::Result<BTreeMap<String, f64>> {
    let (status, text) = super::http_get(&format!("http://{client}/metrics")).await?;
    anyhow::ensure!(status == 200, "etcd /metrics answered {status}");
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            ETCD_COUNTERS
                .contains(&name)
                .then(|| Some((name.to_string(), value.trim().parse().ok()?)))?
        })
        .collect())
}

/// A running `weft control --store …` replica.
pub struct Replica {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub home: PathBuf,
}

impl Replica {
    /// Starts replica number `n` over `store` with the mesh file `mesh`, plaintext (no CA: the
    /// simulated proxies hold no certificates), its WEFT_HOME under `dir`; waits for its ready
    /// line.
    pub fn start(
        n: usize,
        store: &str,
        store_key: &str,
        mesh: &Path,
        dir: &Path,
    ) -> anyhow::Result<Replica> {
        let home = dir.join(format!("replica-{n}"));
        std::fs::create_dir_all(&home)?;
        let log = std::fs::File::create(dir.join(format!("replica-{n}.log")))?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["control", "--store", store])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
                "--no-mtls",
            ])
            .arg(mesh)
            .env("WEFT_HOME", &home)
            .env("WEFT_STORE_KEY", store_key)
            .env("WEFT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let out = child.stdout.take().context("replica stdout")?;
        let proc = Proc {
            child,
            what: format!("control-plane replica {n}"),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            anyhow::anyhow!(
                "control-plane replica {n} did not say it was ready within {START_TIMEOUT:?} (see {})",
                dir.join(format!("replica-{n}.log")).display()
            )
        })?;
        // "… proxies connect to ADDR, API on http://ADDR · store etcd (…), replica NAME"
        let after = |marker: &str| -> anyhow::Result<SocketAddr> {
            line.split(marker)
                .nth(1)
                .and_then(|r| r.split([',', ' ']).next())
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("replica {n}: no {marker:?} in {line:?}"))
        };
        Ok(Replica {
            grpc: after("proxies connect to ")?,
            api: after("API on http://")?,
            proc,
            home,
        })
    }

    /// The API's admin credential, which the replica writes in its WEFT_HOME.
    pub fn token(&self, mesh: &str) -> anyhow::Result<String> {
        let file = self.home.join("meshes").join(format!("{mesh}.token"));
        Ok(std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?
            .trim()
            .to_string())
    }
}
