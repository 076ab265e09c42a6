//! `weft up`'s stderr: every child's output (each line prefixed with the child's name) and
//! `weft up`'s own messages go out from one thread through a bounded queue. A reader that stops
//! reading (`weft up | less`, a stopped terminal, a stopped `weft up` itself) then never stalls
//! the runtime that runs the control plane and drains the children's pipes; lines beyond the
//! queue are dropped, and a line says how many once the writer catches up.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines that may wait for stderr.
const QUEUE_LINES: usize = 16_384;

enum Msg {
    Line(String),
    /// Answered once every line queued before it is written.
    Flush(SyncSender<()>),
}

struct Output {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

fn output() -> &'static Output {
    OUTPUT.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let started = std::thread::Builder::new()
            .name("weft-up-output".into())
            .spawn(move || write_all(rx));
        if let Err(e) = started {
            let _ = writeln!(
                std::io::stderr(),
                "weft: cannot start the output thread: {e}"
            );
        }
        Output {
            tx,
            dropped: AtomicU64::new(0),
        }
    })
}

fn write_all(rx: Receiver<Msg>) {
    let mut reported = 0;
    for msg in rx {
        let mut err = std::io::stderr().lock();
        let dropped = output().dropped.load(Ordering::Relaxed);
        if dropped > reported {
            let _ = writeln!(
                err,
                "weft: {} lines of output dropped: stderr was not read fast enough",
                dropped - reported
            );
            reported = dropped;
        }
        match msg {
            Msg::Line(l) => {
                let _ = writeln!(err, "{l}");
            }
            Msg::Flush(done) => {
                let _ = err.flush();
                let _ = done.try_send(());
            }
        }
    }
}

/// Queues a line for stderr; drops it (counted) when the queue is full.
pub fn line(text: String) {
    let out = output();
    if let Err(TrySendError::Full(_)) = out.tx.try_send(Msg::Line(text)) {
        out.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits, up to `within`, until every line queued so far is written.
pub fn flush(within: Duration) {
    let out = output();
    let deadline = Instant::now() + within;
    let (done_tx, done_rx) = sync_channel(1);
    let mut msg = Msg::Flush(done_tx);
    loop {
        match out.tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}
