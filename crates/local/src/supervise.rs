//! Supervision of `weft up`'s processes: a process that exits is restarted with exponential
//! backoff and reported, unless its restart policy (a job's app: `OnFailure`, `Never`) says it
//! has finished for good — then its supervision ends and [`Proc::finished`] says how; a [`Stage`] (the ingress, the sidecars, the apps, Prometheus) stops
//! all its processes at once, each with SIGTERM and then, after the drain timeout, SIGKILL. One
//! process can also be stopped alone the same way ([`Proc::stop`]), when a live change to the
//! mesh removes or replaces its replica.

use crate::launch::{forward, Launch};
use control::status::Finished;
use model::RestartPolicy;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Restart backoff for a crashed process: first delay, cap, and how long a process must have
/// run for the backoff to start over.
const RESTART_MIN: Duration = Duration::from_millis(200);
const RESTART_MAX: Duration = Duration::from_secs(10);
const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);
/// How much longer than the drain timeout a process may take to exit after SIGTERM.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Processes that are stopped together.
pub(crate) struct Stage {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    drain_timeout: Duration,
}

impl Stage {
    pub fn new(drain_timeout: Duration) -> Stage {
        Stage {
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
            drain_timeout,
        }
    }

    /// Supervises `child`, started from `launch`, until the stage stops or the returned
    /// handle stops it; restarted whenever it exits.
    pub fn supervise(&mut self, launch: Launch, child: Child) -> Proc {
        self.supervise_with(launch, child, RestartPolicy::Always)
    }

    /// [`Stage::supervise`], restarting it only as `policy` says.
    pub fn supervise_with(&mut self, launch: Launch, child: Child, policy: RestartPolicy) -> Proc {
        let proc = Proc {
            stop: self.stop.child_token(),
            exited: CancellationToken::new(),
            outcome: Arc::new(OnceLock::new()),
            pid: child.id(),
        };
        let (stop, exited, outcome) =
            (proc.stop.clone(), proc.exited.clone(), proc.outcome.clone());
        let drain_timeout = self.drain_timeout;
        self.tasks.spawn(async move {
            let _exited = exited.drop_guard();
            if let Some(done) = supervise(launch, child, policy, stop, drain_timeout).await {
                let _ = outcome.set(done);
            }
        });
        proc
    }

    /// Starts `launch` and supervises it; restarted whenever it exits.
    pub fn start(&mut self, launch: Launch) -> Result<Proc, crate::UpError> {
        self.start_with(launch, RestartPolicy::Always)
    }

    /// Starts `launch` and supervises it, restarting it only as `policy` says.
    pub fn start_with(
        &mut self,
        launch: Launch,
        policy: RestartPolicy,
    ) -> Result<Proc, crate::UpError> {
        let child = launch.spawn()?;
        Ok(self.supervise_with(launch, child, policy))
    }

    /// Stops every process of the stage and waits until all have exited.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One supervised process, which can be stopped alone.
#[derive(Clone)]
pub(crate) struct Proc {
    stop: CancellationToken,
    /// Cancelled once its supervision has ended (the process exited for good).
    exited: CancellationToken,
    /// Set before `exited` when it ended because its restart policy said so (not stopped):
    /// how it finished, and its exit status as text (`exit 0`).
    outcome: Arc<OnceLock<(Finished, String)>>,
    /// The first start's process id (a proxy registers with it).
    pub pid: Option<u32>,
}

impl Proc {
    /// SIGTERM (a proxy then drains: it stops accepting and finishes its in-flight requests),
    /// SIGKILL after the drain timeout; returns once it has exited and will not restart.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.exited.cancelled().await;
    }

    /// Waits until its supervision ends: how it finished when its restart policy ended it,
    /// `None` when it was stopped.
    pub async fn finished(&self) -> Option<(Finished, String)> {
        self.exited.cancelled().await;
        self.outcome.get().cloned()
    }

    /// How it finished, if its restart policy has ended its supervision.
    pub fn outcome(&self) -> Option<(Finished, String)> {
        self.outcome.get().cloned()
    }
}

/// Runs `launch` until `stop`, restarting it with backoff when it exits and `policy` says so;
/// how it finished when `policy` said not to (`None`: stopped).
async fn supervise(
    launch: Launch,
    first: Child,
    policy: RestartPolicy,
    stop: CancellationToken,
    drain_timeout: Duration,
) -> Option<(Finished, String)> {
    let what = launch.what();
    let mut child = first;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, what.clone()));
    }
    let mut backoff = RESTART_MIN;
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                if stop.is_cancelled() {
                    return None;
                }
                let success = matches!(&status, Ok(s) if s.success());
                if !policy.restarts(success) {
                    let exit = exit_text(&status);
                    let done = match success {
                        true => {
                            crate::output::line(format!("weft: {what} completed ({exit})"));
                            Finished::Completed
                        }
                        false => {
                            crate::output::line(format!(
                                "weft: {what} failed ({exit}); not restarted (restartPolicy: {})",
                                policy.as_str()
                            ));
                            Finished::Failed
                        }
                    };
                    return Some((done, exit));
                }
                if started.elapsed() >= RESTART_RESET_AFTER {
                    backoff = RESTART_MIN;
                }
                restarts += 1;
                crate::output::line(format!(
                    "weft: {what} exited ({}); restarting in {backoff:?} (restart {restarts})",
                    describe(status),
                ));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return None,
                }
                backoff = (backoff * 2).min(RESTART_MAX);
                match launch.spawn() {
                    Ok(mut c) => {
                        if let Some(out) = c.stdout.take() {
                            tokio::spawn(forward(out, what.clone()));
                        }
                        child = c;
                    }
                    Err(e) => {
                        crate::output::line(format!("weft: {e}"));
                        // Keep the old (exited) child; the next loop waits on it at once.
                    }
                }
            }
            _ = stop.cancelled() => {
                terminate(&mut child, drain_timeout + EXIT_GRACE).await;
                return None;
            }
        }
    }
}

/// An exit status, or why there is none, for messages.
pub(crate) fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

/// A finished process's exit status, short: `exit 3`, `signal 9`.
fn exit_text(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => s.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

/// SIGTERM, then SIGKILL if the process outlives `deadline`.
async fn terminate(child: &mut Child, deadline: Duration) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(deadline, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
