//! Unit tests: a copy is kept while the body streams, whatever its framing, up to the limit.

use super::*;
use crate::body::BoxError;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Chunked = StreamBody<ReceiverStream<Result<Frame<Bytes>, BoxError>>>;

/// A chunked body (no size known in advance) fed frame by frame through the sender.
fn chunked() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, Chunked) {
    let (tx, rx) = mpsc::channel(4);
    (tx, StreamBody::new(ReceiverStream::new(rx)))
}

async fn data(tee: &mut Watched<Chunked, Tee>) -> Bytes {
    tee.frame().await.unwrap().unwrap().into_data().unwrap()
}

#[tokio::test]
async fn a_chunked_body_within_the_limit_streams_and_is_kept() {
    let (tx, body) = chunked();
    let (mut tee, replay) = tee(body, 10);
    tx.send(Ok(Frame::data(Bytes::from("abcd")))).await.unwrap();
    // The first chunk goes on before the rest has arrived: nothing waits for the whole body.
    assert_eq!(data(&mut tee).await, "abcd");
    assert_eq!(replay.check(), Err(Unreplayable::Incomplete));
    tx.send(Ok(Frame::data(Bytes::from("efgh")))).await.unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("1"));
    tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
    drop(tx);
    assert_eq!(data(&mut tee).await, "efgh");
    assert!(tee.frame().await.unwrap().unwrap().is_trailers());
    assert!(tee.frame().await.is_none());
    assert_eq!(replay.check(), Ok(()));
    let again = replay.copy().unwrap().collect().await.unwrap();
    assert_eq!(again.trailers().unwrap()["x-sum"], "1");
    assert_eq!(again.to_bytes(), "abcdefgh");
    // As many copies as wanted.
    let third = replay.copy().unwrap().collect().await.unwrap().to_bytes();
    assert_eq!(third, "abcdefgh");
}

#[tokio::test]
async fn a_body_past_the_limit_still_streams_whole_but_is_not_kept() {
    let (tx, body) = chunked();
    let (mut tee, replay) = tee(body, 10);
    let waiting = replay.share();
    let mirror = tokio::spawn(async move { waiting.copy_when_whole().await.err() });
    for part in ["abcdef", "ghijkl", "mnop"] {
        tx.send(Ok(Frame::data(Bytes::from(part)))).await.unwrap();
        assert_eq!(data(&mut tee).await, part);
    }
    assert_eq!(replay.check(), Err(Unreplayable::TooLarge));
    assert!(!replay.may_replay());
    // A mirror waiting for the whole body learns at once that there will be none.
    assert_eq!(mirror.await.unwrap(), Some(Unreplayable::TooLarge));
    drop(tx);
    assert!(tee.frame().await.is_none());
    assert_eq!(replay.copy().err(), Some(Unreplayable::TooLarge));
}

#[tokio::test]
async fn a_body_that_breaks_off_is_never_whole() {
    let (tx, body) = chunked();
    let (mut tee, replay) = tee(body, 10);
    tx.send(Ok(Frame::data(Bytes::from("ab")))).await.unwrap();
    assert_eq!(data(&mut tee).await, "ab");
    tx.send(Err("client went away".into())).await.unwrap();
    assert!(tee.frame().await.unwrap().is_err());
    assert_eq!(replay.check(), Err(Unreplayable::Incomplete));
    assert!(replay.may_replay(), "not known to be too large");
    assert_eq!(
        replay.copy_when_whole().await.err(),
        Some(Unreplayable::Incomplete)
    );
}

#[tokio::test]
async fn a_body_dropped_unread_is_never_whole() {
    let (_tx, body) = chunked();
    let (tee, replay) = tee(body, 10);
    drop(tee);
    assert_eq!(
        replay.copy_when_whole().await.err(),
        Some(Unreplayable::Incomplete)
    );
}
