//! A precise timer for the open model's send times. Tokio's timers tick in milliseconds and fire up
//! to ~2 ms late, which measured from the intended send time would read as latency of the target.
//! Lanes sleep on tokio's timer until shortly before their send time and finish the wait here: a
//! thread sleeping on a condition variable (tens of microseconds of slack, no busy polling) that
//! wakes the lane's task when its time comes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Handle to the timer thread; the thread exits when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct PreciseTimer {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stop: bool,
}

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Stops the thread when the last [`PreciseTimer`] clone goes away.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.changed.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PreciseTimer {
    /// Starts the timer thread; `None` if the thread cannot be started (lanes then rely on tokio's
    /// coarser timer alone).
    pub fn start() -> Option<PreciseTimer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("load-timer".to_string())
            .spawn(move || run(&worker))
            .ok()?;
        Some(PreciseTimer {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    /// Completes at `at` (or immediately if it has passed).
    pub fn sleep_until(&self, at: tokio::time::Instant) -> Sleep<'_> {
        Sleep {
            timer: self,
            at: at.into_std(),
        }
    }
}

fn run(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        while let Some(Reverse(first)) = state.due.peek() {
            if first.at > now {
                break;
            }
            if let Some(Reverse(e)) = state.due.pop() {
                expired.push(e.waker);
            }
        }
        if !expired.is_empty() {
            drop(state);
            for waker in expired {
                waker.wake();
            }
            state = shared.lock();
            continue;
        }
        state = match state.due.peek().map(|Reverse(e)| e.at) {
            Some(at) => {
                shared
                    .changed
                    .wait_timeout(state, at.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// The future of [`PreciseTimer::sleep_until`].
pub(crate) struct Sleep<'a> {
    timer: &'a PreciseTimer,
    at: Instant,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        // Woken early or spuriously (or first poll): (re-)register. A stale entry only causes a
        // harmless extra wake-up.
        let mut state = self.timer.shared.lock();
        if state.stop {
            return Poll::Ready(());
        }
        state.seq += 1;
        let entry = Entry {
            at: self.at,
            seq: state.seq,
            waker: cx.waker().clone(),
        };
        let earliest = match state.due.peek() {
            Some(Reverse(first)) => entry.at < first.at,
            None => true,
        };
        state.due.push(Reverse(entry));
        drop(state);
        if earliest {
            self.timer.shared.changed.notify_one();
        }
        Poll::Pending
    }
}
