//! Live counters a running load updates after every request, and a progress bar drawn from them on
//! stderr (by a separate thread, only when stderr is a terminal).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters shared between a run and whoever watches it; reading them is a few atomic loads.
#[derive(Debug, Default)]
pub struct Progress {
    completed: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicBool,
    started: OnceLock<Instant>,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    /// Requests finished so far (answered or failed).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Requests that failed so far: transport errors and 4xx/5xx answers (the report's `failed`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// When the clock of the run started (after the connections were opened), once it has.
    pub fn started(&self) -> Option<Instant> {
        self.started.get().copied()
    }

    /// Asks the run to stop early: lanes send nothing new, requests in flight finish (within the
    /// timeout), and the report covers what was done (`interrupted` is set).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_started(&self) {
        let _ = self.started.set(Instant::now());
    }

    pub(crate) fn record(&self, ok: bool) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the progress bar counts towards.
#[derive(Debug, Clone, Copy)]
pub enum ProgressTotal {
    Requests(u64),
    Duration(Duration),
}

/// The thread drawing the bar; [`ProgressPrinter::finish`] (or dropping it) clears the bar.
#[derive(Debug)]
pub struct ProgressPrinter {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressPrinter {
    /// Stops drawing and erases the bar.
    pub fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProgressPrinter {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Draws a progress bar for `progress` on stderr ten times a second until finished. Does nothing
/// when stderr is not a terminal (or the thread cannot start).
pub fn spawn_progress_printer(progress: Arc<Progress>, total: ProgressTotal) -> ProgressPrinter {
    let idle = ProgressPrinter {
        stop: None,
        thread: None,
    };
    if !std::io::stderr().is_terminal() {
        return idle;
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("load-progress".to_string())
        .spawn(move || draw(&progress, total, &stopped));
    match thread {
        Ok(thread) => ProgressPrinter {
            stop: Some(stop),
            thread: Some(thread),
        },
        Err(_) => idle,
    }
}

fn draw(progress: &Progress, total: ProgressTotal, stopped: &mpsc::Receiver<()>) {
    let len = match total {
        ProgressTotal::Requests(n) => n,
        ProgressTotal::Duration(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    };
    let template = match total {
        ProgressTotal::Requests(_) => "{bar:25} {pos}/{len}  {msg}",
        ProgressTotal::Duration(_) => "{bar:25} {msg}",
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    loop {
        let started = progress.started();
        let completed = progress.completed();
        let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
        match total {
            ProgressTotal::Requests(_) => bar.set_position(completed),
            ProgressTotal::Duration(_) => {
                bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            }
        }
        let secs = elapsed.as_secs_f64();
        let rps = if secs > 0.0 {
            completed as f64 / secs
        } else {
            0.0
        };
        let errors = progress.errors();
        bar.set_message(match (started, total) {
            (None, _) => "connecting".to_string(),
            (Some(_), ProgressTotal::Duration(d)) => format!(
                "{:.1}s/{:.1}s  {completed} done  {rps:.0} req/s  {errors} failed",
                secs.min(d.as_secs_f64()),
                d.as_secs_f64()
            ),
            (Some(_), ProgressTotal::Requests(_)) => {
                format!("{rps:.0} req/s  {errors} failed")
            }
        });
        match stopped.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    bar.finish_and_clear();
}
