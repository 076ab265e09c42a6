//! A batch processor: items sent to a [`Batcher`] handle are collected and handed to an async
//! sink together, when [`BatchConfig::max_items`] are collected or [`BatchConfig::max_wait`] has
//! passed since the first item of the batch, whichever comes first. The channel is bounded:
//! [`Batcher::send`] waits while it is full (backpressure), [`Batcher::try_send`] gives the item
//! back. What is left is flushed when the handles are all dropped or the shutdown token fires;
//! the worker's task ends after that last flush.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Items per batch unless told otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 100;
/// How long the first item of a batch waits for the batch to fill.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(100);
/// Items the channel holds before senders wait: a few batches' worth.
pub const DEFAULT_CAPACITY: usize = 1000;

#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_items: usize,
    pub max_wait: Duration,
    pub capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_items: DEFAULT_MAX_ITEMS,
            max_wait: DEFAULT_MAX_WAIT,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// The worker has stopped; the item is given back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the batch worker has stopped")]
pub struct Closed<T>(pub T);

/// Why [`Batcher::try_send`] gave an item back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrySendError<T> {
    #[error("the batch queue is full")]
    Full(T),
    #[error("the batch worker has stopped")]
    Closed(T),
}

/// The handle items are sent to; clones feed the same worker.
///
/// ```
/// use app::batch::{BatchConfig, Batcher};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn run() {
/// let shutdown = CancellationToken::new();
/// let (events, worker) = Batcher::spawn(BatchConfig::default(), shutdown.clone(), |batch: Vec<String>| async move {
///     // one INSERT of the whole batch, one call to an analytics service...
///     println!("{} events", batch.len());
/// });
/// events.send("checkout".to_string()).await.unwrap();
/// shutdown.cancel();
/// worker.await.unwrap(); // the last batch is flushed
/// # }
/// ```
#[derive(Debug)]
pub struct Batcher<T> {
    tx: mpsc::Sender<T>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the worker on the runtime; `sink` gets each batch, one at a time, in order.
    pub fn spawn<F, Fut>(
        config: BatchConfig,
        shutdown: CancellationToken,
        sink: F,
    ) -> (Batcher<T>, JoinHandle<()>)
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let worker = tokio::spawn(run(rx, config, shutdown, sink));
        (Batcher { tx }, worker)
    }

    /// Queues `item`, waiting while the queue is full.
    pub async fn send(&self, item: T) -> Result<(), Closed<T>> {
        self.tx.send(item).await.map_err(|e| Closed(e.0))
    }

    /// Queues `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(t) => TrySendError::Full(t),
            mpsc::error::TrySendError::Closed(t) => TrySendError::Closed(t),
        })
    }
}

async fn run<T, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    config: BatchConfig,
    shutdown: CancellationToken,
    mut sink: F,
) where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let max_items = config.max_items.max(1);
    let mut batch = Vec::with_capacity(max_items);
    // When the batch being collected must go, set by its first item.
    let mut due: Option<Instant> = None;
    loop {
        let timer = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => {
                    if batch.is_empty() {
                        due = Some(Instant::now() + config.max_wait);
                    }
                    batch.push(item);
                    if batch.len() < max_items {
                        continue;
                    }
                }
                None => break,
            },
            () = timer => {}
            () = shutdown.cancelled() => {
                // Refuse new items, then take what is already queued.
                rx.close();
                while let Some(item) = rx.recv().await {
                    batch.push(item);
                    if batch.len() == max_items {
                        sink(std::mem::take(&mut batch)).await;
                    }
                }
                break;
            }
        }
        due = None;
        sink(std::mem::replace(&mut batch, Vec::with_capacity(max_items))).await;
    }
    if !batch.is_empty() {
        sink(batch).await;
    }
}
