use super::*;
use std::sync::{Arc, Mutex};

type Flushed = Arc<Mutex<Vec<(Vec<u32>, Instant)>>>;

fn start(
    config: BatchConfig,
    shutdown: CancellationToken,
) -> (Batcher<u32>, JoinHandle<()>, Flushed) {
    let flushed: Flushed = Arc::default();
    let keep = flushed.clone();
    let (b, worker) = Batcher::spawn(config, shutdown, move |batch| {
        let keep = keep.clone();
        async move { keep.lock().unwrap().push((batch, Instant::now())) }
    });
    (b, worker, flushed)
}

fn batches(f: &Flushed) -> Vec<Vec<u32>> {
    f.lock().unwrap().iter().map(|(b, _)| b.clone()).collect()
}

const CONFIG: BatchConfig = BatchConfig {
    max_items: 3,
    max_wait: Duration::from_millis(100),
    capacity: 4,
};

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_at_once_and_a_partial_one_after_the_wait() {
    let (b, _worker, flushed) = start(CONFIG, CancellationToken::new());
    let start = Instant::now();
    for i in 1..=4 {
        b.send(i).await.unwrap();
    }
    tokio::task::yield_now().await;
    // Timing is virtual: nothing waits for real.
    while batches(&flushed).len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let f = flushed.lock().unwrap().clone();
    assert_eq!(f[0].0, vec![1, 2, 3]);
    assert_eq!(f[0].1, start);
    assert_eq!(f[1].0, vec![4]);
    assert_eq!(f[1].1 - start, CONFIG.max_wait);
}

#[tokio::test(start_paused = true)]
async fn the_wait_counts_from_the_first_item_of_a_batch() {
    let (b, _worker, flushed) = start(CONFIG, CancellationToken::new());
    let start = Instant::now();
    b.send(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    b.send(2).await.unwrap();
    while batches(&flushed).is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let f = flushed.lock().unwrap().clone();
    assert_eq!(f[0].0, vec![1, 2]);
    assert_eq!(f[0].1 - start, CONFIG.max_wait);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_what_is_queued_and_refuses_more() {
    let shutdown = CancellationToken::new();
    let (b, worker, flushed) = start(CONFIG, shutdown.clone());
    for i in 1..=5 {
        b.send(i).await.unwrap();
    }
    shutdown.cancel();
    worker.await.unwrap();
    assert_eq!(batches(&flushed), vec![vec![1, 2, 3], vec![4, 5]]);
    assert_eq!(b.send(6).await, Err(Closed(6)));
    assert_eq!(b.try_send(7), Err(TrySendError::Closed(7)));
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_flushes_the_rest() {
    let (b, worker, flushed) = start(CONFIG, CancellationToken::new());
    let other = b.clone();
    b.send(1).await.unwrap();
    other.send(2).await.unwrap();
    drop((b, other));
    worker.await.unwrap();
    assert_eq!(batches(&flushed), vec![vec![1, 2]]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_sink_pushes_back_on_senders() {
    // The sink takes its time; meanwhile the bounded queue fills and senders wait.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let (b, _worker) = Batcher::spawn(CONFIG, CancellationToken::new(), move |_batch: Vec<u32>| {
        let gate = gate.clone();
        async move { gate.acquire().await.unwrap().forget() }
    });
    for i in 0..3 {
        b.send(i).await.unwrap(); // the first batch, now stuck in the sink
    }
    tokio::task::yield_now().await;
    for i in 3..3 + CONFIG.capacity as u32 {
        b.try_send(i).unwrap();
    }
    assert_eq!(b.try_send(99), Err(TrySendError::Full(99)));
    let blocked = tokio::spawn({
        let b = b.clone();
        async move { b.send(100).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!blocked.is_finished());
    release.add_permits(1);
    blocked.await.unwrap().unwrap();
}
